//! CPU masks of any width up to [`NR_CPUS`]: a bitmap of 64-bit words,
//! bit *n* for CPU *n* (Linux's `struct cpumask`).
//!
//! [`CpuMask`] is a plain `Copy` value; [`AtomicCpuMask`] holds the
//! machine's possible / present / online masks. Like Linux's
//! `nr_cpumask_bits`, every operation that walks a mask stops at the mask
//! width set at boot ([`set_nr_cpumask_bits`]: `nr_cpu_ids` rounded up to a
//! word), so a walk costs one step per word in use (and one per set bit
//! for the iteration), never one per possible bit; with up to 64 CPUs that
//! is a single word. Testing one CPU ([`CpuMask::test`],
//! [`AtomicCpuMask::test_sc`]) reads one word whatever the width. A CPU at
//! or above the width is simply never a member.

use shared::{CpuId, NR_CPUS};

use super::bitmap::{self, WORD_BITS};
use super::sync::{AtomicU64, Ordering};
use core::sync::atomic::AtomicUsize;

/// Bits in a mask: one per possible CPU number.
pub const MASK_BITS: u32 = NR_CPUS as u32;
/// Words in a mask.
pub const MASK_WORDS: usize = bitmap::words(NR_CPUS);

/// Words of a mask in use (see the module docs); all of them until boot
/// code lowers it.
static NR_CPUMASK_WORDS: AtomicUsize = AtomicUsize::new(MASK_WORDS);

/// Sets the mask width to `nbits` (rounded up to a word; clamped to
/// `1..=NR_CPUS`), Linux's `nr_cpumask_bits`. Boot code only, once
/// `nr_cpu_ids` is known and before any mask holds a CPU at or above it.
pub fn set_nr_cpumask_bits(nbits: u32) {
    let words = bitmap::words(nbits as usize).clamp(1, MASK_WORDS);
    // Relaxed: set before other CPUs run; their start orders it.
    NR_CPUMASK_WORDS.store(words, Ordering::Relaxed);
}

/// Words of a mask in use.
#[inline]
fn nr_words() -> usize {
    // Relaxed: see `set_nr_cpumask_bits`. The `min` lets the compiler drop
    // the slices' bounds checks.
    NR_CPUMASK_WORDS.load(Ordering::Relaxed).min(MASK_WORDS)
}

/// Word index and bit of `cpu`, or `None` when it is at or above
/// [`MASK_BITS`].
#[inline]
const fn word_bit(cpu: CpuId) -> Option<(usize, u64)> {
    if cpu.0 < MASK_BITS {
        Some((
            cpu.0 as usize / WORD_BITS,
            1 << (cpu.0 as usize % WORD_BITS),
        ))
    } else {
        None
    }
}

/// A set of CPUs.
#[derive(Clone, Copy, Debug)]
pub struct CpuMask([u64; MASK_WORDS]);

impl Default for CpuMask {
    fn default() -> Self {
        CpuMask::EMPTY
    }
}

impl PartialEq for CpuMask {
    fn eq(&self, other: &CpuMask) -> bool {
        bitmap::equal(self.used(), other.used())
    }
}

impl Eq for CpuMask {}

impl CpuMask {
    /// No CPU.
    pub const EMPTY: CpuMask = CpuMask([0; MASK_WORDS]);
    /// Every CPU number below [`MASK_BITS`] (as far as the width goes).
    pub const ALL: CpuMask = CpuMask([u64::MAX; MASK_WORDS]);

    /// The words in use.
    #[inline]
    fn used(&self) -> &[u64] {
        &self.0[..nr_words()]
    }

    /// The result of a word-wise operation on `self` and `other`.
    #[inline]
    fn combine(&self, other: &CpuMask, op: fn(&mut [u64], &[u64], &[u64])) -> CpuMask {
        let mut out = CpuMask::EMPTY;
        let n = nr_words();
        op(&mut out.0[..n], &self.0[..n], &other.0[..n]);
        out
    }

    /// The mask holding only `cpu` (empty if `cpu` is out of range).
    #[inline]
    pub fn of(cpu: CpuId) -> CpuMask {
        CpuMask::EMPTY.with(cpu)
    }

    /// CPUs `0..n` (all of them if `n` reaches the width).
    #[inline]
    pub fn first_n(n: u32) -> CpuMask {
        let mut out = CpuMask::EMPTY;
        bitmap::fill_first(&mut out.0[..nr_words()], n as usize);
        out
    }

    /// Word `i` of the mask: CPUs `64 i .. 64 i + 63` (0 past the end).
    #[inline]
    pub fn word(&self, i: usize) -> u64 {
        self.used().get(i).copied().unwrap_or(0)
    }

    /// The mask whose word 0 is `bits`: CPUs 0 to 63 only.
    #[inline]
    pub fn from_word0(bits: u64) -> CpuMask {
        let mut out = CpuMask::EMPTY;
        out.0[0] = bits;
        out
    }

    /// The mask whose words are `words` in order (CPUs `64 i ..` from the
    /// `i`-th), as far as the width goes; the rest are 0.
    #[inline]
    pub fn from_words(words: impl IntoIterator<Item = u64>) -> CpuMask {
        let mut out = CpuMask::EMPTY;
        for (o, w) in out.0[..nr_words()].iter_mut().zip(words) {
            *o = w;
        }
        out
    }

    /// Whether `cpu` is in the mask: one word, whatever the width.
    #[inline]
    pub const fn test(&self, cpu: CpuId) -> bool {
        match word_bit(cpu) {
            Some((w, b)) => self.0[w] & b != 0,
            None => false,
        }
    }

    /// Adds `cpu` (no-op if at or above the width).
    #[inline]
    pub fn set(&mut self, cpu: CpuId) {
        if let Some((w, b)) = word_bit(cpu)
            && w < nr_words()
        {
            self.0[w] |= b;
        }
    }

    /// Removes `cpu`.
    #[inline]
    pub fn clear(&mut self, cpu: CpuId) {
        if let Some((w, b)) = word_bit(cpu) {
            self.0[w] &= !b;
        }
    }

    /// This mask plus `cpu`.
    #[inline]
    pub fn with(mut self, cpu: CpuId) -> CpuMask {
        self.set(cpu);
        self
    }

    /// This mask minus `cpu`.
    #[inline]
    pub fn without(mut self, cpu: CpuId) -> CpuMask {
        self.clear(cpu);
        self
    }

    /// Intersection.
    #[inline]
    pub fn and(&self, other: CpuMask) -> CpuMask {
        self.combine(&other, bitmap::and)
    }

    /// Union.
    #[inline]
    pub fn or(&self, other: CpuMask) -> CpuMask {
        self.combine(&other, bitmap::or)
    }

    /// CPUs in `self` but not in `other`.
    #[inline]
    pub fn and_not(&self, other: CpuMask) -> CpuMask {
        self.combine(&other, bitmap::and_not)
    }

    /// Whether the two masks share a CPU.
    #[inline]
    pub fn intersects(&self, other: CpuMask) -> bool {
        bitmap::intersects(self.used(), other.used())
    }

    /// Whether no CPU is set.
    #[inline]
    pub fn is_empty(&self) -> bool {
        bitmap::is_empty(self.used())
    }

    /// Whether exactly one CPU is set (cheaper than `weight() == 1`).
    #[inline]
    pub fn is_single(&self) -> bool {
        bitmap::is_single(self.used())
    }

    /// Number of CPUs set.
    #[inline]
    pub fn weight(&self) -> u32 {
        bitmap::weight(self.used()) as u32
    }

    /// Lowest CPU set.
    #[inline]
    pub fn first(&self) -> Option<CpuId> {
        bitmap::find_next(self.used(), 0).map(|b| CpuId(b as u32))
    }

    /// Highest CPU set.
    #[inline]
    pub fn last(&self) -> Option<CpuId> {
        bitmap::find_last(self.used()).map(|b| CpuId(b as u32))
    }

    /// Lowest CPU set that is strictly above `cpu`.
    #[inline]
    pub fn next(&self, cpu: CpuId) -> Option<CpuId> {
        bitmap::find_next(self.used(), cpu.index().checked_add(1)?).map(|b| CpuId(b as u32))
    }

    /// Lowest CPU in both masks (Linux's `cpumask_first_and`).
    #[inline]
    pub fn first_and(&self, other: CpuMask) -> Option<CpuId> {
        self.and(other).first()
    }

    /// Iterates the CPUs in ascending order, a word at a time.
    #[inline]
    pub fn iter(&self) -> CpuMaskIter {
        CpuMaskIter {
            words: self.0,
            next_word: 1,
            end: nr_words(),
            base: 0,
            cur: self.0[0],
        }
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

/// Iterator over the CPUs of a [`CpuMask`], lowest first: one step per
/// set bit, plus one per word.
#[derive(Clone, Debug)]
pub struct CpuMaskIter {
    words: [u64; MASK_WORDS],
    /// The word after the current one.
    next_word: usize,
    /// Words in use.
    end: usize,
    /// CPU number of bit 0 of the current word.
    base: u32,
    /// What is left of the current word.
    cur: u64,
}

impl Iterator for CpuMaskIter {
    type Item = CpuId;

    #[inline]
    fn next(&mut self) -> Option<CpuId> {
        while self.cur == 0 {
            self.cur = *self.words[..self.end].get(self.next_word)?;
            self.next_word += 1;
            self.base += WORD_BITS as u32;
        }
        let cpu = self.base + self.cur.trailing_zeros();
        self.cur &= self.cur - 1;
        Some(CpuId(cpu))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let rest = self.words[..self.end].get(self.next_word..).unwrap_or(&[]);
        let n = self.cur.count_ones() as usize + bitmap::weight(rest);
        (n, Some(n))
    }
}

impl ExactSizeIterator for CpuMaskIter {}

/// A [`CpuMask`] shared between CPUs: the possible / present / online masks.
///
/// No data is published through these masks, so loads are `Relaxed`. Updates
/// are `SeqCst` read-modify-writes of the CPU's word: they are rare
/// (hotplug), and ordering them against everything else costs nothing that
/// matters. A whole-mask load reads word by word (as Linux's does): each
/// CPU's bit is as of its word's load.
pub struct AtomicCpuMask([AtomicU64; MASK_WORDS]);

impl AtomicCpuMask {
    /// An empty mask.
    pub const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; MASK_WORDS])
    }

    /// The current mask.
    #[inline]
    pub fn load(&self) -> CpuMask {
        let mut out = CpuMask::EMPTY;
        for (o, w) in out.0.iter_mut().zip(&self.0[..nr_words()]) {
            // Relaxed: a snapshot; nothing is read through it. Callers
            // that need the mask to be stable (hotplug vs. senders) get
            // that from the hotplug protocol, not from this load (see
            // cpuhp.rs).
            *o = w.load(Ordering::Relaxed);
        }
        out
    }

    /// The mask, read with sequential consistency: the online test of a
    /// sender inside its send window (pairs with the SeqCst RMW of
    /// `assign` on the outgoing CPU; see `Smp::synchronize_senders`).
    #[inline]
    pub fn load_sc(&self) -> CpuMask {
        let mut out = CpuMask::EMPTY;
        for (o, w) in out.0.iter_mut().zip(&self.0[..nr_words()]) {
            *o = w.load(Ordering::SeqCst);
        }
        out
    }

    /// Whether `cpu` is in the mask, from a `Relaxed` load of its word
    /// (see [`Self::load`]); false for any out-of-range number.
    #[inline]
    pub fn test(&self, cpu: CpuId) -> bool {
        match word_bit(cpu) {
            // Relaxed: as `load`.
            Some((w, b)) => self.0[w].load(Ordering::Relaxed) & b != 0,
            None => false,
        }
    }

    /// [`Self::test`] with a SeqCst load: the online test of a sender
    /// inside its send window, as [`Self::load_sc`].
    #[inline]
    pub fn test_sc(&self, cpu: CpuId) -> bool {
        match word_bit(cpu) {
            Some((w, b)) => self.0[w].load(Ordering::SeqCst) & b != 0,
            None => false,
        }
    }

    /// Sets or clears `cpu` (a no-op for a CPU at or above the width).
    #[inline]
    pub fn assign(&self, cpu: CpuId, value: bool) {
        let Some((w, b)) = word_bit(cpu) else {
            return;
        };
        if w >= nr_words() {
            return;
        }
        if value {
            self.0[w].fetch_or(b, Ordering::SeqCst);
        } else {
            self.0[w].fetch_and(!b, Ordering::SeqCst);
        }
    }

    /// Makes the mask exactly `mask`; returns the previous one. Word by
    /// word: a concurrent load may see a mix of old and new words.
    pub fn swap(&self, mask: CpuMask) -> CpuMask {
        let mut prev = CpuMask::EMPTY;
        let n = nr_words();
        for ((p, w), &m) in prev.0.iter_mut().zip(&self.0[..n]).zip(&mask.0[..n]) {
            *p = w.swap(m, Ordering::SeqCst);
        }
        prev
    }

    /// Clears every CPU not in `keep`.
    pub fn retain(&self, keep: CpuMask) {
        for (w, &k) in self.0.iter().zip(&keep.0) {
            w.fetch_and(k, Ordering::SeqCst);
        }
    }
}

impl Default for AtomicCpuMask {
    fn default() -> Self {
        Self::new()
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

    fn m(cpus: &[u32]) -> CpuMask {
        cpus.iter().map(|&c| CpuId(c)).collect()
    }

    #[test]
    fn cpu_list_shows_ranges() {
        let list = |cpus: &[u32]| std::format!("{}", CpuList(m(cpus)));
        assert_eq!(list(&[]), "none");
        assert_eq!(list(&[0]), "0");
        assert_eq!(list(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(list(&[1, 3]), "1,3");
        assert_eq!(list(&(0..64).collect::<Vec<_>>()), "0-63");
        assert_eq!(list(&[62, 63, 64, 65, 1000, 4095]), "62-65,1000,4095");
    }

    // The host tests run at the full width (nothing lowers it); the
    // word-level operations are checked at widths 1 to 4096 in bitmap.rs.

    #[test]
    fn set_test_clear_and_out_of_range() {
        let mut a = CpuMask::EMPTY;
        for c in [0, 63, 64, 4095] {
            a.set(CpuId(c));
        }
        a.set(CpuId(MASK_BITS)); // ignored
        a.set(CpuId(u32::MAX)); // ignored
        assert_eq!(a.weight(), 4);
        assert_eq!(
            (a.word(0), a.word(1), a.word(63)),
            (1 | 1 << 63, 1, 1 << 63)
        );
        assert!(a.test(CpuId(63)) && a.test(CpuId(64)) && !a.test(CpuId(1)));
        assert!(!a.test(CpuId(MASK_BITS)) && !a.test(CpuId(u32::MAX)));
        a.clear(CpuId(0));
        a.clear(CpuId(64));
        a.clear(CpuId(4095));
        a.clear(CpuId(u32::MAX));
        assert_eq!(a, CpuMask::of(CpuId(63)));
        assert_eq!(CpuMask::of(CpuId(MASK_BITS)), CpuMask::EMPTY);
        assert_eq!(CpuMask::from_word0(0b101), m(&[0, 2]));
        assert_eq!(CpuMask::from_words([0b101, 0, 1 << 63]), m(&[0, 2, 191]));
        assert_eq!(CpuMask::from_words([]), CpuMask::EMPTY);
        let all = CpuMask::from_words(core::iter::repeat_n(u64::MAX, MASK_WORDS + 1));
        assert_eq!(all, CpuMask::ALL);
    }

    #[test]
    fn first_next_last_and_iteration() {
        let a = m(&[3, 5, 63, 64, 1000, 4095]);
        assert_eq!(a.first(), Some(CpuId(3)));
        assert_eq!(a.last(), Some(CpuId(4095)));
        assert_eq!(a.next(CpuId(3)), Some(CpuId(5)));
        assert_eq!(a.next(CpuId(4)), Some(CpuId(5)));
        assert_eq!(a.next(CpuId(5)), Some(CpuId(63)));
        assert_eq!(a.next(CpuId(63)), Some(CpuId(64)));
        assert_eq!(a.next(CpuId(64)), Some(CpuId(1000)));
        assert_eq!(a.next(CpuId(4095)), None);
        assert_eq!(a.next(CpuId(u32::MAX)), None);
        assert_eq!(CpuMask::EMPTY.first(), None);
        assert_eq!(CpuMask::EMPTY.last(), None);
        let v: Vec<u32> = a.iter().map(|c| c.0).collect();
        assert_eq!(v, [3, 5, 63, 64, 1000, 4095]);
        let mut it = a.iter();
        assert_eq!(it.len(), 6);
        it.nth(3);
        assert_eq!(it.len(), 2);
        assert_eq!(CpuMask::first_n(MASK_BITS).iter().count(), NR_CPUS);
        assert_eq!(CpuMask::EMPTY.iter().next(), None);
    }

    #[test]
    fn set_algebra_and_weight() {
        let a = m(&[1, 2, 3, 700]);
        let b = m(&[2, 3, 4, 700, 701]);
        assert_eq!(a.and(b), m(&[2, 3, 700]));
        assert_eq!(a.or(b), m(&[1, 2, 3, 4, 700, 701]));
        assert_eq!(a.and_not(b), m(&[1]));
        assert_eq!(a.first_and(b), Some(CpuId(2)));
        assert!(a.intersects(b) && !a.intersects(m(&[9, 4000])));
        assert!(m(&[4000]).intersects(m(&[4000])));
        assert_eq!(a.weight(), 4);
        assert!(m(&[7]).is_single() && m(&[3000]).is_single());
        assert!(!a.is_single() && !m(&[1, 3000]).is_single() && !CpuMask::EMPTY.is_single());
        assert_eq!(a.with(CpuId(900)).without(CpuId(1)), m(&[2, 3, 700, 900]));
        assert_eq!(CpuMask::first_n(3), m(&[0, 1, 2]));
        assert_eq!(CpuMask::first_n(65).weight(), 65);
        assert_eq!(CpuMask::first_n(u32::MAX).weight(), MASK_BITS);
        assert_eq!(CpuMask::first_n(0), CpuMask::EMPTY);
        assert!(CpuMask::EMPTY.is_empty() && !m(&[4095]).is_empty());
    }

    #[test]
    fn atomic_mask_assign_test_and_retain() {
        let a = AtomicCpuMask::new();
        for c in [4, 9, 70, 4095] {
            a.assign(CpuId(c), true);
        }
        a.assign(CpuId(MASK_BITS), true); // ignored
        assert_eq!(a.load(), m(&[4, 9, 70, 4095]));
        assert_eq!(a.load_sc(), a.load());
        assert!(a.test(CpuId(70)) && a.test_sc(CpuId(4095)) && !a.test(CpuId(71)));
        assert!(!a.test(CpuId(u32::MAX)) && !a.test_sc(CpuId(MASK_BITS)));
        a.assign(CpuId(4), false);
        assert_eq!(a.load(), m(&[9, 70, 4095]));
        a.retain(CpuMask::first_n(100));
        assert_eq!(a.load(), m(&[9, 70]));
        a.retain(CpuMask::first_n(8));
        assert_eq!(a.load(), CpuMask::EMPTY);
    }
}
