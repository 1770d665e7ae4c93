//! [`handle_exit`]: what one `KVM_RUN` exit means for the run.

use kvm_ioctls::VcpuExit;
use shared::status::GuestStatus;

use super::Dumps;
use crate::fault::Injector;
use crate::io::{Action, GuestIo};
use crate::outcome::Ending;

/// What to do after an exit (computed while the exit borrows the vCPU).
pub(super) enum Step {
    /// Run the vCPU again.
    Continue,
    /// `KVM_RUN` was interrupted (a kick): clear `immediate_exit`, run again.
    Interrupted,
    /// The run is over.
    End(Ending, Dumps),
}

/// Dumps for a guest exit: only a crash wants them.
fn dumps_for(status: GuestStatus) -> Dumps {
    if status == GuestStatus::Crashed {
        Dumps::Take
    } else {
        Dumps::Skip
    }
}

/// Handles one exit of vCPU `cpu`.
pub(super) fn handle_exit(
    cpu: u32,
    exit: Result<VcpuExit<'_>, kvm_ioctls::Error>,
    io: &GuestIo,
    faults: Option<&Injector>,
) -> Step {
    match exit {
        Ok(VcpuExit::IoOut(port, data)) => match io.port_out(cpu, port, data) {
            Action::Continue => Step::Continue,
            Action::Exit(status) => Step::End(Ending::GuestExit(status), dumps_for(status)),
            Action::BadExit(v) => Step::End(Ending::BadExitStatus(v), Dumps::Take),
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
        Ok(VcpuExit::Shutdown) => Step::End(Ending::TripleFault { cpu }, Dumps::Take),
        Ok(VcpuExit::FailEntry(reason, _)) => {
            Step::End(Ending::FailEntry { cpu, reason }, Dumps::Take)
        }
        Ok(VcpuExit::InternalError) => Step::End(Ending::InternalError { cpu }, Dumps::Take),
        Ok(VcpuExit::Intr) => Step::Interrupted,
        Ok(VcpuExit::Hlt) => Step::Continue,
        Ok(other) => Step::End(
            Ending::UnexpectedExit {
                cpu,
                what: format!("{other:?}"),
            },
            Dumps::Take,
        ),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Step::Interrupted,
        Err(e) => Step::End(
            Ending::RunFailed {
                cpu,
                error: e.to_string(),
            },
            Dumps::Take,
        ),
    }
}
