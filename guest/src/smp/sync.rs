//! Atomics shim: `core::sync::atomic` normally, `loom`'s model-checked
//! atomics under `cfg(loom)`.
//!
//! Only the lock-free primitives ([`super::llist`], [`super::csd`]) are built
//! under loom; everything else in the smp core is compiled out there, because
//! loom's types cannot be built in a `const fn` and the [`super::Smp`] struct
//! must be.
//!
//! [`UnsafeCell`] has loom's closure API (`with` / `with_mut`) in both
//! configurations, so that loom can check every access to a csd's `func` and
//! `info` for data races.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU64};
#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering, fence};

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, Ordering, fence};

/// Declares a `const fn` normally and a plain `fn` under loom, whose atomics
/// cannot be created in const context.
macro_rules! const_fn_unless_loom {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        #[cfg(not(loom))]
        $(#[$attr])*
        $vis const fn $name($($arg: $ty),*) -> $ret $body

        #[cfg(loom)]
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use const_fn_unless_loom;

/// A spin-loop hint for loops that do not go through [`super::Arch::cpu_relax`].
/// Under loom it yields to the model scheduler, which loom requires of every
/// spin loop.
#[inline(always)]
pub(crate) fn spin_loop() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// `core::cell::UnsafeCell` with loom's access API.
#[cfg(not(loom))]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    /// Calls `f` with a pointer for reading.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a pointer for writing.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
