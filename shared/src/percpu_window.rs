//! The guest's per-CPU window: guest-virtual tables with one slot per CPU
//! number, at addresses fixed at link time, backed by memory only for the
//! CPUs that exist.
//!
//! The IPI paths index per-CPU data of other CPUs (a target's call queue,
//! its online flag, its poll word) as `table + cpu * stride`. With the
//! table at a constant address that is one instruction; with its base
//! loaded from memory it is reloaded after every atomic read-modify-write
//! on the way, which the round trip's exact instruction counts show.
//! Static arrays would keep the constant address but cost `MAX_CPUS`
//! slots of memory whatever the CPU count. The window keeps both: each
//! table spans `MAX_CPUS` slots of virtual address space, and at boot the
//! guest maps pages of their own under the slots of the CPUs that exist
//! and one shared read-only zero page under the rest. A slot of any CPU
//! number below `MAX_CPUS` thus reads as the empty (all-zero) value, and
//! writing one beyond the CPUs that exist faults.
//!
//! The window is guest-virtual: the VMM maps nothing there (its identity
//! map ends at [`crate::layout::IDENTITY_MAP_SIZE`]); it lies below 2 GiB
//! so that every address in it is a sign-extended 32-bit immediate, and it
//! fits one page table (2 MiB), which the guest builds from its own memory
//! ([`crate::sizing`] counts it).

use crate::MAX_CPUS;
use crate::layout::{IDENTITY_MAP_SIZE, PAGE_SIZE};

/// One per-CPU table in the window: [`MAX_CPUS`] slots of `stride` bytes
/// from the guest-virtual address `start` (page-aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowTable {
    /// Guest-virtual address of CPU 0's slot.
    pub start: u64,
    /// Bytes per slot (the guest checks it is its type's size).
    pub stride: u64,
}

impl WindowTable {
    /// The table that starts the window.
    const fn first(stride: u64) -> Self {
        WindowTable {
            start: WINDOW_START,
            stride,
        }
    }

    /// The table after `prev`, from the next page.
    const fn after(prev: WindowTable, stride: u64) -> Self {
        WindowTable {
            start: prev.end().next_multiple_of(PAGE_SIZE),
            stride,
        }
    }

    /// Virtual bytes the table spans (all [`MAX_CPUS`] slots).
    pub const fn span(&self) -> u64 {
        self.stride * MAX_CPUS as u64
    }

    /// One past the table's last byte.
    pub const fn end(&self) -> u64 {
        self.start + self.span()
    }

    /// Pages of the table (all slots).
    pub const fn pages(&self) -> u64 {
        self.span().div_ceil(PAGE_SIZE)
    }

    /// Pages that hold the slots of CPUs `0..cpus` (at most [`MAX_CPUS`]):
    /// the pages with memory of their own.
    pub const fn backed_pages(&self, cpus: u32) -> u64 {
        let cpus = if cpus as usize > MAX_CPUS {
            MAX_CPUS as u64
        } else {
            cpus as u64
        };
        (cpus * self.stride).div_ceil(PAGE_SIZE)
    }
}

/// Guest-virtual start of the window: right above the identity map.
pub const WINDOW_START: u64 = IDENTITY_MAP_SIZE;
/// Bytes of the window: what one page table maps.
pub const WINDOW_SIZE: u64 = 512 * PAGE_SIZE;

/// The smp core's per-CPU blocks (call queue, csd, counters).
pub const SMP_BLOCKS: WindowTable = WindowTable::first(256);
/// The arch per-CPU areas (GS points at its own CPU's).
pub const ARCH_AREAS: WindowTable = WindowTable::after(SMP_BLOCKS, 64);
/// The polling-idle words (one cache line each).
pub const POLL_WORDS: WindowTable = WindowTable::after(ARCH_AREAS, 64);
/// The kernel's per-CPU hotplug control.
pub const HOTPLUG: WindowTable = WindowTable::after(POLL_WORDS, 8);
/// The kernel's per-CPU idle tasks.
pub const IDLE_TASKS: WindowTable = WindowTable::after(HOTPLUG, 8);

/// Every table of the window, in address order.
pub const TABLES: [WindowTable; 5] = [SMP_BLOCKS, ARCH_AREAS, POLL_WORDS, HOTPLUG, IDLE_TASKS];

/// Pages of guest memory the window takes with `cpus` CPUs: the backed
/// pages of every table, the page table, its page directory and the
/// shared zero page.
pub const fn pages_needed(cpus: u32) -> u64 {
    let mut n = 3;
    let mut i = 0;
    while i < TABLES.len() {
        n += TABLES[i].backed_pages(cpus);
        i += 1;
    }
    n
}

const _: () = {
    assert!(
        WINDOW_START >= crate::layout::MAX_MEM,
        "the window must be above guest RAM"
    );
    assert!(WINDOW_START.is_multiple_of(WINDOW_SIZE));
    assert!(
        WINDOW_START + WINDOW_SIZE <= 0x8000_0000,
        "the window must stay below 2 GiB (32-bit immediate addresses)"
    );
    assert!(
        WINDOW_START % (1 << 30) + WINDOW_SIZE <= 1 << 30,
        "the window must sit inside one page directory (1 GiB)"
    );
    let mut i = 0;
    while i < TABLES.len() {
        assert!(TABLES[i].start.is_multiple_of(PAGE_SIZE));
        assert!(TABLES[i].stride > 0);
        if i > 0 {
            assert!(
                TABLES[i - 1].end() <= TABLES[i].start,
                "window tables overlap"
            );
        }
        i += 1;
    }
    assert!(
        TABLES[TABLES.len() - 1].end() <= WINDOW_START + WINDOW_SIZE,
        "the tables outgrew the window"
    );
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backed_pages_cover_the_slots_of_the_cpus_that_exist() {
        assert_eq!(SMP_BLOCKS.backed_pages(0), 0);
        assert_eq!(SMP_BLOCKS.backed_pages(1), 1);
        assert_eq!(SMP_BLOCKS.backed_pages(16), 1);
        assert_eq!(SMP_BLOCKS.backed_pages(17), 2);
        assert_eq!(SMP_BLOCKS.backed_pages(MAX_CPUS as u32), SMP_BLOCKS.pages());
        assert_eq!(SMP_BLOCKS.backed_pages(u32::MAX), SMP_BLOCKS.pages());
        assert_eq!(HOTPLUG.backed_pages(512), 1);
        assert_eq!(HOTPLUG.backed_pages(513), 2);
    }

    #[test]
    fn the_window_is_virtual_and_above_guest_ram() {
        for t in TABLES {
            assert!(t.start >= WINDOW_START && t.end() <= WINDOW_START + WINDOW_SIZE);
        }
    }

    #[test]
    fn pages_needed_grow_with_the_cpus() {
        assert_eq!(pages_needed(1), 3 + TABLES.len() as u64);
        assert!(pages_needed(1024) > pages_needed(8));
        assert_eq!(pages_needed(1024), pages_needed(u32::MAX));
    }
}
