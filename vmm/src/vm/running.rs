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
        let state = RunState {
            io: Arc::new(io.with_bench(bench.clone())),
            ctl: Arc::new(Control::default()),
            bench,
            injector: Arc::new(injector),
            hotplug: Arc::default(),
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
        })
    }

    /// Waits for the end, or ends the run after `config.timeout` or on a
    /// stop signal (SIGINT, SIGTERM: [`stop_signal`]).
    fn watchdog(&self) -> Ending {
        let (ctl, timeout) = (&self.state.ctl, self.config.timeout);
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                ctl.finish(Ending::Timeout(timeout), Dumps::Take);
                return ctl.ending().unwrap_or(Ending::Timeout(timeout));
            }
            if let Some(e) = ctl.wait(left.min(stop_signal::POLL)) {
                return e;
            }
            if let Some(sig) = stop_signal::pending() {
                ctl.finish(Ending::Signal(sig), Dumps::Skip);
                return ctl.ending().unwrap_or(Ending::Signal(sig));
            }
        }
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
        // After the vCPU threads stopped (a stuck one may still write: its
        // entries then read as torn, never out of bounds).
        outcome.trace = self
            .trace
            .and_then(|t| crate::trace_rings::TraceSnapshot::take(&self.mem, t));
        drop(self.channel);
        if stuck.vcpus > 0 {
            // A thread may still be inside KVM_RUN: keep its VM and memory.
            std::mem::forget(self.vm);
            std::mem::forget(self.mem);
        }
        outcome
    }
}
