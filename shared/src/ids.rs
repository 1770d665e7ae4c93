//! CPU numbers and APIC ids: two different things that must never be mixed.

use core::fmt;

/// A logical CPU number: a dense index `0..nr_cpu_ids`, the index of
/// per-CPU data and of bits in CPU masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuId(pub u32);

/// An x2APIC id: the 32-bit destination the hardware routes interrupts by.
/// Mapped from a [`CpuId`] only through the boot information's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApicId(pub u32);

impl CpuId {
    /// The CPU number as an index into per-CPU arrays.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for CpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ApicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
