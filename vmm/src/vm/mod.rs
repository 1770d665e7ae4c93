//! Builds a VM from a [`VmConfig`] and runs it to an [`Outcome`]:
//! [`VmBuilder::build`] sets everything up (`builder.rs`; `kvm.rs` opens
//! KVM and creates the VM fd, `boot_info.rs` writes what the guest is
//! told), [`Vm::run`] starts the threads (`threads.rs`), waits for the end
//! and makes the outcome (`running.rs`).

mod boot_info;
mod builder;
mod kvm;
mod limits;
mod running;
mod threads;

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kvm_ioctls::{VcpuFd, VmFd};
use shared::ApicId;
use vm_memory::GuestMemoryMmap;

pub use builder::{VmBuilder, apic_ids};
pub use kvm::{open_error, open_kvm};
pub use limits::{CpuLimit, CpuLimitSource};
pub(crate) use threads::spawn_named;

use crate::config::VmConfig;
use crate::error::Result;
use crate::outcome::Outcome;

/// The guest built with this vmm.
pub static EMBEDDED_GUEST: &[u8] = include_bytes!(env!("GUEST_ELF"));

/// The same guest built with its trace points (the `trace` feature),
/// booted instead of [`EMBEDDED_GUEST`] when the trace rings are on.
pub static EMBEDDED_GUEST_TRACED: &[u8] = include_bytes!(env!("GUEST_TRACED_ELF"));

/// Path of the KVM device.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// A VM built and ready to run ([`VmBuilder::build`], then [`Vm::run`]).
pub struct Vm {
    config: VmConfig,
    /// The start of the run, for the outcome's times and the schedules.
    started: Instant,
    mem: Arc<GuestMemoryMmap>,
    vm: Arc<VmFd>,
    vcpus: Vec<VcpuFd>,
    apic_ids: Vec<ApicId>,
    /// The control socket, bound.
    listener: Option<UnixListener>,
    /// The drop-ipi probability to route ICR writes with, or why that
    /// fault is skipped (`fault::setup_vm`).
    drop_ipi: std::result::Result<Option<f64>, String>,
    /// The trace rings, when tracing is on.
    trace: Option<crate::trace_rings::TraceRegion>,
    /// The kernel's function symbols, for the reports and the trace.
    symbols: Arc<crate::symbols::Symbols>,
    /// Guest TSC to CLOCK_BOOTTIME (`None` if KVM would not say).
    clock: Option<crate::trace::clock::Calibration>,
}

/// Boots the VM described by `config` and runs it to the end.
pub fn run(config: &VmConfig) -> Result<Outcome> {
    VmBuilder::default().build(config)?.run()
}

/// [`run`] with another KVM device path (for tests of the error paths).
pub fn run_with_device(config: &VmConfig, kvm_path: &Path) -> Result<Outcome> {
    VmBuilder::with_device(kvm_path).build(config)?.run()
}
