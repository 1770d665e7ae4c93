//! The contract between the smpcall VMM and its guest.
//!
//! Everything both sides must agree on lives here and nowhere else: the
//! guest-physical memory layout, the boot information block, the I/O ports of
//! the host/guest protocol and the records sent over them, interrupt vectors,
//! and exit codes. The crate is `no_std` so the guest can use it.
//!
//! Everything the guest writes is untrusted input for the host: every decoder
//! here checks bounds and returns an error instead of panicking.
#![no_std]
#![deny(missing_docs)]

#[cfg(test)]
extern crate std;

#[macro_use]
mod wire_enum;
#[macro_use]
mod wire_record;

pub mod apic;
pub mod bench;
pub mod bootinfo;
pub mod cmdline;
pub mod ids;
pub mod layout;
pub mod mailbox;
pub mod percpu_window;
pub mod ports;
pub mod record;
pub mod scenario;
pub mod sizing;
pub mod status;
pub mod trace;
pub mod vectors;
pub mod wire;

pub use ids::{ApicId, CpuId};
pub use scenario::Scenario;

/// Version of the host/guest protocol. Bump on every change to the layout,
/// the boot information block, the ports or the record formats.
pub const PROTOCOL_VERSION: u32 = 10;

/// Most CPUs the guest supports: its per-CPU tables
/// ([`percpu_window`]) have this many slots.
pub const MAX_CPUS: usize = 1024;

/// The guest kernel's compile-time CPU limit (Linux's `NR_CPUS`): CPU masks
/// are this many bits wide, and no CPU number reaches it. KVM allows up to
/// 4096 vCPU ids; Linux's x86 MAXSMP ceiling is 8192.
pub const NR_CPUS: usize = 4096;

const _: () = assert!(MAX_CPUS <= NR_CPUS && NR_CPUS.is_multiple_of(64));

/// One step of Marsaglia's xorshift64 (shifts 13, 7, 17): advances `state`
/// and returns the new value. Cheap deterministic pseudo-random numbers for
/// test sweeps; `state` must not be 0.
pub const fn xorshift64(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
