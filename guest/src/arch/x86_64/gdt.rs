//! Per-CPU GDT and TSS (with IST stacks for NMI, #DF and #MC).

use shared::{CpuId, MAX_CPUS};
use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

use super::stacks;

/// Selector of the kernel code segment (first entry after the null one);
/// interrupt gates use it.
pub const KERNEL_CODE_SELECTOR: u16 = 0x08;

/// IST index (1-based in the IDT, 0-based in the TSS) of the NMI stack.
pub const IST_NMI: u16 = 0;
/// IST index of the double-fault stack.
pub const IST_DOUBLE_FAULT: u16 = 1;
/// IST index of the machine-check stack.
pub const IST_MACHINE_CHECK: u16 = 2;

struct Gdt {
    table: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static TSS: [Once<TaskStateSegment>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];
static GDT: [Once<Gdt>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];

/// Builds and loads `cpu`'s GDT and TSS, and reloads the segment
/// registers. Runs on `cpu` itself.
pub fn init(cpu: CpuId) {
    let i = cpu.index() % MAX_CPUS;
    let tss = TSS[i].call_once(|| {
        let mut tss = TaskStateSegment::new();
        for slot in [IST_NMI, IST_DOUBLE_FAULT, IST_MACHINE_CHECK] {
            tss.interrupt_stack_table[usize::from(slot)] =
                VirtAddr::new(stacks::ist_top(cpu, usize::from(slot)));
        }
        tss
    });
    let gdt = GDT[i].call_once(|| {
        let mut table = GlobalDescriptorTable::new();
        let code = table.append(Descriptor::kernel_code_segment());
        let data = table.append(Descriptor::kernel_data_segment());
        let tss = table.append(Descriptor::tss_segment(tss));
        Gdt {
            table,
            code,
            data,
            tss,
        }
    });
    debug_assert_eq!(gdt.code.0, KERNEL_CODE_SELECTOR);
    gdt.table.load();
    // SAFETY: `code` indexes the 64-bit code descriptor of the table just
    // loaded; the far return that reloads CS lands on the next instruction.
    unsafe { CS::set_reg(gdt.code) };
    // SAFETY: `data` indexes a writable data descriptor of that table.
    unsafe { SS::set_reg(gdt.data) };
    // SAFETY: as above.
    unsafe { DS::set_reg(gdt.data) };
    // SAFETY: as above.
    unsafe { ES::set_reg(gdt.data) };
    // SAFETY: `tss` indexes an available 64-bit TSS descriptor of that
    // table, pointing at this CPU's TSS, which lives forever.
    unsafe { load_tss(gdt.tss) };
}
