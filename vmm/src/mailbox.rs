//! The host's side of the request mailbox ([`shared::mailbox`]): post one
//! request, interrupt the guest's handler CPU with an MSI, wait for the
//! acknowledgement with a deadline, read back the (untrusted) answer.

use std::mem::offset_of;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::kvm_msi;
use kvm_ioctls::VmFd;
use shared::ApicId;
use shared::layout::{HOST_MAILBOX, MSI_ADDRESS_BASE};
use shared::mailbox::{CpuStatsWire, Mailbox, Op, READY, STATS_CAPACITY, stats_entry};
use shared::vectors::HOST_REQUEST;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::memory::Plain;

/// Why a request got no answer.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The guest did not acknowledge in time.
    #[error("the guest did not answer within {0:?}")]
    Timeout(Duration),
    /// The guest never said it takes requests.
    #[error("the guest was not ready for requests within {0:?}")]
    NotReady(Duration),
    /// The VM is shutting down.
    #[error("the VM has stopped")]
    Stopped,
    /// Injecting the interrupt failed.
    #[error("KVM_SIGNAL_MSI to APIC id {apic} failed: {error}")]
    Inject {
        /// Destination.
        apic: u32,
        /// The errno text.
        error: String,
    },
    /// Reading or writing the mailbox failed.
    #[error("mailbox access failed: {0}")]
    Memory(String),
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// 0 or a negative errno.
    pub result: i32,
    /// Per-CPU counters (only for [`Op::Stats`]).
    pub stats: Vec<CpuStatsWire>,
}

/// The request channel into one running guest.
pub struct Channel {
    mem: Arc<GuestMemoryMmap>,
    vm: Arc<VmFd>,
    handler: ApicId,
    seq: Mutex<u32>,
    stopped: Box<dyn Fn() -> bool + Send + Sync>,
}

fn field(offset: usize) -> GuestAddress {
    GuestAddress(HOST_MAILBOX.start.0 + offset as u64)
}

fn read_u32(mem: &GuestMemoryMmap, offset: usize) -> Result<u32, RequestError> {
    mem.read_obj(field(offset))
        .map_err(|e| RequestError::Memory(e.to_string()))
}

/// Whether the guest takes requests (its `ready` word is [`READY`]).
pub fn guest_ready(mem: &GuestMemoryMmap) -> Result<bool, RequestError> {
    read_u32(mem, offset_of!(Mailbox, ready)).map(|v| v == READY)
}

/// The MSI that delivers `data` to APIC `apic`.
pub fn msi(apic: ApicId, data: u32) -> kvm_msi {
    kvm_msi {
        address_lo: (MSI_ADDRESS_BASE as u32) | ((apic.0 & 0xff) << 12),
        address_hi: apic.0 & 0xffff_ff00,
        data,
        ..Default::default()
    }
}

impl Channel {
    /// A channel whose requests interrupt the CPU with APIC id `handler`;
    /// `stopped` tells when to give up waiting.
    pub fn new(
        mem: Arc<GuestMemoryMmap>,
        vm: Arc<VmFd>,
        handler: ApicId,
        stopped: Box<dyn Fn() -> bool + Send + Sync>,
    ) -> Self {
        Channel {
            mem,
            vm,
            handler,
            seq: Mutex::new(0),
            stopped,
        }
    }

    fn write_u32(&self, offset: usize, v: u32) -> Result<(), RequestError> {
        self.mem
            .write_obj(v, field(offset))
            .map_err(|e| RequestError::Memory(e.to_string()))
    }

    fn inject(&self) -> Result<(), RequestError> {
        self.vm
            .signal_msi(msi(self.handler, u32::from(HOST_REQUEST.0)))
            .map(|_| ())
            .map_err(|e| RequestError::Inject {
                apic: self.handler.0,
                error: e.to_string(),
            })
    }

    /// Posts `op` for `cpu` and waits up to `timeout` for the answer.
    pub fn request(&self, op: Op, cpu: u32, timeout: Duration) -> Result<Reply, RequestError> {
        let mut seq = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + timeout;
        while !guest_ready(&self.mem)? {
            if (self.stopped)() {
                return Err(RequestError::Stopped);
            }
            if Instant::now() >= deadline {
                return Err(RequestError::NotReady(timeout));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        *seq = seq.wrapping_add(1).max(1);
        self.write_u32(offset_of!(Mailbox, op), op as u32)?;
        self.write_u32(offset_of!(Mailbox, cpu), cpu)?;
        self.write_u32(offset_of!(Mailbox, nr_stats), 0)?;
        // Stores to guest memory are ordered on x86, and the fence keeps
        // the compiler from sinking the fields below `seq`.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.write_u32(offset_of!(Mailbox, seq), *seq)?;
        self.inject()?;
        let mut reinjected = false;
        loop {
            if read_u32(&self.mem, offset_of!(Mailbox, ack))? == *seq {
                break;
            }
            if (self.stopped)() {
                return Err(RequestError::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RequestError::Timeout(timeout));
            }
            // The handler CPU may have had interrupts off for long; one
            // more interrupt halfway costs nothing (the guest ignores a
            // request it has already answered).
            if !reinjected && deadline - now < timeout / 2 {
                reinjected = true;
                self.inject()?;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        read_reply(&self.mem, op)
    }
}

/// Reads the guest's answer to `op` from the mailbox page. Everything in it
/// is untrusted: the stats count is capped at [`STATS_CAPACITY`] (the
/// entries the stats region holds).
pub fn read_reply(mem: &GuestMemoryMmap, op: Op) -> Result<Reply, RequestError> {
    let result = read_u32(mem, offset_of!(Mailbox, result))? as i32;
    let mut stats = Vec::new();
    if op == Op::Stats {
        let n = (read_u32(mem, offset_of!(Mailbox, nr_stats))? as usize).min(STATS_CAPACITY);
        for at in (0..n).filter_map(stats_entry) {
            let s: Plain<CpuStatsWire> = mem
                .read_obj(GuestAddress(at))
                .map_err(|e| RequestError::Memory(e.to_string()))?;
            stats.push(s.0);
        }
    }
    Ok(Reply { result, stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msi_addresses_the_apic() {
        let m = msi(ApicId(0x1_0203), 0xfc);
        assert_eq!(m.address_lo, 0xfee0_3000);
        assert_eq!(m.address_hi, 0x1_0200);
        assert_eq!(m.data, 0xfc);
    }

    #[test]
    fn ready_is_read_from_the_mailbox() {
        let mem = crate::memory::create(HOST_MAILBOX.start.0 + (1 << 20)).unwrap();
        assert!(!guest_ready(&mem).unwrap());
        mem.write_obj(READY, field(offset_of!(Mailbox, ready)))
            .unwrap();
        assert!(guest_ready(&mem).unwrap());
        let small = crate::memory::create(4096).unwrap();
        assert!(guest_ready(&small).is_err());
    }
}
