//! Exit statuses: what the guest reports, and what the VMM process returns.

wire_enum! {
    /// Status the guest writes to [`crate::ports::Port::Exit`].
    pub enum GuestStatus: u32 {
        /// The scenario ran and everything it checked passed.
        Success = 0,
        /// The scenario ran and something it checked failed.
        Failure = 1,
        /// The guest crashed: an exception or a panic (reported before exiting).
        Crashed = 2,
        /// The guest could not run the request (bad boot info, unknown scenario).
        BadRequest = 3,
    }
}

/// Exit codes of the `vmm` process (documented in README.md and `--help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// The guest ran and reported success.
    Success = 0,
    /// The guest reported a failure (a failed self-test, a bad scenario name).
    GuestFailure = 1,
    /// Usage or configuration error: bad arguments, bad kernel, no KVM.
    Usage = 2,
    /// The guest crashed: exception, triple fault, failed entry, protocol abuse.
    Crashed = 3,
    /// The watchdog fired: the guest did not finish in time.
    Timeout = 4,
    /// SIGINT stopped the run (128 + SIGINT, as a shell reports it).
    Interrupted = 130,
    /// SIGTERM stopped the run (128 + SIGTERM).
    Terminated = 143,
    /// A VMM thread made a syscall its seccomp filter forbids (128 +
    /// SIGSYS: the SIGSYS handler exits with it).
    BadSyscall = 159,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_status_round_trip() {
        for s in [
            GuestStatus::Success,
            GuestStatus::Failure,
            GuestStatus::Crashed,
            GuestStatus::BadRequest,
        ] {
            assert_eq!(GuestStatus::try_from(s as u32), Ok(s));
        }
        assert_eq!(GuestStatus::try_from(77), Err(77));
    }
}
