//! Per-CPU data allocated at boot: [`OnceSlice`], a slice set once and
//! looked up with a bounds check. (The per-CPU tables the IPI paths index
//! are in the per-CPU window instead, at link-time-constant addresses:
//! see `arch::x86_64::cpu_table`.)

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Why a table could not be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// It was set already.
    AlreadySet,
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

    fn leak(n: usize) -> &'static [AtomicU32] {
        Vec::leak((0..n).map(|i| AtomicU32::new(i as u32)).collect())
    }

    fn val(v: &AtomicU32) -> u32 {
        v.load(Ordering::Relaxed)
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
}
