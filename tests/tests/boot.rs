//! Booting real VMs on /dev/kvm: every CPU comes up over x2APIC, crashes
//! and hangs are reported, bad input is refused.

use shared::status::{ExitCode, GuestStatus};
use smpcall_tests::{
    SHORT_TIMEOUT, Scenario, assert_console, assert_success, config, explain, run, sorted_online,
};
use vmm::{Ending, Error, Kernel, OwnedBody, VmConfig};

fn boots(cpus: u32, stride: u32) {
    let mut c = config(cpus, Scenario::Demo, "");
    c.apic_stride = stride;
    let o = run(&c);
    assert_success(&o);
    assert_eq!(o.exit_code(), ExitCode::Success);
    assert_console(&o, &format!("Brought up {cpus} CPUs"));
    let mut online: Vec<(u16, u32)> = o
        .records
        .iter()
        .filter_map(|r| match r.body {
            OwnedBody::CpuOnline { apic_id } => Some((r.cpu, apic_id.0)),
            _ => None,
        })
        .collect();
    online.sort();
    let want: Vec<(u16, u32)> = (0..cpus).map(|c| (c as u16, c * stride)).collect();
    assert_eq!(online, want, "{}", explain(&o));
    assert!(o.protocol_errors.is_empty(), "{}", explain(&o));
}

#[test]
fn boots_1_cpu() {
    boots(1, 1);
}

#[test]
fn boots_2_cpus() {
    boots(2, 1);
}

#[test]
fn boots_3_cpus() {
    boots(3, 1);
}

#[test]
fn boots_4_cpus() {
    boots(4, 1);
}

#[test]
fn boots_8_cpus() {
    boots(8, 1);
}

#[test]
fn apic_ids_distinct_from_cpu_numbers() {
    boots(5, 3);
}

fn crashes_with(word: &str, vector: u8) -> vmm::Outcome {
    let o = run(&config(2, Scenario::Demo, &format!("crash={word}")));
    assert_eq!(
        o.ending,
        Ending::GuestExit(GuestStatus::Crashed),
        "{}",
        explain(&o)
    );
    assert_eq!(o.exit_code(), ExitCode::Crashed);
    let exc = o.records.iter().find_map(|r| match r.body {
        OwnedBody::Exception { vector, rip, .. } => Some((r.cpu, vector, rip)),
        _ => None,
    });
    let (cpu, got, rip) = exc.unwrap_or_else(|| panic!("no exception record\n{}", explain(&o)));
    assert_eq!((cpu, got), (0, vector), "{}", explain(&o));
    assert!(
        rip >= shared::layout::KERNEL.0,
        "RIP {rip:#x} not in the kernel"
    );
    let d = o.diagnosis();
    assert!(
        d.contains(&format!("exception {vector}")) && d.contains(&format!("{rip:#x}")),
        "{d}"
    );
    o
}

#[test]
fn invalid_opcode_is_reported_with_vector_and_rip() {
    crashes_with("ud", 6);
}

#[test]
fn page_fault_is_reported_with_address() {
    let o = crashes_with("pf", 14);
    assert!(
        o.diagnosis().contains("address 0x4000000000"),
        "{}",
        o.diagnosis()
    );
}

#[test]
fn a_write_to_the_per_cpu_slot_of_a_cpu_that_does_not_exist_faults() {
    use shared::percpu_window::ARCH_AREAS;
    let o = crashes_with("percpu", 14);
    let slot = ARCH_AREAS.start + (shared::MAX_CPUS as u64 - 1) * ARCH_AREAS.stride;
    let d = o.diagnosis();
    let address = d
        .split("address 0x")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_hexdigit()).next())
        .and_then(|hex| u64::from_str_radix(hex, 16).ok());
    // A field of the last CPU's area: inside its slot.
    assert!(
        address.is_some_and(|a| (slot..slot + ARCH_AREAS.stride).contains(&a)),
        "{d}"
    );
    // Error code 3: a write (bit 1) to a present page (bit 0).
    assert!(d.contains("error code 0x3"), "{d}");
}

#[test]
fn general_protection_fault_is_reported() {
    crashes_with("gp", 13);
}

#[test]
fn hung_guest_trips_the_watchdog_with_every_vcpu_dumped() {
    let mut c = config(3, Scenario::Demo, "hang");
    c.timeout = SHORT_TIMEOUT;
    let o = run(&c);
    assert_eq!(o.ending, Ending::Timeout(SHORT_TIMEOUT), "{}", explain(&o));
    assert_eq!(o.exit_code(), ExitCode::Timeout);
    assert_eq!(o.dumps.iter().map(|d| d.cpu).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(o.dumps.iter().all(|d| d.rip >= shared::layout::KERNEL.0));
    assert!(o.diagnosis().contains("timeout"), "{}", o.diagnosis());
}

fn setup_error(c: &VmConfig) -> Error {
    match vmm::run(c) {
        Ok(o) => panic!("expected a setup error\n{}", explain(&o)),
        Err(e) => {
            assert_eq!(e.exit_code(), ExitCode::Usage, "{e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
            e
        }
    }
}

#[test]
fn bad_cpu_counts_are_refused() {
    assert!(matches!(
        setup_error(&config(0, Scenario::Demo, "")),
        Error::NoCpus
    ));
    let over = shared::MAX_CPUS as u32 + 1;
    let e = setup_error(&config(over, Scenario::Demo, ""));
    assert!(e.to_string().contains("at most 1024"), "{e}");
}

#[test]
fn bad_memory_sizes_are_refused() {
    let mut c = config(1, Scenario::Demo, "");
    c.mem_mib = Some(1);
    assert!(matches!(setup_error(&c), Error::MemTooSmall { .. }));
    c.mem_mib = Some(1 << 20);
    assert!(matches!(setup_error(&c), Error::MemTooLarge { .. }));
}

fn kernel_error(bytes: Option<&[u8]>, want: &str) {
    let dir = std::env::temp_dir().join(format!("smpcall-kernel-{}-{want}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    if let Some(b) = bytes {
        std::fs::write(&dir, b).unwrap();
    }
    let mut c = config(1, Scenario::Demo, "");
    c.kernel = Kernel::Path(dir.clone());
    let e = setup_error(&c);
    let _ = std::fs::remove_file(&dir);
    let msg = e.to_string();
    assert!(
        msg.contains(want) && msg.contains("--kernel"),
        "{msg:?} lacks {want:?}"
    );
}

#[test]
fn bad_kernels_are_refused_with_a_reason() {
    let good = vmm::EMBEDDED_GUEST;
    kernel_error(None, "No such file");
    kernel_error(Some(b"#!/bin/sh\necho hi\n"), "not an ELF");
    kernel_error(Some(&good[..30]), "truncated");
    kernel_error(Some(&good[..good.len() / 2]), "truncated");
    let mut arm = good.to_vec();
    arm[18] = 183; // EM_AARCH64
    kernel_error(Some(&arm), "wrong architecture");
    let mut elf32 = good.to_vec();
    elf32[4] = 1;
    kernel_error(Some(&elf32), "32-bit");
}

#[test]
fn unreadable_kernel_is_refused() {
    let mut c = config(1, Scenario::Demo, "");
    c.kernel = Kernel::Path(std::env::temp_dir());
    let e = setup_error(&c);
    // A directory is refused before it is opened, as a device or FIFO is.
    assert!(
        matches!(
            e,
            Error::KernelNotRegular {
                kind: "a directory",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn missing_kvm_device_is_named() {
    let e = vmm::run_with_device(&config(1, Scenario::Demo, ""), "/nonexistent/kvm".as_ref())
        .unwrap_err();
    assert!(matches!(e, Error::KvmMissing { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/kvm"));
    let e = vmm::run_with_device(&config(1, Scenario::Demo, ""), "/dev/null".as_ref()).unwrap_err();
    assert!(matches!(e, Error::NotKvm { .. }), "{e}");
}

#[test]
fn malformed_boot_parameters_warn_and_boot() {
    let o = run(&config(
        2,
        Scenario::Demo,
        "maxcpus=abc nr_cpus=-1 maxcpus=",
    ));
    assert_success(&o);
    assert_console(&o, "warning: maxcpus=abc");
    assert_console(&o, "warning: nr_cpus=-1");
    assert_console(&o, "Brought up 2 CPUs");
}

/// The demo's text after an optional `[cpuN] ` console prefix.
fn demo_text(line: &str) -> &str {
    match line.strip_prefix("[cpu") {
        Some(rest) => rest.split_once("] ").map_or(line, |(_, t)| t),
        None => line,
    }
}

/// The demo's console lines (without the CPU prefix), its summary ("N
/// demo callbacks ran") and its per-CPU table's callbacks column.
fn demo_table(o: &vmm::Outcome) -> (Vec<&str>, u64, Vec<u64>) {
    let lines: Vec<&str> = o.console.lines().map(demo_text).collect();
    let summary: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("demo: ")?.split_once(" demo callbacks ran"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line\n{}", explain(o)));
    let rows: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.trim_start().strip_prefix("CPU "))
        .filter_map(|l| l.rsplit_once(" / "))
        .map(|(_, run)| run.trim().parse().expect("callbacks column"))
        .collect();
    (lines, summary, rows)
}

/// The demo's summary ("N demo callbacks ran") is the sum of its per-CPU
/// table, and both count the "ran ..." lines its callbacks printed.
#[test]
fn demo_summary_agrees_with_its_per_cpu_table() {
    let o = run(&config(4, Scenario::Demo, ""));
    assert_success(&o);
    let (lines, summary, rows) = demo_table(&o);
    assert_eq!(rows.len(), 4, "one table row per CPU\n{}", explain(&o));
    let printed = lines.iter().filter(|l| l.starts_with("  ran ")).count() as u64;
    assert_eq!(rows.iter().sum::<u64>(), summary, "{}", explain(&o));
    assert_eq!(printed, summary, "{}", explain(&o));
    // Every CPU ran some: single, many, on_each_cpu... reach all four.
    assert!(rows.iter().all(|&r| r > 0), "{rows:?}\n{}", explain(&o));
}

/// KVM's vCPU limit here, with the default options: 1024 CPUs come up and
/// the demo reaches every one of them (its table prints 64 rows and sums
/// the other CPUs in one).
#[test]
fn boot_and_demo_at_1024_cpus() {
    let o = run(&config(1024, Scenario::Demo, ""));
    assert_success(&o);
    assert_console(&o, "Brought up 1024 CPUs");
    assert_eq!(sorted_online(&o).len(), 1024, "{}", explain(&o));
    let (lines, summary, rows) = demo_table(&o);
    assert_eq!(rows.len(), 64, "{}", explain(&o));
    let rest: u64 = lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix("CPUs 64-1023 together: "))
        .and_then(|l| l.rsplit_once(" / "))
        .and_then(|(_, run)| run.trim().parse().ok())
        .unwrap_or_else(|| panic!("no row for CPUs 64-1023\n{}", explain(&o)));
    assert_eq!(rows.iter().sum::<u64>() + rest, summary, "{}", explain(&o));
    // smp_call_function_many, smp_call_function and on_each_cpu reach
    // every other CPU: at least 3 callbacks on each of CPUs 64-1023.
    assert!(rest >= 3 * 960, "{rest}\n{}", explain(&o));
}
