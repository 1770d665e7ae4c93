//! The VM's host threads: one per vCPU (pinned with `--pin`), the fault
//! thread, helpers (hotplug driver, control socket); stopping and joining
//! them, each within a deadline.

use std::os::unix::net::UnixListener;
use std::os::unix::thread::JoinHandleExt;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::Killable;

use crate::bench::Collector;
use crate::config::VmConfig;
use crate::error::{Error, Result};
use crate::fault::{self, Injector};
use crate::hotplug_driver::{self, Event};
use crate::io::GuestIo;
use crate::mailbox::Channel;
use crate::outcome::Ending;
use crate::seccomp::{Startup, ThreadKind};
use crate::vcpu::{self, Control, Dumps, pin};
use crate::{api, kick};

/// Stack of each vCPU thread: `KVM_RUN` exit handling, logging, dumps
/// (measured with the smallest stack Rust gives, 16 KiB: selftest,
/// hotplug, bench, torture with a stall fault, a crash dump, hostile and
/// the watchdog all run at `-vvv`; this is 8 times that), instead of
/// Rust's 2 MiB default, so that 1024 vCPU threads reserve 128 MiB of
/// address space, not 2 GiB.
pub const VCPU_STACK: usize = 128 * 1024;

/// How long threads get to stop after the end (vCPU threads to leave
/// `KVM_RUN`, helpers to see `stopped()`).
const JOIN_GRACE: Duration = Duration::from_secs(5);

/// The threads of a running VM.
pub(super) struct Threads {
    /// One per vCPU, by CPU number.
    pub vcpus: Vec<JoinHandle<()>>,
    /// Carries out timed faults; it kicks vCPU threads.
    pub faults: Option<JoinHandle<()>>,
    /// Hotplug driver, control socket.
    pub helpers: Vec<JoinHandle<()>>,
}

impl Threads {
    /// How many threads there are (each reports its seccomp filter).
    pub fn count(&self) -> usize {
        self.vcpus.len() + usize::from(self.faults.is_some()) + self.helpers.len()
    }
}

/// How many threads did not stop in time (they are left running detached,
/// and the process is expected to exit).
pub(super) struct Stuck {
    /// vCPU threads still running (maybe inside `KVM_RUN`).
    pub vcpus: usize,
    /// Helper threads still running.
    pub helpers: usize,
}

impl Threads {
    /// Stops and joins every thread, after the run's end.
    pub fn stop(self) -> Stuck {
        // The fault thread kicks vCPU threads: it must end before they do.
        if let Some(t) = self.faults {
            let _ = t.join();
        }
        let vcpus = stop_vcpus(self.vcpus);
        // They see `stopped()` within a request or an answer's write timeout.
        let helpers = join_by(self.helpers, Instant::now() + JOIN_GRACE, false);
        Stuck { vcpus, helpers }
    }
}

/// Starts one thread per vCPU, pinned round robin over the host CPUs this
/// process may use if `pin`. If one cannot start, ends the run, stops the
/// others and fails.
pub(super) fn spawn_vcpus(
    vcpus: Vec<VcpuFd>,
    io: &Arc<GuestIo>,
    ctl: &Arc<Control>,
    bench: &Arc<Collector>,
    pin: bool,
    startup: &Arc<Startup>,
) -> Result<Vec<JoinHandle<()>>> {
    let host_cpus = if pin { pin::allowed_cpus() } else { Vec::new() };
    let mut threads = Vec::with_capacity(vcpus.len());
    for (cpu, vcpu) in vcpus.into_iter().enumerate() {
        let cpu = cpu as u32;
        let host_cpu = pin::host_cpu_for(cpu, &host_cpus);
        let shared = (io.clone(), ctl.clone(), bench.clone(), startup.clone());
        match spawn_vcpu(cpu, vcpu, shared, host_cpu) {
            Ok(t) => threads.push(t),
            Err(source) => {
                ctl.finish(Ending::Timeout(Duration::ZERO), Dumps::Skip);
                stop_vcpus(threads);
                return Err(Error::Thread { cpu, source });
            }
        }
    }
    Ok(threads)
}

/// What a vCPU thread shares with the others.
type VcpuShared = (Arc<GuestIo>, Arc<Control>, Arc<Collector>, Arc<Startup>);

fn spawn_vcpu(
    cpu: u32,
    vcpu: VcpuFd,
    (io, ctl, bench, startup): VcpuShared,
    host_cpu: Option<usize>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("vcpu{cpu}"))
        .stack_size(VCPU_STACK)
        .spawn(move || {
            let filtered = startup.enter(ThreadKind::Vcpu);
            if let Some(host_cpu) = host_cpu {
                match pin::pin_current_thread(host_cpu) {
                    Ok(()) => bench.set_pinning(cpu, Some(host_cpu)),
                    Err(e) => log::warn!("vCPU {cpu}: cannot pin to host CPU {host_cpu}: {e}"),
                }
            }
            // No KVM_RUN before every thread's filter is in place.
            if filtered && startup.wait_open(&|| ctl.stopped()) {
                startup.test_violation(cpu);
                vcpu::run(cpu, vcpu, io, ctl);
            }
        })
}

/// Starts the thread that carries out `config`'s timed faults, if any;
/// `vcpus` are the vCPU threads it kicks.
pub(super) fn spawn_faults(
    config: &VmConfig,
    vcpus: &[JoinHandle<()>],
    injector: &Arc<Injector>,
    mem: &Arc<GuestMemoryMmap>,
    ctl: &Arc<Control>,
    startup: &Arc<Startup>,
) -> Option<JoinHandle<()>> {
    let plan = fault::Plan {
        faults: config.faults.clone(),
        default_at: config
            .duration
            .map_or(Duration::from_millis(200), |d| d / 3),
        threads: vcpus.iter().map(JoinHandleExt::as_pthread_t).collect(),
    };
    let (ctl, startup) = (ctl.clone(), startup.clone());
    fault::spawn(
        plan,
        injector.clone(),
        mem.clone(),
        Box::new(move || ctl.stopped()),
        Box::new(move || startup.enter(ThreadKind::Fault)),
    )
}

/// Starts the hotplug driver if `config` has a schedule or churn, or is a
/// `wait` with `--duration` (the driver finishes it); it
/// leaves what happened in `events`.
pub(super) fn spawn_hotplug_driver(
    config: &VmConfig,
    started: Instant,
    channel: &Arc<Channel>,
    ctl: &Arc<Control>,
    events: &Arc<Mutex<Vec<Event>>>,
    startup: &Arc<Startup>,
) -> Option<JoinHandle<()>> {
    let timed_wait = config.scenario == shared::Scenario::Wait && config.duration.is_some();
    if config.hotplug.is_empty() && config.hotplug_churn.is_none() && !timed_wait {
        return None;
    }
    let (channel, ctl, events) = (channel.clone(), ctl.clone(), events.clone());
    let (config, startup) = (config.clone(), startup.clone());
    Some(spawn_named("hotplug", move || {
        if !startup.enter(ThreadKind::Hotplug) {
            return;
        }
        let done = hotplug_driver::drive(&channel, &config, started, &|| ctl.stopped());
        *events.lock().unwrap_or_else(|p| p.into_inner()) = done;
    }))
}

/// Starts the thread that serves the control socket.
pub(super) fn spawn_api(
    listener: UnixListener,
    channel: &Arc<Channel>,
    ctl: &Arc<Control>,
    options: api::Options,
    startup: &Arc<Startup>,
) -> JoinHandle<()> {
    let (channel, ctl, startup) = (channel.clone(), ctl.clone(), startup.clone());
    spawn_named("api-server", move || {
        // The client threads and the mailroom it starts inherit this filter.
        if startup.enter(ThreadKind::Api) {
            api::serve(listener, &*channel, &options, &|| ctl.stopped());
        }
    })
}

/// `std::thread::spawn` with a name (seen in `/proc/PID/task/*/comm`).
pub(crate) fn spawn_named(name: &str, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .unwrap_or_else(|e| panic!("cannot start the {name} thread: {e}"))
}

/// Kicks every vCPU thread until it leaves `KVM_RUN` and joins it; returns
/// how many did not stop within the grace period.
fn stop_vcpus(threads: Vec<JoinHandle<()>>) -> usize {
    join_by(threads, Instant::now() + JOIN_GRACE, true)
}

/// Joins `threads` as they finish until `deadline`, kicking them out of
/// `KVM_RUN` first if `kick`; returns how many are still running (left
/// detached).
fn join_by(mut threads: Vec<JoinHandle<()>>, deadline: Instant, kick: bool) -> usize {
    while !threads.is_empty() && Instant::now() < deadline {
        if kick {
            for t in &threads {
                let _ = t.kill(kick::kick_signal());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
        let (done, live): (Vec<_>, Vec<_>) = threads.into_iter().partition(|t| t.is_finished());
        for t in done {
            let _ = t.join();
        }
        threads = live;
    }
    threads.len()
}
