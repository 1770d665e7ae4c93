//! Race-free kicking of vCPU threads out of `KVM_RUN`.
//!
//! Each vCPU thread publishes a pointer to its `kvm_run` page in a
//! thread-local before its first `KVM_RUN`. The kick signal's handler sets
//! `immediate_exit` there, so a kick that lands just before `KVM_RUN` makes
//! it return `EINTR` at once instead of being lost, and one that lands
//! inside `KVM_RUN` interrupts it with `EINTR` as usual.

use std::cell::Cell;
use std::ptr;
use std::sync::Once;

use kvm_bindings::kvm_run;
use kvm_ioctls::VcpuFd;
use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

use crate::error::{Error, Result};

thread_local! {
    static RUN: Cell<*mut kvm_run> = const { Cell::new(ptr::null_mut()) };
}

/// The signal used to kick vCPU threads.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: `run` was published by this very thread from its VcpuFd's
        // kvm_run mapping, which stays mapped until `unpublish` clears the
        // pointer (before the VcpuFd is dropped). A volatile byte store is
        // async-signal-safe.
        unsafe { ptr::write_volatile(&raw mut (*run).immediate_exit, 1) };
    }
}

/// Installs the kick handler (once per process).
pub fn install() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), on_kick).map_err(Error::Signal);
    });
    result
}

/// Publishes this thread's vCPU for the kick handler. Call before the
/// first `KVM_RUN`; [`unpublish`] before dropping the vCPU.
pub fn publish(vcpu: &mut VcpuFd) {
    let run: *mut kvm_run = vcpu.get_kvm_run();
    RUN.with(|r| r.set(run));
}

/// Stops the kick handler from touching this thread's vCPU.
pub fn unpublish() {
    RUN.with(|r| r.set(ptr::null_mut()));
}
