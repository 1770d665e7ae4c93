//! How many vCPUs and how much memory a VM may have here: the CPU limit is
//! the smallest of this host's KVM (`KVM_CAP_MAX_VCPUS`, and APIC ids
//! `cpu * --apic-stride` below `KVM_CAP_MAX_VCPU_ID`) and the guest's
//! (`shared::MAX_CPUS`), named in the refusal; the memory a CPU count needs
//! comes from `shared::sizing`, and the default `--mem` grows with it.

use std::fmt;

use kvm_ioctls::Kvm;
use shared::MAX_CPUS;
use shared::sizing::{self, MIB};

use crate::config::VmConfig;
use crate::error::{Error, Result};

/// Whose limit on the vCPU count applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuLimitSource {
    /// This host's `KVM_CAP_MAX_VCPUS`.
    KvmMaxVcpus,
    /// This host's `KVM_CAP_MAX_VCPU_ID` (APIC ids must be below it), with
    /// this APIC id stride.
    KvmMaxVcpuId {
        /// `KVM_CAP_MAX_VCPU_ID`.
        max_id: u32,
        /// `--apic-stride`.
        stride: u32,
    },
    /// The guest's `shared::MAX_CPUS`.
    Guest,
}

/// The most vCPUs a VM may have here, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuLimit {
    /// The most vCPUs.
    pub max: u32,
    /// Whose limit it is.
    pub source: CpuLimitSource,
}

impl fmt::Display for CpuLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = self.max;
        match self.source {
            CpuLimitSource::KvmMaxVcpus => write!(
                f,
                "this host's KVM allows at most {max} vCPUs (KVM_CAP_MAX_VCPUS)"
            ),
            CpuLimitSource::KvmMaxVcpuId { max_id, stride } => write!(
                f,
                "this host's KVM allows APIC ids below {max_id} (KVM_CAP_MAX_VCPU_ID), \
                 so at most {max} vCPUs with --apic-stride {stride}"
            ),
            CpuLimitSource::Guest => write!(
                f,
                "the guest supports at most {max} CPUs (shared::MAX_CPUS)"
            ),
        }
    }
}

impl CpuLimit {
    /// The guest's own limit.
    pub fn guest() -> CpuLimit {
        CpuLimit {
            max: u32::try_from(MAX_CPUS).unwrap_or(u32::MAX),
            source: CpuLimitSource::Guest,
        }
    }

    /// The smallest of KVM's `max_vcpus`, the CPUs whose APIC ids
    /// (`cpu * stride`) stay below `max_vcpu_id`, and the guest's limit;
    /// on a tie KVM's is named.
    pub fn of(max_vcpus: u32, max_vcpu_id: u32, stride: u32) -> CpuLimit {
        let stride = stride.max(1);
        let by_id = CpuLimit {
            // CPU n has APIC id n * stride: ids 0, s, ..., (max-1)*s < max_id.
            max: max_vcpu_id.div_ceil(stride),
            source: CpuLimitSource::KvmMaxVcpuId {
                max_id: max_vcpu_id,
                stride,
            },
        };
        let kvm = CpuLimit {
            max: max_vcpus,
            source: CpuLimitSource::KvmMaxVcpus,
        };
        // The guest's first: on a tie it is named, as by the config check
        // (`VmConfig::validate`) that runs before KVM is opened.
        [CpuLimit::guest(), kvm, by_id]
            .into_iter()
            .min_by_key(|l| l.max)
            .unwrap_or(kvm)
    }

    /// This host's limit for `stride`, from `kvm`'s capabilities.
    pub fn host(kvm: &Kvm, stride: u32) -> CpuLimit {
        let caps = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        CpuLimit::of(
            caps(kvm.get_max_vcpus()),
            caps(kvm.get_max_vcpu_id()),
            stride,
        )
    }

    /// Refuses `cpus` above the limit.
    pub fn check(self, cpus: u32) -> Result<()> {
        if cpus > self.max {
            return Err(Error::TooManyCpus {
                requested: cpus,
                limit: self,
            });
        }
        Ok(())
    }
}

/// The guest memory size in bytes for `config` with a kernel image ending
/// at `image_end`: `--mem`, or without it the default for the CPU count
/// ([`sizing::default_mem`]), if it is enough for the image and the CPUs;
/// else an error naming what is needed.
pub fn mem_size(config: &VmConfig, image_end: u64) -> Result<u64> {
    let need = sizing::mem_needed(image_end, config.cpus);
    let size = config
        .mem_mib
        .map_or(sizing::default_mem(config.cpus), |m| m.saturating_mul(MIB));
    let mib = size / MIB;
    if size < need {
        return Err(Error::MemTooSmall {
            mib,
            cpus: config.cpus,
            min_mib: need / MIB,
        });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_limit_is_named() {
        let guest = MAX_CPUS as u32;
        let l = CpuLimit::of(1024, 4096, 1);
        assert_eq!(l.max, guest.min(1024));
        // A tie names the guest.
        if guest > 1024 {
            assert_eq!(l.source, CpuLimitSource::KvmMaxVcpus);
        } else {
            assert_eq!(l.source, CpuLimitSource::Guest);
        }
        let l = CpuLimit::of(1, 4096, 1);
        assert_eq!((l.max, l.source), (1, CpuLimitSource::KvmMaxVcpus));
        assert_eq!(
            l.check(2).unwrap_err().to_string(),
            "--cpus 2: this host's KVM allows at most 1 vCPUs (KVM_CAP_MAX_VCPUS)"
        );
        // Ids 0, 16, ..., 16 * 3 = 48 < 50: four CPUs with stride 16.
        let l = CpuLimit::of(1024, 50, 16);
        assert_eq!(l.max, 4.min(guest));
        assert!(l.check(4).is_ok() && l.check(5).is_err());
        let msg = l.check(5).unwrap_err().to_string();
        assert!(msg.contains("KVM_CAP_MAX_VCPU_ID") && msg.contains("--apic-stride 16"));
        assert!(!msg.contains('\n'));
        let msg = CpuLimit::guest().check(guest + 1).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("--cpus {}: ", guest + 1)), "{msg}");
        assert!(msg.contains("shared::MAX_CPUS"), "{msg}");
    }

    #[test]
    fn memory_follows_the_cpu_count() {
        let image = 4 * MIB;
        let c = VmConfig::with_cpus(1024);
        let size = mem_size(&c, image).unwrap();
        assert_eq!(size, sizing::default_mem(1024));
        assert!(size >= sizing::mem_needed(image, 1024));
        let need = sizing::mem_needed(image, 1024) / MIB;
        let c = VmConfig {
            mem_mib: Some(64),
            ..VmConfig::with_cpus(1024)
        };
        let msg = mem_size(&c, image).unwrap_err().to_string();
        assert!(msg.contains(&format!("at least {need} MiB")), "{msg}");
        assert!(msg.contains("1024 CPUs"), "{msg}");
        let c = VmConfig {
            mem_mib: Some(64),
            ..VmConfig::with_cpus(2)
        };
        assert_eq!(mem_size(&c, image).unwrap(), 64 * MIB);
    }
}
