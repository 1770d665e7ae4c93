//! The smpcall guest.
//!
//! [`smp`] is Linux's smp cross-call core, generic over a small architecture
//! interface so that it runs on the host (threads as CPUs) for unit and model
//! tests as well as on real vCPUs; [`params`] parses the boot command line.
//! Everything else is the bare-metal kernel and only exists when built for
//! `x86_64-unknown-none`.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod ipi_plan;
pub mod mem;
pub mod params;
pub mod smp;
pub mod wait_scale;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod kernel;
#[cfg(target_os = "none")]
pub mod report;
#[cfg(target_os = "none")]
pub mod scenarios;
#[cfg(target_os = "none")]
pub mod time;
