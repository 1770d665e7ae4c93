//! Typed per-CPU tables in the per-CPU window (`shared::percpu_window`,
//! mapped by [`super::paging::map_window`]): a slot of `T` per CPU number
//! at an address fixed at link time, so that indexing another CPU's slot
//! is one instruction on the IPI paths.

use core::marker::PhantomData;

use shared::percpu_window::WindowTable;
use shared::{CpuId, MAX_CPUS};

use super::paging;
use crate::mem::Zeroable;

/// A table of `T`, one per CPU number below `MAX_CPUS`. The slots of the
/// CPUs that exist are their own; every other slot reads as the all-zero
/// `T` (hence `Zeroable`) and faults when written. So a slot reached with
/// [`Self::get`] may be written only for a CPU known to exist (this CPU,
/// or one checked online); [`Self::backed`] checks.
pub struct CpuTable<T: Zeroable + Sync + 'static> {
    start: u64,
    _slot: PhantomData<&'static T>,
}

impl<T: Zeroable + Sync + 'static> CpuTable<T> {
    /// The table at `table` of the window; its stride must be `T`'s size
    /// and its start aligned for `T` (checked at compile time where the
    /// constant is made).
    pub const fn new(table: WindowTable) -> Self {
        assert!(table.stride == core::mem::size_of::<T>() as u64);
        assert!(
            table
                .start
                .is_multiple_of(core::mem::align_of::<T>() as u64)
        );
        CpuTable {
            start: table.start,
            _slot: PhantomData,
        }
    }

    /// Every slot, as an array at the table's fixed address.
    #[inline(always)]
    pub fn all(&self) -> &'static [T; MAX_CPUS] {
        // SAFETY: the window is mapped before anything runs that reads a
        // table (`paging::map_window`, first thing at boot, before any AP
        // starts): `MAX_CPUS` slots of `T` at this aligned address, each
        // either the CPU's own page or the shared zero page, all-zero bytes
        // being a `T` (`Zeroable`) and never freed.
        unsafe { &*(self.start as *const [T; MAX_CPUS]) }
    }

    /// `cpu`'s slot, for reading (CPU numbers are masked into range:
    /// a slot of a CPU that does not exist reads as zero).
    #[inline(always)]
    pub fn get(&self, cpu: CpuId) -> &'static T {
        &self.all()[cpu.index() % MAX_CPUS]
    }

    /// `cpu`'s slot if it has memory of its own (a CPU that exists), for
    /// writing.
    #[inline]
    pub fn backed(&self, cpu: CpuId) -> Option<&'static T> {
        if cpu.0 < paging::window_backed() {
            Some(self.get(cpu))
        } else {
            None
        }
    }
}
