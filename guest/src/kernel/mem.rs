//! The kernel's memory: the bump allocator ([`crate::mem::FRAMES`]) over
//! the guest RAM above the kernel image, and the per-CPU data of the CPUs
//! that exist, allocated from it at boot ([`alloc_percpu`]): the per-CPU
//! window's pages (the tables the IPI paths index at constant addresses:
//! the smp core's blocks, the arch's areas and poll words, the idle-task
//! and hotplug slots; see `shared::percpu_window`), stacks, GDT/TSS and
//! fault-injection counters. Each CPU's row of cfd csds comes from the
//! same allocator when the CPU is first prepared (`Arch::alloc_cfd_row`).
//! The VMM sizes the RAM for the CPU count (`shared::sizing`) and refuses
//! a smaller `--mem` up front, so running out here means a guest/VMM
//! mismatch.

use shared::bootinfo::BootInfo;
use shared::layout::{MAX_MEM, PAGE_SIZE};

use crate::arch::x86_64;
use crate::mem::{FRAMES, OutOfMemory};

/// Hands the RAM above the kernel image, up to the end of guest memory
/// (as the boot information says, at most `MAX_MEM`), to the allocator.
/// Boot CPU, first thing.
pub fn init(info: &BootInfo) {
    let start = x86_64::kernel_end().next_multiple_of(PAGE_SIZE);
    let end = info.mem_size.min(MAX_MEM);
    // SAFETY: the VMM maps `mem_size` bytes of fresh (zero) memory at
    // guest-physical 0, identity-mapped up to MAX_MEM; above the image it
    // writes nothing (its fixed regions are below the kernel, the trace
    // rings above `mem_size`), and the kernel uses it only through this
    // allocator. Nothing has allocated yet.
    unsafe { FRAMES.init(start, end) };
}

/// Allocates the per-CPU data of `cpus` CPUs (see the module docs). Boot
/// CPU, after [`init`], before it loads its own GDT, once.
pub fn alloc_percpu(cpus: u32) -> Result<(), OutOfMemory> {
    x86_64::alloc_percpu(cpus)
}
