//! The benchmark protocol (`run=bench`).
//!
//! Two ports:
//! - [`crate::ports::Port::BenchMarker`]: one 32-bit write of a [`Marker`]
//!   value. The VMM handles the exit synchronously: before the writing vCPU
//!   runs again it has read every vCPU's KVM statistics, so a case is
//!   bracketed exactly by its `Start` and `End` markers, and a `Begin` /
//!   `Probe` pair measures the instructions between two points of one CPU
//!   (a `SendBegin` / `Probe` pair the same, for a fan-out call's send
//!   part).
//! - [`crate::ports::Port::BenchResult`]: one 32-bit write of the
//!   guest-physical address of an encoded [`ResultHeader`]; the header
//!   points at the case's samples (`sample_count` little-endian u64 cycle
//!   counts, one per operation, at most [`MAX_SAMPLES`]).
//!
//! An encoded result is [`RESULT_MIN_LEN`] to [`RESULT_MAX_LEN`] bytes:
//! [`RESULT_MAGIC`], the fixed fields, and last the target CPUs
//! ([`TargetSet`]: a u16 word count, at most [`TARGET_WORDS`], then that
//! many little-endian u64 words of a bitmap, bit `n` of word `w` = CPU
//! `64 w + n`, the last word non-zero). [`result_len`] says from the first
//! [`RESULT_MIN_LEN`] bytes how long the whole result is, so that the host
//! reads exactly it.
//!
//! The delivery modes the bench compares ([`IpiMode`], [`IdleMode`]) are
//! defined here too, because both sides name them.
//!
//! Everything the guest sends is untrusted: [`Marker::decode`] and
//! [`ResultHeader::decode`] check every field and never panic. The header
//! is read and written with the protocol's one reader/writer
//! ([`crate::wire`]).

use crate::wire::{Reader, Wire, WireError, Writer};

/// Most samples one case hands over (the last operations of its final
/// round, when it ran more).
pub const MAX_SAMPLES: usize = 4096;
/// Bytes of an encoded [`ResultHeader`] without target words (its fixed
/// part and the targets' word count).
pub const RESULT_MIN_LEN: usize = 68;
/// 64-bit words of a full [`TargetSet`]: every CPU below
/// [`crate::MAX_CPUS`].
pub const TARGET_WORDS: usize = crate::MAX_CPUS / 64;
/// Bytes of the longest encoded [`ResultHeader`] (every target word).
pub const RESULT_MAX_LEN: usize = RESULT_MIN_LEN + 8 * TARGET_WORDS;
const _: () = assert!(crate::MAX_CPUS.is_multiple_of(64) && TARGET_WORDS <= u16::MAX as usize);
/// [`ResultHeader`] magic, "SBR1" little-endian.
pub const RESULT_MAGIC: u32 = u32::from_le_bytes(*b"SBR1");
/// Top byte of every marker value.
const MARKER_MAGIC: u32 = 0xB5 << 24;

wire_enum! {
    /// How call-function IPIs for a mask of CPUs are delivered (guest
    /// command line `ipi=`).
    pub enum IpiMode: u8 {
        /// One physical-destination ICR write per target.
        Phys = 0 => "phys",
        /// One all-but-self shorthand ICR write when the targets are every
        /// other online CPU (once every CPU has booted); else `Phys`.
        Shorthand = 1 => "shorthand",
        /// One logical-destination ICR write per x2APIC cluster of 16.
        Cluster = 2 => "cluster",
        /// KVM's paravirtual send-IPI hypercall, one per 128 APIC ids.
        Pv = 3 => "pv",
    }
}

wire_enum! {
    /// What an idle CPU does (guest command line `idle=`).
    pub enum IdleMode: u8 {
        /// `sti; hlt` until an interrupt.
        Halt = 0 => "halt",
        /// Spin with interrupts on; senders skip the IPI to a polling CPU.
        Poll = 1 => "poll",
    }
}

wire_enum! {
    /// A benchmark case. The ids are the marker and result keys.
    pub enum Case: u8 {
        /// Internal: `Start` then `End` at once, the cost of a marker pair.
        Calibrate = 1 => "calibrate",
        /// Internal: `Begin` then `Probe` at once, the cost of a probe pair.
        ProbeCalibrate = 2 => "probe-calibrate",
        /// A raw x2APIC IPI to another CPU whose handler acknowledges in
        /// memory: no smp call layer (the floor).
        RawPing = 3 => "raw-ping",
        /// `smp_call_function_single(wait)` to another CPU.
        SingleWait = 4 => "single-wait",
        /// Back-to-back `smp_call_function_single_async` to another CPU.
        SingleAsync = 5 => "single-async",
        /// `smp_call_function_single(wait)` to this CPU.
        SingleLocal = 6 => "single-local",
        /// `smp_call_function_many(wait)` to all others, `ipi=phys`.
        ManyWaitPhys = 7 => "many-wait/phys",
        /// The same with `ipi=shorthand`.
        ManyWaitShorthand = 8 => "many-wait/shorthand",
        /// The same with `ipi=cluster`.
        ManyWaitCluster = 9 => "many-wait/cluster",
        /// The same with `ipi=pv`.
        ManyWaitPv = 10 => "many-wait/pv",
        /// `on_each_cpu(wait)`.
        OnEachCpu = 11 => "on-each-cpu",
        /// `irq_work_queue_on` another CPU, then wait until it ran.
        IrqWorkOn = 12 => "irq-work-on",
        /// Instructions from the call to `smp_call_function_single(wait)`
        /// up to its ICR write (`Begin` / `Probe` markers).
        SendPath = 13 => "send-path",
        /// `single-wait` with the target in polling idle.
        SingleWaitIdlePoll = 14 => "single-wait/idle-poll",
        /// `single-wait` with the target halted (when booted `idle=poll`).
        SingleWaitIdleHalt = 15 => "single-wait/idle-halt",
        /// The measuring loop around an empty operation (Yury Norov's
        /// ipi_benchmark `DRY_RUN`).
        DryRun = 16 => "dry-run",
        /// `smp_call_function_many(wait)` to all others under the boot IPI
        /// mode, each callback taking and releasing one shared spinlock
        /// (ipi_benchmark's `POKE_ALL_LOCK`).
        ManyWaitLock = 17 => "many-wait/lock",
        /// A point of the fan-out curve: `smp_call_function_many(wait)` to
        /// the first `target_count` other CPUs, `ipi=phys`. One result per
        /// point.
        FanoutPhys = 18 => "fanout/phys",
        /// The same with `ipi=shorthand` (only at all others: below that
        /// the shorthand does not apply and the send is `phys`).
        FanoutShorthand = 19 => "fanout/shorthand",
        /// The same with `ipi=cluster`.
        FanoutCluster = 20 => "fanout/cluster",
    }
}

impl Case {
    /// Internal cases calibrate the markers and are not reported as rows.
    pub const fn is_internal(self) -> bool {
        matches!(self, Case::Calibrate | Case::ProbeCalibrate)
    }

    /// Fan-out cases report one result per point of the curve (one per
    /// target count) instead of one row.
    pub const fn is_fanout(self) -> bool {
        matches!(
            self,
            Case::FanoutPhys | Case::FanoutShorthand | Case::FanoutCluster
        )
    }
}

wire_enum! {
    /// Where a marker sits.
    pub enum Phase: u8 {
        /// A measured round of the case starts.
        Start = 1 => "start",
        /// The round ends.
        End = 2 => "end",
        /// A probed section starts (on the marking CPU only).
        Begin = 3 => "begin",
        /// A probed section ends (on the marking CPU only).
        Probe = 4 => "probe",
        /// A fan-out call's send part starts (on the marking CPU only): the
        /// section from the call of `smp_call_function_many(wait)` to the
        /// `Probe` the arch writes right after the send's last ICR write.
        /// The section counts for this marker's case; the `Probe` ending it
        /// names that case, or `send-path` when the call's one IPI went
        /// through the single-target path (whose marker is a constant).
        SendBegin = 5 => "send-begin",
    }
}

/// A marker: which case, and where in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// The case.
    pub case: Case,
    /// The point in it.
    pub phase: Phase,
}

/// Why guest data could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchDecodeError {
    /// A marker without the magic, or with reserved bits set.
    BadMarker(u32),
    /// Unknown case id.
    UnknownCase(u8),
    /// Unknown marker phase.
    UnknownPhase(u8),
    /// Fewer bytes than the result (see [`result_len`]).
    Truncated,
    /// The result header does not start with [`RESULT_MAGIC`].
    BadMagic,
    /// A field holds a value outside its range.
    BadField(&'static str),
}

impl core::fmt::Display for BenchDecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BenchDecodeError::BadMarker(v) => write!(f, "malformed bench marker {v:#x}"),
            BenchDecodeError::UnknownCase(c) => write!(f, "unknown bench case {c}"),
            BenchDecodeError::UnknownPhase(p) => write!(f, "unknown bench marker phase {p}"),
            BenchDecodeError::Truncated => write!(f, "bench result truncated"),
            BenchDecodeError::BadMagic => write!(f, "bench result without magic"),
            BenchDecodeError::BadField(n) => write!(f, "bench result: bad value in field {n}"),
        }
    }
}

impl Marker {
    /// The 32-bit port value: magic, case id, phase.
    pub const fn value(self) -> u32 {
        MARKER_MAGIC | (self.case as u32) << 8 | self.phase as u32
    }

    /// Decodes a port value. Never panics.
    pub const fn decode(v: u32) -> Result<Marker, BenchDecodeError> {
        if v & 0xffff_0000 != MARKER_MAGIC {
            return Err(BenchDecodeError::BadMarker(v));
        }
        let Some(case) = Case::from_u8((v >> 8) as u8) else {
            return Err(BenchDecodeError::UnknownCase((v >> 8) as u8));
        };
        let Some(phase) = Phase::from_u8(v as u8) else {
            return Err(BenchDecodeError::UnknownPhase(v as u8));
        };
        Ok(Marker { case, phase })
    }
}

wire_enum! {
    /// How a case ended.
    pub enum Status: u8 {
        /// Measured.
        Ok = 0 => "ok",
        /// An operation did not complete before its deadline.
        Failed = 1 => "failed",
        /// Not run here (too few CPUs, a delivery mode unavailable).
        Skipped = 2 => "skipped",
    }
}

/// The set of target CPUs of a result: a bitmap of every CPU below
/// [`crate::MAX_CPUS`]. On the wire (see the module documentation) only
/// the words up to the last non-zero one are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetSet {
    words: [u64; TARGET_WORDS],
}

impl TargetSet {
    /// No CPU.
    pub const EMPTY: TargetSet = TargetSet {
        words: [0; TARGET_WORDS],
    };

    /// The set whose word `i` (CPUs `64 i .. 64 i + 63`) is `word(i)`, for
    /// every `i` below [`TARGET_WORDS`].
    pub fn from_words(mut word: impl FnMut(usize) -> u64) -> TargetSet {
        let mut s = TargetSet::EMPTY;
        for (i, w) in s.words.iter_mut().enumerate() {
            *w = word(i);
        }
        s
    }

    /// Adds `cpu`; false (and the set unchanged) if it is not below
    /// [`crate::MAX_CPUS`].
    pub fn insert(&mut self, cpu: u32) -> bool {
        match self.words.get_mut(cpu as usize / 64) {
            Some(w) => {
                *w |= 1 << (cpu % 64);
                true
            }
            None => false,
        }
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: u32) -> bool {
        self.words
            .get(cpu as usize / 64)
            .is_some_and(|w| w & (1 << (cpu % 64)) != 0)
    }

    /// How many CPUs are in the set.
    pub fn count(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// Word `i` (0 past the end).
    pub fn word(&self, i: usize) -> u64 {
        self.words.get(i).copied().unwrap_or(0)
    }

    /// The CPUs of the set, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64u32)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i as u32 * 64 + b)
        })
    }

    /// Words sent: up to the last non-zero one.
    fn used_words(&self) -> usize {
        self.words
            .iter()
            .rposition(|&w| w != 0)
            .map_or(0, |i| i + 1)
    }
}

impl Wire<'_> for TargetSet {
    fn put(&self, w: &mut Writer<'_>) {
        let words = self.words.get(..self.used_words()).unwrap_or_default();
        w.put(&(words.len() as u16));
        for word in words {
            w.put(word);
        }
    }

    /// At most [`TARGET_WORDS`] words, the last one non-zero (so that a
    /// set has one encoding); never panics.
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let n = r.get::<u16>()?;
        let mut s = TargetSet::EMPTY;
        let Some(words) = s.words.get_mut(..usize::from(n)) else {
            return Err(WireError::BadValue(n.into()));
        };
        for w in words.iter_mut() {
            *w = r.get()?;
        }
        if words.last() == Some(&0) {
            return Err(WireError::BadValue(0));
        }
        Ok(s)
    }
}

/// The length of the encoded result that starts with `prefix` (at least
/// [`RESULT_MIN_LEN`] bytes of it): [`RESULT_MIN_LEN`] to
/// [`RESULT_MAX_LEN`]. Checks the magic and the targets' word count only
/// ([`ResultHeader::decode`] checks the rest); never panics.
pub fn result_len(prefix: &[u8]) -> Result<usize, BenchDecodeError> {
    let Some(head) = prefix.get(..RESULT_MIN_LEN) else {
        return Err(BenchDecodeError::Truncated);
    };
    let mut r = Reader::at(head, 0);
    if r.get::<u32>() != Ok(RESULT_MAGIC) {
        return Err(BenchDecodeError::BadMagic);
    }
    let mut r = Reader::at(head, RESULT_MIN_LEN - 2);
    let n = usize::from(r.get::<u16>().map_err(|_| BenchDecodeError::Truncated)?);
    if n > TARGET_WORDS {
        return Err(BenchDecodeError::BadField("targets"));
    }
    Ok(RESULT_MIN_LEN + 8 * n)
}

wire_struct! {
    /// One case's result, as the guest reports it (all of it untrusted).
    /// Encoded after [`RESULT_MAGIC`], its fields in this order.
    pub struct ResultHeader {
        /// The case.
        pub case: Case,
        /// How it ended.
        pub status: Status,
        /// IPI delivery mode it ran with.
        pub ipi_mode: IpiMode,
        /// Idle mode of the other CPUs.
        pub idle_mode: IdleMode,
        /// The CPU that issued the operations.
        pub sender: u16,
        /// Operations in the final, measured round.
        pub iterations: u64,
        /// TSC cycles the final round took, from its first operation to the
        /// completion of its last.
        pub total_cycles: u64,
        /// The guest's TSC frequency in kHz.
        pub tsc_khz: u64,
        /// Call-function IPIs the guest sent during the final round (all
        /// CPUs).
        pub ipis_sent: u64,
        /// IPIs skipped because the target was polling (all CPUs).
        pub ipis_skipped: u64,
        /// Per-operation cycle counts handed over (at most [`MAX_SAMPLES`]
        /// and at most `iterations`).
        pub sample_count: u32,
        /// How many CPUs take part besides the sender (the sender itself
        /// for a local case): exactly the number of `targets`.
        pub target_count: u32,
        /// Guest-physical address of the samples.
        pub samples_addr: u64,
        /// The CPUs taking part besides the sender, every one of them
        /// (variable length: last on the wire).
        pub targets: TargetSet,
    }
}

impl BenchDecodeError {
    /// The error for field `name` that could not be read.
    const fn field(name: &'static str, e: WireError) -> Self {
        match e {
            WireError::Truncated => BenchDecodeError::Truncated,
            _ => BenchDecodeError::BadField(name),
        }
    }
}

impl ResultHeader {
    /// Encodes into the first `n` bytes of the buffer returned with `n`
    /// ([`RESULT_MIN_LEN`] to [`RESULT_MAX_LEN`], see [`result_len`]); the
    /// rest of the buffer is zero.
    pub fn encode(&self) -> ([u8; RESULT_MAX_LEN], usize) {
        let mut b = [0u8; RESULT_MAX_LEN];
        let mut w = Writer::at(&mut b, 0);
        w.put(&RESULT_MAGIC);
        self.put_fields(&mut w);
        let n = w.pos();
        debug_assert_eq!(w.finish(), Ok(n));
        (b, n)
    }

    /// Decodes and validates a result (longer input is fine: the rest is
    /// ignored). Never panics.
    pub fn decode(b: &[u8]) -> Result<ResultHeader, BenchDecodeError> {
        if b.len() < RESULT_MIN_LEN {
            return Err(BenchDecodeError::Truncated);
        }
        let mut r = Reader::at(b, 0);
        if r.get::<u32>() != Ok(RESULT_MAGIC) {
            return Err(BenchDecodeError::BadMagic);
        }
        let h = ResultHeader::get_fields(&mut r).map_err(|(name, e)| match (name, e) {
            ("case", WireError::BadValue(v)) => BenchDecodeError::UnknownCase(v as u8),
            (name, e) => BenchDecodeError::field(name, e),
        })?;
        if h.sample_count as usize > MAX_SAMPLES {
            return Err(BenchDecodeError::BadField("sample_count"));
        }
        if u64::from(h.sample_count) > h.iterations {
            return Err(BenchDecodeError::BadField("sample_count"));
        }
        if h.status == Status::Ok && (h.iterations == 0 || h.tsc_khz == 0) {
            return Err(BenchDecodeError::BadField("iterations"));
        }
        if usize::from(h.sender) >= crate::MAX_CPUS {
            return Err(BenchDecodeError::BadField("sender"));
        }
        if h.target_count as usize > crate::MAX_CPUS || h.targets.count() != h.target_count {
            return Err(BenchDecodeError::BadField("target_count"));
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn header() -> ResultHeader {
        ResultHeader {
            case: Case::SingleWait,
            status: Status::Ok,
            ipi_mode: IpiMode::Shorthand,
            idle_mode: IdleMode::Poll,
            sender: 3,
            targets: TargetSet::from_words(|i| if i == 0 { 0b1010 } else { 0 }),
            target_count: 2,
            iterations: 1024,
            total_cycles: 123_456_789,
            tsc_khz: 2_596_098,
            ipis_sent: 1000,
            ipis_skipped: 24,
            sample_count: 1024,
            samples_addr: 0x20_0000,
        }
    }

    #[test]
    fn markers_round_trip_and_garbage_is_rejected() {
        for &case in Case::ALL {
            for &phase in Phase::ALL {
                let m = Marker { case, phase };
                assert_eq!(Marker::decode(m.value()), Ok(m));
            }
        }
        assert_eq!(Marker::decode(0), Err(BenchDecodeError::BadMarker(0)));
        assert!(matches!(
            Marker::decode(MARKER_MAGIC | 1 << 16 | 0x101),
            Err(BenchDecodeError::BadMarker(_))
        ));
        assert_eq!(
            Marker::decode(MARKER_MAGIC | 0xff << 8 | 1),
            Err(BenchDecodeError::UnknownCase(0xff))
        );
        assert_eq!(
            Marker::decode(MARKER_MAGIC | 1 << 8 | 9),
            Err(BenchDecodeError::UnknownPhase(9))
        );
        assert_eq!(
            Marker::decode(MARKER_MAGIC | 20 << 8 | 5),
            Ok(Marker {
                case: Case::FanoutCluster,
                phase: Phase::SendBegin
            })
        );
        assert_eq!(
            Marker::decode(MARKER_MAGIC | 1 << 8 | 6),
            Err(BenchDecodeError::UnknownPhase(6))
        );
    }

    #[test]
    fn names_are_unique_and_parse_back() {
        for &c in Case::ALL {
            assert_eq!(Case::from_name(c.name()), Some(c));
            assert_eq!(Case::ALL.iter().filter(|o| o.name() == c.name()).count(), 1);
        }
        assert_eq!(IpiMode::from_name("cluster"), Some(IpiMode::Cluster));
        assert_eq!(IdleMode::from_name("poll"), Some(IdleMode::Poll));
        assert_eq!(IpiMode::from_name("bogus"), None);
        assert_eq!(IpiMode::from_u8(4), None);
    }

    /// A header whose targets are `cpus`.
    fn with_targets(cpus: &[u32]) -> ResultHeader {
        let mut h = header();
        h.targets = TargetSet::EMPTY;
        for &c in cpus {
            assert!(h.targets.insert(c));
        }
        h.target_count = cpus.len() as u32;
        h
    }

    #[test]
    fn result_round_trips() {
        let h = header();
        let (b, n) = h.encode();
        assert_eq!(n, RESULT_MIN_LEN + 8, "one target word");
        assert_eq!(result_len(&b[..RESULT_MIN_LEN]), Ok(n));
        assert_eq!(ResultHeader::decode(&b[..n]), Ok(h));
        // Longer input is fine (the rest is ignored).
        assert_eq!(ResultHeader::decode(&b), Ok(h));
        for cut in 0..n {
            assert_eq!(
                ResultHeader::decode(&b[..cut]),
                Err(BenchDecodeError::Truncated)
            );
        }
    }

    #[test]
    fn targets_above_63_round_trip() {
        for cpus in [
            &[][..],
            &[64][..],
            &[1, 63, 64, 65, 127, 128, 500, 1000][..],
            &[1023][..],
            &[0, 1023][..],
        ] {
            let h = with_targets(cpus);
            let (b, n) = h.encode();
            let words = cpus.iter().map(|&c| c as usize / 64 + 1).max().unwrap_or(0);
            assert_eq!(n, RESULT_MIN_LEN + 8 * words, "{cpus:?}");
            assert_eq!(result_len(&b), Ok(n));
            let d = ResultHeader::decode(&b[..n]).unwrap();
            assert_eq!(d, h);
            assert_eq!(d.targets.iter().collect::<Vec<_>>(), cpus);
            assert_eq!(d.targets.count(), cpus.len() as u32);
            assert!(cpus.iter().all(|&c| d.targets.contains(c)));
            assert!(!d.targets.contains(2) && !d.targets.contains(1024));
        }
        // Every CPU: the longest result.
        let all: Vec<u32> = (0..crate::MAX_CPUS as u32).collect();
        let h = with_targets(&all);
        let (b, n) = h.encode();
        assert_eq!(n, RESULT_MAX_LEN);
        assert_eq!(ResultHeader::decode(&b), Ok(h));
        assert_eq!(h.target_count, 1024);
        let mut s = TargetSet::EMPTY;
        assert!(!s.insert(crate::MAX_CPUS as u32), "beyond MAX_CPUS");
        assert_eq!(s, TargetSet::EMPTY);
    }

    #[test]
    fn inconsistent_targets_are_rejected() {
        let h = with_targets(&[3, 70, 1023]);
        let (good, n) = h.encode();
        // The count must be exact, above 63 as below.
        for count in [0, 2, 4, 1024, 1025, u32::MAX] {
            let mut bad = h;
            bad.target_count = count;
            assert_eq!(
                ResultHeader::decode(&bad.encode().0),
                Err(BenchDecodeError::BadField("target_count")),
                "{count}"
            );
        }
        // A word count past MAX_CPUS.
        let mut b = good;
        b[RESULT_MIN_LEN - 2..RESULT_MIN_LEN].copy_from_slice(&17u16.to_le_bytes());
        assert_eq!(result_len(&b), Err(BenchDecodeError::BadField("targets")));
        assert_eq!(
            ResultHeader::decode(&b),
            Err(BenchDecodeError::BadField("targets"))
        );
        b[RESULT_MIN_LEN - 2..RESULT_MIN_LEN].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(
            ResultHeader::decode(&b),
            Err(BenchDecodeError::BadField("targets"))
        );
        // A trailing zero word (a second encoding of the same set).
        let mut b = with_targets(&[3]).encode().0;
        b[RESULT_MIN_LEN - 2] = 2;
        assert_eq!(result_len(&b), Ok(RESULT_MIN_LEN + 16));
        assert_eq!(
            ResultHeader::decode(&b),
            Err(BenchDecodeError::BadField("targets"))
        );
        // Words declared but not there.
        assert_eq!(
            ResultHeader::decode(&good[..n - 1]),
            Err(BenchDecodeError::Truncated)
        );
        assert_eq!(
            result_len(&good[..RESULT_MIN_LEN - 1]),
            Err(BenchDecodeError::Truncated)
        );
        let mut b = good;
        b[0] = 0;
        assert_eq!(result_len(&b), Err(BenchDecodeError::BadMagic));
    }

    #[test]
    fn bad_results_are_rejected() {
        let good = header().encode().0;
        let with = |i: usize, v: u8| {
            let mut b = good;
            b[i] = v;
            ResultHeader::decode(&b)
        };
        assert_eq!(with(0, b'X'), Err(BenchDecodeError::BadMagic));
        assert_eq!(with(4, 99), Err(BenchDecodeError::UnknownCase(99)));
        assert_eq!(with(5, 7), Err(BenchDecodeError::BadField("status")));
        assert_eq!(with(6, 7), Err(BenchDecodeError::BadField("ipi_mode")));
        assert_eq!(with(7, 7), Err(BenchDecodeError::BadField("idle_mode")));
        assert_eq!(with(9, 0xff), Err(BenchDecodeError::BadField("sender")));
        assert_eq!(with(57, 1), Err(BenchDecodeError::BadField("target_count")));
        let mut h = header();
        h.sample_count = MAX_SAMPLES as u32 + 1;
        h.iterations = u64::MAX;
        assert!(ResultHeader::decode(&h.encode().0).is_err());
        let mut h = header();
        h.sample_count = 10;
        h.iterations = 9;
        assert!(ResultHeader::decode(&h.encode().0).is_err());
        let mut h = header();
        h.iterations = 0;
        h.sample_count = 0;
        assert!(ResultHeader::decode(&h.encode().0).is_err());
        h.status = Status::Skipped;
        assert!(ResultHeader::decode(&h.encode().0).is_ok());
        let mut h = header();
        h.sender = crate::MAX_CPUS as u16;
        assert_eq!(
            ResultHeader::decode(&h.encode().0),
            Err(BenchDecodeError::BadField("sender"))
        );
        let mut h = header();
        h.target_count = 1;
        assert_eq!(
            ResultHeader::decode(&h.encode().0),
            Err(BenchDecodeError::BadField("target_count")),
            "fewer than the set holds"
        );
        h.target_count = 3;
        assert_eq!(
            ResultHeader::decode(&h.encode().0),
            Err(BenchDecodeError::BadField("target_count")),
            "more than the set holds"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let (good, n) = with_targets(&[1, 64, 700]).encode();
        for _ in 0..20_000 {
            let seed = crate::xorshift64(&mut rng);
            let mut b = good;
            b[(seed as usize) % n] = (seed >> 32) as u8;
            let cut = &b[..(seed >> 40) as usize % (RESULT_MAX_LEN + 1)];
            let _ = result_len(cut);
            if let Ok(h) = ResultHeader::decode(cut) {
                assert_eq!(h.targets.count(), h.target_count);
            }
            let _ = Marker::decode(seed as u32);
        }
    }
}
