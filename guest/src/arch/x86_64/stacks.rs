//! Kernel and IST stacks: the boot CPU's kernel stack in BSS (entered by
//! `_start`, before anything is allocated), every other stack allocated at
//! boot for the CPUs that exist ([`alloc`]).

use core::cell::UnsafeCell;

use shared::CpuId;

use crate::mem::{self, OnceSlice, OutOfMemory, Zeroable};

/// Kernel stack size per CPU.
pub const STACK_SIZE: usize = 32 * 1024;
/// Size of each interrupt-stack-table stack.
pub const IST_SIZE: usize = 8 * 1024;
/// IST slots used: NMI, double fault, machine check.
pub const IST_COUNT: usize = 3;

#[repr(C, align(4096))]
/// A stack of N bytes.
pub struct Stack<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: a stack is only ever touched through RSP by the one CPU it
// belongs to; Rust code never forms references into it.
unsafe impl<const N: usize> Sync for Stack<N> {}

// SAFETY: bytes; a stack starts as anything.
unsafe impl<const N: usize> Zeroable for Stack<N> {}

impl<const N: usize> Stack<N> {
    const fn new() -> Self {
        Stack(UnsafeCell::new([0; N]))
    }
    fn top(&self) -> u64 {
        self.0.get() as u64 + N as u64
    }
}

/// The stacks of one CPU.
#[repr(C)]
struct CpuStacks {
    /// Its kernel stack (unused for the boot CPU, which keeps
    /// [`BOOT_STACK`]).
    kernel: Stack<STACK_SIZE>,
    /// Its IST stacks.
    ist: [Stack<IST_SIZE>; IST_COUNT],
}

// SAFETY: stacks (see `Stack`).
unsafe impl Zeroable for CpuStacks {}

/// The boot CPU's kernel stack, entered by `_start`.
pub static BOOT_STACK: Stack<STACK_SIZE> = Stack::new();
/// Every CPU's stacks, from [`alloc`].
static STACKS: OnceSlice<CpuStacks> = OnceSlice::new();

/// Allocates the stacks of `cpus` CPUs (boot CPU, before it loads its own
/// TSS, once).
pub fn alloc(cpus: u32) -> Result<(), OutOfMemory> {
    // Set once: a second call is a bug that leaves the first stacks.
    let _ = STACKS.set(mem::alloc_zeroed(cpus as usize)?);
    Ok(())
}

/// Top of the kernel stack of `cpu` (16-byte aligned), if it has one.
pub fn kernel_top(cpu: CpuId) -> Option<u64> {
    if cpu.0 == 0 {
        return Some(BOOT_STACK.top());
    }
    STACKS.at(cpu.index()).map(|s| s.kernel.top())
}

/// Top of IST stack `slot` (0-based) of `cpu`, if it has one.
pub fn ist_top(cpu: CpuId, slot: usize) -> Option<u64> {
    Some(STACKS.at(cpu.index())?.ist.get(slot)?.top())
}

const _: () = assert!(
    core::mem::size_of::<CpuStacks>() as u64 <= shared::sizing::PER_CPU_MEM / 2,
    "a CPU's stacks outgrew half its memory budget (shared::sizing::PER_CPU_MEM)"
);
