//! Hardening, through the `vmm` binary: every thread of a running VMM
//! under its seccomp filter with no-new-privs, every fd close-on-exec, a
//! forbidden syscall stopping the VMM with exit 159 (the hidden
//! `--seccomp-test-violation` hook: vCPU 0's thread opens a file), and
//! SIGINT / SIGTERM stopping a VM that serves the control socket with the
//! socket removed, the summary printed and exit 130 / 143. Every wait has
//! a deadline.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use vmm_sys_util::tempdir::TempDir;

mod support;

use support::{Vmm, ask, connect};

/// Connects to the control socket and asks for stats: once answered, the
/// guest runs and takes requests, and a client thread and the mailroom
/// exist.
fn connect_and_ask_stats(path: &Path) -> (UnixStream, BufReader<UnixStream>) {
    let (mut stream, mut reader) = connect(path);
    let answer = ask(&mut stream, &mut reader, r#"{"stats":true}"#);
    assert_eq!(answer["ok"], true, "{answer}");
    (stream, reader)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Kernel worker threads KVM attaches to the VM's process (vhost tasks
/// such as the NX huge page recovery thread): they run no user code, so
/// no seccomp filter applies to them.
fn kernel_worker(comm: &str) -> bool {
    comm.starts_with("kvm-")
}

/// The fds of process `proc_dir` (`/proc/PID`) open without
/// close-on-exec, with what they point at.
fn open_without_cloexec(proc_dir: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for fd in std::fs::read_dir(format!("{proc_dir}/fd")).unwrap() {
        let fd = fd.unwrap();
        let Ok(n) = fd.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let info = std::fs::read_to_string(format!("{proc_dir}/fdinfo/{n}")).unwrap_or_default();
        let Some(flags) = info.lines().find_map(|l| l.strip_prefix("flags:")) else {
            continue; // closed meanwhile
        };
        let flags = u32::from_str_radix(flags.trim(), 8).unwrap();
        if flags & libc::O_CLOEXEC as u32 == 0 {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            out.push((n, target.display().to_string()));
        }
    }
    out
}

#[test]
fn every_thread_is_filtered_and_every_fd_is_close_on_exec() {
    let dir = TempDir::new().unwrap();
    let sock = dir.as_path().join("api.sock");
    let sock_arg = sock.to_str().unwrap();
    // Every thread kind: vCPUs, the control socket (server, mailroom, a
    // client), the hotplug driver (a step it waits for), the faults.
    let vmm = Vmm::spawn(&[
        "--cpus",
        "2",
        "--run",
        "wait",
        "-q",
        "--api-sock",
        sock_arg,
        "--hotplug",
        "600s:off 1",
        "--fault",
        "spurious-ipi:10",
        "--timeout",
        "300",
    ]);
    let (mut w, mut r) = connect_and_ask_stats(&sock);
    let proc_dir = format!("/proc/{}", vmm.pid());
    let mut names = BTreeSet::new();
    for task in std::fs::read_dir(format!("{proc_dir}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap();
        let comm = comm.trim().to_string();
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        if kernel_worker(&comm) {
            continue;
        }
        assert!(
            status.lines().any(|l| l == "Seccomp:\t2"),
            "thread {comm} ({}) is not under a seccomp filter:\n{status}",
            task.display()
        );
        assert!(
            status.lines().any(|l| l == "NoNewPrivs:\t1"),
            "thread {comm} lacks no_new_privs"
        );
        names.insert(comm);
    }
    for want in [
        "vmm",
        "vcpu0",
        "vcpu1",
        "api-server",
        "api-mailroom",
        "api-client-1",
        "hotplug",
        "faults",
    ] {
        assert!(names.contains(want), "no {want} thread among {names:?}");
    }
    // Every fd the VMM opened is close-on-exec: /dev/kvm, the VM and vCPU
    // fds, the stats fds, the control socket and its client. Not checked:
    // stdin/stdout/stderr and what it inherited from this test process
    // (fds open here without close-on-exec, such as the harness's).
    let inherited = open_without_cloexec("/proc/self");
    let leaked: Vec<_> = open_without_cloexec(&proc_dir)
        .into_iter()
        .filter(|(n, _)| *n > 2 && !inherited.iter().any(|(m, _)| m == n))
        .collect();
    assert!(leaked.is_empty(), "fds not close-on-exec: {leaked:?}");
    writeln!(w, "{{\"exit\":true}}").unwrap();
    let mut answer = String::new();
    r.read_line(&mut answer).unwrap();
    let out = vmm.wait();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_forbidden_syscall_stops_the_vmm_with_exit_159() {
    let out = Vmm::spawn(&[
        "--cpus",
        "1",
        "--run",
        "selftest",
        "-q",
        "--seccomp-test-violation",
    ])
    .wait();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(159), "{err}");
    let want = format!(
        "vmm: seccomp: the vcpu thread made forbidden syscall {}",
        libc::SYS_openat
    );
    assert!(err.contains(&want), "{err:?} lacks {want:?}");
    // `log` lets the same call through: the run goes on and succeeds.
    let out = Vmm::spawn(&[
        "--cpus",
        "1",
        "--run",
        "selftest",
        "-q",
        "--seccomp-test-violation",
        "--seccomp",
        "log",
    ])
    .wait();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn sigint_and_sigterm_stop_a_vm_serving_the_control_socket() {
    for (sig, name, code) in [
        (libc::SIGTERM, "SIGTERM", 143),
        (libc::SIGINT, "SIGINT", 130),
    ] {
        let dir = TempDir::new().unwrap();
        let sock = dir.as_path().join("api.sock");
        let vmm = Vmm::spawn(&[
            "--cpus",
            "2",
            "--run",
            "wait",
            "-q",
            "--api-sock",
            sock.to_str().unwrap(),
            "--fault",
            "spurious-ipi:10",
            "--timeout",
            "300",
        ]);
        let client = connect_and_ask_stats(&sock);
        let pid = libc::pid_t::try_from(vmm.pid()).unwrap();
        // SAFETY: sends a signal to our own child, which has not been
        // reaped (the Vmm guard waits for it).
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
        let out = vmm.wait();
        drop(client);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(code), "{name}: {stderr}");
        assert!(!sock.exists(), "{name}: the control socket was left behind");
        assert!(
            stderr.contains(&format!("vmm: stopped by {name}")),
            "{stderr:?}"
        );
        // The usual summary: here the faults injected.
        assert!(
            stdout.contains("spurious call-function IPIs injected"),
            "{stdout:?}"
        );
    }
}
