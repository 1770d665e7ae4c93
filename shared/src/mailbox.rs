//! Requests from the host to the guest, in the page at
//! [`crate::layout::HOST_MAILBOX`].
//!
//! The guest sets `ready` once it takes requests; before that the host
//! waits. One request at a time. The host writes `op` and `cpu`, then increments
//! `seq`, then injects [`crate::vectors::HOST_REQUEST`] into the boot CPU
//! (an MSI to its APIC id). The guest handles it — an offline request is
//! finished by the outgoing CPU itself — writes `result` (and the stats for
//! [`Op::Stats`]), then sets `ack = seq`. The host treats everything it
//! reads back as untrusted.

use crate::layout::HOST_STATS;

wire_enum! {
    /// What the host asks.
    pub enum Op: u32 {
        /// Take `cpu` offline (finished by that CPU itself).
        Offline = 1,
        /// Bring `cpu` online.
        Online = 2,
        /// Fill in [`Mailbox::stats`].
        Stats = 3,
        /// End a scenario that waits for the host (`run=wait`).
        Finish = 4,
    }
}

/// The CPU number that receives every request interrupt.
pub const HANDLER_CPU: u32 = 0;

/// Results in [`Mailbox::result`] (negative errno, as Linux's cpu_up/down).
pub mod result {
    /// Done.
    pub const OK: i32 = 0;
    /// Not a CPU that can do this (invalid, not present, the boot CPU).
    pub const EINVAL: i32 = -22;
    /// Already in the requested state.
    pub const EALREADY: i32 = -114;
    /// The CPU could not be brought up or down (timeout, prepare failed).
    pub const EIO: i32 = -5;
    /// The last online CPU cannot go offline.
    pub const EBUSY: i32 = -16;
    /// Unknown request.
    pub const ENOSYS: i32 = -38;
}

/// One CPU's counters, as the guest reports them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStatsWire {
    /// 1 if online.
    pub online: u64,
    /// IPIs sent (call-function IPIs and irq_work self-IPIs).
    pub ipi_sent: u64,
    /// Kicks taken that found calls queued: call-function IPIs and polling
    /// wake-ups (an IPI whose calls had already run counts nothing).
    pub ipi_received: u64,
    /// Callbacks run from its call queue and irq_work list (counted as each
    /// starts).
    pub callbacks_run: u64,
    /// Calls it queued to some CPU.
    pub calls_queued: u64,
}

/// The mailbox page.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Mailbox {
    /// [`READY`] once the guest takes requests (an interrupt to a CPU
    /// whose APIC is not yet enabled would be dropped). Written by the guest.
    pub ready: u32,
    /// Request number, written last by the host.
    pub seq: u32,
    /// The `seq` the guest last finished, written last by the guest.
    pub ack: u32,
    /// [`Op`] as a number.
    pub op: u32,
    /// Target CPU number.
    pub cpu: u32,
    /// Negative errno or 0, see [`result`].
    pub result: i32,
    /// Number of valid [`CpuStatsWire`] entries at
    /// [`crate::layout::HOST_STATS`] (at most [`STATS_CAPACITY`]).
    pub nr_stats: u32,
    /// Zero.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Mailbox>() as u64 <= crate::layout::HOST_MAILBOX.size);
const _: () = assert!(core::mem::size_of::<Mailbox>() == 32);

/// Bytes of a [`CpuStatsWire`].
pub const STATS_ENTRY_SIZE: u64 = core::mem::size_of::<CpuStatsWire>() as u64;

/// [`CpuStatsWire`] entries the [`crate::layout::HOST_STATS`] region holds.
pub const STATS_CAPACITY: usize = (HOST_STATS.size / STATS_ENTRY_SIZE) as usize;

const _: () = assert!(STATS_CAPACITY >= crate::NR_CPUS);

/// Guest-physical address of statistics entry `i`, if the region holds it.
pub const fn stats_entry(i: usize) -> Option<u64> {
    if i < STATS_CAPACITY {
        Some(HOST_STATS.start.0 + i as u64 * STATS_ENTRY_SIZE)
    } else {
        None
    }
}

/// [`Mailbox::ready`] when the guest takes requests.
pub const READY: u32 = 0x5245_4459;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip() {
        for op in [Op::Offline, Op::Online, Op::Stats, Op::Finish] {
            assert_eq!(Op::try_from(op as u32), Ok(op));
        }
        assert_eq!(Op::try_from(0), Err(0));
    }
}
