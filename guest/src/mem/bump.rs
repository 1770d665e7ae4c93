//! A bump allocator over one range of memory that is zero, mapped and used
//! by nothing else: allocations are never freed (the kernel allocates its
//! per-CPU data once, at boot, and the scenarios theirs once, at first
//! use), so a cursor that only moves up is enough. Lock-free: a
//! compare-exchange on the cursor, so any CPU may allocate.

use core::sync::atomic::{AtomicU64, Ordering};

use super::Zeroable;

/// An allocation that did not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory {
    /// Bytes asked for (after alignment, `u64::MAX` if that overflowed).
    pub need: u64,
    /// Bytes that were left.
    pub left: u64,
}

/// See the module docs.
pub struct BumpAllocator {
    /// Next free byte.
    next: AtomicU64,
    /// One past the last byte.
    end: AtomicU64,
}

impl Default for BumpAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl BumpAllocator {
    /// An allocator with nothing to give (until [`Self::init`]).
    pub const fn new() -> Self {
        BumpAllocator {
            next: AtomicU64::new(0),
            end: AtomicU64::new(0),
        }
    }

    /// Hands out `[start, end)` from now on.
    ///
    /// # Safety
    ///
    /// The range must be memory that is mapped at these addresses, reads as
    /// zero, is used by nothing else and stays so for as long as anything
    /// allocated from it is used (for ever in the kernel); `init` must be
    /// called before any CPU allocates (the kernel: the boot CPU, before
    /// it starts the others).
    pub unsafe fn init(&self, start: u64, end: u64) {
        // Relaxed: set before any other CPU runs (the boot CPU starts the
        // others after a fence, ap_boot) or any host thread is spawned.
        self.end.store(end.max(start), Ordering::Relaxed);
        self.next.store(start, Ordering::Relaxed);
    }

    /// Bytes handed out or skipped for alignment so far, from `start`.
    pub fn next(&self) -> u64 {
        // Relaxed: a snapshot for reports.
        self.next.load(Ordering::Relaxed)
    }

    /// Bytes left.
    pub fn left(&self) -> u64 {
        // Relaxed: see `next`.
        self.end
            .load(Ordering::Relaxed)
            .saturating_sub(self.next.load(Ordering::Relaxed))
    }

    /// The address of `size` fresh bytes aligned to `align` (a power of
    /// two), zero and for the caller alone.
    pub fn alloc(&self, size: u64, align: u64) -> Result<u64, OutOfMemory> {
        let align = align.max(1);
        debug_assert!(align.is_power_of_two());
        // Relaxed: `end` is set once before anyone allocates (see `init`).
        let end = self.end.load(Ordering::Relaxed);
        // Relaxed: the cursor publishes nothing: each range is handed to
        // one caller, and its contents were zero before `init`.
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            let start = cur.checked_next_multiple_of(align);
            let new = start.and_then(|s| s.checked_add(size));
            let fits = new.filter(|&n| n <= end);
            let Some(new) = fits else {
                return Err(OutOfMemory {
                    need: new.map_or(u64::MAX, |n| n - cur),
                    left: end.saturating_sub(cur),
                });
            };
            // Relaxed: see the load above.
            match self
                .next
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(new - size),
                Err(now) => cur = now,
            }
        }
    }

    /// The address of room for `n` `T`s.
    fn alloc_array<T>(&self, n: usize) -> Result<*mut T, OutOfMemory> {
        let size = (core::mem::size_of::<T>() as u64)
            .checked_mul(n as u64)
            .ok_or(OutOfMemory {
                need: u64::MAX,
                left: self.left(),
            })?;
        let addr = self.alloc(size, core::mem::align_of::<T>() as u64)?;
        // An empty slice still needs a non-null, aligned pointer.
        if size == 0 {
            return Ok(core::ptr::NonNull::dangling().as_ptr());
        }
        Ok(addr as *mut T)
    }

    /// `n` zeroed `T`s, for ever (nothing is written: the memory is zero).
    pub fn alloc_zeroed<T: Zeroable>(&self, n: usize) -> Result<&'static [T], OutOfMemory> {
        let p = self.alloc_array::<T>(n)?;
        // SAFETY: `p` is aligned for `T` and heads `n * size_of::<T>()`
        // bytes that are zero, mapped and this caller's alone for ever
        // (`init`'s contract); all-zero bytes are a `T` (`Zeroable`).
        Ok(unsafe { core::slice::from_raw_parts(p, n) })
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::AtomicU32;
    use std::vec::Vec;

    use super::*;

    /// An allocator over a leaked, zeroed host buffer of `bytes` bytes.
    fn host(bytes: usize) -> (BumpAllocator, u64) {
        let buf: &'static mut [u64] = Vec::leak(std::vec![0u64; bytes.div_ceil(8)]);
        let start = buf.as_mut_ptr() as u64;
        let a = BumpAllocator::new();
        // SAFETY: a leaked, zeroed buffer of at least `bytes` bytes that
        // nothing else uses.
        unsafe { a.init(start, start + bytes as u64) };
        (a, start)
    }

    #[test]
    fn empty_allocator_refuses_everything_but_nothing() {
        let a = BumpAllocator::new();
        assert_eq!(a.alloc(1, 1), Err(OutOfMemory { need: 1, left: 0 }));
        assert_eq!(a.alloc_zeroed::<u64>(0).unwrap().len(), 0);
    }

    #[test]
    fn aligned_disjoint_in_order() {
        let (a, start) = host(4096);
        let x = a.alloc(3, 1).unwrap();
        let y = a.alloc(8, 64).unwrap();
        let z = a.alloc(0, 4096).unwrap_or(0);
        assert_eq!(x, start);
        assert!(y >= x + 3 && y.is_multiple_of(64) && y - (x + 3) < 64);
        assert!(z == 0 || z.is_multiple_of(4096));
        assert_eq!(a.left(), start + 4096 - a.next());
    }

    #[test]
    fn exhaustion_names_need_and_left_and_keeps_the_rest() {
        let (a, _) = host(1024);
        a.alloc(1000, 8).unwrap();
        let e = a.alloc(100, 8).unwrap_err();
        assert_eq!(
            e,
            OutOfMemory {
                need: 100,
                left: 24
            }
        );
        assert_eq!(a.alloc(24, 8).map(|_| ()), Ok(()));
        assert_eq!(a.left(), 0);
        assert!(a.alloc_zeroed::<u64>(usize::MAX).is_err());
        assert!(a.alloc(u64::MAX, 1).is_err());
        assert!(a.alloc(1, 1 << 63).is_err());
    }

    #[test]
    fn zeroed_slices_follow_each_other() {
        let (a, _) = host(64 * 1024);
        let z = a.alloc_zeroed::<AtomicU32>(1000).unwrap();
        assert!(
            z.iter()
                .all(|v| v.load(core::sync::atomic::Ordering::Relaxed) == 0)
        );
        assert!((z.as_ptr() as usize).is_multiple_of(4));
        let w = a.alloc_zeroed::<u64>(10).unwrap();
        assert!((w.as_ptr() as usize) >= z.as_ptr() as usize + 4000);
    }

    #[test]
    fn concurrent_allocations_never_overlap() {
        let (a, start) = host(8 * 4 * 1000 * 64);
        let a: &'static BumpAllocator = Box::leak(Box::new(a));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..1000)
                        .map(|_| a.alloc(40, 64).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        assert!(all.windows(2).all(|w| w[1] - w[0] >= 64));
        assert!(all.iter().all(|&p| p >= start && p.is_multiple_of(64)));
    }
}
