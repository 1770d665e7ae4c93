//! CPU masks: one 64-bit word, bit *n* for CPU *n* ([`MAX_CPUS`] = 64).
//!
//! [`CpuMask`] is a plain `Copy` value; [`AtomicCpuMask`] holds the machine's
//! possible / present / online masks. Every operation is branch-light and
//! total: a CPU number at or above [`MASK_BITS`] is simply never a member.

use shared::{CpuId, MAX_CPUS};

use super::sync::{AtomicU64, Ordering};

/// Bits in a mask: one per possible CPU number.
pub const MASK_BITS: u32 = u64::BITS;

const _: () = assert!(MAX_CPUS == MASK_BITS as usize, "a CpuMask is one u64");

/// A set of CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuMask(pub u64);

impl CpuMask {
    /// No CPU.
    pub const EMPTY: CpuMask = CpuMask(0);
    /// Every CPU number below [`MAX_CPUS`].
    pub const ALL: CpuMask = CpuMask(u64::MAX);

    /// The mask holding only `cpu` (empty if `cpu` is out of range).
    #[inline]
    pub const fn of(cpu: CpuId) -> CpuMask {
        CpuMask(bit(cpu))
    }

    /// CPUs `0..n` (all of them if `n >= MASK_BITS`).
    #[inline]
    pub const fn first_n(n: u32) -> CpuMask {
        if n >= MASK_BITS {
            CpuMask::ALL
        } else {
            CpuMask((1u64 << n) - 1)
        }
    }

    /// The raw bits.
    #[inline]
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether `cpu` is in the mask.
    #[inline]
    pub const fn test(self, cpu: CpuId) -> bool {
        // Range check, then one bit test (no select for the shift overflow).
        cpu.0 < MASK_BITS && self.0 >> (cpu.0 % MASK_BITS) & 1 != 0
    }

    /// Adds `cpu` (no-op if out of range).
    #[inline]
    pub fn set(&mut self, cpu: CpuId) {
        self.0 |= bit(cpu);
    }

    /// Removes `cpu`.
    #[inline]
    pub fn clear(&mut self, cpu: CpuId) {
        self.0 &= !bit(cpu);
    }

    /// This mask plus `cpu`.
    #[inline]
    pub const fn with(self, cpu: CpuId) -> CpuMask {
        CpuMask(self.0 | bit(cpu))
    }

    /// This mask minus `cpu`.
    #[inline]
    pub const fn without(self, cpu: CpuId) -> CpuMask {
        CpuMask(self.0 & !bit(cpu))
    }

    /// Intersection.
    #[inline]
    pub const fn and(self, other: CpuMask) -> CpuMask {
        CpuMask(self.0 & other.0)
    }

    /// Union.
    #[inline]
    pub const fn or(self, other: CpuMask) -> CpuMask {
        CpuMask(self.0 | other.0)
    }

    /// CPUs in `self` but not in `other`.
    #[inline]
    pub const fn and_not(self, other: CpuMask) -> CpuMask {
        CpuMask(self.0 & !other.0)
    }

    /// Whether the two masks share a CPU.
    #[inline]
    pub const fn intersects(self, other: CpuMask) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no CPU is set.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether exactly one CPU is set (cheaper than `weight() == 1`).
    #[inline]
    pub const fn is_single(self) -> bool {
        self.0 != 0 && self.0 & (self.0 - 1) == 0
    }

    /// Number of CPUs set.
    #[inline]
    pub const fn weight(self) -> u32 {
        self.0.count_ones()
    }

    /// Lowest CPU set.
    #[inline]
    pub const fn first(self) -> Option<CpuId> {
        if self.0 == 0 {
            None
        } else {
            Some(CpuId(self.0.trailing_zeros()))
        }
    }

    /// Highest CPU set.
    #[inline]
    pub const fn last(self) -> Option<CpuId> {
        if self.0 == 0 {
            None
        } else {
            Some(CpuId(63 - self.0.leading_zeros()))
        }
    }

    /// Lowest CPU set that is strictly above `cpu`.
    #[inline]
    pub const fn next(self, cpu: CpuId) -> Option<CpuId> {
        if cpu.0 >= 63 {
            return None;
        }
        CpuMask(self.0 & (u64::MAX << (cpu.0 + 1))).first()
    }

    /// Lowest CPU in both masks (Linux's `cpumask_first_and`).
    #[inline]
    pub const fn first_and(self, other: CpuMask) -> Option<CpuId> {
        self.and(other).first()
    }

    /// Iterates the CPUs in ascending order.
    #[inline]
    pub const fn iter(self) -> CpuMaskIter {
        CpuMaskIter(self.0)
    }
}

impl IntoIterator for CpuMask {
    type Item = CpuId;
    type IntoIter = CpuMaskIter;

    #[inline]
    fn into_iter(self) -> CpuMaskIter {
        self.iter()
    }
}

impl FromIterator<CpuId> for CpuMask {
    fn from_iter<I: IntoIterator<Item = CpuId>>(iter: I) -> CpuMask {
        let mut m = CpuMask::EMPTY;
        for cpu in iter {
            m.set(cpu);
        }
        m
    }
}

/// Iterator over the CPUs of a [`CpuMask`], lowest first.
#[derive(Clone, Debug)]
pub struct CpuMaskIter(u64);

impl Iterator for CpuMaskIter {
    type Item = CpuId;

    #[inline]
    fn next(&mut self) -> Option<CpuId> {
        if self.0 == 0 {
            return None;
        }
        let cpu = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(CpuId(cpu))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.0.count_ones() as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for CpuMaskIter {}

/// The bit for `cpu`, or 0 when `cpu` is out of range (never a shift overflow).
#[inline]
const fn bit(cpu: CpuId) -> u64 {
    match 1u64.checked_shl(cpu.0) {
        Some(b) => b,
        None => 0,
    }
}

/// A [`CpuMask`] shared between CPUs: the possible / present / online masks.
///
/// No data is published through these masks, so loads are `Relaxed`. Updates
/// are `SeqCst` read-modify-writes: they are rare (hotplug), and ordering
/// them against everything else costs nothing that matters.
pub(crate) struct AtomicCpuMask(AtomicU64);

impl AtomicCpuMask {
    pub(crate) const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// The current mask.
    #[inline]
    pub(crate) fn load(&self) -> CpuMask {
        // Relaxed: a snapshot; nothing is read through it. Callers that need
        // the mask to be stable (hotplug vs. senders) get that from the
        // hotplug protocol, not from this load (see hotplug.rs).
        CpuMask(self.0.load(Ordering::Relaxed))
    }

    /// The mask, read with sequential consistency: the online test of a
    /// sender inside its send window (pairs with the SeqCst RMW of
    /// `assign` on the outgoing CPU; see `Smp::synchronize_senders`).
    #[inline]
    pub(crate) fn load_sc(&self) -> CpuMask {
        CpuMask(self.0.load(Ordering::SeqCst))
    }

    /// Sets or clears `cpu`.
    #[inline]
    pub(crate) fn assign(&self, cpu: CpuId, value: bool) {
        if value {
            self.0.fetch_or(bit(cpu), Ordering::SeqCst);
        } else {
            self.0.fetch_and(!bit(cpu), Ordering::SeqCst);
        }
    }

    /// Clears every CPU not in `keep`.
    pub(crate) fn retain(&self, keep: CpuMask) {
        self.0.fetch_and(keep.0, Ordering::SeqCst);
    }
}

/// A mask shown as a CPU list: `0-3,6` (Linux's `%*pbl`), `none` when
/// empty.
pub struct CpuList(pub CpuMask);

impl core::fmt::Display for CpuList {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut first = true;
        let mut iter = self.0.iter().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek().is_some_and(|n| n.0 == end.0 + 1) {
                end = iter.next().unwrap_or(end);
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list_shows_ranges() {
        let list = |bits| std::format!("{}", CpuList(CpuMask(bits)));
        assert_eq!(list(0), "none");
        assert_eq!(list(0b1), "0");
        assert_eq!(list(0b0100_1111), "0-3,6");
        assert_eq!(list(0b1010), "1,3");
        assert_eq!(list(u64::MAX), "0-63");
    }

    fn m(cpus: &[u32]) -> CpuMask {
        cpus.iter().map(|&c| CpuId(c)).collect()
    }

    #[test]
    fn set_test_clear_and_out_of_range() {
        let mut a = CpuMask::EMPTY;
        a.set(CpuId(0));
        a.set(CpuId(63));
        a.set(CpuId(64)); // ignored
        a.set(CpuId(u32::MAX)); // ignored
        assert_eq!(a.bits(), 1 | 1 << 63);
        assert!(a.test(CpuId(63)) && !a.test(CpuId(64)) && !a.test(CpuId(1)));
        a.clear(CpuId(0));
        a.clear(CpuId(99));
        assert_eq!(a, CpuMask::of(CpuId(63)));
        assert_eq!(CpuMask::of(CpuId(64)), CpuMask::EMPTY);
    }

    #[test]
    fn first_next_last_and_iteration() {
        let a = m(&[3, 5, 63]);
        assert_eq!(a.first(), Some(CpuId(3)));
        assert_eq!(a.last(), Some(CpuId(63)));
        assert_eq!(a.next(CpuId(3)), Some(CpuId(5)));
        assert_eq!(a.next(CpuId(4)), Some(CpuId(5)));
        assert_eq!(a.next(CpuId(5)), Some(CpuId(63)));
        assert_eq!(a.next(CpuId(63)), None);
        assert_eq!(a.next(CpuId(200)), None);
        assert_eq!(CpuMask::EMPTY.first(), None);
        assert_eq!(CpuMask::EMPTY.last(), None);
        let v: Vec<u32> = a.iter().map(|c| c.0).collect();
        assert_eq!(v, [3, 5, 63]);
        assert_eq!(a.iter().len(), 3);
        assert_eq!(CpuMask::ALL.iter().count(), 64);
    }

    #[test]
    fn set_algebra_and_weight() {
        let a = m(&[1, 2, 3]);
        let b = m(&[2, 3, 4]);
        assert_eq!(a.and(b), m(&[2, 3]));
        assert_eq!(a.or(b), m(&[1, 2, 3, 4]));
        assert_eq!(a.and_not(b), m(&[1]));
        assert_eq!(a.first_and(b), Some(CpuId(2)));
        assert!(a.intersects(b) && !a.intersects(m(&[9])));
        assert_eq!(a.weight(), 3);
        assert!(m(&[7]).is_single() && !a.is_single() && !CpuMask::EMPTY.is_single());
        assert_eq!(a.with(CpuId(9)).without(CpuId(1)), m(&[2, 3, 9]));
        assert_eq!(CpuMask::first_n(3), m(&[0, 1, 2]));
        assert_eq!(CpuMask::first_n(64), CpuMask::ALL);
        assert_eq!(CpuMask::first_n(0), CpuMask::EMPTY);
    }

    #[test]
    fn atomic_mask_assign_and_retain() {
        let a = AtomicCpuMask::new();
        a.assign(CpuId(4), true);
        a.assign(CpuId(9), true);
        a.assign(CpuId(70), true);
        assert_eq!(a.load(), m(&[4, 9]));
        a.assign(CpuId(4), false);
        assert_eq!(a.load(), m(&[9]));
        a.retain(CpuMask::first_n(8));
        assert_eq!(a.load(), CpuMask::EMPTY);
    }
}
