//! The smpcall VMM as a library: boot the smpcall guest (or another ELF) on
//! N KVM vCPUs with the in-kernel x2APIC, collect what it reports, and say
//! how it ended.
//!
//! ```no_run
//! let outcome = vmm::run(&vmm::VmConfig::with_cpus(4)).unwrap();
//! assert_eq!(outcome.records.online_cpus().len(), 4);
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod bench;
pub mod boot_times;
pub mod config;
pub mod cpuid;
pub mod elf;
pub mod error;
pub mod fault;
pub mod fuzzing;
pub mod host;
pub mod hotplug_driver;
pub mod io;
pub mod junit;
pub mod kick;
pub mod kvm_stats;
pub mod mailbox;
pub mod memory;
pub mod outcome;
pub mod records;
pub mod regs;
pub mod seccomp;
pub mod stalls;
pub mod stop_signal;
pub mod symbols;
pub mod trace;
pub mod trace_rings;
pub mod vcpu;
pub mod vm;

pub use config::{Kernel, VmConfig, parse_numa};
pub use error::{Error, Result};
pub use outcome::{Ending, Outcome, VcpuDump};
pub use records::{CaseCounts, OwnedBody, OwnedRecord, Records, TestResult};
pub use vm::{EMBEDDED_GUEST, EMBEDDED_GUEST_TRACED, Vm, VmBuilder, run, run_with_device};
