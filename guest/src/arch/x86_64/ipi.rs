//! Call-function IPI delivery on x2APIC/KVM, selectable at boot (`ipi=`,
//! `idle=`) and switchable by the benchmark:
//!
//! - single target (every mode but `cluster`): one physical ICR write, the
//!   write KVM handles in its VM-exit fast path. With polling idle the
//!   sender first reads the target's polling flag: a target that polls
//!   spins on its call queue and needs no IPI (`poll_idle.rs`);
//! - masks: `phys` writes the ICR once per target; `shorthand` writes the
//!   all-but-self shorthand once when the targets are every other online
//!   CPU and every CPU of the machine has booted once (Linux's
//!   `apic_use_ipi_shorthand`), else falls back to `phys`; `cluster` writes
//!   one logical destination per x2APIC cluster (single targets too, as
//!   Linux's cluster driver); `pv` makes one `KVM_HC_SEND_IPI` hypercall per
//!   128 APIC ids, if the boot probe showed the hypercall works.
//!
//! The modes are state of [`IpiDelivery`], a part of the arch value. The
//! single-target path is the hot one and is kept lean: one load of its
//! single-target flag word decides between the physical write and
//! everything else (the fault injection's drop included). The
//! polling-idle mechanism itself is in `poll_idle.rs`.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};

use shared::bench::{Case, IdleMode, IpiMode, Marker, Phase};
use shared::ports::Port;
use shared::vectors::{self, Vector};
use shared::{CpuId, MAX_CPUS};

use super::hypercall::{self, Insn, Probe};
use super::x2apic::{self, Destination, Icr};
use super::{cpu, percpu};
use super::{ipi_fault, poll_idle};
use crate::ipi_plan;
use crate::smp::{AtomicCpuMask, CpuMask};

/// [`IpiDelivery::single_flags`]: send single-target IPIs to the logical id.
const SINGLE_CLUSTER: u32 = 1 << 0;
/// [`IpiDelivery::single_flags`]: try to wake a polling target without an IPI.
const SINGLE_POLL: u32 = 1 << 1;
/// [`IpiDelivery::single_flags`]: write the benchmark's probe marker after
/// the ICR write.
const SINGLE_PROBE: u32 = 1 << 2;
/// [`IpiDelivery::single_flags`]: fault injection may drop the IPI
/// (`ipi_fault`).
const SINGLE_DROP: u32 = 1 << 3;

/// The delivery state of call-function IPIs: the modes in effect and what
/// boot found about the machine. Part of the arch value ([`super::smp_arch::X86`]),
/// which lives in the kernel's `static` smp state, so that the send path
/// reads it at a fixed address.
pub struct IpiDelivery {
    /// How single-target IPIs are sent; 0 is the plain physical write.
    single_flags: AtomicU32,
    /// The [`IpiMode`] of mask IPIs.
    mask_mode: AtomicU8,
    /// Benchmark only: the [`Case`] id whose `Probe` marker the mask send
    /// writes after its last ICR write (0: none). Kept apart from
    /// `single_flags`, so that the single-target path does not change.
    mask_probe: AtomicU8,
    /// The CPUs that poll when idle ([`IdleMode::Poll`]; the benchmark may
    /// make just one CPU poll).
    poll_cpus: AtomicCpuMask,
    /// What probing the send-IPI hypercall found ([`PvStatus`] as u8).
    pv_status: AtomicU8,
    /// Which hypercall instruction (false: vmcall, true: vmmcall).
    pv_vmmcall: AtomicBool,
    /// Every vCPU of the machine.
    all_cpus: AtomicCpuMask,
    /// CPUs that have booted at least once.
    booted_once: AtomicCpuMask,
    /// CPUs whose LDR differed from the logical id derived from the APIC id.
    ldr_mismatch: AtomicCpuMask,
}

/// Whether KVM's PV send-IPI hypercall can be used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PvStatus {
    /// Not probed yet (it is probed when `ipi=pv` asks, or by the bench).
    NotProbed = 0,
    /// KVM does not advertise `KVM_FEATURE_PV_SEND_IPI` in CPUID.
    NotAdvertised = 1,
    /// Advertised, but the instruction raised #UD.
    Faulted = 2,
    /// Advertised, but the instruction never completed (the probe timer
    /// rescued it).
    Hung = 3,
    /// Advertised, but the hypercall returned an error.
    Refused = 4,
    /// It works.
    Usable = 5,
}

impl PvStatus {
    fn from_u8(v: u8) -> PvStatus {
        match v {
            1 => PvStatus::NotAdvertised,
            2 => PvStatus::Faulted,
            3 => PvStatus::Hung,
            4 => PvStatus::Refused,
            5 => PvStatus::Usable,
            _ => PvStatus::NotProbed,
        }
    }
}

impl IpiDelivery {
    /// Physical delivery to single targets and masks, halting idle, PV
    /// not probed, one CPU: what [`Self::init`] starts from.
    pub const fn new() -> Self {
        IpiDelivery {
            single_flags: AtomicU32::new(0),
            mask_mode: AtomicU8::new(IpiMode::Phys as u8),
            mask_probe: AtomicU8::new(0),
            poll_cpus: AtomicCpuMask::new(),
            pv_status: AtomicU8::new(PvStatus::NotProbed as u8),
            pv_vmmcall: AtomicBool::new(false),
            all_cpus: AtomicCpuMask::new(),
            booted_once: AtomicCpuMask::new(),
            ldr_mismatch: AtomicCpuMask::new(),
        }
    }

    /// Probes the PV send-IPI hypercall once (boot CPU only, under the
    /// exception fixup; later calls return the first result).
    pub fn probe_pv(&self) -> PvStatus {
        let known = self.pv_status();
        if known != PvStatus::NotProbed {
            return known;
        }
        let status = if hypercall::kvm_features() & hypercall::KVM_FEATURE_PV_SEND_IPI == 0 {
            PvStatus::NotAdvertised
        } else {
            let icr = u64::from(vectors::CALL_FUNCTION.0);
            match hypercall::probe_send_ipi(self.hypercall_insn(), icr) {
                Probe::Returned(r) if r >= 0 => PvStatus::Usable,
                Probe::Returned(_) => PvStatus::Refused,
                Probe::Faulted => PvStatus::Faulted,
                Probe::Hung => PvStatus::Hung,
            }
        };
        // Relaxed: written by the boot CPU, read by it (the bench) or before
        // any AP uses it (`init` runs before the APs start).
        self.pv_status.store(status as u8, Ordering::Relaxed);
        status
    }

    /// What [`Self::probe_pv`] found.
    pub fn pv_status(&self) -> PvStatus {
        // Relaxed: see `probe_pv`.
        PvStatus::from_u8(self.pv_status.load(Ordering::Relaxed))
    }

    /// The hypercall instruction of this CPU's vendor.
    pub fn hypercall_insn(&self) -> Insn {
        // Relaxed: set at boot, see `init`.
        if self.pv_vmmcall.load(Ordering::Relaxed) {
            Insn::Vmmcall
        } else {
            Insn::Vmcall
        }
    }

    /// Boot CPU, before any AP starts: note the machine's `cpus` CPUs,
    /// probe the PV send-IPI hypercall if `ipi=pv`
    /// asks for it, and select the modes. Returns the mask mode in effect
    /// (`pv` falls back to `phys` when the hypercall is unusable).
    pub fn init(&self, mode: IpiMode, idle: IdleMode, cpus: u32) -> IpiMode {
        self.all_cpus.swap(CpuMask::first_n(cpus));
        // Relaxed: written before any AP starts; the INIT/SIPI that starts
        // one comes after a fence (ap_boot).
        self.pv_vmmcall
            .store(hypercall::insn() == Insn::Vmmcall, Ordering::Relaxed);
        if mode == IpiMode::Pv {
            self.probe_pv();
        }
        self.set_idle_mode(idle);
        self.note_booted(CpuId(0));
        self.set_mask_mode(mode);
        self.mask_mode()
    }

    /// The x2APIC logical id of `cpu`, derived from its APIC id.
    #[inline(always)]
    fn logical_id(&self, cpu: CpuId) -> u32 {
        ipi_plan::logical_id(percpu::area(cpu).apic_id().0)
    }

    /// Called by every CPU when it starts idling: it has booted. Also checks
    /// that its LDR is the logical id derived from its APIC id.
    pub fn note_booted(&self, me: CpuId) {
        // A hint for choosing the shorthand; a CPU missing here only makes
        // senders use unicast.
        self.booted_once.assign(me, true);
        if x2apic::logical_id() != self.logical_id(me) {
            // A diagnostic, read by the bench.
            self.ldr_mismatch.assign(me, true);
        }
    }

    /// CPUs whose LDR was not what cluster mode assumes (they would miss
    /// cluster IPIs).
    pub fn ldr_mismatches(&self) -> CpuMask {
        self.ldr_mismatch.load()
    }

    /// Whether every CPU of the machine has booted once, so that the
    /// shorthand may be used.
    pub fn shorthand_ready(&self) -> bool {
        let all = self.all_cpus.load();
        self.booted_once.load().and(all) == all
    }

    /// Whether the send-IPI hypercall works here (probed).
    pub fn pv_usable(&self) -> bool {
        self.pv_status() == PvStatus::Usable
    }

    /// The mask mode in effect.
    pub fn mask_mode(&self) -> IpiMode {
        // Relaxed: a mode switch needs no ordering with the calls around it;
        // every mode delivers.
        IpiMode::from_u8(self.mask_mode.load(Ordering::Relaxed)).unwrap_or(IpiMode::Phys)
    }

    /// Idle mode in effect: `poll` if any CPU polls.
    pub fn idle_mode(&self) -> IdleMode {
        if self.poll_cpus().is_empty() {
            IdleMode::Halt
        } else {
            IdleMode::Poll
        }
    }

    /// The CPUs that poll when idle.
    pub fn poll_cpus(&self) -> CpuMask {
        self.poll_cpus.load()
    }

    /// Whether `cpu` polls when idle.
    #[inline(always)]
    pub fn idle_polls(&self, cpu: CpuId) -> bool {
        self.poll_cpus.test(cpu)
    }

    /// Recomputes the single-target flags from the modes and the fault
    /// injection.
    fn update_single_flags(&self) {
        let cluster = if self.mask_mode() == IpiMode::Cluster {
            SINGLE_CLUSTER
        } else {
            0
        };
        let poll = if self.idle_mode() == IdleMode::Poll {
            SINGLE_POLL
        } else {
            0
        };
        let drop = if ipi_fault::enabled() { SINGLE_DROP } else { 0 };
        // Relaxed: see `mask_mode`; the probe bit is kept.
        let probe = self.single_flags.load(Ordering::Relaxed) & SINGLE_PROBE;
        self.single_flags
            .store(cluster | poll | drop | probe, Ordering::Relaxed);
    }

    /// Switches the mask mode (`pv` only if usable); returns the previous one.
    /// Calls may be in flight: every mode delivers, so a switch is safe.
    pub fn set_mask_mode(&self, mode: IpiMode) -> IpiMode {
        let prev = self.mask_mode();
        let mode = if mode == IpiMode::Pv && !self.pv_usable() {
            IpiMode::Phys
        } else {
            mode
        };
        // Relaxed: see `mask_mode`.
        self.mask_mode.store(mode as u8, Ordering::Relaxed);
        self.update_single_flags();
        prev
    }

    /// Switches every CPU's idle mode.
    pub fn set_idle_mode(&self, idle: IdleMode) {
        let all = match idle {
            IdleMode::Poll => CpuMask::ALL,
            IdleMode::Halt => CpuMask::EMPTY,
        };
        self.set_poll_cpus(all);
    }

    /// Makes exactly the CPUs of `mask` poll when idle; returns the previous
    /// set. Safe at any time: a sender that does not check for polling sends
    /// the IPI, which a polling CPU takes (its interrupts are on), and a CPU
    /// that stops polling drains its queue. A halted CPU starts polling after
    /// its next interrupt.
    pub fn set_poll_cpus(&self, mask: CpuMask) -> CpuMask {
        let prev = self.poll_cpus.swap(mask);
        self.update_single_flags();
        // A polling CPU that busy calls keep woken looks at its mode only
        // when asked to (see `percpu::request_idle_recheck`); a halted one
        // at its next wake-up, which the caller sends.
        let changed = prev.or(mask).and_not(prev.and(mask));
        for cpu in changed.iter().take_while(|c| c.index() < MAX_CPUS) {
            percpu::request_idle_recheck(cpu);
        }
        prev
    }

    /// Fault injection (`ipi_drop=`): drops `permille` per mille of the
    /// call-function IPIs (boot CPU, before the APs start).
    pub fn set_drop_permille(&self, permille: u32) {
        ipi_fault::set_permille(permille);
        self.update_single_flags();
    }

    /// Benchmark only: write the `send-path` probe marker after each
    /// single-target ICR write (sends take the slow path meanwhile).
    pub fn set_probe(&self, on: bool) {
        // Relaxed: the bench sets it on the sending CPU itself.
        let f = self.single_flags.load(Ordering::Relaxed) & !SINGLE_PROBE;
        self.single_flags
            .store(f | if on { SINGLE_PROBE } else { 0 }, Ordering::Relaxed);
    }

    /// Benchmark only: after each mask send (every mode, the shorthand's
    /// `phys` fallback included), write the `Probe` marker of `case` right
    /// after the send's last ICR write (or hypercall); `None` stops it. The
    /// fan-out's send part (`SendBegin` ... this `Probe`).
    pub fn set_mask_probe(&self, case: Option<Case>) {
        // Relaxed: the bench sets it on the sending CPU itself, and only
        // that CPU sends meanwhile (as `set_probe`).
        self.mask_probe
            .store(case.map_or(0, |c| c as u8), Ordering::Relaxed);
    }

    /// The CALL_FUNCTION_SINGLE IPI to `cpu` (never this CPU), unless the
    /// fault injection (`ipi_drop=`) drops it.
    ///
    /// The benchmark's probe marker is written after the ICR write of the
    /// fast path itself, so that what it measures is exactly this path; its
    /// test costs two instructions after the write, none before.
    #[inline(always)]
    pub fn send_call_function_single(&self, cpu: CpuId) {
        // Relaxed: see `mask_mode`.
        let flags = self.single_flags.load(Ordering::Relaxed);
        if flags & !SINGLE_PROBE == 0 {
            send_phys(vectors::CALL_FUNCTION_SINGLE, cpu);
            if flags != 0 {
                probe_marker(Case::SendPath);
            }
        } else if flags == SINGLE_POLL {
            send_single_poll(cpu);
        } else {
            self.send_single_slow(cpu, flags);
        }
    }

    #[inline(never)]
    fn send_single_slow(&self, cpu: CpuId, flags: u32) {
        if flags & SINGLE_DROP != 0 && ipi_fault::drop_single() {
            return;
        }
        if flags & SINGLE_POLL != 0 && poll_idle::polls_after_queueing(cpu) {
            poll_idle::count_skipped();
            return;
        }
        if flags & SINGLE_CLUSTER != 0 {
            let ldr = self.logical_id(cpu);
            send_to(vectors::CALL_FUNCTION_SINGLE, Destination::Logical(ldr));
        } else {
            send_phys(vectors::CALL_FUNCTION_SINGLE, cpu);
        }
        if flags & SINGLE_PROBE != 0 {
            probe_marker(Case::SendPath);
        }
    }

    /// The CALL_FUNCTION IPI to every CPU of `mask` (never this CPU);
    /// `online` is the online mask (for the shorthand's check). Then the
    /// benchmark's probe marker, if [`Self::set_mask_probe`] asked for one
    /// (one load and test when not).
    pub fn send_call_function_mask(&self, mask: CpuMask, online: CpuMask) {
        self.send_mask(mask, online);
        // Relaxed: see `set_mask_probe`.
        let probe = self.mask_probe.load(Ordering::Relaxed);
        if probe != 0 {
            mask_probe_marker(probe);
        }
    }

    #[inline(always)]
    fn send_mask(&self, mask: CpuMask, online: CpuMask) {
        match self.mask_mode() {
            IpiMode::Phys => send_mask_phys(mask),
            IpiMode::Shorthand => {
                if self.shorthand_ready() && mask.with(percpu::this_cpu()) == online {
                    send_to(vectors::CALL_FUNCTION, Destination::AllButSelf);
                } else {
                    send_mask_phys(mask);
                }
            }
            IpiMode::Cluster => {
                ipi_plan::for_each_cluster(
                    mask.iter().map(|c| percpu::area(c).apic_id().0),
                    |ldr| send_to(vectors::CALL_FUNCTION, Destination::Logical(ldr)),
                );
            }
            IpiMode::Pv => {
                if !send_mask_pv(self.hypercall_insn(), mask) {
                    // Linux WARNs once; here the mode falls back for good and
                    // this mask is delivered again (a second IPI is harmless).
                    self.set_mask_mode(IpiMode::Phys);
                    crate::kprintln!("ipi: KVM_HC_SEND_IPI failed; using ipi=phys from now on");
                    send_mask_phys(mask);
                }
            }
        }
    }
}

impl Default for IpiDelivery {
    fn default() -> Self {
        Self::new()
    }
}

/// A call-function IPI to one CPU, physical destination. Every sender
/// of a call-function IPI has just queued with a locked compare-exchange
/// (the smp core's `llist` add), hence the lighter fence.
#[inline(always)]
fn send_phys(vector: Vector, cpu: CpuId) {
    let apic = percpu::area(cpu).apic_id();
    x2apic::send_after_locked_rmw(Icr::fixed(vector, Destination::Physical(apic)));
}

/// A call-function IPI to a logical destination or shorthand (see
/// [`send_phys`] for the fence).
#[inline(always)]
fn send_to(vector: Vector, dest: Destination) {
    x2apic::send_after_locked_rmw(Icr::fixed(vector, dest));
}

/// `idle=poll` alone: the wake-up through memory is this mode's hot path,
/// so it skips the other modes' tests (out of line, so that the physical
/// path keeps its registers).
#[inline(never)]
fn send_single_poll(cpu: CpuId) {
    if poll_idle::polls_after_queueing(cpu) {
        poll_idle::count_skipped();
    } else {
        send_phys(vectors::CALL_FUNCTION_SINGLE, cpu);
    }
}

/// The benchmark's `Probe` marker of `case` (`send-path` after an ICR
/// write; the bench calls it directly to calibrate it).
#[cold]
#[inline(never)]
pub fn probe_marker(case: Case) {
    let m = Marker {
        case,
        phase: Phase::Probe,
    };
    cpu::outl(Port::BenchMarker as u16, m.value());
}

/// The mask send's `Probe` marker of case id `case` (see
/// [`IpiDelivery::set_mask_probe`]; an id that is no case writes nothing).
#[cold]
#[inline(never)]
fn mask_probe_marker(case: u8) {
    if let Some(case) = Case::from_u8(case) {
        probe_marker(case);
    }
}

fn send_mask_phys(mask: CpuMask) {
    for cpu in mask {
        send_phys(vectors::CALL_FUNCTION, cpu);
    }
}

/// One hypercall per 128-id window; false if KVM refused one.
fn send_mask_pv(insn: Insn, mask: CpuMask) -> bool {
    let icr = Icr::fixed(
        vectors::CALL_FUNCTION,
        Destination::Physical(shared::ApicId(0)),
    );
    let icr_low = icr.value() & 0xffff_ffff;
    let mut ok = true;
    // The hypercall is a VM exit: KVM reads our queue insertions after it,
    // in program order, so no fence is needed (unlike the ICR write).
    let ids = mask.iter().map(|c| percpu::area(c).apic_id().0);
    ipi_plan::for_each_pv_window(ids, |base, bitmap| {
        // SAFETY: the boot probe showed this hypercall works here; it
        // only delivers CALL_FUNCTION to the CPUs of the bitmap.
        let r = unsafe {
            hypercall::hypercall4(
                insn,
                hypercall::KVM_HC_SEND_IPI,
                bitmap as u64,
                (bitmap >> 64) as u64,
                u64::from(base),
                icr_low,
            )
        };
        ok &= r >= 0;
    });
    ok
}
