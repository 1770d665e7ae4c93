//! Structured records the guest sends to [`crate::ports::Port::Record`].
//!
//! Wire format, little-endian: an 8-byte header — magic `b"SR"`, kind (u8),
//! reserved (u8, 0), CPU number (u16), payload length (u16) — then the
//! payload, the fields of its [`Body`] variant in order, encoded by
//! [`crate::wire::Wire`] (strings are a u8 length and that many UTF-8
//! bytes). Every kind is declared once, in [`Body`]. The guest
//! writes the guest-physical address of one record, at most [`RECORD_MAX`]
//! bytes, to the record port.
//!
//! The host decodes with [`Record::decode`], which never panics and rejects
//! anything malformed: the guest is untrusted.

/// Largest encoded record, header included.
pub const RECORD_MAX: usize = 512;
/// Header size.
pub const HEADER_LEN: usize = 8;
const MAGIC: [u8; 2] = *b"SR";

use crate::wire::{Reader, WireError, Writer};
use crate::{ApicId, CpuId};

pub use crate::wire::Overflow;

wire_enum! {
    /// Kinds of warnings the smp core counts (the seed's WARN conditions).
    pub enum WarnKind: u8 {
        /// A waiting cross-call was made with interrupts disabled.
        WaitWithIrqsDisabled = 1 => "wait-with-irqs-disabled",
        /// A csd was unlocked that was not locked.
        UnlockNotLocked = 2 => "csd-unlock-not-locked",
        /// A call-function IPI arrived on an offline CPU with work queued.
        IpiOnOfflineCpu = 3 => "ipi-on-offline-cpu",
        /// A callback was queued to an offline CPU (listed after the above).
        CallbackOnOfflineCpu = 4 => "callback-on-offline-cpu",
        /// The queue was flushed with interrupts enabled.
        FlushWithIrqsEnabled = 5 => "flush-with-irqs-enabled",
        /// An irq_work was queued to an offline or invalid CPU (refused).
        IrqWorkOnOfflineCpu = 6 => "irq-work-on-offline-cpu",
        /// A CPU going offline waited too long for a sender to finish queueing
        /// (detail: the sender's CPU number).
        HotplugSenderTimeout = 7 => "hotplug-sender-timeout",
        /// `irq_work_sync` waited past the csd-lock timeout for a work to
        /// finish (detail: the work's function); it goes on waiting.
        IrqWorkSyncStall = 8 => "irq-work-sync-stall",
    }
}

wire_enum! {
    /// How a test case ended ([`Body::Test`]).
    pub enum Verdict: u8 {
        /// It ran and its checks held (the detail says what was checked).
        Pass = 0 => "pass",
        /// It ran and a check failed (the detail says which).
        Fail = 1 => "fail",
        /// It could not exercise its behaviour here, e.g. with too few
        /// CPUs (the detail says why).
        Skip = 2 => "skip",
    }
}

/// Name of the [`Body::Counter`] the self-test sends after its cases: how
/// many csd-lock stalls its cases provoked on purpose (detected while a
/// case had lowered the stall timeout), so that the VMM can tell them from
/// real ones.
pub const PROVOKED_STALLS_COUNTER: &str = "selftest.provoked_csd_stalls";

wire_records! {
    /// A record's payload; `S` is `&str` when decoded in place, `String` for
    /// the host's owned copies. Each variant's fields are its wire payload,
    /// in order.
    pub enum Body<S> {
        /// The CPU finished its bring-up and is online.
        CpuOnline = 1 {
            /// Its x2APIC id, as read from the APIC.
            apic_id: ApicId,
        },
        /// One named test case finished (or was skipped).
        Test = 2 {
            /// How it ended.
            verdict: Verdict,
            /// Case name, unique within the suite.
            name: S,
            /// What was checked, why it failed, or why it was skipped.
            detail: S,
        },
        /// A CPU exception the guest could not handle.
        Exception = 3 {
            /// Exception vector.
            vector: u8,
            /// Error code (0 when the vector has none).
            error_code: u64,
            /// Faulting instruction.
            rip: u64,
            /// CR2 (the faulting address of a page fault).
            cr2: u64,
        },
        /// A warning condition of the smp core fired on the sending CPU.
        Warn = 4 {
            /// Which condition.
            kind: WarnKind,
            /// How often it has fired on this CPU so far, this one included.
            count: u32,
            /// Context, by kind:
            /// - [`WarnKind::WaitWithIrqsDisabled`]: the target CPU of a
            ///   single call, or the mask bits of a multi-CPU call;
            /// - [`WarnKind::UnlockNotLocked`]: the csd's function address;
            /// - [`WarnKind::IpiOnOfflineCpu`]: how many calls were pending;
            /// - [`WarnKind::CallbackOnOfflineCpu`]: one pending function's
            ///   address (one record per pending call);
            /// - [`WarnKind::FlushWithIrqsEnabled`]: 0 from the call-queue
            ///   flush, 1 from `irq_work_run`;
            /// - [`WarnKind::IrqWorkOnOfflineCpu`]: the refused target CPU;
            /// - [`WarnKind::HotplugSenderTimeout`]: the sender's CPU number;
            /// - [`WarnKind::IrqWorkSyncStall`]: the work's function.
            detail: u64,
        },
        /// A named counter of one CPU.
        Counter = 5 {
            /// Counter name.
            name: S,
            /// Its value.
            value: u64,
        },
        /// A csd-lock wait of the sending CPU (the waiter) has lasted past
        /// the stall timeout: modern Linux's "Detected / Continued
        /// non-responsive CSD lock" report (`csd_lock_wait_toolong`).
        CsdStall = 16 {
            /// Stall number, shared with the matching [`Body::CsdUnstuck`].
            id: u32,
            /// The CPU that should run the csd.
            target: CpuId,
            /// Address of the csd's function.
            func: u64,
            /// The csd's `info` word.
            info: u64,
            /// Nanoseconds since the wait was first checked.
            waited_ns: u64,
            /// Address of the function the target is running now (this
            /// csd's or a prior one), 0 if none.
            target_running: u64,
            /// 1 for the first report of this stall, then 2, 3, ...
            nth: u32,
            /// Whether the waiter re-sent the IPI (done when
            /// `target_running` is 0: the target is not busy with a
            /// callback, so the IPI may have been lost).
            resent_ipi: bool,
        },
        /// A stalled csd lock of the sending CPU was released after it had
        /// been reported ("CSD lock got unstuck").
        CsdUnstuck = 17 {
            /// The stall number of the earlier [`Body::CsdStall`] reports.
            id: u32,
            /// The CPU that released the lock.
            target: CpuId,
            /// Address of the csd's function.
            func: u64,
            /// Total wait, in nanoseconds since the wait was first checked.
            waited_ns: u64,
            /// How many [`Body::CsdStall`] reports were made.
            reports: u32,
        },
    }
}

/// A record: who sent it and what it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// CPU number of the sender.
    pub cpu: u16,
    /// The payload.
    pub body: Body<&'a str>,
}

/// Why a record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the header or the declared payload.
    Truncated,
    /// More bytes than the header declares, or than [`RECORD_MAX`].
    TooLong {
        /// The payload length the header declares (header bytes 6-7, read
        /// even when the buffer is over [`RECORD_MAX`] before any other
        /// check).
        payload: u16,
    },
    /// The header does not start with the magic.
    BadMagic,
    /// Unknown record kind.
    UnknownKind(u8),
    /// A field holds a value outside its range.
    BadField(&'static str),
    /// A string is not UTF-8.
    BadUtf8,
}

impl DecodeError {
    /// The error for field `name` that could not be read.
    pub const fn field(name: &'static str, e: WireError) -> Self {
        match e {
            WireError::Truncated => DecodeError::Truncated,
            WireError::BadValue(_) => DecodeError::BadField(name),
            WireError::BadUtf8 => DecodeError::BadUtf8,
        }
    }
}

impl From<WireError> for DecodeError {
    fn from(e: WireError) -> Self {
        DecodeError::field("header", e)
    }
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "record truncated"),
            DecodeError::TooLong { .. } => write!(f, "record longer than its header says"),
            DecodeError::BadMagic => write!(f, "record without magic"),
            DecodeError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            DecodeError::BadField(n) => write!(f, "bad value in field {n}"),
            DecodeError::BadUtf8 => write!(f, "string is not UTF-8"),
        }
    }
}

/// The fields of a record header.
struct Header {
    kind: u8,
    reserved: u8,
    cpu: u16,
    payload: u16,
}

impl Header {
    /// Reads a header. Checks the magic and nothing else.
    fn read(r: &mut Reader<'_>) -> Result<Header, DecodeError> {
        if r.array::<2>()? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        Ok(Header {
            kind: r.get()?,
            reserved: r.get()?,
            cpu: r.get()?,
            payload: r.get()?,
        })
    }

    /// Total record length declared, header included.
    fn len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload)
    }
}

/// The total length a header declares (header included), or why the
/// header is unusable. Lets the host read exactly one record from guest
/// memory before decoding it.
pub fn declared_len(header: &[u8; HEADER_LEN]) -> Result<usize, DecodeError> {
    let h = Header::read(&mut Reader::at(header, 0))?;
    if h.len() > RECORD_MAX {
        return Err(DecodeError::TooLong { payload: h.payload });
    }
    Ok(h.len())
}

impl<'a> Record<'a> {
    /// Encodes into `buf`, returning the number of bytes used.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, Overflow> {
        let mut w = Writer::at(buf, HEADER_LEN);
        self.body.put_fields(&mut w);
        let len = w.finish()?;
        if len > RECORD_MAX {
            return Err(Overflow);
        }
        let payload = (len - HEADER_LEN) as u16;
        let mut h = Writer::at(w.buf(), 0);
        h.bytes(&MAGIC);
        h.put(&self.body.kind());
        h.put(&0u8);
        h.put(&self.cpu);
        h.put(&payload);
        h.finish()?;
        Ok(len)
    }

    /// Decodes exactly one record from `buf`. Never panics.
    pub fn decode(buf: &'a [u8]) -> Result<Record<'a>, DecodeError> {
        if buf.len() > RECORD_MAX {
            // Only the length field is read: there is no point in checking more.
            let payload = Reader::at(buf, 6).get()?;
            return Err(DecodeError::TooLong { payload });
        }
        let mut r = Reader::at(buf, 0);
        let h = Header::read(&mut r)?;
        let too_long = DecodeError::TooLong { payload: h.payload };
        if h.reserved != 0 {
            return Err(DecodeError::BadField("reserved"));
        }
        match h.len().cmp(&buf.len()) {
            core::cmp::Ordering::Greater => return Err(DecodeError::Truncated),
            core::cmp::Ordering::Less => return Err(too_long),
            core::cmp::Ordering::Equal => {}
        }
        let body = Body::get_fields(h.kind, &mut r)?;
        if r.pos() != buf.len() {
            return Err(too_long);
        }
        Ok(Record { cpu: h.cpu, body })
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
