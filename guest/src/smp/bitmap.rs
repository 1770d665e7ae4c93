//! Word-at-a-time bitmap operations (Linux's `lib/bitmap.c`,
//! `find_next_bit`): bit *n* is bit `n % 64` of word `n / 64`.
//!
//! Every function takes the words it may look at; a walk costs one step
//! per word (and per set bit for the iteration), never one per bit. Bits
//! past the bitmap's width in its last word are zero by the callers'
//! invariant (nothing sets them), so no function masks a tail.

/// Bits in a word.
pub const WORD_BITS: usize = u64::BITS as usize;

/// Words that hold `nbits` bits.
#[inline]
pub const fn words(nbits: usize) -> usize {
    nbits.div_ceil(WORD_BITS)
}

/// `dst = a & b`, word by word.
#[inline]
pub fn and(dst: &mut [u64], a: &[u64], b: &[u64]) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d = x & y;
    }
}

/// `dst = a | b`, word by word.
#[inline]
pub fn or(dst: &mut [u64], a: &[u64], b: &[u64]) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d = x | y;
    }
}

/// `dst = a & !b`, word by word.
#[inline]
pub fn and_not(dst: &mut [u64], a: &[u64], b: &[u64]) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d = x & !y;
    }
}

/// Whether `a` and `b` have the same bits.
#[inline]
pub fn equal(a: &[u64], b: &[u64]) -> bool {
    a == b
}

/// Whether `a` and `b` share a bit.
#[inline]
pub fn intersects(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).any(|(&x, &y)| x & y != 0)
}

/// Whether no bit is set.
#[inline]
pub fn is_empty(a: &[u64]) -> bool {
    a.iter().all(|&x| x == 0)
}

/// Number of bits set.
#[inline]
pub fn weight(a: &[u64]) -> usize {
    a.iter().map(|x| x.count_ones() as usize).sum()
}

/// Whether exactly one bit is set (stops at the second set word).
#[inline]
pub fn is_single(a: &[u64]) -> bool {
    let mut seen = false;
    for &x in a {
        if x != 0 {
            if seen || x & (x - 1) != 0 {
                return false;
            }
            seen = true;
        }
    }
    seen
}

/// The lowest set bit at or above `start`, if any.
#[inline]
pub fn find_next(a: &[u64], start: usize) -> Option<usize> {
    let mut i = start / WORD_BITS;
    let mut w = *a.get(i)? & (u64::MAX << (start % WORD_BITS));
    loop {
        if w != 0 {
            return Some(i * WORD_BITS + w.trailing_zeros() as usize);
        }
        i += 1;
        w = *a.get(i)?;
    }
}

/// The highest set bit, if any.
#[inline]
pub fn find_last(a: &[u64]) -> Option<usize> {
    let (i, &w) = a.iter().enumerate().rev().find(|&(_, &w)| w != 0)?;
    Some(i * WORD_BITS + (WORD_BITS - 1 - w.leading_zeros() as usize))
}

/// Sets bits `0..n` (clamped to the bitmap), clears the rest.
#[inline]
pub fn fill_first(dst: &mut [u64], n: usize) {
    for (i, d) in dst.iter_mut().enumerate() {
        let below = n.saturating_sub(i * WORD_BITS);
        *d = if below >= WORD_BITS {
            u64::MAX
        } else {
            (1u64 << below) - 1
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The widths every operation is checked at.
    const WIDTHS: [usize; 6] = [1, 63, 64, 65, 1000, 4096];

    /// A bitmap of `nbits` with the given bits (each below `nbits`).
    fn bm(nbits: usize, bits: &[usize]) -> Vec<u64> {
        let mut v = std::vec![0u64; words(nbits)];
        for &b in bits {
            assert!(b < nbits);
            v[b / WORD_BITS] |= 1 << (b % WORD_BITS);
        }
        v
    }

    /// Reference: the set bits, one by one.
    fn bits_of(a: &[u64]) -> Vec<usize> {
        (0..a.len() * WORD_BITS)
            .filter(|&b| a[b / WORD_BITS] >> (b % WORD_BITS) & 1 != 0)
            .collect()
    }

    /// A pseudo-random set of bits below `nbits`, always with the last one.
    fn sample(nbits: usize, seed: &mut u64) -> Vec<usize> {
        let mut out: Vec<usize> = (0..nbits)
            .filter(|_| shared::xorshift64(seed).is_multiple_of(5))
            .collect();
        if out.last() != Some(&(nbits - 1)) {
            out.push(nbits - 1);
        }
        out
    }

    #[test]
    fn word_count() {
        assert_eq!(
            WIDTHS.map(words),
            [1, 1, 1, 2, 16, 64],
            "words for {WIDTHS:?}"
        );
        assert_eq!(words(0), 0);
    }

    #[test]
    fn algebra_at_every_width() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for n in WIDTHS {
            for _ in 0..8 {
                let (sa, sb) = (sample(n, &mut seed), sample(n, &mut seed));
                let (a, b) = (bm(n, &sa), bm(n, &sb));
                let mut d = std::vec![0u64; words(n)];
                let want = |f: &dyn Fn(bool, bool) -> bool| -> Vec<usize> {
                    (0..n)
                        .filter(|x| f(sa.contains(x), sb.contains(x)))
                        .collect()
                };
                and(&mut d, &a, &b);
                assert_eq!(bits_of(&d), want(&|x, y| x && y), "and, width {n}");
                or(&mut d, &a, &b);
                assert_eq!(bits_of(&d), want(&|x, y| x || y), "or, width {n}");
                and_not(&mut d, &a, &b);
                assert_eq!(bits_of(&d), want(&|x, y| x && !y), "andnot, width {n}");
                assert_eq!(intersects(&a, &b), !want(&|x, y| x && y).is_empty());
                assert!(equal(&a, &a.clone()));
                assert_eq!(equal(&a, &b), sa == sb);
                assert_eq!(weight(&a), sa.len(), "weight, width {n}");
            }
        }
    }

    #[test]
    fn search_at_every_width() {
        let mut seed = 0x2545_f491_4f6c_dd1d;
        for n in WIDTHS {
            let empty = bm(n, &[]);
            assert!(is_empty(&empty) && !is_single(&empty));
            assert_eq!((find_next(&empty, 0), find_last(&empty)), (None, None));
            let last = bm(n, &[n - 1]);
            assert!(!is_empty(&last) && is_single(&last));
            assert_eq!(find_next(&last, 0), Some(n - 1));
            assert_eq!(find_last(&last), Some(n - 1));
            assert_eq!(find_next(&last, n), None, "past the end, width {n}");
            assert_eq!(find_next(&last, usize::MAX), None);
            let s = sample(n, &mut seed);
            let a = bm(n, &s);
            assert_eq!(is_single(&a), s.len() == 1);
            // Walking with find_next visits exactly the set bits, in order.
            let mut walked = Vec::new();
            let mut at = find_next(&a, 0);
            while let Some(b) = at {
                walked.push(b);
                at = find_next(&a, b + 1);
            }
            assert_eq!(walked, s, "walk, width {n}");
            assert_eq!(find_last(&a), s.last().copied());
            for start in [0, 1, 63, 64, 65, n / 2, n - 1] {
                let want = s.iter().copied().find(|&b| b >= start);
                assert_eq!(find_next(&a, start), want, "next from {start}, width {n}");
            }
        }
    }

    #[test]
    fn fill_first_at_every_width() {
        for n in WIDTHS {
            for k in [0, 1, 63, 64, 65, 999, 1000, 4095, 4096, 5000] {
                let mut d = std::vec![u64::MAX; words(n)];
                fill_first(&mut d, k.min(n));
                assert_eq!(weight(&d), k.min(n), "first {k}, width {n}");
                assert_eq!(find_last(&d), k.min(n).checked_sub(1));
            }
        }
    }
}
