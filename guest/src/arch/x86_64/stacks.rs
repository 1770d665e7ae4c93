//! Kernel and IST stacks for every CPU, in BSS.

use core::cell::UnsafeCell;

use shared::{CpuId, MAX_CPUS};

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

impl<const N: usize> Stack<N> {
    const fn new() -> Self {
        Stack(UnsafeCell::new([0; N]))
    }
    fn top(&self) -> u64 {
        self.0.get() as u64 + N as u64
    }
}

/// Every CPU's kernel stack (CPU 0's is entered by `_start`).
pub static KERNEL: [Stack<STACK_SIZE>; MAX_CPUS] = [const { Stack::new() }; MAX_CPUS];
static IST: [[Stack<IST_SIZE>; IST_COUNT]; MAX_CPUS] =
    [const { [const { Stack::new() }; IST_COUNT] }; MAX_CPUS];

/// Top of the kernel stack of `cpu` (16-byte aligned).
pub fn kernel_top(cpu: CpuId) -> u64 {
    KERNEL[cpu.index() % MAX_CPUS].top()
}

/// Top of IST stack `slot` (0-based) of `cpu`.
pub fn ist_top(cpu: CpuId, slot: usize) -> u64 {
    IST[cpu.index() % MAX_CPUS][slot % IST_COUNT].top()
}

const _: () = assert!(
    (STACK_SIZE + IST_COUNT * IST_SIZE) as u64 <= shared::sizing::PER_CPU_MEM / 2,
    "a CPU's stacks outgrew half its memory budget (shared::sizing::PER_CPU_MEM)"
);
