//! Faults the VMM injects into a running guest (`--fault SPEC`,
//! repeatable):
//!
//! - `stall:CPU:MS[@AT]`: vCPU CPU's thread stays out of `KVM_RUN` for MS
//!   milliseconds, AT ms after the guest took its first request (default:
//!   a third into `--duration`, else 200 ms). The thread is kicked out of
//!   `KVM_RUN` and sleeps before re-entering: a preempted vCPU, as a
//!   loaded host makes one.
//! - `spurious-ipi:RATE`: RATE times a second, a CALL_FUNCTION interrupt
//!   (`KVM_SIGNAL_MSI`) to a random vCPU. The VMM cannot see the guest's
//!   call queues; the guest counts the IPIs that find its queue empty.
//! - `drop-ipi:P`: the guest's x2APIC ICR writes are trapped (an MSR
//!   filter on the ICR and KVM's userspace MSR exits), a fraction P of its
//!   call-function IPIs is dropped and the rest delivered by the VMM. KVM
//!   handles x2APIC MSRs in the kernel and never filters them on current
//!   kernels; a probe VM finds out, and then the fault is skipped with one
//!   line saying so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::VmFd;
use shared::ApicId;
use shared::apic::{DELIVERY_FIXED, Icr, X2APIC_ICR_MSR};
use shared::vectors::{CALL_FUNCTION, CALL_FUNCTION_SINGLE};
use vm_memory::GuestMemoryMmap;

use crate::mailbox::{guest_ready, msi};

/// Longest stall.
pub const STALL_MAX: Duration = Duration::from_secs(60);
/// Most spurious IPIs per second.
pub const SPURIOUS_MAX_RATE: u32 = 100_000;

/// One fault to inject.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Stop a vCPU's thread for a while.
    Stall {
        /// The vCPU.
        cpu: u32,
        /// For how long.
        duration: Duration,
        /// When, after the guest is ready (`None`: the default).
        at: Option<Duration>,
    },
    /// Inject call-function IPIs into random vCPUs.
    SpuriousIpi {
        /// How many per second.
        per_sec: u32,
    },
    /// Drop a fraction of the guest's call-function IPIs.
    DropIpi {
        /// The fraction, in (0, 1].
        probability: f64,
    },
}

fn ms(s: &str, what: &str) -> Result<u64, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{what} {s:?} is not a whole number of milliseconds"))
}

impl Fault {
    /// Parses one `--fault` value.
    pub fn parse(spec: &str) -> Result<Fault, String> {
        let (kind, rest) = spec.split_once(':').ok_or_else(|| {
            format!("{spec:?}: expected stall:CPU:MS[@AT], spurious-ipi:RATE or drop-ipi:P")
        })?;
        match kind {
            "stall" => {
                let (cpu, rest) = rest
                    .split_once(':')
                    .ok_or_else(|| format!("{spec:?}: expected stall:CPU:MS[@AT]"))?;
                let cpu: u32 = cpu
                    .trim()
                    .parse()
                    .map_err(|_| format!("{spec:?}: {cpu:?} is not a CPU number"))?;
                let (dur, at) = match rest.split_once('@') {
                    Some((d, a)) => (d, Some(Duration::from_millis(ms(a, "start time")?))),
                    None => (rest, None),
                };
                let duration = Duration::from_millis(ms(dur, "stall")?);
                if duration.is_zero() || duration > STALL_MAX {
                    return Err(format!("{spec:?}: a stall lasts 1 ms to {STALL_MAX:?}"));
                }
                Ok(Fault::Stall { cpu, duration, at })
            }
            "spurious-ipi" => {
                let per_sec: u32 = rest
                    .trim()
                    .parse()
                    .map_err(|_| format!("{spec:?}: RATE is a number of IPIs per second"))?;
                if per_sec == 0 || per_sec > SPURIOUS_MAX_RATE {
                    return Err(format!(
                        "{spec:?}: RATE is 1 to {SPURIOUS_MAX_RATE} IPIs per second"
                    ));
                }
                Ok(Fault::SpuriousIpi { per_sec })
            }
            "drop-ipi" => {
                let p: f64 = rest
                    .trim()
                    .parse()
                    .map_err(|_| format!("{spec:?}: P is a fraction such as 0.1"))?;
                if !(p > 0.0 && p <= 1.0) {
                    return Err(format!("{spec:?}: P must be more than 0 and at most 1"));
                }
                Ok(Fault::DropIpi { probability: p })
            }
            other => Err(format!(
                "{spec:?}: unknown fault {other:?} (stall, spurious-ipi, drop-ipi)"
            )),
        }
    }
}

impl std::fmt::Display for Fault {
    /// The `--fault` spec that parses back to it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Stall { cpu, duration, at } => {
                write!(f, "stall:{cpu}:{}", duration.as_millis())?;
                match at {
                    Some(at) => write!(f, "@{}", at.as_millis()),
                    None => Ok(()),
                }
            }
            Fault::SpuriousIpi { per_sec } => write!(f, "spurious-ipi:{per_sec}"),
            Fault::DropIpi { probability } => write!(f, "drop-ipi:{probability}"),
        }
    }
}

/// A stall that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StallEvent {
    /// The vCPU.
    pub cpu: u32,
    /// When its thread left `KVM_RUN`, from the start of the run.
    pub at: Duration,
    /// How long it stayed out.
    pub lasted: Duration,
}

/// What the VMM injected, and what it had to skip.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultReport {
    /// Stalls carried out.
    pub stalls: Vec<StallEvent>,
    /// Spurious call-function IPIs KVM accepted, per vCPU.
    pub spurious_ipis: Vec<u64>,
    /// Guest ICR writes the VMM trapped (drop-ipi).
    pub icr_writes: u64,
    /// Call-function IPIs the VMM dropped (drop-ipi).
    pub ipis_dropped: u64,
    /// Faults that could not be injected here, one line each.
    pub skipped: Vec<String>,
    /// Requested faults the run ended before (a stall not yet due, a
    /// spurious-ipi that sent none), one line each: the run does not pass
    /// ([`crate::Outcome::exit_code`]).
    pub not_injected: Vec<String>,
}

impl FaultReport {
    /// Notes each of `requested` that this report does not show injected
    /// in [`FaultReport::not_injected`]. A `drop-ipi` this host cannot
    /// trap is `skipped`, not missing; one it traps is in place all run.
    pub fn check_injected(&mut self, requested: &[Fault]) {
        let mut stalls: Vec<u32> = self.stalls.iter().map(|s| s.cpu).collect();
        let spurious: u64 = self.spurious_ipis.iter().sum();
        for f in requested {
            let done = match f {
                Fault::Stall { cpu, .. } => match stalls.iter().position(|c| c == cpu) {
                    Some(i) => {
                        stalls.swap_remove(i);
                        true
                    }
                    None => false,
                },
                Fault::SpuriousIpi { .. } => spurious > 0,
                Fault::DropIpi { .. } => true,
            };
            if !done {
                self.not_injected.push(format!(
                    "--fault {f} was not injected: the run ended before it was due"
                ));
            }
        }
    }

    /// One line per thing done or skipped, for the CLI.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .stalls
            .iter()
            .map(|s| {
                format!(
                    "fault: vCPU {} stalled for {:.1} ms at {:.1} ms",
                    s.cpu,
                    s.lasted.as_secs_f64() * 1e3,
                    s.at.as_secs_f64() * 1e3
                )
            })
            .collect();
        let spurious: u64 = self.spurious_ipis.iter().sum();
        if spurious > 0 {
            out.push(format!(
                "fault: {spurious} spurious call-function IPIs injected (per vCPU: {:?})",
                self.spurious_ipis
            ));
        }
        if self.icr_writes > 0 {
            out.push(format!(
                "fault: {} guest ICR writes trapped, {} call-function IPIs dropped",
                self.icr_writes, self.ipis_dropped
            ));
        }
        out.extend(self.skipped.iter().cloned());
        out
    }
}

/// The ICR route of `drop-ipi` on a host that traps ICR writes.
struct IcrRoute {
    probability: f64,
}

/// Fault state shared by the vCPU threads and the fault thread.
pub struct Injector {
    started: Instant,
    vm: Arc<VmFd>,
    apic_ids: Vec<ApicId>,
    stall_until: Vec<Mutex<Option<Instant>>>,
    stalls: Mutex<Vec<StallEvent>>,
    spurious: Vec<AtomicU64>,
    route: Option<IcrRoute>,
    icr_writes: AtomicU64,
    dropped: AtomicU64,
    rng: Mutex<u64>,
    skipped: Mutex<Vec<String>>,
}

impl Injector {
    /// No faults yet, for a VM with these vCPUs; `drop` is the drop-ipi
    /// probability if ICR writes are trapped.
    pub fn new(started: Instant, vm: Arc<VmFd>, apic_ids: Vec<ApicId>, drop: Option<f64>) -> Self {
        let n = apic_ids.len();
        Injector {
            started,
            vm,
            apic_ids,
            stall_until: (0..n).map(|_| Mutex::new(None)).collect(),
            stalls: Mutex::new(Vec::new()),
            spurious: (0..n).map(|_| AtomicU64::new(0)).collect(),
            route: drop.map(|probability| IcrRoute { probability }),
            icr_writes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            rng: Mutex::new(0x9e37_79b9_7f4a_7c15 ^ started.elapsed().as_nanos() as u64),
            skipped: Mutex::new(Vec::new()),
        }
    }

    /// Notes a fault that cannot be injected here.
    pub fn skip(&self, why: String) {
        // Said once, at the end (`FaultReport::lines`).
        log::info!("{why}");
        lock(&self.skipped).push(why);
    }

    fn random(&self) -> u64 {
        shared::xorshift64(&mut lock(&self.rng))
    }

    /// The vCPU thread's hook before each `KVM_RUN`: sits out a stall.
    pub fn before_run(&self, cpu: u32, stopped: &dyn Fn() -> bool) {
        let Some(slot) = self.stall_until.get(cpu as usize) else {
            return;
        };
        let Some(until) = lock(slot).take() else {
            return;
        };
        let began = Instant::now();
        while !stopped() {
            let now = Instant::now();
            if now >= until {
                break;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(1)));
        }
        log::info!("vCPU {cpu}: stalled for {:?}", began.elapsed());
        lock(&self.stalls).push(StallEvent {
            cpu,
            at: began.duration_since(self.started),
            lasted: began.elapsed(),
        });
    }

    /// The vCPU thread's hook for a trapped MSR write; false makes the
    /// write fail (#GP in the guest).
    pub fn msr_write(&self, cpu: u32, index: u32, data: u64) -> bool {
        let Some(route) = &self.route else {
            return false;
        };
        if index != X2APIC_ICR_MSR {
            return false;
        }
        // Relaxed (all counters here): statistics read after the run.
        self.icr_writes.fetch_add(1, Ordering::Relaxed);
        let icr = Icr::decode(data);
        let sender = self.apic_ids.get(cpu as usize).map_or(u32::MAX, |a| a.0);
        let droppable = icr.delivery_mode == DELIVERY_FIXED
            && (icr.vector == CALL_FUNCTION.0 || icr.vector == CALL_FUNCTION_SINGLE.0);
        for apic in self.apic_ids.iter().filter(|a| icr.targets(a.0, sender)) {
            if droppable && (self.random() % 1_000_000) as f64 / 1e6 < route.probability {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Err(e) = self.vm.signal_msi(msi(*apic, icr.msi_data())) {
                log::warn!("vCPU {cpu}: delivering ICR {data:#x} to APIC {apic}: {e}");
            }
        }
        true
    }

    fn inject_spurious(&self) {
        let n = self.apic_ids.len();
        if n == 0 {
            return;
        }
        let cpu = (self.random() % n as u64) as usize;
        let m = msi(self.apic_ids[cpu], u32::from(CALL_FUNCTION.0));
        if matches!(self.vm.signal_msi(m), Ok(delivered) if delivered > 0) {
            // Relaxed: a statistic.
            self.spurious[cpu].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What was injected so far.
    pub fn report(&self) -> FaultReport {
        let mut stalls = lock(&self.stalls).clone();
        stalls.sort_by_key(|s| s.at);
        FaultReport {
            stalls,
            // Relaxed: read after the vCPU threads stopped.
            spurious_ipis: self
                .spurious
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .collect(),
            icr_writes: self.icr_writes.load(Ordering::Relaxed),
            ipis_dropped: self.dropped.load(Ordering::Relaxed),
            skipped: lock(&self.skipped).clone(),
            not_injected: Vec::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

mod icr;
pub use icr::{probe_icr_trap, setup_vm};

/// What the fault thread needs.
pub struct Plan {
    /// The faults.
    pub faults: Vec<Fault>,
    /// When a stall without `@AT` starts, after the guest is ready.
    pub default_at: Duration,
    /// The vCPU threads, to kick out of `KVM_RUN`.
    pub threads: Vec<libc::pthread_t>,
}

/// Starts the thread that carries out the timed faults (stalls, spurious
/// IPIs), or `None` if there are none; `enter` is its start hook (its
/// seccomp filter; false: do nothing). It must be joined before the vCPU
/// threads are: it signals them.
pub fn spawn(
    plan: Plan,
    injector: Arc<Injector>,
    mem: Arc<GuestMemoryMmap>,
    stopped: Box<dyn Fn() -> bool + Send>,
    enter: Box<dyn FnOnce() -> bool + Send>,
) -> Option<JoinHandle<()>> {
    let timed = plan
        .faults
        .iter()
        .any(|f| matches!(f, Fault::Stall { .. } | Fault::SpuriousIpi { .. }));
    if !timed {
        return None;
    }
    Some(crate::vm::spawn_named("faults", move || {
        if enter() {
            fault_thread(&plan, &injector, &mem, &*stopped);
        }
    }))
}

fn fault_thread(plan: &Plan, inj: &Injector, mem: &GuestMemoryMmap, stopped: &dyn Fn() -> bool) {
    while !guest_ready(mem).unwrap_or(false) {
        if stopped() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let ready = Instant::now();
    let mut stalls: Vec<(Instant, u32, Duration)> = plan
        .faults
        .iter()
        .filter_map(|f| match f {
            Fault::Stall { cpu, duration, at } => {
                Some((ready + at.unwrap_or(plan.default_at), *cpu, *duration))
            }
            _ => None,
        })
        .collect();
    stalls.sort_by_key(|s| s.0);
    stalls.reverse();
    let period = plan.faults.iter().find_map(|f| match f {
        Fault::SpuriousIpi { per_sec } => Some(Duration::from_secs(1) / *per_sec),
        _ => None,
    });
    let mut next_ipi = ready;
    while !stopped() && (!stalls.is_empty() || period.is_some()) {
        let now = Instant::now();
        while stalls.last().is_some_and(|s| s.0 <= now) {
            let Some((_, cpu, duration)) = stalls.pop() else {
                break;
            };
            start_stall(plan, inj, cpu, duration);
        }
        if let Some(period) = period {
            let mut n = 0;
            while next_ipi <= now && n < 10_000 {
                inj.inject_spurious();
                next_ipi += period;
                n += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn start_stall(plan: &Plan, inj: &Injector, cpu: u32, duration: Duration) {
    let (Some(slot), Some(thread)) = (
        inj.stall_until.get(cpu as usize),
        plan.threads.get(cpu as usize),
    ) else {
        return;
    };
    *lock(slot) = Some(Instant::now() + duration);
    // SAFETY: `thread` is a vCPU thread of this VM; the VM joins this
    // fault thread before it joins (and so ends) the vCPU threads, so the
    // thread id is live. The kick signal has a handler (kick::install).
    let rc = unsafe { libc::pthread_kill(*thread, crate::kick::kick_signal()) };
    if rc != 0 {
        log::warn!("vCPU {cpu}: cannot kick its thread for a stall (error {rc})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_not_injected_are_named() {
        let stall = |cpu| StallEvent {
            cpu,
            at: Duration::from_millis(5),
            lasted: Duration::from_millis(1),
        };
        let requested: Vec<Fault> = [
            "stall:1:300@99999",
            "stall:1:100",
            "stall:2:5",
            "spurious-ipi:1",
            "drop-ipi:0.5",
        ]
        .iter()
        .map(|s| Fault::parse(s).unwrap())
        .collect();
        let mut r = FaultReport {
            stalls: vec![stall(1)],
            spurious_ipis: vec![0, 0, 0],
            ..FaultReport::default()
        };
        r.check_injected(&requested);
        // One stall of CPU 1 happened: one of the two is missing.
        assert_eq!(
            r.not_injected,
            [
                "--fault stall:1:100 was not injected: the run ended before it was due",
                "--fault stall:2:5 was not injected: the run ended before it was due",
                "--fault spurious-ipi:1 was not injected: the run ended before it was due",
            ]
        );
        let mut r = FaultReport {
            stalls: vec![stall(2), stall(1), stall(1)],
            spurious_ipis: vec![0, 3, 0],
            ..FaultReport::default()
        };
        r.check_injected(&requested);
        assert!(r.not_injected.is_empty(), "{:?}", r.not_injected);
    }

    #[test]
    fn parses_specs() {
        assert_eq!(
            Fault::parse("stall:1:500").unwrap(),
            Fault::Stall {
                cpu: 1,
                duration: Duration::from_millis(500),
                at: None
            }
        );
        assert_eq!(
            Fault::parse("stall:0:20@300").unwrap(),
            Fault::Stall {
                cpu: 0,
                duration: Duration::from_millis(20),
                at: Some(Duration::from_millis(300))
            }
        );
        assert_eq!(
            Fault::parse("spurious-ipi:1000").unwrap(),
            Fault::SpuriousIpi { per_sec: 1000 }
        );
        assert_eq!(
            Fault::parse("drop-ipi:0.25").unwrap(),
            Fault::DropIpi { probability: 0.25 }
        );
        for spec in [
            "stall:1:500",
            "stall:0:20@300",
            "spurious-ipi:7",
            "drop-ipi:0.25",
        ] {
            assert_eq!(Fault::parse(spec).unwrap().to_string(), spec);
        }
        for bad in [
            "",
            "stall",
            "stall:1",
            "stall:x:5",
            "stall:1:0",
            "stall:1:-5",
            "stall:1:99999999",
            "stall:1:5@x",
            "spurious-ipi:0",
            "spurious-ipi:-1",
            "spurious-ipi:1000000",
            "drop-ipi:0",
            "drop-ipi:1.5",
            "drop-ipi:nan",
            "drop-ipi:-0.1",
            "lose-ipi:0.1",
        ] {
            assert!(Fault::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
