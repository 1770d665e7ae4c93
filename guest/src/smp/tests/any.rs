//! `smp_call_function_any`: self, then same NUMA node, then any online CPU;
//! `-ENXIO` for a mask without online CPUs.

use super::harness::{Machine, smp};
use crate::smp::{CpuId, CpuMask, SmpError};

/// Runs `smp_call_function_any` from `from` and returns where the callback
/// ran: the CPU whose queue ran it, or `from` if none did (the local path).
/// Uses the machine's own counters, so parallel tests do not interfere.
fn any_from(m: &Machine, from: u32, mask: CpuMask) -> Result<u32, SmpError> {
    fn cb(_: usize) {}
    let before: Vec<u64> = (0..6)
        .map(|c| m.smp.stats(CpuId(c)).callbacks_run)
        .collect();
    m.run_on(from, move || smp().smp_call_function_any(mask, cb, 0, true))?;
    let ran: Vec<u32> = (0..6u32)
        .filter(|&c| m.smp.stats(CpuId(c)).callbacks_run != before[c as usize])
        .collect();
    match ran[..] {
        [] => Ok(from),
        [cpu] => Ok(cpu),
        _ => panic!("ran on several CPUs: {ran:?}"),
    }
}

fn numa_machine() -> Machine {
    let m = Machine::new(6);
    for cpu in 0..6 {
        m.smp.set_cpu_node(CpuId(cpu), cpu / 3);
    }
    m
}

fn mask(cpus: &[u32]) -> CpuMask {
    cpus.iter().map(|&c| CpuId(c)).collect()
}

#[test]
fn any_prefers_this_cpu() {
    let m = numa_machine();
    assert_eq!(any_from(&m, 4, mask(&[1, 4, 5])), Ok(4));
    assert_eq!(m.ipis(1), Default::default());
    assert_eq!(m.ipis(5), Default::default());
    m.assert_clean();
}

#[test]
fn any_prefers_an_online_cpu_of_the_same_node() {
    let m = numa_machine();
    assert_eq!(any_from(&m, 4, mask(&[0, 1, 5])), Ok(5));
    // Same-node CPU offline: the next same-node one.
    m.smp.set_cpu_online(CpuId(3), false).unwrap();
    assert_eq!(any_from(&m, 4, mask(&[0, 3, 5])), Ok(5));
    assert_eq!(m.smp.cpumask_of_node(1), mask(&[3, 4, 5]));
    m.assert_clean();
}

#[test]
fn any_falls_back_to_the_first_online_cpu_of_the_mask() {
    let m = numa_machine();
    assert_eq!(any_from(&m, 4, mask(&[1, 2])), Ok(1));
    m.smp.set_cpu_online(CpuId(1), false).unwrap();
    assert_eq!(any_from(&m, 4, mask(&[1, 2])), Ok(2));
    m.assert_clean();
}

#[test]
fn any_with_no_online_cpu_in_the_mask_is_nxio() {
    let m = numa_machine();
    m.smp.set_cpu_online(CpuId(1), false).unwrap();
    m.smp.set_cpu_online(CpuId(5), false).unwrap();
    assert_eq!(any_from(&m, 4, mask(&[1, 5])), Err(SmpError::Nxio));
    assert_eq!(any_from(&m, 4, CpuMask::EMPTY), Err(SmpError::Nxio));
    // CPUs that do not exist are never indexed.
    assert_eq!(any_from(&m, 4, mask(&[6, 40, 63])), Err(SmpError::Nxio));
    for cpu in 0..6 {
        assert_eq!(m.ipis(cpu), Default::default());
    }
    m.assert_clean();
}
