//! The machine's smp call state: one [`Smp`] over the x86 arch value,
//! which every part of the kernel and the scenarios call through.

use crate::arch::x86_64::ipi::IpiDelivery;
use crate::arch::x86_64::smp_arch::X86;
use crate::smp::Smp;

/// The machine's smp call state.
pub static SMP: Smp<X86> = Smp::new(X86::new());

/// The IPI delivery modes of the arch value in [`SMP`].
#[inline(always)]
pub fn ipi() -> &'static IpiDelivery {
    SMP.arch().ipi()
}
