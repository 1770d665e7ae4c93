//! Per-CPU GDT and TSS (with IST stacks for NMI, #DF and #MC).
//!
//! Rebuilt by its CPU every time the CPU starts: `ltr` marks the TSS
//! descriptor busy, and a CPU brought back by hotplug must load it again,
//! which a busy descriptor would refuse (#GP).

use core::cell::UnsafeCell;

use shared::{CpuId, MAX_CPUS};
use spin::Once;
use x86_64::PrivilegeLevel;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::{lgdt, load_tss};
use x86_64::structures::DescriptorTablePointer;
use x86_64::structures::gdt::{Descriptor, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

use super::stacks;

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

/// Null, code, data, and the two words of the TSS descriptor.
#[repr(C, align(16))]
struct Table(UnsafeCell<[u64; 5]>);

// SAFETY: each table is written and loaded only by the CPU it belongs to,
// while it starts; other CPUs never touch it.
unsafe impl Sync for Table {}

static TSS: [Once<TaskStateSegment>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];
static GDT: [Table; MAX_CPUS] = [const { Table(UnsafeCell::new([0; 5])) }; MAX_CPUS];

fn raw(d: Descriptor) -> (u64, u64) {
    match d {
        Descriptor::UserSegment(v) => (v, 0),
        Descriptor::SystemSegment(lo, hi) => (lo, hi),
    }
}

/// Builds and loads `cpu`'s GDT and TSS, and reloads the segment
/// registers. Runs on `cpu` itself, every time it starts.
pub fn init(cpu: CpuId) {
    let i = cpu.index() % MAX_CPUS;
    let tss: &'static TaskStateSegment = TSS[i].call_once(|| {
        let mut tss = TaskStateSegment::new();
        for slot in [IST_NMI, IST_DOUBLE_FAULT, IST_MACHINE_CHECK] {
            tss.interrupt_stack_table[usize::from(slot)] =
                VirtAddr::new(stacks::ist_top(cpu, usize::from(slot)));
        }
        tss
    });
    let (tss_lo, tss_hi) = raw(Descriptor::tss_segment(tss));
    let entries = [
        0,
        raw(Descriptor::kernel_code_segment()).0,
        raw(Descriptor::kernel_data_segment()).0,
        tss_lo,
        tss_hi,
    ];
    let table = &GDT[i];
    // SAFETY: only this CPU uses its table, and it is not loaded in GDTR
    // of any other CPU; a fresh TSS descriptor is "available", not busy.
    unsafe { table.0.get().write(entries) };
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<[u64; 5]>() - 1) as u16,
        base: VirtAddr::new(table.0.get() as u64),
    };
    // SAFETY: the table is a static that lives forever and holds valid
    // descriptors at the selectors loaded below.
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
