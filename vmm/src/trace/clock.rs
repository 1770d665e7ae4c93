//! One timeline for guest and VMM: the guest's TSC converted to the VMM's
//! `CLOCK_BOOTTIME` (Perfetto's default trace clock) by one calibration.
//!
//! Before any vCPU runs, the VMM reads the guest TSC of vCPU 0 with
//! `KVM_GET_MSRS` (`IA32_TSC`, Documentation/virt/kvm/api.rst §4.18) and
//! `CLOCK_BOOTTIME` right after, and the guest TSC's rate with
//! `KVM_GET_TSC_KHZ` (§4.56). KVM keeps the vCPUs' TSCs in step (they are
//! created together and the guest never writes its TSC), so one point and
//! the rate convert every guest timestamp:
//! `ns = boottime + (tsc - tsc0) * 10^6 / khz`.

use kvm_bindings::{Msrs, kvm_msr_entry};
use kvm_ioctls::VcpuFd;

/// `IA32_TSC` (Intel SDM vol. 4, table 2-2).
const MSR_IA32_TSC: u32 = 0x10;

/// A guest TSC reading and the `CLOCK_BOOTTIME` of the same moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Calibration {
    /// The guest TSC.
    pub tsc: u64,
    /// `CLOCK_BOOTTIME` in ns, read right after.
    pub boottime_ns: u64,
    /// The guest TSC's rate in kHz (never 0).
    pub tsc_khz: u32,
}

/// `CLOCK_BOOTTIME` now, in ns (0 if the clock cannot be read).
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call writes only it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nsec = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

impl Calibration {
    /// Reads vCPU `vcpu`'s TSC and the clock; `None` when KVM gives no
    /// TSC rate or the MSR read fails (the trace then has no guest
    /// timeline in ns: see [`Calibration::to_ns`]).
    pub fn read(vcpu: &VcpuFd, tsc_khz: u32) -> Option<Calibration> {
        if tsc_khz == 0 {
            return None;
        }
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_IA32_TSC,
            ..Default::default()
        }])
        .ok()?;
        let n = vcpu.get_msrs(&mut msrs).ok()?;
        let boottime_ns = boottime_ns();
        let tsc = msrs.as_slice().first()?.data;
        (n == 1 && boottime_ns != 0).then_some(Calibration {
            tsc,
            boottime_ns,
            tsc_khz,
        })
    }

    /// A guest TSC value on the VMM's clock, in ns (saturating: a TSC
    /// from before the calibration never goes below 0).
    pub fn to_ns(&self, tsc: u64) -> u64 {
        let delta = i128::from(tsc) - i128::from(self.tsc);
        let ns = delta * 1_000_000 / i128::from(self.tsc_khz.max(1));
        let t = i128::from(self.boottime_ns) + ns;
        u64::try_from(t.max(0)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_tsc_to_boottime_ns() {
        let c = Calibration {
            tsc: 1_000_000,
            boottime_ns: 5_000_000_000,
            tsc_khz: 2_000_000, // 2 GHz: 2 ticks a ns
        };
        assert_eq!(c.to_ns(1_000_000), 5_000_000_000);
        assert_eq!(c.to_ns(3_000_000), 5_001_000_000);
        assert_eq!(c.to_ns(0), 4_999_500_000);
        assert_eq!(
            c.to_ns(u64::MAX),
            5_000_000_000 + (u64::MAX - 1_000_000) / 2
        );
        let early = Calibration {
            boottime_ns: 10,
            ..c
        };
        assert_eq!(early.to_ns(0), 0, "saturates at 0");
    }

    #[test]
    fn boottime_moves_forward() {
        let a = boottime_ns();
        let b = boottime_ns();
        assert!(a > 0 && b >= a);
    }
}
