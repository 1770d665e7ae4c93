//! How much longer the guest waits for other CPUs on a big machine or a
//! slow host: the policy behind `time::scaled_ms` (host-testable).
//!
//! The fixed waits (a self-test case's 2 s, a park's 5 s, an AP's
//! bring-up, a CPU going down) were sized for a few CPUs on nested KVM.
//! Many vCPUs share the host's cores, so anything that waits for all of
//! them (a start barrier) takes about linearly longer; a loaded or slower
//! host is slower again. A wait is a hang detector, so it errs long.

/// CPUs a fixed wait was sized for: up to this many, waits are not
/// stretched for the machine's size.
pub const REFERENCE_CPUS: u64 = 8;
/// What one step of the boot-time calibration loop costs on the host the
/// fixed waits were sized for (nested KVM, about 1.2 µs per guest
/// instruction), in ns.
pub const REFERENCE_STEP_NS: u64 = 6_000;
/// Most a slow host stretches a wait (a hang must still be reported).
pub const MAX_SPEED_FACTOR: u64 = 16;

/// The factor for `cpus` CPUs and a calibration step of `step_ns`:
/// `ceil(cpus / REFERENCE_CPUS)` times `ceil(step_ns / REFERENCE_STEP_NS)`
/// (the latter 1 to [`MAX_SPEED_FACTOR`]); never below 1, so a small
/// machine on a fast host keeps the fixed waits.
pub fn scale(cpus: u64, step_ns: u64) -> u64 {
    let size = cpus.div_ceil(REFERENCE_CPUS).max(1);
    let speed = step_ns
        .div_ceil(REFERENCE_STEP_NS)
        .clamp(1, MAX_SPEED_FACTOR);
    size * speed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_cpus_and_slowness_only() {
        // A few CPUs on the reference host, or a faster one: unchanged.
        assert_eq!(scale(1, 1), 1);
        assert_eq!(scale(REFERENCE_CPUS, REFERENCE_STEP_NS), 1);
        assert_eq!(scale(0, 0), 1);
        // Linear in CPUs beyond the reference count.
        assert_eq!(scale(REFERENCE_CPUS + 1, REFERENCE_STEP_NS), 2);
        assert_eq!(scale(64, REFERENCE_STEP_NS), 8);
        assert_eq!(scale(1024, 1), 128);
        // A slower host stretches further, up to the cap.
        assert_eq!(scale(REFERENCE_CPUS, 3 * REFERENCE_STEP_NS), 3);
        assert_eq!(scale(2 * REFERENCE_CPUS, u64::MAX), 2 * MAX_SPEED_FACTOR);
    }
}
