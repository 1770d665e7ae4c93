//! One host thread per vCPU: `KVM_RUN` in a loop, each exit handled by
//! `exit::handle_exit`, stopped race-free by the kick signal; [`Control`]
//! says when to stop, [`pin`] pins the threads (`--pin`).

mod control;
mod exit;
pub mod pin;

use std::sync::Arc;

use kvm_ioctls::VcpuFd;

pub use control::{Control, Dumps};
use exit::{Step, handle_exit};

use crate::io::GuestIo;
use crate::kick;
use crate::outcome::VcpuDump;

fn dump(cpu: u32, vcpu: &VcpuFd) -> VcpuDump {
    let regs = vcpu.get_regs().unwrap_or_default();
    let sregs = vcpu.get_sregs().unwrap_or_default();
    let mp_state = vcpu.get_mp_state().map(|m| m.mp_state).unwrap_or(u32::MAX);
    VcpuDump {
        cpu,
        mp_state,
        rip: regs.rip,
        rsp: regs.rsp,
        rflags: regs.rflags,
        cr0: sregs.cr0,
        cr3: sregs.cr3,
        efer: sregs.efer,
    }
}

/// The body of vCPU `cpu`'s thread.
pub fn run(cpu: u32, mut vcpu: VcpuFd, io: Arc<GuestIo>, ctl: Arc<Control>) {
    kick::publish(&mut vcpu);
    // The stop check comes after publishing: a kick from here on either
    // finds the flag set here or makes the next KVM_RUN return at once.
    let faults = ctl.faults();
    while !ctl.stopped() {
        if let Some(f) = &faults {
            f.before_run(cpu, &|| ctl.stopped());
        }
        match handle_exit(cpu, vcpu.run(), &io, faults.as_deref()) {
            Step::Continue => {}
            Step::Interrupted => vcpu.set_kvm_immediate_exit(0),
            Step::End(ending, dumps) => ctl.finish(ending, dumps),
        }
    }
    kick::unpublish();
    vcpu.set_kvm_immediate_exit(0);
    if ctl.wants_dumps() {
        ctl.push_dump(dump(cpu, &vcpu));
    }
}
