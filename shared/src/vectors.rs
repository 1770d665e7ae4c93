//! Interrupt vectors, defined once for the guest's IDT and the host's
//! injections. The call-function vectors are Linux's.

/// An interrupt vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vector(pub u8);

/// Invalid opcode (#UD): a probed instruction the host does not support.
pub const INVALID_OPCODE: Vector = Vector(6);
/// Page fault (#PF): CR2 holds the faulting address.
pub const PAGE_FAULT: Vector = Vector(14);
/// First vector that is not a CPU exception.
pub const FIRST_EXTERNAL: Vector = Vector(32);
/// A request from the VMM is waiting in the host mailbox (injected by the
/// VMM with `KVM_SIGNAL_MSI`).
pub const HOST_REQUEST: Vector = Vector(0xF0);
/// Raw IPI used by the benchmark's ping-pong (no smp call layer).
pub const BENCH_PING: Vector = Vector(0xF1);
/// One-shot LAPIC timer that rescues a hypercall probe the hypervisor
/// never completes (some hosts neither run nor refuse the instruction).
pub const PROBE_TIMER: Vector = Vector(0xF2);
/// irq_work self-interrupt (Linux `IRQ_WORK_VECTOR`).
pub const IRQ_WORK: Vector = Vector(0xF6);
/// Wakes a CPU to look at its flags (Linux's `RESCHEDULE_VECTOR`).
pub const WAKE: Vector = Vector(0xFD);
/// Call-function-single IPI (Linux `CALL_FUNCTION_SINGLE_VECTOR`).
pub const CALL_FUNCTION_SINGLE: Vector = Vector(0xFB);
/// Call-function IPI for masks (Linux `CALL_FUNCTION_VECTOR`).
pub const CALL_FUNCTION: Vector = Vector(0xFC);
/// Local APIC error interrupt.
pub const APIC_ERROR: Vector = Vector(0xFE);
/// Local APIC spurious interrupt.
pub const SPURIOUS: Vector = Vector(0xFF);

/// Name of a CPU exception vector, for reports.
pub fn exception_name(vector: u8) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE divide error",
        "#DB debug",
        "NMI",
        "#BP breakpoint",
        "#OF overflow",
        "#BR bound range",
        "#UD invalid opcode",
        "#NM device not available",
        "#DF double fault",
        "coprocessor segment overrun",
        "#TS invalid TSS",
        "#NP segment not present",
        "#SS stack fault",
        "#GP general protection",
        "#PF page fault",
        "reserved",
        "#MF x87 error",
        "#AC alignment check",
        "#MC machine check",
        "#XM SIMD error",
        "#VE virtualization",
        "#CP control protection",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "#HV hypervisor injection",
        "#VC VMM communication",
        "#SX security",
        "reserved",
    ];
    NAMES
        .get(usize::from(vector))
        .copied()
        .unwrap_or("external interrupt")
}

/// Whether the CPU pushes an error code for this exception vector.
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_error_codes() {
        assert_eq!(exception_name(14), "#PF page fault");
        assert_eq!(exception_name(200), "external interrupt");
        assert!(has_error_code(13) && has_error_code(8) && !has_error_code(6));
    }

    #[test]
    fn vectors_are_external_and_distinct() {
        let v = [
            HOST_REQUEST,
            BENCH_PING,
            PROBE_TIMER,
            IRQ_WORK,
            CALL_FUNCTION_SINGLE,
            CALL_FUNCTION,
            WAKE,
            APIC_ERROR,
            SPURIOUS,
        ];
        for (i, a) in v.iter().enumerate() {
            assert!(*a >= FIRST_EXTERNAL);
            for b in &v[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
