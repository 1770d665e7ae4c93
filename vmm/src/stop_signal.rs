//! SIGINT and SIGTERM while the VM runs: the handler (signal-hook) only
//! records the signal; the VMM thread's watchdog sees it within
//! [`POLL`] and stops the VM as the watchdog does, so the control socket
//! is removed and the usual summary printed; the process then exits with
//! 128 + the signal (130, 143). A second signal while that happens exits
//! at once with the same status.
//!
//! Only the CLI installs the handlers ([`install`]); a library user keeps
//! its own signal dispositions, and [`pending`] is then always `None`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How often the watchdog looks for a stop signal.
pub const POLL: Duration = Duration::from_millis(50);

/// The signals that stop the run.
pub const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// The last stop signal received (0: none).
static RECEIVED: AtomicUsize = AtomicUsize::new(0);
/// Set by the first stop signal: the next one exits at once.
static ARMED: AtomicBool = AtomicBool::new(false);

/// Installs the SIGINT / SIGTERM handlers (process-wide).
pub fn install() -> std::io::Result<()> {
    for sig in SIGNALS {
        // The order matters: the exit checks the flag the first signal
        // sets after it.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, &ARMED)?;
        signal_hook::flag::register(sig, &ARMED)?;
        signal_hook::flag::register_usize(sig, &RECEIVED, sig as usize)?;
    }
    Ok(())
}

/// The stop signal received, if any.
pub fn pending() -> Option<libc::c_int> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => libc::c_int::try_from(sig).ok(),
    }
}

/// The signal's name for messages.
pub fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
