//! Boot-time choice of the IPI delivery and idle modes (`ipi=`, `idle=`):
//! sets up the arch's IPI delivery, probes KVM's PV send-IPI hypercall
//! (under the #UD fixup and the probe timer, see `arch::x86_64::hypercall`) when
//! it is asked for, and says on the console what it chose when that
//! differs from what was asked.

use shared::bench::{IdleMode, IpiMode};

use super::machine::ipi;
use crate::arch::x86_64::ipi::PvStatus;
use crate::kprintln;
use crate::params::BootParams;

/// Sets the modes up for `cpus` present CPUs; boot CPU, before any AP
/// starts.
pub fn setup(params: &BootParams<'_>, cpus: u32) {
    let mode = ipi().init(params.ipi, params.idle, cpus);
    if params.ipi == IpiMode::Pv && mode != IpiMode::Pv {
        kprintln!("ipi=pv: {}; using ipi=phys", pv_problem(ipi().pv_status()));
    }
    if mode != IpiMode::Phys || params.idle != IdleMode::Halt {
        kprintln!("ipi={} idle={}", mode.name(), params.idle.name());
    }
}

/// Probes the PV send-IPI hypercall if nobody has yet (boot CPU).
pub fn probe_pv() -> PvStatus {
    ipi().probe_pv()
}

/// Why the PV send-IPI hypercall is not used, in words.
pub fn pv_problem(s: PvStatus) -> &'static str {
    match s {
        PvStatus::NotProbed => "the PV send-IPI hypercall was not probed",
        PvStatus::NotAdvertised => "KVM does not advertise PV send-IPI in CPUID",
        PvStatus::Faulted => "KVM advertises PV send-IPI, but the hypercall raised #UD here",
        PvStatus::Hung => {
            "KVM advertises PV send-IPI, but the hypercall never completed here \
             (the probe timer had to rescue it)"
        }
        PvStatus::Refused => "KVM advertises PV send-IPI, but the hypercall returned an error",
        PvStatus::Usable => "the PV send-IPI hypercall works",
    }
}
