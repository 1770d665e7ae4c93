//! Per-CPU data allocated at boot, reached as cheaply as a static array.
//!
//! [`PerCpuTable`] is for what the IPI paths index by CPU number: its
//! length is a power of two and a CPU number is masked into it, so that an
//! access is a load of the base, an `and` with the loaded mask and the
//! scaling: the same number of instructions as a static array masked with
//! a constant, and never out of bounds. Before it is set it holds one
//! placeholder element (every CPU number maps to it). [`OnceSlice`] is a
//! slice set once, for data that is looked up with a bounds check.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Why a table could not be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// It was set already.
    AlreadySet,
    /// The slice's length is not what the table takes (a power of two for
    /// [`PerCpuTable`]).
    BadLength,
}

/// A table of per-CPU `T`s with a power-of-two length; see the module docs.
pub struct PerCpuTable<T: 'static> {
    /// The first element (the placeholder until set).
    base: AtomicPtr<T>,
    /// Length minus one (0 until set).
    mask: AtomicUsize,
    /// Length (0 until set: the placeholder is no element of the table).
    len: AtomicUsize,
    /// Whether `set` was called (claimed before anything is stored).
    claimed: AtomicBool,
}

impl<T: 'static> PerCpuTable<T> {
    /// A table holding only `placeholder` until [`Self::set`].
    pub const fn new(placeholder: &'static T) -> Self {
        PerCpuTable {
            base: AtomicPtr::new(placeholder as *const T as *mut T),
            mask: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            claimed: AtomicBool::new(false),
        }
    }

    /// Makes `elems` the table, once; its length must be a power of two.
    pub fn set(&self, elems: &'static [T]) -> Result<(), TableError> {
        if !elems.len().is_power_of_two() {
            return Err(TableError::BadLength);
        }
        // Relaxed: only decides which caller stores; the stores below
        // publish.
        if self.claimed.swap(true, Ordering::Relaxed) {
            return Err(TableError::AlreadySet);
        }
        // Relaxed: published by the Release stores of the length and the
        // mask below.
        self.base.store(elems.as_ptr() as *mut T, Ordering::Relaxed);
        // Release: pairs with the Acquire load in `as_slice`.
        self.len.store(elems.len(), Ordering::Release);
        // Release: pairs with the Acquire load of the mask in `mask`: a
        // reader that sees the new mask sees the new base (one that sees
        // the old mask, 0, indexes element 0 of either).
        self.mask.store(elems.len() - 1, Ordering::Release);
        Ok(())
    }

    /// The length minus one: CPU numbers are masked with it.
    #[inline(always)]
    pub fn mask(&self) -> usize {
        // Acquire: pairs with the Release store in `set` (a plain load on
        // x86).
        self.mask.load(Ordering::Acquire)
    }

    /// Element `i & mask`, `mask` a value [`Self::mask`] returned.
    #[inline(always)]
    pub fn get_masked(&self, mask: usize, i: usize) -> &'static T {
        // Relaxed: ordered after the mask's Acquire load (see `set`).
        let base = self.base.load(Ordering::Relaxed);
        // SAFETY: `mask` was read before `base`, with Acquire: either it is
        // 0 (element 0 exists in the placeholder and in every table) or
        // `base` is the table it belongs to, `mask + 1` elements that live
        // for ever (a table is set once). `i & mask` is within it.
        unsafe { &*base.add(i & mask) }
    }

    /// The element of CPU number `i`, masked into the table (callers pass
    /// CPU numbers below its length: an invalid one gets some CPU's
    /// element, never memory outside the table).
    #[inline(always)]
    pub fn get(&self, i: usize) -> &'static T {
        self.get_masked(self.mask(), i)
    }

    /// The element of `i` if `i` is below the length (for an unset table:
    /// the placeholder for 0, as if it were a table of one), with one
    /// compare against the loaded mask (as cheap as a static array's
    /// bounds check).
    #[inline(always)]
    pub fn get_checked(&self, i: usize) -> Option<&'static T> {
        let mask = self.mask();
        (i <= mask).then(|| self.get_masked(mask, i))
    }

    /// The whole table (empty until set).
    pub fn as_slice(&self) -> &'static [T] {
        // Acquire: pairs with the Release store of the length in `set`.
        let len = self.len.load(Ordering::Acquire);
        if len == 0 {
            return &[];
        }
        // Relaxed: after the length's Acquire load.
        let base = self.base.load(Ordering::Relaxed);
        // SAFETY: a set table: `len` elements at `base`, for ever.
        unsafe { core::slice::from_raw_parts(base, len) }
    }
}

/// A slice set once (empty before), looked up with bounds checks.
pub struct OnceSlice<T: 'static> {
    ptr: AtomicPtr<T>,
    len: AtomicUsize,
    claimed: AtomicBool,
}

impl<T: 'static> Default for OnceSlice<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: 'static> OnceSlice<T> {
    /// An empty slice.
    pub const fn new() -> Self {
        OnceSlice {
            ptr: AtomicPtr::new(core::ptr::null_mut()),
            len: AtomicUsize::new(0),
            claimed: AtomicBool::new(false),
        }
    }

    /// Makes `elems` the slice, once.
    pub fn set(&self, elems: &'static [T]) -> Result<(), TableError> {
        // Relaxed: only decides which caller stores.
        if self.claimed.swap(true, Ordering::Relaxed) {
            return Err(TableError::AlreadySet);
        }
        // Relaxed: published by the Release store of the length.
        self.ptr.store(elems.as_ptr() as *mut T, Ordering::Relaxed);
        // Release: pairs with the Acquire load in `get`.
        self.len.store(elems.len(), Ordering::Release);
        Ok(())
    }

    /// The slice (empty until set, or while another CPU sets it).
    #[inline]
    pub fn get(&self) -> &'static [T] {
        // Acquire: pairs with the Release store in `set`.
        let len = self.len.load(Ordering::Acquire);
        if len == 0 {
            return &[];
        }
        // Relaxed: after the length's Acquire load.
        let ptr = self.ptr.load(Ordering::Relaxed);
        // SAFETY: set once to a slice of `len` elements that lives for ever.
        unsafe { core::slice::from_raw_parts(ptr, len) }
    }

    /// Element `i`, if set and in bounds.
    #[inline]
    pub fn at(&self, i: usize) -> Option<&'static T> {
        self.get().get(i)
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::AtomicU32;
    use std::vec::Vec;

    use super::*;

    static PLACEHOLDER: AtomicU32 = AtomicU32::new(7);

    fn leak(n: usize) -> &'static [AtomicU32] {
        Vec::leak((0..n).map(|i| AtomicU32::new(i as u32)).collect())
    }

    fn val(v: &AtomicU32) -> u32 {
        v.load(Ordering::Relaxed)
    }

    #[test]
    fn placeholder_until_set_then_masked() {
        let t = PerCpuTable::new(&PLACEHOLDER);
        assert_eq!(val(t.get(0)), 7);
        assert_eq!(val(t.get(12345)), 7);
        assert_eq!(val(t.get_checked(0).unwrap()), 7);
        assert!(t.get_checked(1).is_none());
        assert!(t.as_slice().is_empty());
        assert_eq!(t.set(leak(3)), Err(TableError::BadLength));
        assert_eq!(t.set(leak(0)), Err(TableError::BadLength));
        t.set(leak(8)).unwrap();
        assert_eq!(t.set(leak(8)), Err(TableError::AlreadySet));
        assert_eq!(t.mask(), 7);
        assert_eq!(val(t.get(5)), 5);
        assert_eq!(val(t.get(13)), 5);
        assert_eq!(val(t.get_checked(7).unwrap()), 7);
        assert!(t.get_checked(8).is_none());
        assert_eq!(t.as_slice().len(), 8);
    }

    #[test]
    fn a_table_of_one_is_set() {
        let t = PerCpuTable::new(&PLACEHOLDER);
        t.set(leak(1)).unwrap();
        assert_eq!(val(t.get(3)), 0);
        assert_eq!(t.as_slice().len(), 1);
    }

    #[test]
    fn once_slice() {
        let s: OnceSlice<AtomicU32> = OnceSlice::new();
        assert!(s.get().is_empty() && s.at(0).is_none());
        s.set(leak(3)).unwrap();
        assert_eq!(s.set(leak(3)), Err(TableError::AlreadySet));
        assert_eq!(val(s.at(2).unwrap()), 2);
        assert!(s.at(3).is_none());
    }

    #[test]
    fn readers_racing_with_set_stay_in_bounds() {
        let t: &'static PerCpuTable<AtomicU32> =
            Box::leak(Box::new(PerCpuTable::new(&PLACEHOLDER)));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(move || {
                    for i in 0..100_000usize {
                        let v = val(t.get(i));
                        assert!(v == 7 || v as usize == i & 1023);
                    }
                })
            })
            .collect();
        t.set(leak(1024)).unwrap();
        for r in readers {
            r.join().unwrap();
        }
    }
}
