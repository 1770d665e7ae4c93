//! The kernel's own mappings on top of the VMM's identity map: the per-CPU
//! window (`shared::percpu_window`). At boot the BSP builds one page table
//! for the window from guest memory: for each table, pages of their own
//! under the slots of the CPUs that exist, and one shared zero page,
//! mapped read-only, under every other slot; then it hooks the table in
//! through a page directory of its own in the VMM's PDPT. With CR0.WP set
//! on every CPU (`cpu::enable_write_protect`), a write to a slot of a CPU
//! that does not exist faults instead of changing what every such slot
//! reads.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shared::MAX_CPUS;
use shared::layout::{PAGE_SIZE, PDPT};
use shared::percpu_window::{TABLES, WINDOW_SIZE, WINDOW_START};

use super::cpu;
use crate::mem::{self, OutOfMemory, Zeroable};

/// Entries in a page-table page.
const ENTRIES: usize = 512;

/// A page-table entry (Intel SDM Vol. 3A §4.5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Pte(u64);

impl Pte {
    const PRESENT: u64 = 1 << 0;
    const WRITABLE: u64 = 1 << 1;

    /// An entry pointing at the next-level table at `phys`.
    fn table(phys: u64) -> Pte {
        Pte(phys | Self::PRESENT | Self::WRITABLE)
    }

    /// A 4 KiB page at `phys`, writable or read-only.
    fn page(phys: u64, writable: bool) -> Pte {
        Pte(phys | Self::PRESENT | if writable { Self::WRITABLE } else { 0 })
    }
}

/// A page of page-table entries (or of data), page-aligned.
#[repr(C, align(4096))]
struct Page([AtomicU64; ENTRIES]);

// SAFETY: atomics at 0.
unsafe impl Zeroable for Page {}

const _: () = assert!(core::mem::size_of::<Page>() as u64 == PAGE_SIZE);

impl Page {
    /// The page's address (guest-physical: it lies in the identity map).
    fn phys(&self) -> u64 {
        self as *const Page as u64
    }

    fn set(&self, index: usize, pte: Pte) {
        // Relaxed: only the boot CPU writes page tables, before the window
        // is hooked in (the PDPT store below) and before any AP starts;
        // its own page walks see its earlier stores.
        self.0[index % ENTRIES].store(pte.0, Ordering::Relaxed);
    }
}

/// CPUs whose window slots have pages of their own (0 until mapped).
static BACKED: AtomicU32 = AtomicU32::new(0);

/// How many CPUs, from CPU 0, have window slots of their own (writable);
/// every slot from there to `MAX_CPUS` reads as zero and must not be
/// written.
#[inline]
pub fn window_backed() -> u32 {
    // Relaxed: set once by the boot CPU before any AP starts (the start
    // orders it).
    BACKED.load(Ordering::Relaxed)
}

/// The index of `virt`'s entry in a table of the level whose entries
/// each map `1 << shift` bytes.
const fn index(virt: u64, shift: u32) -> usize {
    ((virt >> shift) as usize) % ENTRIES
}

/// Maps the per-CPU window for `cpus` CPUs (see the module docs). Boot CPU,
/// before anything touches the window, once; the memory comes zeroed from
/// the kernel's allocator, so every slot starts as its type's empty value.
pub fn map_window(cpus: u32) -> Result<(), OutOfMemory> {
    let cpus = cpus.min(MAX_CPUS as u32);
    let dir = &mem::alloc_zeroed::<Page>(1)?[0];
    let table = &mem::alloc_zeroed::<Page>(1)?[0];
    let zero = &mem::alloc_zeroed::<Page>(1)?[0];
    for t in TABLES {
        let backed = t.backed_pages(cpus);
        let own = mem::alloc_zeroed::<Page>(backed as usize)?;
        for page in 0..t.pages() {
            let virt = t.start + page * PAGE_SIZE;
            let pte = match own.get(page as usize) {
                Some(p) => Pte::page(p.phys(), true),
                None => Pte::page(zero.phys(), false),
            };
            table.set(index(virt, 12), pte);
        }
    }
    dir.set(index(WINDOW_START, 21), Pte::table(table.phys()));
    let pdpt = PDPT.start.0 as *const AtomicU64;
    // SAFETY: the VMM's PDPT is a page of entries at this identity-mapped,
    // aligned address, live for ever; the window's entry is beyond the
    // identity map's and only this boot CPU writes it, once.
    let entry = unsafe { &*pdpt.add(index(WINDOW_START, 30)) };
    // Relaxed: see `Page::set`; the entry was not present, so no CPU holds
    // a translation through it.
    entry.store(Pte::table(dir.phys()).0, Ordering::Relaxed);
    cpu::reload_cr3();
    // Relaxed: see `window_backed`.
    BACKED.store(cpus, Ordering::Relaxed);
    Ok(())
}

const _: () = assert!(WINDOW_SIZE == ENTRIES as u64 * PAGE_SIZE);
const _: () = assert!(
    index(WINDOW_START, 12) == 0,
    "the window starts a page table"
);
