//! One host thread per vCPU: `KVM_RUN` in a loop, each exit handled by
//! [`handle_exit`], stopped race-free by the kick signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use kvm_ioctls::{VcpuExit, VcpuFd};
use shared::status::GuestStatus;

use crate::io::{Action, GuestIo};
use crate::kick;
use crate::outcome::{Ending, VcpuDump};

/// State shared by the vCPU threads and the thread that runs the VM.
#[derive(Default)]
pub struct Control {
    stop: AtomicBool,
    want_dumps: AtomicBool,
    ending: Mutex<Option<Ending>>,
    done: Condvar,
    dumps: Mutex<Vec<VcpuDump>>,
    faults: OnceLock<Arc<crate::fault::Injector>>,
}

impl Control {
    /// Ends the run (the first ending wins), asking every vCPU for a dump
    /// when `dump` is set, and wakes the waiter.
    pub fn finish(&self, ending: Ending, dump: bool) {
        let mut e = self.ending.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            if dump {
                self.want_dumps.store(true, Ordering::SeqCst);
            }
            *e = Some(ending);
        }
        self.stop.store(true, Ordering::SeqCst);
        self.done.notify_all();
    }

    /// Hands the vCPU threads the fault injector (before they start).
    pub fn set_faults(&self, injector: Arc<crate::fault::Injector>) {
        let _ = self.faults.set(injector);
    }

    /// Whether the run is over.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Waits until the run ends or `timeout` passes; returns the ending, or
    /// `None` on timeout.
    pub fn wait(&self, timeout: std::time::Duration) -> Option<Ending> {
        let deadline = std::time::Instant::now() + timeout;
        let mut e = self.ending.lock().unwrap_or_else(|p| p.into_inner());
        while e.is_none() {
            let now = std::time::Instant::now();
            if now >= deadline {
                return None;
            }
            e = self
                .done
                .wait_timeout(e, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        e.clone()
    }

    /// The ending, once there is one.
    pub fn ending(&self) -> Option<Ending> {
        self.ending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The collected vCPU dumps, sorted by CPU.
    pub fn take_dumps(&self) -> Vec<VcpuDump> {
        let mut d = std::mem::take(&mut *self.dumps.lock().unwrap_or_else(|p| p.into_inner()));
        d.sort_by_key(|d| d.cpu);
        d
    }
}

/// What to do after an exit (computed while the exit borrows the vCPU).
enum Step {
    Continue,
    Interrupted,
    End(Ending, bool),
}

fn handle_exit(
    cpu: u32,
    exit: Result<VcpuExit<'_>, kvm_ioctls::Error>,
    io: &GuestIo,
    faults: Option<&crate::fault::Injector>,
) -> Step {
    match exit {
        Ok(VcpuExit::IoOut(port, data)) => match io.port_out(cpu, port, data) {
            Action::Continue => Step::Continue,
            Action::Exit(status) => {
                Step::End(Ending::GuestExit(status), status == GuestStatus::Crashed)
            }
            Action::BadExit(v) => Step::End(Ending::BadExitStatus(v), true),
        },
        Ok(VcpuExit::IoIn(port, data)) => {
            data.fill(0xff);
            io.protocol_error(format!("vCPU {cpu}: read from unknown port {port:#x}"));
            Step::Continue
        }
        Ok(VcpuExit::MmioRead(addr, data)) => {
            data.fill(0xff);
            io.protocol_error(format!("vCPU {cpu}: read of unbacked address {addr:#x}"));
            Step::Continue
        }
        Ok(VcpuExit::MmioWrite(addr, _)) => {
            io.protocol_error(format!("vCPU {cpu}: write to unbacked address {addr:#x}"));
            Step::Continue
        }
        Ok(VcpuExit::X86Wrmsr(exit)) => {
            // Only the drop-ipi fault's filter makes these (the ICR).
            let ok = faults.is_some_and(|f| f.msr_write(cpu, exit.index, exit.data));
            *exit.error = u8::from(!ok);
            if !ok {
                io.protocol_error(format!(
                    "vCPU {cpu}: trapped write of MSR {:#x}; injecting #GP",
                    exit.index
                ));
            }
            Step::Continue
        }
        Ok(VcpuExit::X86Rdmsr(exit)) => {
            *exit.error = 1;
            io.protocol_error(format!(
                "vCPU {cpu}: trapped read of MSR {:#x}; injecting #GP",
                exit.index
            ));
            Step::Continue
        }
        Ok(VcpuExit::Shutdown) => Step::End(Ending::TripleFault { cpu }, true),
        Ok(VcpuExit::FailEntry(reason, _)) => Step::End(Ending::FailEntry { cpu, reason }, true),
        Ok(VcpuExit::InternalError) => Step::End(Ending::InternalError { cpu }, true),
        Ok(VcpuExit::Intr) => Step::Interrupted,
        Ok(VcpuExit::Hlt) => Step::Continue,
        Ok(other) => Step::End(
            Ending::UnexpectedExit {
                cpu,
                what: format!("{other:?}"),
            },
            true,
        ),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Step::Interrupted,
        Err(e) => Step::End(
            Ending::RunFailed {
                cpu,
                error: e.to_string(),
            },
            true,
        ),
    }
}

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
    let faults = ctl.faults.get().cloned();
    while !ctl.stopped() {
        if let Some(f) = &faults {
            f.before_run(cpu, &|| ctl.stopped());
        }
        match handle_exit(cpu, vcpu.run(), &io, faults.as_deref()) {
            Step::Continue => {}
            Step::Interrupted => vcpu.set_kvm_immediate_exit(0),
            Step::End(ending, want_dump) => ctl.finish(ending, want_dump),
        }
    }
    kick::unpublish();
    vcpu.set_kvm_immediate_exit(0);
    if ctl.want_dumps.load(Ordering::SeqCst) {
        let d = dump(cpu, &vcpu);
        ctl.dumps.lock().unwrap_or_else(|p| p.into_inner()).push(d);
    }
}
