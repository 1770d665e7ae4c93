//! Linux's SMP cross-call core (`kernel/smp.c`), generic over [`Arch`].
//!
//! One [`Smp`] value is a whole machine's cross-call state: per-CPU call
//! queues (lock-free `llist`s, each on its own cache line), per-CPU csds, the
//! per-(caller, target) csds of multi-CPU calls, irq_work lists, the
//! possible / present / online masks, per-CPU counters and the csd-lock
//! stall detector. The guest keeps it in a `static`; the host tests run it
//! with threads as CPUs.
//!
//! The machine's state is [`Smp`] (`state.rs`); its operations are `impl`
//! blocks by topic: calls (`call.rs`), the flush of a CPU's queue
//! (`flush.rs`), irq_work, the csd-lock stall detector (`stall.rs`), the
//! CPU masks (`cpus.rs`), the hotplug steps (`cpuhp.rs`), counters
//! (`stats.rs`). The API's types are in `api.rs`.
//!
//! How a call travels (see `call.rs`, `flush.rs`):
//! 1. the caller locks a csd (on its stack when it waits, else a per-CPU
//!    one), fills in `func`/`info`, and adds it to the target's queue;
//! 2. only if that queue was empty does it send an IPI;
//! 3. the target's IPI handler takes the whole queue, runs the waited-for
//!    (SYNC) calls first, then the others, then irq_work, unlocking each csd
//!    before (ASYNC) or after (SYNC) its function;
//! 4. a waiting caller spins until its csd is unlocked; if that takes longer
//!    than the stall timeout it reports, re-sends the IPI, and reports again
//!    when the lock is released.
//!
//! Differences from the v3.16 seed, all taken from modern Linux: typed csd
//! flags (`SYNC` / `ASYNC` / `IRQ_WORK`) and a SYNC-first flush; one csd per
//! (caller, target) pair; IPIs only to CPUs whose queue was empty, one
//! single-target IPI when only one CPU needs one; the local part of a
//! multi-CPU call runs while the others work; waiting on exactly the csds
//! that were enqueued; `-EBUSY` for a busy async csd; the offline-IPI
//! warning actually fires; remote irq_work shares the call queue; the stall
//! detector.

// Under loom only the lock-free primitives are built (see sync.rs), and
// parts of them are used only by the rest of the core.
#![cfg_attr(loom, allow(dead_code))]

#[macro_use]
mod trace;

mod api;
mod sync;

#[cfg(not(loom))]
mod arch;
#[cfg(not(loom))]
mod bitmap;
#[cfg(not(loom))]
mod block;
#[cfg(not(loom))]
mod call;
#[cfg(not(loom))]
mod counters;
#[cfg(not(loom))]
mod cpuhp;
#[cfg(not(loom))]
mod cpumask;
#[cfg(not(loom))]
mod cpus;
mod csd;
#[cfg(not(loom))]
mod event;
#[cfg(not(loom))]
mod flush;
#[cfg(not(loom))]
mod irq_work;
mod llist;
#[cfg(not(loom))]
mod stall;
#[cfg(not(loom))]
mod state;
#[cfg(not(loom))]
mod stats;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

pub use api::{ScfFlags, SmpCallFunc, SmpCondFunc, SmpError};
#[cfg(not(loom))]
pub use arch::{Arch, IrqFlags};
#[cfg(not(loom))]
pub use block::CpuBlock;
#[cfg(not(loom))]
pub use cpumask::{AtomicCpuMask, CpuList, CpuMask, CpuMaskIter, set_nr_cpumask_bits};
pub use csd::Csd;
#[cfg(not(loom))]
pub use event::Event;
#[cfg(not(loom))]
pub use irq_work::{IrqWork, IrqWorkFunc};
pub use shared::record::WarnKind;
pub use shared::{CpuId, MAX_CPUS};
#[cfg(not(loom))]
pub use state::{CSD_LOCK_TIMEOUT_DEFAULT_NS, Smp};
#[cfg(not(loom))]
pub use stats::CpuStats;

const _: () = assert!(MAX_CPUS.is_power_of_two());
