//! The host's requests through the mailbox (on the boot CPU): take a CPU
//! down or bring it up, write the statistics, finish `run=wait`.

use core::sync::atomic::{AtomicBool, Ordering};

use shared::CpuId;
use shared::mailbox::{Op, result};

use super::cpu_down::{self, DownError};
use super::smpboot::{self, UpError};
use super::{mailbox, stats};
use crate::arch::x86_64::{percpu, x2apic};

/// `run=wait` ends when the host says so.
static FINISH: AtomicBool = AtomicBool::new(false);

/// Whether the host asked `run=wait` to finish.
pub fn finish_requested() -> bool {
    // Relaxed: set by this CPU's interrupt handler.
    FINISH.load(Ordering::Relaxed)
}

/// The host's request interrupt (on the boot CPU).
pub fn host_request() {
    x2apic::eoi();
    // Relaxed: a statistic.
    percpu::this().host_requests.fetch_add(1, Ordering::Relaxed);
    let Some(req) = mailbox::pending() else {
        return;
    };
    let cpu = CpuId(req.cpu);
    let res = match req.op {
        Ok(Op::Offline) => match cpu_down::check_down(cpu) {
            // Finished and acknowledged by the outgoing CPU itself.
            Ok(()) => return cpu_down::request_down(cpu, req.seq),
            Err(DownError::AlreadyOffline) => result::EALREADY,
            Err(DownError::LastCpu) => result::EBUSY,
            Err(_) => result::EINVAL,
        },
        Ok(Op::Online) => match smpboot::cpu_up(cpu) {
            Ok(()) => result::OK,
            Err(UpError::AlreadyOnline) => result::EALREADY,
            Err(UpError::NoSuchCpu) => result::EINVAL,
            Err(UpError::PrepareFailed | UpError::Timeout) => result::EIO,
        },
        Ok(Op::Stats) => {
            stats::write_stats();
            result::OK
        }
        Ok(Op::Finish) => {
            // Relaxed: read by this CPU's task context after the interrupt.
            FINISH.store(true, Ordering::Relaxed);
            result::OK
        }
        Err(_) => result::ENOSYS,
    };
    mailbox::complete(req.seq, res);
}
