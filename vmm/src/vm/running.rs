//! [`Vm::run`]: start the VM's threads, wait for the end (the watchdog ends
//! a run that outlasts `config.timeout`), stop the threads and make the
//! [`Outcome`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kvm_ioctls::VmFd;
use shared::ApicId;
use vm_memory::GuestMemoryMmap;

use super::Vm;
use super::threads::{self, Stuck, Threads};
use crate::api;
use crate::bench::Collector;
use crate::boot_times::BootTimes;
use crate::config::VmConfig;
use crate::error::{Error, Result};
use crate::fault::Injector;
use crate::hotplug_driver::Event;
use crate::io::GuestIo;
use crate::kvm_stats::VcpuStats;
use crate::mailbox::Channel;
use crate::outcome::{Ending, Outcome};
use crate::seccomp::{Filters, SeccompMode, Startup};
use crate::stop_signal;
use crate::trace::flight::LiveRings;
use crate::trace::{EXIT_SAMPLE_PERIOD, Recorder, VmmEventKind};
use crate::vcpu::{Control, Dumps};

impl Vm {
    /// Runs the VM to its end: a thread per vCPU, the fault thread, the
    /// hotplug driver and the control socket; after `config.timeout` the
    /// watchdog stops the guest with a dump of every vCPU.
    pub fn run(self) -> Result<Outcome> {
        let running = Running::start(self)?;
        let ending = running.watchdog();
        Ok(running.finish(ending))
    }
}

/// What the threads report into, from which the outcome is made.
struct RunState {
    io: Arc<GuestIo>,
    ctl: Arc<Control>,
    /// KVM's own counters of every vCPU, for the benchmark's markers.
    bench: Arc<Collector>,
    injector: Arc<Injector>,
    hotplug: Arc<Mutex<Vec<Event>>>,
    /// The timeline's VMM side and the flight recorder.
    recorder: Arc<Recorder>,
    /// Each vCPU's KVM statistics and the offset of its `exits` counter,
    /// sampled by the watchdog loop when tracing is on.
    exit_stats: Vec<Option<(VcpuStats, usize)>>,
}

/// A VM whose threads run.
struct Running {
    config: VmConfig,
    started: Instant,
    /// When every vCPU thread had been started.
    vcpus_started: Instant,
    state: RunState,
    threads: Threads,
    /// Kept until the vCPU threads are gone (leaked if one is stuck).
    mem: Arc<GuestMemoryMmap>,
    vm: Arc<VmFd>,
    channel: Arc<Channel>,
    /// The trace rings, when tracing is on.
    trace: Option<crate::trace_rings::TraceRegion>,
    /// The kernel's function symbols.
    symbols: Arc<crate::symbols::Symbols>,
}

/// The host's request channel to the guest (hotplug, control socket),
/// answered by `shared::mailbox::HANDLER_CPU`.
fn request_channel(
    mem: &Arc<GuestMemoryMmap>,
    vm: &Arc<VmFd>,
    apic_ids: &[ApicId],
    ctl: &Arc<Control>,
) -> Channel {
    let handler = apic_ids[shared::mailbox::HANDLER_CPU as usize];
    let ctl = ctl.clone();
    Channel::new(
        mem.clone(),
        vm.clone(),
        handler,
        Box::new(move || ctl.stopped()),
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RunState {
    fn new(vm: &Vm) -> Self {
        let stats = vm.vcpus.iter().map(VcpuStats::open).collect();
        let bench = Arc::new(Collector::new(stats, vm.vcpus.len()));
        let io = GuestIo::new(vm.mem.clone(), vm.config.cpus, vm.config.echo_console);
        let drop_ipi = vm.drop_ipi.clone().unwrap_or_default();
        let injector = Injector::new(vm.started, vm.vm.clone(), vm.apic_ids.clone(), drop_ipi);
        if let Err(why) = &vm.drop_ipi {
            injector.skip(why.clone());
        }
        let live = vm.trace.map(|region| LiveRings {
            mem: vm.mem.clone(),
            region,
        });
        let recorder = Arc::new(Recorder::new(
            vm.started,
            vm.clock,
            vm.symbols.clone(),
            live,
            vm.config.flight,
        ));
        // A second stats fd per vCPU (the collector's are its own), read
        // only by the main thread.
        let exit_stats = match vm.trace {
            Some(_) => vm
                .vcpus
                .iter()
                .map(|v| {
                    let s = VcpuStats::open(v).ok()?;
                    let at = s.layout().counter("exits")?;
                    Some((s, at))
                })
                .collect(),
            None => Vec::new(),
        };
        let state = RunState {
            io: Arc::new(io.with_bench(bench.clone()).with_recorder(recorder.clone())),
            ctl: Arc::new(Control::default()),
            bench,
            injector: Arc::new(injector),
            hotplug: Arc::default(),
            recorder,
            exit_stats,
        };
        state.ctl.set_faults(state.injector.clone());
        state
    }

    /// `times`: the build's start, the vCPU threads' start, the end.
    fn outcome(&self, ending: Ending, stuck: &Stuck, times: [Instant; 3]) -> Outcome {
        let [started, vcpus_started, ended] = times;
        let boot = BootTimes {
            build_started: started,
            vcpus_started,
            online: self.io.online_at(),
            ended,
        };
        let hotplug = std::mem::take(&mut *lock(&self.hotplug));
        let (console, records, mut protocol_errors) = self.io.take();
        if stuck.vcpus > 0 {
            protocol_errors.push(format!("{} vCPU threads did not stop", stuck.vcpus));
        }
        if stuck.helpers > 0 {
            protocol_errors.push(format!(
                "{} helper threads (hotplug, control socket) did not stop",
                stuck.helpers
            ));
        }
        Outcome {
            ending,
            console,
            records,
            protocol_errors,
            dumps: self.ctl.take_dumps(),
            elapsed: started.elapsed(),
            hotplug,
            faults: self.injector.report(),
            bench: self.bench.take(),
            boot,
            trace: None,
            symbols: Arc::new(crate::symbols::Symbols::default()),
            timeline: Default::default(),
        }
    }
}

impl Running {
    fn start(vm: Vm) -> Result<Running> {
        let filters = Filters::compile(vm.config.seccomp).map_err(Error::Seccomp)?;
        if vm.config.seccomp.mode != SeccompMode::Off {
            crate::seccomp::settle_malloc();
        }
        if vm.config.seccomp.mode == SeccompMode::Trap {
            crate::seccomp::install_sigsys().map_err(Error::SigsysHandler)?;
        }
        let startup = &Arc::new(Startup::new(filters));
        let state = RunState::new(&vm);
        let Vm {
            trace,
            symbols,
            config,
            started,
            mem,
            vm,
            vcpus,
            apic_ids,
            listener,
            ..
        } = vm;
        let ctl = &state.ctl;
        let vcpus = threads::spawn_vcpus(vcpus, &state.io, ctl, &state.bench, config.pin, startup)?;
        let vcpus_started = Instant::now();
        let faults = threads::spawn_faults(&config, &vcpus, &state.injector, &mem, ctl, startup);
        let channel = Arc::new(request_channel(&mem, &vm, &apic_ids, ctl));
        let events = &state.hotplug;
        let hotplug =
            threads::spawn_hotplug_driver(&config, started, &channel, ctl, events, startup);
        let options = api::Options {
            cpus: config.cpus,
            exit_ends_run: config.scenario == shared::Scenario::Wait,
            limits: api::Limits::default(),
        };
        let api = listener.map(|l| threads::spawn_api(l, &channel, ctl, options, startup));
        let helpers = hotplug.into_iter().chain(api).collect();
        let threads = Threads {
            vcpus,
            faults,
            helpers,
        };
        // Every thread has its filter, then this one (if asked): only
        // then do the vCPUs run (seccomp module docs).
        if let Err(why) = startup.open(threads.count()) {
            ctl.finish(Ending::Seccomp(why), Dumps::Skip);
        }
        Ok(Running {
            config,
            started,
            vcpus_started,
            state,
            threads,
            mem,
            vm,
            channel,
            trace,
            symbols,
        })
    }

    /// Waits for the end, or ends the run after `config.timeout` or on a
    /// stop signal (SIGINT, SIGTERM: [`stop_signal`]).
    fn watchdog(&self) -> Ending {
        let (ctl, timeout) = (&self.state.ctl, self.config.timeout);
        let deadline = Instant::now() + timeout;
        let sampling = !self.state.exit_stats.is_empty();
        let poll = if sampling {
            EXIT_SAMPLE_PERIOD
        } else {
            stop_signal::POLL
        };
        loop {
            if sampling {
                self.sample_exits();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.state
                    .recorder
                    .watchdog(self.config.cpus, timeout.as_secs_f64());
                ctl.finish(Ending::Timeout(timeout), Dumps::Take);
                return ctl.ending().unwrap_or(Ending::Timeout(timeout));
            }
            if let Some(e) = ctl.wait(left.min(poll)) {
                return e;
            }
            if let Some(sig) = stop_signal::pending() {
                ctl.finish(Ending::Signal(sig), Dumps::Skip);
                return ctl.ending().unwrap_or(Ending::Signal(sig));
            }
        }
    }

    /// One sample of every vCPU's VM exits (a `pread` of each stats fd).
    fn sample_exits(&self) {
        let exits = self
            .state
            .exit_stats
            .iter()
            .map(|s| {
                let (stats, at) = s.as_ref()?;
                stats.read(&[*at]).ok()?.first().copied()
            })
            .collect();
        self.state.recorder.sample(exits);
    }

    /// The VMM events known only at the end (hotplug requests, injected
    /// stalls), and a flight report for a crash no exception record
    /// reported (a triple fault, a failed entry).
    fn note_end(r: &Recorder, outcome: &Outcome) {
        for e in &outcome.hotplug {
            let result = match &e.result {
                Ok(0) => "done".to_string(),
                Ok(errno) => format!("errno {errno}"),
                Err(err) => err.to_string(),
            };
            let detail = format!("cpu={} change={} result={result}", e.cpu, e.change.name());
            r.event_at(r.ns_after_start(e.at), VmmEventKind::Hotplug, None, detail);
        }
        for s in &outcome.faults.stalls {
            let dur = u64::try_from(s.lasted.as_nanos()).unwrap_or(u64::MAX);
            let detail = format!("cpu={}", s.cpu);
            let ns = r.ns_after_start(s.at);
            r.event_at(ns, VmmEventKind::FaultStall, Some(dur), detail);
        }
        let cpu = match &outcome.ending {
            Ending::TripleFault { cpu }
            | Ending::FailEntry { cpu, .. }
            | Ending::InternalError { cpu }
            | Ending::UnexpectedExit { cpu, .. }
            | Ending::RunFailed { cpu, .. } => *cpu,
            _ => return,
        };
        let title = outcome.diagnosis();
        let title = title.lines().next().unwrap_or("crash");
        r.event(VmmEventKind::Crash, title.to_string());
        r.flight(title, &[cpu]);
    }

    /// Stops every thread and makes the outcome of `ending`.
    fn finish(self, ending: Ending) -> Outcome {
        let ended = Instant::now();
        let stuck = self.threads.stop();
        if let Some(path) = &self.config.api_sock {
            let _ = std::fs::remove_file(path);
        }
        let mut outcome =
            self.state
                .outcome(ending, &stuck, [self.started, self.vcpus_started, ended]);
        outcome.faults.check_injected(&self.config.faults);
        outcome.symbols = self.symbols.clone();
        Self::note_end(&self.state.recorder, &outcome);
        // After the vCPU threads stopped (a stuck one may still write: its
        // entries then read as torn, never out of bounds).
        let copy = Instant::now();
        outcome.trace = self
            .trace
            .and_then(|t| crate::trace_rings::TraceSnapshot::take(&self.mem, t));
        if let Some(s) = &outcome.trace {
            log::info!(
                "trace: copied {} rings ({} KiB) in {:.2} ms",
                s.region.cpus,
                s.bytes.len() / 1024,
                copy.elapsed().as_secs_f64() * 1e3
            );
        }
        outcome.timeline = self.state.recorder.take();
        drop(self.channel);
        if stuck.vcpus > 0 {
            // A thread may still be inside KVM_RUN: keep its VM and memory.
            std::mem::forget(self.vm);
            std::mem::forget(self.mem);
        }
        outcome
    }
}
