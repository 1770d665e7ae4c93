//! How much guest memory a VM needs for its CPU count, so that the VMM can
//! size the default `--mem` and refuse a smaller one up front (naming the
//! amount) instead of letting the guest run out at boot.
//!
//! The need is the kernel image (with its BSS), a fixed headroom, a budget
//! per CPU (its stacks and its slots in the per-CPU window,
//! [`crate::percpu_window`]) and one per
//! (caller, target) pair of CPUs (the cfd csds: each CPU has one csd for
//! every possible target, as Linux's `cfd_data`, in a row whose length is
//! the CPU count rounded up to a power of two).

use crate::layout::DEFAULT_MEM;

/// One MiB.
pub const MIB: u64 = 1 << 20;
/// Room the guest needs beyond its image and its CPUs (its own
/// allocations).
pub const MEM_HEADROOM: u64 = 2 * MIB;
/// Guest memory budget of one CPU: its kernel and IST stacks (at most half
/// of it; the guest checks that at build time) and its slots in the
/// per-CPU window with their page tables (at most the other half, checked
/// below).
pub const PER_CPU_MEM: u64 = 128 * 1024;

const _: () = assert!(
    crate::percpu_window::pages_needed(1) * crate::layout::PAGE_SIZE <= PER_CPU_MEM / 2,
    "the per-CPU window's pages outgrew half a CPU's memory budget"
);
/// Guest memory of one (caller, target) pair of CPUs: one cfd csd.
pub const PER_CPU_PAIR_MEM: u64 = 32;
/// What the default memory allows for the kernel image and the headroom
/// (the embedded guest's image ends near 6 MiB); a larger image needs
/// `--mem`.
pub const DEFAULT_IMAGE_ALLOWANCE: u64 = 16 * MIB;

/// Bytes of guest memory a kernel image ending at `image_end` needs with
/// `cpus` CPUs, rounded up to whole MiB; saturates instead of overflowing.
pub const fn mem_needed(image_end: u64, cpus: u32) -> u64 {
    let cpus = cpus as u64;
    let need = image_end
        .saturating_add(MEM_HEADROOM)
        .saturating_add(cpus.saturating_mul(PER_CPU_MEM))
        .saturating_add(
            cpus.saturating_mul(row_len(cpus))
                .saturating_mul(PER_CPU_PAIR_MEM),
        );
    need.div_ceil(MIB).saturating_mul(MIB)
}

/// The length of a CPU's row of cfd csds with `cpus` CPUs: the next power
/// of two (saturating).
const fn row_len(cpus: u64) -> u64 {
    match cpus.checked_next_power_of_two() {
        Some(n) => n,
        None => u64::MAX,
    }
}

/// The default guest memory for `cpus` CPUs: [`DEFAULT_MEM`], or what
/// they need with an image of [`DEFAULT_IMAGE_ALLOWANCE`] when that is
/// more.
pub const fn default_mem(cpus: u32) -> u64 {
    let need = mem_needed(DEFAULT_IMAGE_ALLOWANCE - MEM_HEADROOM, cpus);
    if need > DEFAULT_MEM {
        need
    } else {
        DEFAULT_MEM
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_grows_with_cpus_and_default_follows() {
        let image = 5 * MIB;
        assert_eq!(mem_needed(image, 1), 8 * MIB);
        assert_eq!(default_mem(1), DEFAULT_MEM);
        // 1024 CPUs: 128 MiB of per-CPU budget and 32 MiB of csds.
        assert_eq!(mem_needed(image, 1024), (5 + 2 + 128 + 32) * MIB);
        assert_eq!(default_mem(1024), (16 + 128 + 32) * MIB);
        assert!(mem_needed(image, 64) < DEFAULT_MEM);
        // Rows are rounded up to a power of two: 3 CPUs have rows of 4.
        assert_eq!(row_len(3), 4);
        assert_eq!(row_len(1024), 1024);
        assert_eq!(
            mem_needed(image, 513),
            (5 + 2 + 513 * 128 / 1024 + 17) * MIB
        );
        assert_eq!(mem_needed(u64::MAX, u32::MAX), u64::MAX);
    }
}
