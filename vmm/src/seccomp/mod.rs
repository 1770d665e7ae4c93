//! seccomp-bpf: every VMM thread runs under an allow-list of the syscalls
//! its kind needs ([`ThreadKind`], lists in `rules.rs`), compiled with
//! rust-vmm's `seccompiler` before any thread starts.
//!
//! Filters stack: a thread's filter is inherited by the threads it creates
//! afterwards, and the most restrictive verdict of all a thread carries
//! wins. So the order is what makes each thread end with exactly its own
//! kind's list:
//! 1. The VMM thread sets everything up unfiltered (KVM fds, memory, the
//!    control socket, the stats fds) and starts every thread.
//! 2. Each thread installs its own filter first thing ([`Startup::enter`]),
//!    before doing any work, and reports it. The control-socket server's
//!    client threads and mailroom inherit the server's filter, which is
//!    theirs too (one kind: they install nothing more).
//! 3. The VMM thread waits for every report, then installs its own filter
//!    (after spawning: none of its threads inherits it) and only then
//!    opens the gate the vCPU threads wait at before their first
//!    `KVM_RUN`. The guest runs no instruction before every filter is in
//!    place.
//!
//! A library user whose thread goes on after the run (a test harness)
//! leaves [`SeccompConfig::main_thread`] off: its own thread stays
//! unfiltered, the threads the VMM starts are filtered all the same.
//!
//! A forbidden call: `trap` sends SIGSYS, whose handler ([`install_sigsys`])
//! writes one line naming the syscall number and exits with
//! [`ExitCode::BadSyscall`] (159); `log` lets it through and the kernel's
//! audit log records it; `off` installs nothing.
//! `PR_SET_NO_NEW_PRIVS` is set in every mode (seccompiler sets it before
//! each filter, [`Startup::enter`] also without one).

mod origin;
mod rules;

use std::cell::Cell;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
use shared::status::ExitCode;

/// What a forbidden syscall does (`--seccomp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeccompMode {
    /// SIGSYS: one line naming the syscall, exit 159.
    #[default]
    Trap,
    /// Allowed and logged by the kernel (audit log / dmesg).
    Log,
    /// No filters.
    Off,
}

impl SeccompMode {
    /// The `--seccomp` names.
    pub const NAMES: [&'static str; 3] = ["trap", "log", "off"];

    /// Parses a `--seccomp` value.
    pub fn from_name(name: &str) -> Option<SeccompMode> {
        match name {
            "trap" => Some(SeccompMode::Trap),
            "log" => Some(SeccompMode::Log),
            "off" => Some(SeccompMode::Off),
            _ => None,
        }
    }
}

/// How the VMM filters its threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeccompConfig {
    /// What a forbidden syscall does.
    pub mode: SeccompMode,
    /// Also filter the thread that calls `Vm::run` (the CLI's main
    /// thread), with the VMM kind's list, for the rest of its life.
    pub main_thread: bool,
    /// Test hook (the CLI's hidden `--seccomp-test-violation`): vCPU 0's
    /// thread opens a file once its filter is in place, which its list
    /// forbids.
    pub test_violation: bool,
}

/// The kinds of VMM thread, each with its own allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// The thread that runs the VM: watchdog, joins, the report.
    Vmm,
    /// One per vCPU: `KVM_RUN` and exit handling.
    Vcpu,
    /// The control socket: server, one thread per client, the mailroom.
    Api,
    /// The hotplug driver.
    Hotplug,
    /// The fault injector.
    Fault,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 5] = [
        ThreadKind::Vmm,
        ThreadKind::Vcpu,
        ThreadKind::Api,
        ThreadKind::Hotplug,
        ThreadKind::Fault,
    ];

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Api => "control socket",
            ThreadKind::Hotplug => "hotplug driver",
            ThreadKind::Fault => "fault injector",
        }
    }
}

/// Why the filters could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A rule or condition seccompiler refuses.
    #[error("bad seccomp rule: {0}")]
    Rule(seccompiler::BackendError),
    /// Compiling a kind's filter failed.
    #[error("compiling the {kind} seccomp filter: {source}")]
    Compile {
        /// The thread kind.
        kind: &'static str,
        /// seccompiler's error.
        source: seccompiler::BackendError,
    },
}

/// Why a thread's filter could not be installed.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot install the {kind} seccomp filter ({error}); a kernel without seccomp needs --seccomp off"
)]
pub struct InstallError {
    /// The thread kind.
    pub kind: &'static str,
    /// seccompiler's error text.
    pub error: String,
}

/// The compiled filter of every kind (empty with [`SeccompMode::Off`]).
pub struct Filters {
    config: SeccompConfig,
    programs: Vec<(ThreadKind, BpfProgram)>,
}

thread_local! {
    /// The calling thread's kind, once its filter is in place (for the
    /// SIGSYS line; a const initializer: no lazy setup in the handler).
    static KIND: Cell<&'static str> = const { Cell::new("") };
}

/// The architecture the filters are compiled for.
fn arch() -> seccompiler::TargetArch {
    seccompiler::TargetArch::x86_64
}

impl Filters {
    /// Compiles every kind's filter for `config`.
    pub fn compile(config: SeccompConfig) -> Result<Filters, BuildError> {
        let mismatch = match config.mode {
            SeccompMode::Off => {
                return Ok(Filters {
                    config,
                    programs: Vec::new(),
                });
            }
            SeccompMode::Trap => SeccompAction::Trap,
            SeccompMode::Log => SeccompAction::Log,
        };
        let mut programs = Vec::new();
        for kind in ThreadKind::ALL {
            let compile_err = |source| BuildError::Compile {
                kind: kind.name(),
                source,
            };
            let filter = SeccompFilter::new(
                rules::rules(kind)?,
                mismatch.clone(),
                SeccompAction::Allow,
                arch(),
            )
            .map_err(compile_err)?;
            let program = BpfProgram::try_from(filter).map_err(compile_err)?;
            programs.push((kind, program));
        }
        Ok(Filters { config, programs })
    }

    /// The configuration the filters were compiled for.
    pub fn config(&self) -> SeccompConfig {
        self.config
    }

    /// Installs `kind`'s filter on the calling thread (and sets
    /// `PR_SET_NO_NEW_PRIVS`, in every mode).
    pub fn install(&self, kind: ThreadKind) -> Result<(), InstallError> {
        let err = |error: String| InstallError {
            kind: kind.name(),
            error,
        };
        let Some((_, program)) = self.programs.iter().find(|(k, _)| *k == kind) else {
            return no_new_privs().map_err(|e| err(e.to_string()));
        };
        origin::note_stack();
        seccompiler::apply_filter(program).map_err(|e| err(e.to_string()))?;
        KIND.with(|k| k.set(kind.name()));
        Ok(())
    }
}

/// Settles what glibc's malloc would otherwise look up lazily inside a
/// filtered thread, each once per process, by opening a file (`openat`,
/// which only the VMM thread's list allows):
///
/// * The arena limit. Without `M_ARENA_MAX`, the thread that first needs
///   a ninth arena calls `get_nprocs()`, which opens
///   `/sys/devices/system/cpu/online` (seen under `cargo test`, and due
///   with many vCPUs). Setting the limit to glibc's own default (8 arenas
///   per online CPU) up front keeps malloc's behaviour and makes it never
///   look.
/// * Whether heaps may be unmapped when they shrink. The first `free()`
///   that shrinks the heap of a thread arena (any arena but the main one:
///   a chunk of 64 KiB or more merged into a top chunk above the trim
///   threshold; a growing `Vec` or `String` of records or console text
///   on a vCPU thread does it) opens `/proc/sys/vm/overcommit_memory`
///   (`check_may_shrink_heap`) and keeps the answer for the process.
///   [`prime_heap_shrink`] makes a helper thread, unfiltered, do such a
///   free first.
///
/// Call on an unfiltered thread before starting filtered threads (the
/// first call does the work; later ones return at once).
pub fn settle_malloc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sysconf takes an integer name and touches no memory of ours.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
        let arenas = libc::c_int::try_from(cpus.saturating_mul(8)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt takes two integers; M_ARENA_MAX only sets a limit.
        if unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) } != 1 {
            log::warn!("seccomp: mallopt(M_ARENA_MAX, {arenas}) failed");
        }
        prime_heap_shrink();
    });
}

/// Each block [`prime_heap_shrink`] allocates: below glibc's smallest
/// mmap threshold (128 KiB), so it comes from the thread's arena.
const PRIME_BLOCK: usize = 120 * 1024;
/// How much it allocates in all: more than a thread arena's heap holds
/// (64 MiB), so that freeing it shrinks a full heap, whatever trim
/// threshold glibc's dynamic threshold has reached in this process (at
/// most 64 MiB; a top that large is one no heap can have, so then no
/// heap ever shrinks, in a vCPU thread either).
const PRIME_TOTAL: usize = 72 << 20;

/// Makes glibc look up `/proc/sys/vm/overcommit_memory` now, on an
/// unfiltered thread: a new thread (which malloc gives a thread arena of
/// its own, or one from the free list of arenas whose threads ended)
/// allocates [`PRIME_TOTAL`] in blocks its arena serves and frees them,
/// last first, which shrinks that arena's heap. If the thread cannot
/// start or an allocation fails, nothing is primed (a warning says so).
fn prime_heap_shrink() {
    let spawned = std::thread::Builder::new()
        .name("malloc-settle".into())
        .spawn(|| {
            let mut blocks = Vec::with_capacity(PRIME_TOTAL / PRIME_BLOCK);
            while blocks.len() < PRIME_TOTAL / PRIME_BLOCK {
                // SAFETY: malloc takes a size; a null result is checked.
                let b = unsafe { libc::malloc(PRIME_BLOCK) };
                if b.is_null() {
                    break;
                }
                blocks.push(b);
            }
            let complete = blocks.len() == PRIME_TOTAL / PRIME_BLOCK;
            for b in blocks.into_iter().rev() {
                // SAFETY: each block came from malloc above, freed once.
                unsafe { libc::free(b) };
            }
            complete
        });
    match spawned.map(|t| t.join()) {
        Ok(Ok(true)) => {}
        _ => log::warn!("seccomp: could not settle glibc's heap-shrink check"),
    }
}

/// `PR_SET_NO_NEW_PRIVS` on the calling thread (inherited by the threads
/// it creates): no exec may gain privileges.
pub fn no_new_privs() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only; no memory is passed.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The offset of `si_syscall` in a SIGSYS `siginfo_t`, in `c_int`s
/// (`si_signo, si_errno, si_code`, padding, then `_sigsys { void
/// *_call_addr; int _syscall; unsigned _arch; }`), as Firecracker reads it.
const SI_OFF_SYSCALL: usize = 6;
/// The offset of `si_call_addr` (`_sigsys._call_addr`, the address of the
/// `syscall` instruction) in a SIGSYS `siginfo_t`, in pointers: right
/// after the three ints and their padding.
const SI_OFF_CALL_ADDR: usize = 2;
/// `si_code` of a SIGSYS sent by seccomp.
const SYS_SECCOMP: libc::c_int = 1;

/// Writes `n` in decimal at the end of `buf`; returns where it starts.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> usize {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return at;
        }
    }
}

extern "C" fn on_sigsys(num: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    if num != libc::SIGSYS || info.is_null() {
        return;
    }
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    if code != SYS_SECCOMP {
        return;
    }
    // SAFETY: for a seccomp SIGSYS the siginfo holds `_sigsys`, whose
    // `_syscall` is the int at SI_OFF_SYSCALL (see the constant).
    let nr = unsafe { info.cast::<libc::c_int>().add(SI_OFF_SYSCALL).read() };
    // SAFETY: likewise, `_call_addr` is the pointer at SI_OFF_CALL_ADDR.
    let call = unsafe { info.cast::<usize>().add(SI_OFF_CALL_ADDR).read() };
    let rsp = if context.is_null() {
        0
    } else {
        // SAFETY: an SA_SIGINFO handler's third argument is the
        // interrupted thread's ucontext_t.
        let uc = unsafe { &*context.cast::<libc::ucontext_t>() };
        uc.uc_mcontext.gregs[libc::REG_RSP as usize] as usize
    };
    // Only async-signal-safe work: stack buffers, writes, _exit.
    let mut digits = [0u8; 20];
    let start = decimal(u64::from(nr.unsigned_abs()), &mut digits);
    let kind = KIND.with(Cell::get);
    let parts: [&[u8]; 5] = [
        b"vmm: seccomp: the ",
        if kind.is_empty() {
            b"unknown"
        } else {
            kind.as_bytes()
        },
        b" thread made forbidden syscall ",
        &digits[start..],
        b"; stopping (exit 159)\n",
    ];
    let mut line = [0u8; 160];
    let mut len = 0;
    for p in parts {
        line[len..len + p.len()].copy_from_slice(p);
        len += p.len();
    }
    // SAFETY: writes `len` initialized bytes of `line` to stderr.
    let _ = unsafe { libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), len) };
    origin::report(call, rsp);
    // SAFETY: _exit ends the process at once; nothing is unwound.
    unsafe { libc::_exit(ExitCode::BadSyscall as libc::c_int) };
}

/// Installs the SIGSYS handler (process-wide) that turns a trapped
/// syscall into one line and [`ExitCode::BadSyscall`], followed by where
/// the call came from (the object and address of the `syscall`
/// instruction and the code addresses on the thread's stack, for
/// `addr2line`; see `origin.rs`). Call unfiltered: it records the loaded
/// objects the report names.
pub fn install_sigsys() -> std::io::Result<()> {
    origin::record_objects();
    // SAFETY: sigaction is plain data; zeroed is an empty mask, no flags.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = on_sigsys as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `act` is a valid sigaction whose handler only writes and
    // exits; the old action is not asked for.
    let rc = unsafe { libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// How long the VMM thread waits for its threads' filters.
const REPORT_DEADLINE: Duration = Duration::from_secs(10);
/// How often a waiting vCPU thread looks at `stopped()`.
const GATE_TICK: Duration = Duration::from_millis(10);

#[derive(Default)]
struct GateState {
    /// Threads that reported their filter (installed or not).
    reported: usize,
    /// The first failure.
    failed: Option<String>,
    /// Every filter is in place: the vCPUs may run.
    open: bool,
}

/// The start of a run: the filters, the threads' reports of their own,
/// and the gate the vCPU threads wait at before their first `KVM_RUN`.
pub struct Startup {
    filters: Filters,
    state: Mutex<GateState>,
    changed: Condvar,
}

impl Startup {
    /// A start with these filters.
    pub fn new(filters: Filters) -> Self {
        Startup {
            filters,
            state: Mutex::default(),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The thread-start hook: installs `kind`'s filter on the calling
    /// thread and reports it; false if it could not (the VMM thread then
    /// ends the run).
    pub fn enter(&self, kind: ThreadKind) -> bool {
        let result = self.filters.install(kind);
        let mut s = self.lock();
        s.reported += 1;
        if let Err(e) = &result {
            s.failed.get_or_insert_with(|| e.to_string());
        }
        self.changed.notify_all();
        result.is_ok()
    }

    /// The VMM thread: waits until `threads` threads reported, installs
    /// its own filter if asked to, and opens the gate. Returns why the run
    /// cannot go on, if it cannot.
    pub fn open(&self, threads: usize) -> Result<(), String> {
        let deadline = Instant::now() + REPORT_DEADLINE;
        let mut s = self.lock();
        while s.reported < threads && s.failed.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "seccomp: only {} of {threads} threads installed their filter within {REPORT_DEADLINE:?}",
                    s.reported
                ));
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if let Some(why) = &s.failed {
            return Err(why.clone());
        }
        drop(s);
        if self.filters.config.main_thread {
            self.filters
                .install(ThreadKind::Vmm)
                .map_err(|e| e.to_string())?;
        }
        self.lock().open = true;
        self.changed.notify_all();
        Ok(())
    }

    /// A vCPU thread: waits until the gate opens (true) or `stopped()`
    /// (false).
    pub fn wait_open(&self, stopped: &dyn Fn() -> bool) -> bool {
        let mut s = self.lock();
        while !s.open {
            if stopped() {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, GATE_TICK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// The test hook: vCPU 0 opens a file, which the vCPU list forbids.
    pub fn test_violation(&self, cpu: u32) {
        if cpu == 0 && self.filters.config.test_violation {
            let _ = std::fs::File::open("/proc/self/status");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_compiles_in_every_mode() {
        for mode in [SeccompMode::Trap, SeccompMode::Log, SeccompMode::Off] {
            let f = Filters::compile(SeccompConfig {
                mode,
                ..Default::default()
            })
            .unwrap();
            let n = if mode == SeccompMode::Off { 0 } else { 5 };
            assert_eq!(f.programs.len(), n);
            assert!(f.programs.iter().all(|(_, p)| !p.is_empty()));
        }
        for name in SeccompMode::NAMES {
            assert!(SeccompMode::from_name(name).is_some());
        }
        assert_eq!(SeccompMode::from_name("kill"), None);
    }

    #[test]
    fn decimal_digits() {
        let mut b = [0u8; 20];
        let at = decimal(257, &mut b);
        assert_eq!(&b[at..], b"257");
        let at = decimal(0, &mut b);
        assert_eq!(&b[at..], b"0");
        let at = decimal(u64::MAX, &mut b);
        assert_eq!(&b[at..], b"18446744073709551615");
    }

    /// A filtered thread: an allowed call works, a forbidden one fails
    /// with the errno the filter chose (trap would end the test process).
    #[test]
    fn a_filter_stops_a_forbidden_call_in_its_thread_only() {
        let rules = rules::rules(ThreadKind::Hotplug).unwrap();
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Errno(libc::EPERM as u32),
            SeccompAction::Allow,
            arch(),
        )
        .unwrap();
        let program = BpfProgram::try_from(filter).unwrap();
        std::thread::spawn(move || {
            seccompiler::apply_filter(&program).unwrap();
            let e = std::fs::File::open("/proc/self/status").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM));
            std::thread::sleep(Duration::from_millis(1));
        })
        .join()
        .unwrap();
        assert!(std::fs::File::open("/proc/self/status").is_ok());
    }
}
