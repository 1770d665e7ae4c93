//! Memory for the CPUs that exist: a bump allocator over the guest memory
//! above the kernel image ([`BumpAllocator`], one instance for the kernel,
//! [`FRAMES`]), types whose all-zero bytes are a value ([`Zeroable`]: the
//! allocator hands out memory the VMM gave zeroed, and a table of a
//! thousand CPUs' csds is not written at boot), and [`OnceSlice`], the
//! shape per-CPU data takes once allocated (a slice set once,
//! bounds-checked).
//!
//! Host-testable: nothing here is x86 or KVM. The kernel sets [`FRAMES`]
//! up from the boot information (`kernel::mem`).

mod bump;
mod table;

pub use bump::{BumpAllocator, OutOfMemory};
pub use table::{OnceSlice, TableError};

/// Types for which every byte being zero is a valid value (atomics at 0,
/// null pointers, `false`, integers), so that memory known to be zero can
/// be used as them without writing it.
///
/// # Safety
///
/// Implement only for types whose all-zero bit pattern is a valid value
/// with the meaning of the type's empty state (`new()`), with no padding
/// that matters and no non-null pointers or references.
pub unsafe trait Zeroable: Sized {}

// SAFETY: zero is `new(0)` / `new(false)` / `new(null)` for each of them.
unsafe impl Zeroable for core::sync::atomic::AtomicU8 {}
// SAFETY: as above.
unsafe impl Zeroable for core::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl Zeroable for core::sync::atomic::AtomicU64 {}
// SAFETY: as above.
unsafe impl Zeroable for core::sync::atomic::AtomicUsize {}
// SAFETY: as above.
unsafe impl Zeroable for core::sync::atomic::AtomicBool {}
// SAFETY: as above.
unsafe impl<T> Zeroable for core::sync::atomic::AtomicPtr<T> {}
// SAFETY: plain integers.
unsafe impl Zeroable for u8 {}
// SAFETY: plain integers.
unsafe impl Zeroable for u32 {}
// SAFETY: plain integers.
unsafe impl Zeroable for u64 {}
// SAFETY: an array of zeroable values is zeroable.
unsafe impl<T: Zeroable, const N: usize> Zeroable for [T; N] {}
// SAFETY: `UnsafeCell` has the layout of its contents.
unsafe impl<T: Zeroable> Zeroable for core::cell::UnsafeCell<T> {}

/// The kernel's allocator: guest memory from the end of the kernel image to
/// the end of RAM, set up once at boot (`kernel::mem::init`); empty (every
/// allocation fails) before that and on the host.
pub static FRAMES: BumpAllocator = BumpAllocator::new();

/// `n` zeroed `T`s from [`FRAMES`], aligned for `T`, for as long as the
/// kernel runs.
pub fn alloc_zeroed<T: Zeroable>(n: usize) -> Result<&'static [T], OutOfMemory> {
    FRAMES.alloc_zeroed(n)
}
