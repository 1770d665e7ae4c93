//! A machine whose CPUs are host threads.
//!
//! Each CPU thread has a thread-local CPU number and interrupt-enable flag.
//! An IPI sets a pending bit on the target (counted per vector) and unparks
//! its thread. A CPU takes its pending interrupts only while its interrupts
//! are enabled, and only at the points real hardware would be observed to:
//! in [`Arch::cpu_relax`], in its idle loop, and when `irq_restore`
//! re-enables interrupts. Taking one means calling the core's handler with
//! interrupts "disabled", exactly as the guest's IDT stubs do.
//!
//! Work is given to a CPU as a closure ([`Machine::run_on`],
//! [`Machine::spawn_on`]); it runs in "task context" with interrupts on.
//! Callbacks are plain `fn(usize)`, so tests keep their state in `static`s
//! declared inside the test function.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::smp::{Arch, CpuBlock, CpuId, CpuMask, Csd, Event, IrqFlags, MAX_CPUS, Smp, WarnKind};

/// The smp core over host threads.
pub type HostSmp = Smp<HostArch>;

type Job = Box<dyn FnOnce() + Send>;

/// How long a test waits for anything before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

thread_local! {
    static CURRENT: Cell<Option<(&'static HostSmp, u32)>> = const { Cell::new(None) };
    static IRQS_ON: Cell<bool> = const { Cell::new(true) };
}

/// The CPU this thread is (panics on a non-CPU thread).
pub fn this_cpu() -> CpuId {
    CpuId(CURRENT.get().expect("not a CPU thread").1)
}

/// The machine this CPU thread belongs to.
pub fn smp() -> &'static HostSmp {
    CURRENT.get().expect("not a CPU thread").0
}

/// The address of a callback, as the core reports it. Compare it only for
/// `#[inline(never)]` callbacks with bodies of their own: release builds
/// may copy a small function per codegen unit, or merge identical ones.
pub fn addr(f: fn(usize)) -> usize {
    f as usize
}

/// Whether this CPU thread has interrupts disabled.
pub fn irqs_disabled() -> bool {
    !IRQS_ON.get()
}

/// One simulated CPU.
#[derive(Default)]
pub struct HostCpu {
    pending_single: AtomicBool,
    pending_many: AtomicBool,
    pending_irq_work: AtomicBool,
    /// CALL_FUNCTION_SINGLE IPIs sent to this CPU (dropped ones included).
    pub sent_single: AtomicU64,
    /// CALL_FUNCTION IPIs whose mask included this CPU.
    pub sent_many: AtomicU64,
    /// irq_work self-IPIs raised on this CPU.
    pub sent_irq_work: AtomicU64,
    /// IPIs dropped on purpose (lost-IPI simulation).
    pub dropped: AtomicU64,
    /// Interrupts this CPU took.
    pub handled: AtomicU64,
    /// [`Arch::cpu_relax`] calls on this CPU: it grows only while the CPU
    /// spins in some wait loop of the core.
    relaxes: AtomicU64,
    /// [`Arch::set_running`]'s word.
    running: AtomicUsize,
    drop_next: AtomicU32,
    jobs: Mutex<VecDeque<Job>>,
    thread: OnceLock<Thread>,
}

/// Per-vector IPI counts of one CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipis {
    pub single: u64,
    pub many: u64,
    pub irq_work: u64,
    pub dropped: u64,
}

/// [`Arch`] for host threads.
pub struct HostArch {
    cpus: Vec<HostCpu>,
    /// The core's per-CPU blocks: all `MAX_CPUS` in memory (a guest maps
    /// only those of its CPUs), of which the first `cpus.len()` are
    /// reported writable; zeroed memory, as the guest's are, so that every
    /// host test runs on blocks that were never constructed.
    blocks: &'static [CpuBlock; MAX_CPUS],
    /// Every event with the CPU that reported it.
    events: Mutex<Vec<(CpuId, Event)>>,
    start: Instant,
    stop: AtomicBool,
    /// `send_call_function_ipi_mask` calls.
    pub mask_sends: AtomicU64,
    /// Contract violations seen by the arch (IPI mask with self, IPI to
    /// self or to a missing CPU, job that left interrupts off).
    pub violations: AtomicU64,
    /// `alloc_cfd_row` calls that returned a row.
    pub cfd_rows_allocated: AtomicU64,
    /// Makes `alloc_cfd_row` fail (out of memory) while set.
    pub cfd_alloc_fails: AtomicBool,
}

/// `MAX_CPUS` blocks of zeroed memory, leaked (as the guest maps zeroed
/// pages for them, see `CpuBlock`'s `Zeroable` impl).
fn zeroed_blocks() -> &'static [CpuBlock; MAX_CPUS] {
    let layout = std::alloc::Layout::new::<[CpuBlock; MAX_CPUS]>();
    // SAFETY: a layout of non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `p` is aligned and sized for the array, zeroed, never freed;
    // all-zero bytes are a `CpuBlock` (its `Zeroable` impl).
    unsafe { &*p.cast::<[CpuBlock; MAX_CPUS]>() }
}

impl HostArch {
    /// An arch for `n` CPUs (no threads: see [`Machine`] for those).
    pub fn new(n: usize) -> Self {
        Self {
            cpus: (0..n).map(|_| HostCpu::default()).collect(),
            blocks: zeroed_blocks(),
            events: Mutex::new(Vec::new()),
            start: Instant::now(),
            stop: AtomicBool::new(false),
            mask_sends: AtomicU64::new(0),
            violations: AtomicU64::new(0),
            cfd_rows_allocated: AtomicU64::new(0),
            cfd_alloc_fails: AtomicBool::new(false),
        }
    }

    /// The simulated CPU `cpu`.
    pub fn cpu(&self, cpu: u32) -> &HostCpu {
        &self.cpus[cpu as usize]
    }

    /// Drops the next `n` IPIs (of any vector) sent to `cpu`.
    pub fn drop_next_ipis(&self, cpu: u32, n: u32) {
        self.cpu(cpu).drop_next.store(n, SeqCst);
    }

    fn raise(&self, cpu: CpuId, pending: impl Fn(&HostCpu) -> &AtomicBool) {
        let Some(c) = self.cpus.get(cpu.index()) else {
            self.violations.fetch_add(1, SeqCst);
            return;
        };
        if c.drop_next
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            c.dropped.fetch_add(1, SeqCst);
            return;
        }
        pending(c).store(true, SeqCst);
        if let Some(t) = c.thread.get() {
            t.unpark();
        }
    }

    /// Takes this CPU's pending interrupts if its interrupts are enabled.
    fn take_interrupts(&self) {
        if !IRQS_ON.get() {
            return;
        }
        let Some((smp, cpu)) = CURRENT.get() else {
            return;
        };
        let c = self.cpu(cpu);
        loop {
            let single = c.pending_single.swap(false, SeqCst);
            let many = c.pending_many.swap(false, SeqCst);
            let work = c.pending_irq_work.swap(false, SeqCst);
            if !(single || many || work) {
                break;
            }
            IRQS_ON.set(false);
            if single {
                c.handled.fetch_add(1, SeqCst);
                smp.generic_smp_call_function_interrupt();
            }
            if many {
                c.handled.fetch_add(1, SeqCst);
                smp.generic_smp_call_function_interrupt();
            }
            if work {
                c.handled.fetch_add(1, SeqCst);
                smp.irq_work_run();
            }
            IRQS_ON.set(true);
        }
    }
}

impl Arch for HostArch {
    fn this_cpu(&self) -> CpuId {
        this_cpu()
    }

    fn irq_save(&self) -> IrqFlags {
        IrqFlags(IRQS_ON.replace(false))
    }

    fn irq_restore(&self, flags: IrqFlags) {
        IRQS_ON.set(flags.0);
        if flags.0 {
            self.take_interrupts();
        }
    }

    fn irqs_disabled(&self) -> bool {
        !IRQS_ON.get()
    }

    fn send_call_function_single_ipi(&self, cpu: CpuId) {
        if cpu == this_cpu() {
            self.violations.fetch_add(1, SeqCst);
        }
        if let Some(c) = self.cpus.get(cpu.index()) {
            c.sent_single.fetch_add(1, SeqCst);
        }
        self.raise(cpu, |c| &c.pending_single);
    }

    fn send_call_function_ipi_mask(&self, mask: CpuMask, _online: CpuMask) {
        self.mask_sends.fetch_add(1, SeqCst);
        if mask.test(this_cpu()) {
            self.violations.fetch_add(1, SeqCst);
        }
        for cpu in mask {
            if let Some(c) = self.cpus.get(cpu.index()) {
                c.sent_many.fetch_add(1, SeqCst);
            }
            self.raise(cpu, |c| &c.pending_many);
        }
    }

    fn send_irq_work_self_ipi(&self) {
        let cpu = this_cpu();
        self.cpu(cpu.0).sent_irq_work.fetch_add(1, SeqCst);
        self.raise(cpu, |c| &c.pending_irq_work);
    }

    fn set_running(&self, func: usize) {
        self.cpu(this_cpu().0).running.store(func, SeqCst);
    }

    fn clear_running(&self) {
        self.cpu(this_cpu().0).running.store(0, SeqCst);
    }

    fn cpu_blocks(&self) -> &'static [CpuBlock; MAX_CPUS] {
        self.blocks
    }

    fn cpu_blocks_backed(&self) -> usize {
        self.cpus.len()
    }

    fn alloc_cfd_row(&self, len: usize) -> Option<&'static [Csd]> {
        if self.cfd_alloc_fails.load(SeqCst) {
            return None;
        }
        self.cfd_rows_allocated.fetch_add(1, SeqCst);
        Some(Vec::leak((0..len).map(|_| Csd::idle()).collect()))
    }

    fn running(&self, cpu: CpuId) -> usize {
        self.cpus
            .get(cpu.index())
            .map_or(0, |c| c.running.load(SeqCst))
    }

    fn cpu_relax(&self) {
        self.cpu(this_cpu().0).relaxes.fetch_add(1, SeqCst);
        self.take_interrupts();
        thread::yield_now();
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn report(&self, event: Event) {
        self.events.lock().unwrap().push((self.this_cpu(), event));
    }
}

/// A test machine: `n` CPU threads sharing one leaked [`HostSmp`].
pub struct Machine {
    pub smp: &'static HostSmp,
    threads: Vec<JoinHandle<()>>,
}

impl Machine {
    /// `n` CPUs, all possible, present, online and prepared.
    pub fn new(n: u32) -> Machine {
        Machine::with_online(n, CpuMask::first_n(n))
    }

    /// `n` possible and present CPUs; those in `online` are online. All
    /// are prepared; `nr_cpu_ids` is `n`.
    pub fn with_online(n: u32, online: CpuMask) -> Machine {
        let smp: &'static HostSmp = Box::leak(Box::new(Smp::new(HostArch::new(n as usize))));
        for i in 0..n {
            smp.set_cpu_possible(CpuId(i), true).unwrap();
            smp.set_cpu_present(CpuId(i), true).unwrap();
        }
        smp.setup_nr_cpu_ids();
        assert_eq!(smp.nr_cpu_ids(), n);
        for cpu in online {
            smp.set_cpu_online(cpu, true).unwrap();
        }
        for i in 0..n {
            smp.smpcfd_prepare_cpu(CpuId(i)).unwrap();
        }
        let threads = (0..n)
            .map(|i| {
                thread::Builder::new()
                    .name(format!("cpu{i}"))
                    .spawn(move || cpu_main(smp, i))
                    .unwrap()
            })
            .collect::<Vec<_>>();
        for (i, t) in threads.iter().enumerate() {
            smp.arch().cpus[i].thread.set(t.thread().clone()).unwrap();
        }
        Machine { smp, threads }
    }

    /// The arch (IPI counters, events, fault injection).
    pub fn arch(&self) -> &'static HostArch {
        self.smp.arch()
    }

    /// Runs `f` on `cpu` in task context and returns its result.
    pub fn run_on<R: Send + 'static>(&self, cpu: u32, f: impl FnOnce() -> R + Send + 'static) -> R {
        self.spawn_on(cpu, f).wait()
    }

    /// Starts `f` on `cpu` in task context; [`Pending::wait`] for its result.
    pub fn spawn_on<R: Send + 'static>(
        &self,
        cpu: u32,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Pending<R> {
        let (tx, rx) = mpsc::channel();
        let c = self.arch().cpu(cpu);
        c.jobs.lock().unwrap().push_back(Box::new(move || {
            let _ = tx.send(f());
        }));
        if let Some(t) = c.thread.get() {
            t.unpark();
        }
        Pending { rx, result: None }
    }

    /// Makes `cpu` spin with interrupts disabled until the hold is released.
    /// Returns once the CPU is holding.
    pub fn hold_irqs_off(&self, cpu: u32) -> Hold {
        let release = Arc::new(AtomicBool::new(false));
        let holding = Arc::new(AtomicBool::new(false));
        let (r, h) = (release.clone(), holding.clone());
        let done = self.spawn_on(cpu, move || {
            let arch = smp().arch();
            let flags = arch.irq_save();
            h.store(true, SeqCst);
            while !r.load(SeqCst) {
                arch.cpu_relax(); // takes nothing: interrupts are off
            }
            arch.irq_restore(flags); // takes the pending IPIs
        });
        assert!(
            wait_until(|| holding.load(SeqCst)),
            "cpu{cpu} did not start holding"
        );
        Hold {
            release,
            done: Some(done),
        }
    }

    /// Raises a CALL_FUNCTION_SINGLE IPI on `cpu` from outside (a "late"
    /// or spurious IPI).
    pub fn send_ipi(&self, cpu: u32) {
        self.arch().raise(CpuId(cpu), |c| &c.pending_single);
    }

    /// Waits until `cpu` is observed spinning in a wait loop of the core
    /// (two more [`Arch::cpu_relax`] calls start after this was called, so
    /// at least one whole turn of the loop ran meanwhile); false if it
    /// did not within [`TIMEOUT`]. An event, not a delay: "it is still
    /// waiting" can then be checked without sleeping.
    pub fn wait_spinning(&self, cpu: u32) -> bool {
        self.wait_spinning_or(cpu, || false)
    }

    /// [`Self::wait_spinning`], or until `other` holds (whichever first).
    pub fn wait_spinning_or(&self, cpu: u32, mut other: impl FnMut() -> bool) -> bool {
        let c = self.arch().cpu(cpu);
        let start = c.relaxes.load(SeqCst);
        wait_until(|| other() || c.relaxes.load(SeqCst) >= start + 2)
    }

    /// IPI counts of `cpu`.
    pub fn ipis(&self, cpu: u32) -> Ipis {
        let c = self.arch().cpu(cpu);
        Ipis {
            single: c.sent_single.load(SeqCst),
            many: c.sent_many.load(SeqCst),
            irq_work: c.sent_irq_work.load(SeqCst),
            dropped: c.dropped.load(SeqCst),
        }
    }

    /// Every event reported so far.
    pub fn events(&self) -> Vec<Event> {
        let events = self.arch().events.lock().unwrap();
        events.iter().map(|&(_, e)| e).collect()
    }

    /// The CPUs that reported events, in report order.
    pub fn reporters(&self) -> Vec<CpuId> {
        let events = self.arch().events.lock().unwrap();
        events.iter().map(|&(cpu, _)| cpu).collect()
    }

    /// The reported WARNs as (cpu, kind, detail).
    pub fn warns(&self) -> Vec<(u32, WarnKind, u64)> {
        let events = self.arch().events.lock().unwrap();
        events
            .iter()
            .filter_map(|&(cpu, e)| match e {
                Event::Warn { kind, detail, .. } => Some((cpu.0, kind, detail)),
                _ => None,
            })
            .collect()
    }

    /// Asserts the run was clean: no arch contract violation, no event.
    pub fn assert_clean(&self) {
        assert_eq!(
            self.arch().violations.load(SeqCst),
            0,
            "arch contract violated"
        );
        assert_eq!(self.events(), [], "unexpected events");
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.arch().stop.store(true, SeqCst);
        for t in &self.threads {
            t.thread().unpark();
        }
        if thread::panicking() {
            return; // CPUs may be stuck; leak them rather than hang.
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !self.threads.iter().all(|t| t.is_finished()) {
            thread::sleep(Duration::from_millis(1));
        }
        for t in self.threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

fn cpu_main(smp: &'static HostSmp, cpu: u32) {
    CURRENT.set(Some((smp, cpu)));
    IRQS_ON.set(true);
    let arch = smp.arch();
    let me = arch.cpu(cpu);
    loop {
        arch.take_interrupts();
        let job = me.jobs.lock().unwrap().pop_front();
        if let Some(job) = job {
            job();
            if !IRQS_ON.get() {
                arch.violations.fetch_add(1, SeqCst);
                IRQS_ON.set(true);
            }
            continue;
        }
        if arch.stop.load(SeqCst) {
            break;
        }
        thread::park_timeout(Duration::from_millis(2));
    }
}

/// The result of a job started with [`Machine::spawn_on`].
pub struct Pending<R> {
    rx: mpsc::Receiver<R>,
    result: Option<R>,
}

impl<R> Pending<R> {
    /// Waits for the job (panics after [`TIMEOUT`] or if the job panicked).
    pub fn wait(self) -> R {
        if let Some(r) = self.result {
            return r;
        }
        match self.rx.recv_timeout(TIMEOUT) {
            Ok(r) => r,
            Err(e) => panic!("CPU job did not finish: {e}"),
        }
    }

    /// Whether the job has finished, after giving it `d` more time.
    pub fn finished_within(&mut self, d: Duration) -> bool {
        if self.result.is_none() {
            match self.rx.recv_timeout(d) {
                Ok(r) => self.result = Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(e) => panic!("CPU job died: {e}"),
            }
        }
        self.result.is_some()
    }
}

/// A CPU spinning with interrupts off; see [`Machine::hold_irqs_off`].
pub struct Hold {
    release: Arc<AtomicBool>,
    done: Option<Pending<()>>,
}

impl Hold {
    /// Lets the CPU go and waits until it has re-enabled interrupts and
    /// taken what was pending.
    pub fn release(mut self) {
        self.release.store(true, SeqCst);
        if let Some(done) = self.done.take() {
            done.wait();
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release.store(true, SeqCst);
    }
}

/// Polls `cond` until it holds or [`TIMEOUT`] passes; returns whether it held.
pub fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_micros(200));
    }
    cond()
}
