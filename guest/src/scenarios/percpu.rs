//! Per-CPU data of the scenarios, for the CPUs that exist: [`PerCpu`], one
//! `T` per CPU number below `nr_cpu_ids`, allocated zeroed from the
//! kernel's allocator at first use (once per boot, kept for the next runs)
//! instead of a static array sized for `MAX_CPUS` (which would be in the
//! guest ELF's `.data` or `.bss` whatever the machine's size).
//!
//! Any CPU may make the first use, in any context: the one that wins the
//! race allocates with interrupts off (so no interrupt on that CPU can
//! wait for it), the others spin the few instructions until the table is
//! there. A scenario that must report a lack of memory, or must not
//! allocate later, calls [`PerCpu::alloc`] at its start.

use core::sync::atomic::{AtomicU8, Ordering};

use shared::CpuId;

use crate::arch::x86_64::cpu;
use crate::kernel::SMP;
use crate::mem::{OnceSlice, OutOfMemory, Zeroable};

/// No table yet, nobody allocating.
const EMPTY: u8 = 0;
/// A CPU is allocating the table (with interrupts off).
const BUSY: u8 = 1;
/// The table is set.
const SET: u8 = 2;

/// One zero-initialised `T` per CPU number below `nr_cpu_ids`, allocated at
/// first use. Lookups of CPUs past the table find nothing (`None`), as do
/// all of them if memory ran out.
pub struct PerCpu<T: 'static> {
    table: OnceSlice<T>,
    state: AtomicU8,
}

impl<T: Zeroable> PerCpu<T> {
    /// No table yet.
    pub const fn new() -> Self {
        PerCpu {
            table: OnceSlice::new(),
            state: AtomicU8::new(EMPTY),
        }
    }

    /// The table, allocated now if it is not yet (`nr_cpu_ids` entries, all
    /// zero); `Err` if memory is short (a later call tries again).
    #[inline(never)]
    pub fn alloc(&self) -> Result<&'static [T], OutOfMemory> {
        loop {
            let t = self.table.get();
            if !t.is_empty() {
                return Ok(t);
            }
            // Acquire on failure: pairs with the Release store of `SET`
            // below, after which `table.get()` sees the table (it has its
            // own Release/Acquire too). Acquire on success: nothing to see
            // (no table yet), the claim only decides who allocates.
            match self
                .state
                .compare_exchange(EMPTY, BUSY, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return self.alloc_claimed(),
                Err(SET) => {}
                // BUSY: another CPU allocates with interrupts off; wait.
                Err(_) => cpu::pause(),
            }
        }
    }

    /// [`alloc`](Self::alloc) for the CPU that claimed the allocation.
    #[cold]
    fn alloc_claimed(&self) -> Result<&'static [T], OutOfMemory> {
        let irqs = cpu::irqs_enabled();
        cpu::cli();
        let got = crate::mem::alloc_zeroed::<T>(SMP.nr_cpu_ids() as usize);
        let state = match got {
            Ok(t) => {
                // Err only if set already, which the claim rules out.
                let _ = self.table.set(t);
                SET
            }
            Err(_) => EMPTY,
        };
        // Release: pairs with the Acquire compare-exchange in `alloc` of
        // the CPUs waiting (the table is set before).
        self.state.store(state, Ordering::Release);
        if irqs {
            cpu::sti();
        }
        got
    }

    /// The table (empty if memory is short), allocated at the first call.
    #[inline]
    pub fn table(&self) -> &'static [T] {
        let t = self.table.get();
        if !t.is_empty() {
            return t;
        }
        self.alloc().unwrap_or(&[])
    }

    /// The entry of `cpu`, `None` past the table.
    #[inline]
    pub fn get(&self, cpu: CpuId) -> Option<&'static T> {
        self.table().get(cpu.index())
    }

    /// The entry of CPU number `i`, `None` past the table.
    #[inline]
    pub fn at(&self, i: usize) -> Option<&'static T> {
        self.table().get(i)
    }
}

impl<T: Zeroable> Default for PerCpu<T> {
    fn default() -> Self {
        Self::new()
    }
}
