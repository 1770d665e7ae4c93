//! Where the guest's trace rings go (`shared::trace`): the VMM reserves
//! one region above the guest's memory when tracing is on, tells the guest
//! in the boot information, boots the traced guest, and copies the region
//! out at the end of the run ([`TraceSnapshot`], in
//! [`crate::outcome::Outcome::trace`]). Reading the events is
//! `shared::trace::entries` on [`TraceSnapshot::ring`].

use shared::layout::MAX_MEM;
use shared::sizing::MIB;
use shared::trace;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::config::VmConfig;
use crate::error::{Error, Result};

/// The trace region of a VM: `cpus` rings of `ring_bytes` from `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRegion {
    /// Guest-physical base (ring of CPU `n` at `base + n * ring_bytes`).
    pub base: u64,
    /// Bytes of one CPU's ring (the VMM's own: never read back from the
    /// guest).
    pub ring_bytes: u64,
    /// Rings: one per vCPU.
    pub cpus: u32,
}

impl TraceRegion {
    /// Bytes of the whole region.
    pub fn bytes(&self) -> u64 {
        trace::region_bytes(self.ring_bytes, self.cpus)
    }
}

/// The ring size `config` asks for: `None` with tracing off; else
/// `trace_buf_kib`, the command line's `trace_buf=`, or the default.
pub fn ring_bytes(config: &VmConfig) -> Result<Option<u64>> {
    let cmd = trace::parse_cmdline(&config.cmdline).map_err(Error::TraceBuf)?;
    if !(config.trace_rings || cmd.on) {
        return Ok(None);
    }
    let kib = match config.trace_buf_kib {
        Some(k) => trace::check_ring_kib(u64::from(k)).map_err(Error::TraceBuf)?,
        None => cmd.kib(),
    };
    Ok(Some(trace::ring_bytes(kib)))
}

/// Places the rings above `mem_size` bytes of guest memory (MiB aligned):
/// the region and the memory size with it, or an error naming what it
/// needs when that is over the guest's limit.
pub fn place(config: &VmConfig, mem_size: u64) -> Result<(Option<TraceRegion>, u64)> {
    let Some(ring_bytes) = ring_bytes(config)? else {
        return Ok((None, mem_size));
    };
    let base = mem_size.div_ceil(MIB) * MIB;
    let region = TraceRegion {
        base,
        ring_bytes,
        cpus: config.cpus,
    };
    let total = base.saturating_add(region.bytes()).div_ceil(MIB) * MIB;
    if total > MAX_MEM {
        return Err(Error::TraceMemTooLarge {
            trace_mib: region.bytes().div_ceil(MIB),
            total_mib: total / MIB,
            max_mib: MAX_MEM / MIB,
        });
    }
    Ok((Some(region), total))
}

/// The trace region's bytes, copied out of guest memory at the end of a
/// run.
#[derive(Clone, Debug)]
pub struct TraceSnapshot {
    /// Where the rings were.
    pub region: TraceRegion,
    /// The region's bytes (`region.bytes()` of them).
    pub bytes: Vec<u8>,
}

impl TraceSnapshot {
    /// Copies `region` out of `mem`.
    pub fn take(mem: &GuestMemoryMmap, region: TraceRegion) -> Option<TraceSnapshot> {
        let mut bytes = vec![0u8; usize::try_from(region.bytes()).ok()?];
        mem.read_slice(&mut bytes, GuestAddress(region.base)).ok()?;
        Some(TraceSnapshot { region, bytes })
    }

    /// CPU `cpu`'s ring (empty past the last CPU), for
    /// `shared::trace::entries(ring, self.region.ring_bytes)`.
    pub fn ring(&self, cpu: u32) -> &[u8] {
        let rb = self.region.ring_bytes as usize;
        let start = (cpu as usize).saturating_mul(rb);
        self.bytes
            .get(start..start.saturating_add(rb))
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_above_memory_only_when_on() {
        let mut c = VmConfig::with_cpus(2);
        assert_eq!(place(&c, 64 * MIB).unwrap(), (None, 64 * MIB));
        c.cmdline = "trace_buf=1024".into();
        let (r, total) = place(&c, 64 * MIB).unwrap();
        let r = r.unwrap();
        assert_eq!((r.base, r.ring_bytes, r.cpus), (64 * MIB, MIB, 2));
        assert_eq!(total, 66 * MIB);
        c.cmdline.clear();
        c.trace_rings = true;
        let (r, _) = place(&c, 64 * MIB).unwrap();
        assert_eq!(r.unwrap().ring_bytes, 260 * 1024);
        c.trace_buf_kib = Some(trace::MAX_RING_KIB);
        c.cpus = 64;
        let msg = place(&c, 64 * MIB).unwrap_err().to_string();
        assert!(msg.contains("4096 MiB"), "{msg}");
        c.trace_buf_kib = Some(1);
        assert!(place(&c, 64 * MIB).is_err());
    }
}
