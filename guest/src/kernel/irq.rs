//! The kernel's interrupt handlers, installed in the arch's handler slots
//! at boot. Scenarios swap in their own through the slots' setters
//! (`interrupts::set_call_function`, `interrupts::set_bench_ping`).

use core::sync::atomic::Ordering;

use super::machine::SMP;
use super::{host_requests, trap};
use crate::arch::x86_64::interrupts::Handlers;
use crate::arch::x86_64::{percpu, x2apic};
use crate::kprintln;

/// The interrupt handlers every CPU takes.
pub fn handlers() -> Handlers {
    Handlers {
        exception: trap::exception,
        call_function,
        irq_work,
        host_request,
        bench_ping: eoi_only,
        wake: eoi_only,
        apic_error,
    }
}

/// CALL_FUNCTION and CALL_FUNCTION_SINGLE: both drain the same queue.
/// The torture swaps in a counting handler while it runs, so the hook
/// costs nothing here.
pub extern "C" fn call_function() {
    x2apic::eoi();
    SMP.run_call_queue_irqs_off();
}

extern "C" fn host_request() {
    host_requests::host_request();
}

extern "C" fn irq_work() {
    x2apic::eoi();
    SMP.irq_work_run();
}

/// A wake-up (and the bench ping until the benchmark installs its own):
/// the interrupt itself was the point.
pub extern "C" fn eoi_only() {
    x2apic::eoi();
}

extern "C" fn apic_error() {
    let esr = x2apic::read_error();
    // Relaxed: a statistic.
    percpu::this().apic_errors.fetch_add(1, Ordering::Relaxed);
    x2apic::eoi();
    kprintln!("APIC error {esr:#x}");
}
