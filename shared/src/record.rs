//! Structured records the guest sends to [`crate::ports::Port::Record`].
//!
//! Wire format, little-endian: an 8-byte header — magic `b"SR"`, kind (u8),
//! reserved (u8, 0), CPU number (u16), payload length (u16) — then the
//! payload. Strings are a u8 length and that many UTF-8 bytes. The guest
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

/// A record's payload; `S` is `&str` when decoded in place, `String` for
/// the host's owned copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<S> {
    /// The CPU finished its bring-up and is online.
    CpuOnline {
        /// Its x2APIC id, as read from the APIC.
        apic_id: u32,
    },
    /// One named self-test case finished.
    Test {
        /// Whether it passed.
        passed: bool,
        /// Case name, unique within the suite.
        name: S,
        /// What was checked, or why it failed.
        detail: S,
    },
    /// A CPU exception the guest could not handle.
    Exception {
        /// Exception vector.
        vector: u8,
        /// Error code (0 when the vector has none).
        error_code: u64,
        /// Faulting instruction.
        rip: u64,
        /// CR2 (the faulting address of a page fault).
        cr2: u64,
    },
    /// A warning condition of the smp core fired.
    Warn {
        /// Which condition.
        kind: WarnKind,
        /// How often it has fired on this CPU so far.
        count: u32,
        /// Context: the callback address involved, or 0.
        detail: u64,
    },
    /// A named counter of one CPU.
    Counter {
        /// Counter name.
        name: S,
        /// Its value.
        value: u64,
    },
    /// A csd-lock wait of the sending CPU (the waiter) has lasted past the
    /// stall timeout: modern Linux's "Detected / Continued non-responsive
    /// CSD lock" report (`csd_lock_wait_toolong`).
    CsdStall {
        /// Stall number, shared with the matching [`Body::CsdUnstuck`].
        id: u32,
        /// The CPU that should run the csd.
        target: u32,
        /// Address of the csd's function.
        func: u64,
        /// The csd's `info` word.
        info: u64,
        /// Nanoseconds waited so far.
        waited_ns: u64,
        /// Address of the function the target is running now, 0 if none.
        target_running: u64,
        /// 1 for the first report of this stall, then 2, 3, ...
        nth: u32,
        /// Whether the waiter re-sent the IPI.
        resent_ipi: bool,
    },
    /// A stalled csd lock of the sending CPU was released after it had
    /// been reported ("CSD lock got unstuck").
    CsdUnstuck {
        /// The stall number of the earlier [`Body::CsdStall`] reports.
        id: u32,
        /// The CPU that released the lock.
        target: u32,
        /// Address of the csd's function.
        func: u64,
        /// Total wait in nanoseconds.
        waited_ns: u64,
        /// How many [`Body::CsdStall`] reports were made.
        reports: u32,
    },
}

impl<S> Body<S> {
    /// The same record with every string converted by `f` (the host
    /// keeps owned copies: `body.map_str(String::from)`).
    pub fn map_str<T>(self, mut f: impl FnMut(S) -> T) -> Body<T> {
        match self {
            Body::Test {
                passed,
                name,
                detail,
            } => Body::Test {
                passed,
                name: f(name),
                detail: f(detail),
            },
            Body::Counter { name, value } => Body::Counter {
                name: f(name),
                value,
            },
            Body::CpuOnline { apic_id } => Body::CpuOnline { apic_id },
            Body::Exception {
                vector,
                error_code,
                rip,
                cr2,
            } => Body::Exception {
                vector,
                error_code,
                rip,
                cr2,
            },
            Body::Warn {
                kind,
                count,
                detail,
            } => Body::Warn {
                kind,
                count,
                detail,
            },
            Body::CsdStall {
                id,
                target,
                func,
                info,
                waited_ns,
                target_running,
                nth,
                resent_ipi,
            } => Body::CsdStall {
                id,
                target,
                func,
                info,
                waited_ns,
                target_running,
                nth,
                resent_ipi,
            },
            Body::CsdUnstuck {
                id,
                target,
                func,
                waited_ns,
                reports,
            } => Body::CsdUnstuck {
                id,
                target,
                func,
                waited_ns,
                reports,
            },
        }
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

/// The encoder ran out of room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow;

const KIND_CPU_ONLINE: u8 = 1;
const KIND_TEST: u8 = 2;
const KIND_EXCEPTION: u8 = 3;
const KIND_WARN: u8 = 4;
const KIND_COUNTER: u8 = 5;
const KIND_CSD_STALL: u8 = 16;
const KIND_CSD_UNSTUCK: u8 = 17;

struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), Overflow> {
        let end = self.pos.checked_add(b.len()).ok_or(Overflow)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(Overflow)?
            .copy_from_slice(b);
        self.pos = end;
        Ok(())
    }
    fn u8(&mut self, v: u8) -> Result<(), Overflow> {
        self.bytes(&[v])
    }
    fn u32(&mut self, v: u32) -> Result<(), Overflow> {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> Result<(), Overflow> {
        self.bytes(&v.to_le_bytes())
    }
    /// Strings longer than 255 bytes are cut at a character boundary.
    fn str(&mut self, s: &str) -> Result<(), Overflow> {
        let mut n = s.len().min(255);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.u8(n as u8)?;
        self.bytes(&s.as_bytes()[..n])
    }
}

struct Reader<'b> {
    buf: &'b [u8],
    pos: usize,
}

impl<'b> Reader<'b> {
    fn bytes(&mut self, n: usize) -> Result<&'b [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let b = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(b)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }
    /// A 0/1 byte; anything else is a bad `field`.
    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadField(field)),
        }
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0; 4];
        a.copy_from_slice(self.bytes(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self) -> Result<&'b str, DecodeError> {
        let n = usize::from(self.u8()?);
        core::str::from_utf8(self.bytes(n)?).map_err(|_| DecodeError::BadUtf8)
    }
    /// The header's fields. Checks the magic and nothing else.
    fn header(&mut self) -> Result<Header, DecodeError> {
        if self.bytes(2)? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        Ok(Header {
            kind: self.u8()?,
            reserved: self.u8()?,
            cpu: self.u16()?,
            payload: self.u16()?,
        })
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
    /// Total record length declared, header included.
    fn len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload)
    }
}

/// The total length a header declares (header included), or why the
/// header is unusable. Lets the host read exactly one record from guest
/// memory before decoding it.
pub fn declared_len(header: &[u8; HEADER_LEN]) -> Result<usize, DecodeError> {
    let h = Reader {
        buf: header,
        pos: 0,
    }
    .header()?;
    if h.len() > RECORD_MAX {
        return Err(DecodeError::TooLong { payload: h.payload });
    }
    Ok(h.len())
}

impl<'a> Record<'a> {
    /// Encodes into `buf`, returning the number of bytes used.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, Overflow> {
        let mut w = Writer {
            buf,
            pos: HEADER_LEN,
        };
        let kind = match self.body {
            Body::CpuOnline { apic_id } => {
                w.u32(apic_id)?;
                KIND_CPU_ONLINE
            }
            Body::Test {
                passed,
                name,
                detail,
            } => {
                w.u8(u8::from(passed))?;
                w.str(name)?;
                w.str(detail)?;
                KIND_TEST
            }
            Body::Exception {
                vector,
                error_code,
                rip,
                cr2,
            } => {
                w.u8(vector)?;
                w.u64(error_code)?;
                w.u64(rip)?;
                w.u64(cr2)?;
                KIND_EXCEPTION
            }
            Body::Warn {
                kind,
                count,
                detail,
            } => {
                w.u8(kind as u8)?;
                w.u32(count)?;
                w.u64(detail)?;
                KIND_WARN
            }
            Body::Counter { name, value } => {
                w.str(name)?;
                w.u64(value)?;
                KIND_COUNTER
            }
            Body::CsdStall {
                id,
                target,
                func,
                info,
                waited_ns,
                target_running,
                nth,
                resent_ipi,
            } => {
                w.u32(id)?;
                w.u32(target)?;
                w.u64(func)?;
                w.u64(info)?;
                w.u64(waited_ns)?;
                w.u64(target_running)?;
                w.u32(nth)?;
                w.u8(u8::from(resent_ipi))?;
                KIND_CSD_STALL
            }
            Body::CsdUnstuck {
                id,
                target,
                func,
                waited_ns,
                reports,
            } => {
                w.u32(id)?;
                w.u32(target)?;
                w.u64(func)?;
                w.u64(waited_ns)?;
                w.u32(reports)?;
                KIND_CSD_UNSTUCK
            }
        };
        let len = w.pos;
        if len > RECORD_MAX {
            return Err(Overflow);
        }
        let payload = (len - HEADER_LEN) as u16;
        let cpu = self.cpu.to_le_bytes();
        let plen = payload.to_le_bytes();
        w.buf[..HEADER_LEN].copy_from_slice(&[
            MAGIC[0], MAGIC[1], kind, 0, cpu[0], cpu[1], plen[0], plen[1],
        ]);
        Ok(len)
    }

    /// Decodes exactly one record from `buf`. Never panics.
    pub fn decode(buf: &'a [u8]) -> Result<Record<'a>, DecodeError> {
        if buf.len() > RECORD_MAX {
            // Only the length field is read: there is no point in checking more.
            let payload = Reader { buf, pos: 6 }.u16()?;
            return Err(DecodeError::TooLong { payload });
        }
        let mut r = Reader { buf, pos: 0 };
        let h = r.header()?;
        let too_long = DecodeError::TooLong { payload: h.payload };
        if h.reserved != 0 {
            return Err(DecodeError::BadField("reserved"));
        }
        match h.len().cmp(&buf.len()) {
            core::cmp::Ordering::Greater => return Err(DecodeError::Truncated),
            core::cmp::Ordering::Less => return Err(too_long),
            core::cmp::Ordering::Equal => {}
        }
        let body = match h.kind {
            KIND_CPU_ONLINE => Body::CpuOnline { apic_id: r.u32()? },
            KIND_TEST => Body::Test {
                passed: r.bool("passed")?,
                name: r.str()?,
                detail: r.str()?,
            },
            KIND_EXCEPTION => Body::Exception {
                vector: r.u8()?,
                error_code: r.u64()?,
                rip: r.u64()?,
                cr2: r.u64()?,
            },
            KIND_WARN => Body::Warn {
                kind: WarnKind::from_u8(r.u8()?).ok_or(DecodeError::BadField("warn kind"))?,
                count: r.u32()?,
                detail: r.u64()?,
            },
            KIND_COUNTER => Body::Counter {
                name: r.str()?,
                value: r.u64()?,
            },
            KIND_CSD_STALL => Body::CsdStall {
                id: r.u32()?,
                target: r.u32()?,
                func: r.u64()?,
                info: r.u64()?,
                waited_ns: r.u64()?,
                target_running: r.u64()?,
                nth: r.u32()?,
                resent_ipi: r.bool("resent_ipi")?,
            },
            KIND_CSD_UNSTUCK => Body::CsdUnstuck {
                id: r.u32()?,
                target: r.u32()?,
                func: r.u64()?,
                waited_ns: r.u64()?,
                reports: r.u32()?,
            },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if r.pos != buf.len() {
            return Err(too_long);
        }
        Ok(Record { cpu: h.cpu, body })
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
