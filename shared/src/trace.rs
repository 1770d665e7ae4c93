//! Trace rings: the guest's record of every cross call (Linux's `ipi`,
//! `csd` and `cpuhp` tracepoints), read by the VMM.
//!
//! # Where
//!
//! When tracing is on the VMM reserves one region of guest memory and
//! tells the guest its base and the bytes of one CPU's ring in
//! [`crate::bootinfo::BootInfo::trace_base`] and
//! [`crate::bootinfo::BootInfo::trace_ring_bytes`] (both 0 when tracing is
//! off). The ring of CPU `n` is at `base + n * ring_bytes`. The size comes
//! from the command-line word `trace_buf=KiB` (KiB per CPU, see
//! [`parse_cmdline`]); the default, [`DEFAULT_RING_KIB`], holds the last
//! 4096 events of each CPU.
//!
//! # Ring
//!
//! A [`HEADER_BYTES`] header, then [`capacity`]`(ring_bytes)` entries of
//! [`ENTRY_BYTES`] (a power of two). The header's first word, `head`
//! ([`HEAD_OFFSET`]), counts the events the CPU has written so far
//! (monotonic); the rest of the header is reserved (zero). Event number
//! `i` lives in slot `i % capacity`; the ring overwrites its oldest
//! events. Only its own CPU writes a ring.
//!
//! # Entry
//!
//! [`Entry`]: `seq`, `tsc`, `event`, `cpu`, `arg32`, `args[5]`, 64 bytes
//! little-endian with no padding. `seq` is `i + 1` for event `i` (0 means
//! never written). The writer publishes event `i` like a seqlock:
//!
//! 1. store `seq = 0` (the slot is being rewritten),
//! 2. Release fence (the fields below cannot pass that store),
//! 3. store `tsc`, `event`, `cpu`, `arg32`, `args`,
//! 4. store `seq = i + 1` with Release,
//! 5. store `head = i + 1` with Release.
//!
//! The reader ([`read_entry`]) reads `seq`, the whole entry, then `seq`
//! again (Acquire between them); the entry is whole only if both reads and
//! the copy's own `seq` equal `i + 1`. A slot being rewritten reads 0 or
//! the newer number and is reported as [`EntryError::Torn`] or
//! [`EntryError::Overwritten`].
//!
//! # Trust
//!
//! The rings are guest memory: the reader never trusts sizes or indices
//! from them. It uses its own `ring_bytes` (the one it placed), takes
//! `head` only to choose which event numbers to expect (every slot index
//! is taken modulo the capacity), and accepts an entry only by its `seq`;
//! the event number is checked by [`Entry::event_id`].
//!
//! # Events
//!
//! `cpu` is always the CPU that wrote the entry and `tsc` its `rdtsc` when
//! it did. What `arg32` and `args` hold is listed on each
//! [`TraceEventId`]; unused arguments are 0. `callsite` is an address
//! inside the function that called the smp API (Rust has no `_RET_IP_`:
//! the traced guest inlines the API into its caller and records the
//! instruction pointer there, which symbolizes to the same function as
//! Linux's return address), `func`
//! and `callback` are code addresses, `csd` the csd's address: all
//! guest-virtual (= guest-physical, identity map), for symbolization
//! against the guest ELF.

use crate::cmdline::{NumberError, params, parse_u64};

/// Bytes of one entry.
pub const ENTRY_BYTES: usize = 64;
/// Bytes of a ring's header.
pub const HEADER_BYTES: usize = 64;
/// Byte offset of `head` (u64) in a ring's header.
pub const HEAD_OFFSET: usize = 0;
/// Default `trace_buf`: KiB of one CPU's ring. 4096 entries and the
/// header need 256 KiB + 64 B; 260 KiB keeps rings page aligned.
pub const DEFAULT_RING_KIB: u32 = 260;
/// Smallest `trace_buf`: 4 KiB (32 entries).
pub const MIN_RING_KIB: u32 = 4;
/// Largest `trace_buf`: 64 MiB per CPU.
pub const MAX_RING_KIB: u32 = 64 * 1024;
/// The command-line word that turns tracing on (`trace_buf=` does too).
pub const CMDLINE_TRACE: &str = "trace";
/// The command-line key of the per-CPU ring size in KiB.
pub const CMDLINE_TRACE_BUF: &str = "trace_buf";

/// Byte offsets of an entry's fields.
pub mod offsets {
    /// `seq: u64`.
    pub const SEQ: usize = 0;
    /// `tsc: u64`.
    pub const TSC: usize = 8;
    /// `event: u16`.
    pub const EVENT: usize = 16;
    /// `cpu: u16`.
    pub const CPU: usize = 18;
    /// `arg32: u32`.
    pub const ARG32: usize = 20;
    /// `args: [u64; 5]`.
    pub const ARGS: usize = 24;
}

wire_enum! {
    /// What a trace entry records (Linux's tracepoint names). The field
    /// list says which argument holds what.
    pub enum TraceEventId: u16 {
        /// A csd was queued to a CPU (`csd_queue_cpu`). `arg32` = target
        /// CPU, `args` = [callsite, func, csd].
        CsdQueueCpu = 1 => "csd_queue_cpu",
        /// An IPI was sent to one CPU (`ipi_send_cpu`). `arg32` = target
        /// CPU, `args` = [callsite, callback].
        IpiSendCpu = 2 => "ipi_send_cpu",
        /// An IPI was sent to a mask of CPUs (`ipi_send_cpumask`).
        /// `arg32` = number of CPUs in the mask, `args` = [callsite,
        /// callback, mask word 0 (CPUs 0-63), word 1 (64-127), word 2
        /// (128-191)]. For wider masks the words cover only CPUs 0-191;
        /// the count is always exact.
        IpiSendCpumask = 3 => "ipi_send_cpumask",
        /// The call-function IPI handler starts (`call_function_entry`).
        /// `arg32` = vector.
        CallFunctionEntry = 4 => "call_function_entry",
        /// The call-function IPI handler ends (`call_function_exit`).
        /// `arg32` = vector.
        CallFunctionExit = 5 => "call_function_exit",
        /// The call-function-single IPI handler starts
        /// (`call_function_single_entry`). `arg32` = vector.
        CallFunctionSingleEntry = 6 => "call_function_single_entry",
        /// The call-function-single IPI handler ends
        /// (`call_function_single_exit`). `arg32` = vector.
        CallFunctionSingleExit = 7 => "call_function_single_exit",
        /// A csd's callback starts (`csd_function_entry`). `args` =
        /// [func, csd].
        CsdFunctionEntry = 8 => "csd_function_entry",
        /// A csd's callback returned (`csd_function_exit`). `args` =
        /// [func, csd].
        CsdFunctionExit = 9 => "csd_function_exit",
        /// This CPU starts running its irq_work list (`irq_work_run`
        /// entry). No arguments.
        IrqWorkRunEntry = 10 => "irq_work_run_entry",
        /// This CPU finished its irq_work list. `arg32` = works run.
        IrqWorkRunExit = 11 => "irq_work_run_exit",
        /// A sender starts waiting for a csd's lock
        /// (`csd_lock_wait_start`... Linux's `csd_lock_wait`). `arg32` =
        /// target CPU, `args` = [csd, func].
        CsdLockWaitStart = 12 => "csd_lock_wait_start",
        /// The wait for a csd's lock ended. `arg32` = target CPU, `args`
        /// = [csd, func].
        CsdLockWaitEnd = 13 => "csd_lock_wait_end",
        /// A hotplug step starts (`cpuhp_enter`). `arg32` = the CPU going
        /// up or down, `args` = [step ([`CpuhpStep`])].
        CpuhpEnter = 14 => "cpuhp_enter",
        /// A hotplug step ended (`cpuhp_exit`). `arg32` = the CPU, `args`
        /// = [step ([`CpuhpStep`]), result (0 ok, 1 failed)].
        CpuhpExit = 15 => "cpuhp_exit",
        /// The stall detector reports a csd lock held too long
        /// (`csd_lock_wait_toolong`). `arg32` = target CPU, `args` =
        /// [func, waited ns, csd].
        CsdStallReport = 16 => "csd_stall_report",
        /// The stall detector re-sent the IPI. `arg32` = target CPU,
        /// `args` = [func, waited ns, csd].
        CsdStallResend = 17 => "csd_stall_resend",
        /// A reported stall ended: the lock was released. `arg32` =
        /// target CPU, `args` = [func, waited ns, csd].
        CsdStallUnstuck = 18 => "csd_stall_unstuck",
    }
}

wire_enum! {
    /// A hotplug step of the smp core, as in Linux's cpuhp state names.
    pub enum CpuhpStep: u64 {
        /// `smpcfd_prepare_cpu`, on a control CPU before the CPU starts.
        SmpcfdPrepare = 1 => "smpcfd:prepare",
        /// The outgoing CPU waits for senders in their send window.
        SyncSenders = 2 => "smpcfd:sync_senders",
        /// `smpcfd_dying_cpu`, on the outgoing CPU.
        SmpcfdDying = 3 => "smpcfd:dying",
        /// `smpcfd_dead_cpu`.
        SmpcfdDead = 4 => "smpcfd:dead",
    }
}

/// One trace entry, as stored in a ring (see the module docs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Event number + 1 (0: never written or being rewritten).
    pub seq: u64,
    /// The writing CPU's TSC.
    pub tsc: u64,
    /// [`TraceEventId`] as its number.
    pub event: u16,
    /// The writing CPU.
    pub cpu: u16,
    /// Per event (see [`TraceEventId`]).
    pub arg32: u32,
    /// Per event (see [`TraceEventId`]).
    pub args: [u64; 5],
}

const _: () = assert!(core::mem::size_of::<Entry>() == ENTRY_BYTES);
const _: () = assert!(offsets::ARGS + 5 * 8 == ENTRY_BYTES);
const _: () = assert!(HEAD_OFFSET + 8 <= HEADER_BYTES);

fn u64_at(b: &[u8; ENTRY_BYTES], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl Entry {
    /// The entry's 64 bytes.
    pub fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut b = [0u8; ENTRY_BYTES];
        b[offsets::SEQ..offsets::SEQ + 8].copy_from_slice(&self.seq.to_le_bytes());
        b[offsets::TSC..offsets::TSC + 8].copy_from_slice(&self.tsc.to_le_bytes());
        b[offsets::EVENT..offsets::EVENT + 2].copy_from_slice(&self.event.to_le_bytes());
        b[offsets::CPU..offsets::CPU + 2].copy_from_slice(&self.cpu.to_le_bytes());
        b[offsets::ARG32..offsets::ARG32 + 4].copy_from_slice(&self.arg32.to_le_bytes());
        for (i, a) in self.args.iter().enumerate() {
            let at = offsets::ARGS + 8 * i;
            b[at..at + 8].copy_from_slice(&a.to_le_bytes());
        }
        b
    }

    /// The entry in 64 bytes (any bytes decode; check [`Self::seq`] and
    /// [`Self::event_id`]).
    pub fn decode(b: &[u8; ENTRY_BYTES]) -> Entry {
        let mut args = [0u64; 5];
        for (i, a) in args.iter_mut().enumerate() {
            *a = u64_at(b, offsets::ARGS + 8 * i);
        }
        Entry {
            seq: u64_at(b, offsets::SEQ),
            tsc: u64_at(b, offsets::TSC),
            event: u16::from_le_bytes([b[offsets::EVENT], b[offsets::EVENT + 1]]),
            cpu: u16::from_le_bytes([b[offsets::CPU], b[offsets::CPU + 1]]),
            arg32: u32::from_le_bytes([
                b[offsets::ARG32],
                b[offsets::ARG32 + 1],
                b[offsets::ARG32 + 2],
                b[offsets::ARG32 + 3],
            ]),
            args,
        }
    }

    /// The event, or its unknown number.
    pub fn event_id(&self) -> Result<TraceEventId, u16> {
        TraceEventId::try_from(self.event)
    }
}

/// Entries a ring of `ring_bytes` holds: the largest power of two that
/// fits after the header (0 if none does).
pub const fn capacity(ring_bytes: u64) -> u64 {
    if ring_bytes < (HEADER_BYTES + ENTRY_BYTES) as u64 {
        return 0;
    }
    let fit = (ring_bytes - HEADER_BYTES as u64) / ENTRY_BYTES as u64;
    1u64 << (63 - fit.leading_zeros())
}

/// Byte offset, within its ring, of the slot of event number `index`.
/// `capacity` must be a power of two (as [`capacity`] returns); 0 gives
/// the first slot.
pub const fn slot_offset(capacity: u64, index: u64) -> u64 {
    let slot = index & capacity.wrapping_sub(1);
    HEADER_BYTES as u64 + slot * ENTRY_BYTES as u64
}

/// Bytes of one CPU's ring for `trace_buf=kib`.
pub const fn ring_bytes(kib: u32) -> u64 {
    kib as u64 * 1024
}

/// Bytes of the whole region for `cpus` rings of `ring_bytes`.
pub const fn region_bytes(ring_bytes: u64, cpus: u32) -> u64 {
    ring_bytes.saturating_mul(cpus as u64)
}

/// What the command line says about tracing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceCmdline {
    /// `trace` or `trace_buf=` is present.
    pub on: bool,
    /// `trace_buf=KiB`, if given.
    pub ring_kib: Option<u32>,
}

impl TraceCmdline {
    /// KiB of one CPU's ring: the one given or [`DEFAULT_RING_KIB`].
    pub fn kib(&self) -> u32 {
        self.ring_kib.unwrap_or(DEFAULT_RING_KIB)
    }
}

/// Why `trace_buf=` is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceBufError {
    /// Not a number.
    Number(NumberError),
    /// Outside [`MIN_RING_KIB`]..=[`MAX_RING_KIB`] (the value).
    OutOfRange(u64),
}

impl core::fmt::Display for TraceBufError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TraceBufError::Number(e) => write!(f, "trace_buf: not a number of KiB ({e:?})"),
            TraceBufError::OutOfRange(v) => write!(
                f,
                "trace_buf={v}: KiB per CPU must be {MIN_RING_KIB} to {MAX_RING_KIB}"
            ),
        }
    }
}

/// Checks a `trace_buf` value in KiB.
pub fn check_ring_kib(kib: u64) -> Result<u32, TraceBufError> {
    if (MIN_RING_KIB as u64..=MAX_RING_KIB as u64).contains(&kib) {
        Ok(kib as u32)
    } else {
        Err(TraceBufError::OutOfRange(kib))
    }
}

/// Reads `trace` and `trace_buf=KiB` from a command line (the last
/// `trace_buf` wins). Both sides use this: the VMM to place the rings,
/// the guest only to report what it was asked.
pub fn parse_cmdline(cmdline: &str) -> Result<TraceCmdline, TraceBufError> {
    let mut t = TraceCmdline::default();
    for p in params(cmdline) {
        if p.key == CMDLINE_TRACE && p.value.is_none() {
            t.on = true;
        } else if p.key == CMDLINE_TRACE_BUF {
            let kib = parse_u64(p.value).map_err(TraceBufError::Number)?;
            t.ring_kib = Some(check_ring_kib(kib)?);
            t.on = true;
        }
    }
    Ok(t)
}

/// Read access to one ring's bytes (guest memory on the host, or a
/// snapshot). Offsets are relative to the ring's start.
pub trait RingSource {
    /// Fills `buf` from byte `offset` of the ring; bytes past the ring
    /// read as 0. Must not tear an aligned 8-byte read of `seq` or `head`
    /// (one load).
    fn read(&self, offset: u64, buf: &mut [u8]);
}

impl RingSource for [u8] {
    fn read(&self, offset: u64, buf: &mut [u8]) {
        buf.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if let Some(src) = self.get(start..) {
            let n = src.len().min(buf.len());
            buf[..n].copy_from_slice(&src[..n]);
        }
    }
}

fn read_u64(src: &(impl RingSource + ?Sized), offset: u64) -> u64 {
    let mut w = [0u8; 8];
    src.read(offset, &mut w);
    u64::from_le_bytes(w)
}

/// The ring's `head` (untrusted: use it only as in [`entries`]).
pub fn read_head(src: &(impl RingSource + ?Sized)) -> u64 {
    read_u64(src, HEAD_OFFSET as u64)
}

/// Why an entry could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryError {
    /// The slot holds an older event or was never written (its `seq`).
    Missing(u64),
    /// The slot was being written while it was read.
    Torn,
    /// The slot holds a newer event (its `seq`): this one was
    /// overwritten.
    Overwritten(u64),
}

/// Reads event number `index` of a ring of `capacity` entries (a power of
/// two), checking it by its `seq` as the module docs say.
pub fn read_entry(
    src: &(impl RingSource + ?Sized),
    capacity: u64,
    index: u64,
) -> Result<Entry, EntryError> {
    let at = slot_offset(capacity, index);
    let want = index.wrapping_add(1);
    let seq1 = read_u64(src, at);
    // Acquire: pairs with the writer's Release store of `seq`; the fields
    // read below are at least as new as that store.
    core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
    let mut b = [0u8; ENTRY_BYTES];
    src.read(at, &mut b);
    // Acquire: the field reads above happen before the second `seq` read,
    // which pairs with the writer's Release fence after `seq = 0`: if
    // they saw a rewrite, this read sees 0 or the newer number.
    core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
    let seq2 = read_u64(src, at);
    let e = Entry::decode(&b);
    if seq1 != want {
        // 0: never written, or being rewritten right now.
        return Err(if seq1 > want {
            EntryError::Overwritten(seq1)
        } else {
            EntryError::Missing(seq1)
        });
    }
    if e.seq != want || seq2 != want {
        return Err(EntryError::Torn);
    }
    Ok(e)
}

/// The event numbers a ring of `capacity` still holds when its `head` is
/// `head`, oldest first: at most `capacity` of them. A lying `head` only
/// changes which numbers are tried; every entry is still checked by
/// [`read_entry`].
pub fn live_range(capacity: u64, head: u64) -> core::ops::Range<u64> {
    head.saturating_sub(capacity)..head
}

/// Reads the events a ring still holds, oldest first: each a whole entry
/// or why not.
pub fn entries<'a, S: RingSource + ?Sized>(
    src: &'a S,
    ring_bytes: u64,
) -> impl Iterator<Item = Result<Entry, EntryError>> + 'a {
    let cap = capacity(ring_bytes);
    let head = if cap == 0 { 0 } else { read_head(src) };
    live_range(cap, head).map(move |i| read_entry(src, cap, i))
}

/// Writes `entry` as event number `index` (its `seq` is set to
/// `index + 1`) and advances `head`, in the writer's order (module docs),
/// into a ring held in a byte buffer of `ring_bytes` or more. For
/// host-side tests and tools; the guest writes its rings with atomic
/// stores in the same order. Writes nothing past the buffer.
pub fn write_entry(ring: &mut [u8], ring_bytes: u64, index: u64, entry: &Entry) {
    let cap = capacity(ring_bytes);
    if cap == 0 {
        return;
    }
    let Ok(at) = usize::try_from(slot_offset(cap, index)) else {
        return;
    };
    let Some(slot) = ring.get_mut(at..at + ENTRY_BYTES) else {
        return;
    };
    slot[..8].copy_from_slice(&0u64.to_le_bytes());
    let mut e = *entry;
    e.seq = index.wrapping_add(1);
    let b = e.encode();
    slot[8..].copy_from_slice(&b[8..]);
    slot[..8].copy_from_slice(&b[..8]);
    if let Some(h) = ring.get_mut(HEAD_OFFSET..HEAD_OFFSET + 8) {
        h.copy_from_slice(&e.seq.to_le_bytes());
    }
}

#[cfg(test)]
#[path = "trace_tests.rs"]
mod tests;
