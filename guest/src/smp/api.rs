//! The vocabulary of the cross-call API: function types, flags, errors.

use shared::CpuId;

/// A cross-call function; `info` is an opaque word, like C's `void *`.
pub type SmpCallFunc = fn(info: usize);

/// A per-CPU predicate for [`Smp::on_each_cpu_cond`]: whether to run the
/// function on `cpu`.
pub type SmpCondFunc = fn(cpu: CpuId, info: usize) -> bool;

/// Why a cross-call was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmpError {
    /// No such CPU, or it is offline (`-ENXIO`).
    Nxio,
    /// The async csd is still in flight (`-EBUSY`).
    Busy,
    /// Per-CPU call data could not be "allocated" (`-ENOMEM`).
    NoMem,
}

impl SmpError {
    /// The Linux errno: -6, -16 or -12.
    pub const fn errno(self) -> i32 {
        match self {
            SmpError::Nxio => -6,
            SmpError::Busy => -16,
            SmpError::NoMem => -12,
        }
    }
}

/// Flags of [`Smp::smp_call_function_many_cond`] (Linux's `SCF_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScfFlags(pub u32);

impl ScfFlags {
    /// Neither wait nor run locally.
    pub const NONE: ScfFlags = ScfFlags(0);
    /// Wait until the function has run on every target.
    pub const WAIT: ScfFlags = ScfFlags(1 << 0);
    /// Also run it on this CPU if this CPU is in the mask.
    pub const RUN_LOCAL: ScfFlags = ScfFlags(1 << 1);

    /// `WAIT` if `wait`, else nothing.
    #[inline]
    pub const fn wait_if(wait: bool) -> ScfFlags {
        ScfFlags(wait as u32)
    }

    /// Whether all flags of `other` are set.
    #[inline]
    pub const fn contains(self, other: ScfFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for ScfFlags {
    type Output = ScfFlags;
    #[inline]
    fn bitor(self, rhs: ScfFlags) -> ScfFlags {
        ScfFlags(self.0 | rhs.0)
    }
}
