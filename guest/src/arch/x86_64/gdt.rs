//! Per-CPU GDT and TSS (with IST stacks for NMI, #DF and #MC), allocated
//! at boot for the CPUs that exist ([`alloc`]).
//!
//! Rebuilt by its CPU every time the CPU starts: `ltr` marks the TSS
//! descriptor busy, and a CPU brought back by hotplug must load it again,
//! which a busy descriptor would refuse (#GP).

use core::cell::UnsafeCell;

use shared::CpuId;
use x86_64::PrivilegeLevel;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::{lgdt, load_tss};
use x86_64::structures::DescriptorTablePointer;
use x86_64::structures::gdt::{Descriptor, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

use super::stacks;
use crate::kprintln;
use crate::mem::{self, OnceSlice, OutOfMemory, Zeroable};

/// Selector of the kernel code segment; interrupt gates use it.
pub const KERNEL_CODE_SELECTOR: u16 = 0x08;
const KERNEL_DATA_SELECTOR: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x18;

/// IST index (1-based in the IDT, 0-based in the TSS) of the NMI stack.
pub const IST_NMI: u16 = 0;
/// IST index of the double-fault stack.
pub const IST_DOUBLE_FAULT: u16 = 1;
/// IST index of the machine-check stack.
pub const IST_MACHINE_CHECK: u16 = 2;

/// One CPU's GDT (null, code, data, and the two words of the TSS
/// descriptor) and TSS.
#[repr(C, align(16))]
struct Tables {
    gdt: UnsafeCell<[u64; 5]>,
    tss: UnsafeCell<TaskStateSegment>,
}

// SAFETY: each CPU's tables are written and loaded only by that CPU, while
// it starts; other CPUs never touch them.
unsafe impl Sync for Tables {}

// SAFETY: a zero GDT is all null descriptors and a zero TSS has every
// field 0 (integers and addresses); both are rewritten before use.
unsafe impl Zeroable for Tables {}

static TABLES: OnceSlice<Tables> = OnceSlice::new();

/// Allocates the GDTs and TSSs of `cpus` CPUs (boot CPU, before its own
/// `init`, once).
pub fn alloc(cpus: u32) -> Result<(), OutOfMemory> {
    // Set once: a second call is a bug that leaves the first tables.
    let _ = TABLES.set(mem::alloc_zeroed(cpus as usize)?);
    Ok(())
}

fn raw(d: Descriptor) -> (u64, u64) {
    match d {
        Descriptor::UserSegment(v) => (v, 0),
        Descriptor::SystemSegment(lo, hi) => (lo, hi),
    }
}

/// Builds and loads `cpu`'s GDT and TSS, and reloads the segment
/// registers. Runs on `cpu` itself, every time it starts.
pub fn init(cpu: CpuId) {
    let Some(tables) = TABLES.at(cpu.index()) else {
        kprintln!("CPU {}: no GDT/TSS allocated; keeping the boot GDT", cpu);
        return;
    };
    let mut new_tss = TaskStateSegment::new();
    for slot in [IST_NMI, IST_DOUBLE_FAULT, IST_MACHINE_CHECK] {
        let top = stacks::ist_top(cpu, usize::from(slot)).unwrap_or(0);
        new_tss.interrupt_stack_table[usize::from(slot)] = VirtAddr::new(top);
    }
    // SAFETY: only this CPU uses its TSS, and it is not loaded in its TR
    // now (a starting CPU's TR is from INIT or the boot).
    unsafe { tables.tss.get().write(new_tss) };
    // SAFETY: just written; lives for ever (allocated at boot, never
    // freed); not written again while this CPU runs.
    let tss: &'static TaskStateSegment = unsafe { &*tables.tss.get() };
    let (tss_lo, tss_hi) = raw(Descriptor::tss_segment(tss));
    let entries = [
        0,
        raw(Descriptor::kernel_code_segment()).0,
        raw(Descriptor::kernel_data_segment()).0,
        tss_lo,
        tss_hi,
    ];
    let table = &tables.gdt;
    // SAFETY: only this CPU uses its table, and it is not loaded in GDTR
    // of any other CPU; a fresh TSS descriptor is "available", not busy.
    unsafe { table.get().write(entries) };
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<[u64; 5]>() - 1) as u16,
        base: VirtAddr::new(table.get() as u64),
    };
    // SAFETY: the table lives forever (allocated at boot, never freed) and
    // holds valid descriptors at the selectors loaded below.
    unsafe { lgdt(&ptr) };
    let code = SegmentSelector::new(KERNEL_CODE_SELECTOR / 8, PrivilegeLevel::Ring0);
    let data = SegmentSelector::new(KERNEL_DATA_SELECTOR / 8, PrivilegeLevel::Ring0);
    // SAFETY: `code` indexes the 64-bit code descriptor of the table just
    // loaded; the far return that reloads CS lands on the next instruction.
    unsafe { CS::set_reg(code) };
    // SAFETY: `data` indexes a writable data descriptor of that table.
    unsafe { SS::set_reg(data) };
    // SAFETY: as above.
    unsafe { DS::set_reg(data) };
    // SAFETY: as above.
    unsafe { ES::set_reg(data) };
    // SAFETY: the selector indexes an available 64-bit TSS descriptor of
    // that table, pointing at this CPU's TSS, which lives forever.
    unsafe {
        load_tss(SegmentSelector::new(
            TSS_SELECTOR / 8,
            PrivilegeLevel::Ring0,
        ))
    };
}
