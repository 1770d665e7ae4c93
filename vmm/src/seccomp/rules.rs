//! The allow-lists, one per thread kind, written in Rust. Each list was
//! found by tracing every scenario of the test suite (`strace -f`, then
//! the whole suite in `trap` mode) and is kept to what the thread's own
//! code and the std/glibc machinery under it call.
//!
//! ioctls are allowed by request number (argument 1), never wholesale.
//! Arguments that live in memory (`clone3`'s flags, paths) cannot be seen
//! by seccomp-bpf; the comments say so where it matters.

use std::collections::BTreeMap;

use kvm_bindings::{KVMIO, kvm_mp_state, kvm_msi, kvm_regs, kvm_sregs};
use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr};

use super::{BuildError, ThreadKind};

// The KVM ioctls the helper threads issue (include/uapi/linux/kvm.h);
// kvm-ioctls keeps its table private.
ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_mp_state);
ioctl_iow_nr!(KVM_SIGNAL_MSI, KVMIO, 0xa5, kvm_msi);

/// A syscall's rules: empty means any arguments.
type Rules = BTreeMap<i64, Vec<SeccompRule>>;

fn eq(arg: u8, value: u64) -> Result<SeccompCondition, BuildError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
        .map_err(BuildError::Rule)
}

/// Adds `nrs` with any arguments.
fn any(rules: &mut Rules, nrs: &[i64]) {
    for &nr in nrs {
        rules.insert(nr, Vec::new());
    }
}

/// Adds `nr` when argument `arg` is one of `values` (one rule each).
fn one_of(rules: &mut Rules, nr: i64, arg: u8, values: &[u64]) -> Result<(), BuildError> {
    let entry = rules.entry(nr).or_default();
    for &v in values {
        entry.push(SeccompRule::new(vec![eq(arg, v)?]).map_err(BuildError::Rule)?);
    }
    Ok(())
}

/// What every thread needs: logging and console output (`write` to
/// stdout/stderr), the allocator, locks, clocks and sleeps, signal
/// delivery (the kick, SIGINT/SIGTERM, the SIGSYS report) and the
/// thread's own end (std frees its signal stack, glibc its stack).
fn common(rules: &mut Rules) -> Result<(), BuildError> {
    // std's debug builds (`cargo test`) check that an fd is open before
    // closing it (`OwnedFd::drop`): F_GETFD only reads the fd's flags.
    one_of(rules, libc::SYS_fcntl, 1, &[libc::F_GETFD as u64])?;
    any(
        rules,
        &[
            libc::SYS_write,
            libc::SYS_futex,
            libc::SYS_mmap,
            libc::SYS_munmap,
            libc::SYS_mremap,
            libc::SYS_mprotect,
            libc::SYS_madvise,
            libc::SYS_brk,
            libc::SYS_clock_gettime,
            libc::SYS_clock_nanosleep,
            libc::SYS_nanosleep,
            libc::SYS_sched_yield,
            libc::SYS_rt_sigreturn,
            libc::SYS_rt_sigprocmask,
            libc::SYS_sigaltstack,
            libc::SYS_close,
            libc::SYS_exit,
            libc::SYS_exit_group,
        ],
    );
    Ok(())
}

/// `pthread_kill(thread, kick signal)`: glibc's `tgkill(getpid(), tid,
/// sig)`, only ever with the kick signal.
fn kick(rules: &mut Rules) -> Result<(), BuildError> {
    any(rules, &[libc::SYS_getpid]);
    one_of(
        rules,
        libc::SYS_tgkill,
        2,
        &[crate::kick::kick_signal() as u64],
    )
}

/// The rules of one thread kind.
pub(super) fn rules(kind: ThreadKind) -> Result<Rules, BuildError> {
    let mut r = Rules::new();
    common(&mut r)?;
    match kind {
        ThreadKind::Vmm => {
            // Joins and the watchdog (futex, sleeps: common), kicking the
            // vCPU threads out of KVM_RUN, removing the control socket,
            // then the CLI's report: /proc/cpuinfo and /sys/module for
            // --run bench, and --json / --plot / --junit written (the
            // paths are in memory: any path, as the user asked; the files
            // opened before the run are emptied only when written).
            kick(&mut r)?;
            any(
                &mut r,
                &[
                    libc::SYS_unlink,
                    libc::SYS_unlinkat,
                    libc::SYS_openat,
                    libc::SYS_read,
                    libc::SYS_lseek,
                    libc::SYS_ftruncate,
                    libc::SYS_fdatasync,
                    libc::SYS_fsync,
                    libc::SYS_fstat,
                    libc::SYS_newfstatat,
                    libc::SYS_statx,
                    libc::SYS_getrandom,
                    // With tracing on, the watchdog loop samples each
                    // vCPU's VM exits: a `pread` of the stats fds opened
                    // before the filter.
                    libc::SYS_pread64,
                ],
            );
        }
        ThreadKind::Vcpu => {
            // KVM_RUN and the register dump of a crash or hang, on the
            // vCPU fd; KVM_SIGNAL_MSI on the VM fd for the ICR writes
            // --fault drop-ipi routes; KVM's statistics (benchmark
            // markers) are `pread`s of the stats fds opened before.
            one_of(
                &mut r,
                libc::SYS_ioctl,
                1,
                &[
                    KVM_RUN(),
                    KVM_GET_REGS(),
                    KVM_GET_SREGS(),
                    KVM_GET_MP_STATE(),
                    KVM_SIGNAL_MSI(),
                ],
            )?;
            any(&mut r, &[libc::SYS_pread64]);
            // --pin: the thread pins itself (pid 0) before its first run.
            one_of(&mut r, libc::SYS_sched_setaffinity, 0, &[0])?;
        }
        ThreadKind::Api => {
            // The server: poll and accept, the peer's credentials; each
            // client: reads with a timeout, writes, a duplicate fd for
            // the writer; the mailroom: KVM_SIGNAL_MSI into the guest.
            any(
                &mut r,
                &[
                    libc::SYS_poll,
                    libc::SYS_ppoll,
                    libc::SYS_accept4,
                    libc::SYS_recvfrom,
                    libc::SYS_sendto,
                    libc::SYS_read,
                ],
            );
            one_of(&mut r, libc::SYS_getsockopt, 2, &[libc::SO_PEERCRED as u64])?;
            one_of(
                &mut r,
                libc::SYS_setsockopt,
                2,
                &[libc::SO_RCVTIMEO as u64, libc::SO_SNDTIMEO as u64],
            )?;
            one_of(
                &mut r,
                libc::SYS_fcntl,
                1,
                &[
                    libc::F_DUPFD_CLOEXEC as u64,
                    libc::F_GETFL as u64,
                    libc::F_SETFL as u64,
                ],
            )?;
            one_of(
                &mut r,
                libc::SYS_ioctl,
                1,
                &[libc::FIONBIO, KVM_SIGNAL_MSI()],
            )?;
            // The server starts a thread per client and the mailroom;
            // they inherit this filter. glibc's pthread_create uses
            // clone3, whose flags are in memory where seccomp cannot look;
            // then the new thread's start (robust list, rseq, its name,
            // std's stack guard lookup).
            any(
                &mut r,
                &[
                    libc::SYS_clone3,
                    libc::SYS_set_robust_list,
                    libc::SYS_rseq,
                    libc::SYS_gettid,
                    libc::SYS_sched_getaffinity,
                    libc::SYS_getrandom,
                ],
            );
            one_of(&mut r, libc::SYS_prctl, 0, &[libc::PR_SET_NAME as u64])?;
        }
        ThreadKind::Hotplug => {
            // Mailbox requests: KVM_SIGNAL_MSI, then sleeps (common).
            one_of(&mut r, libc::SYS_ioctl, 1, &[KVM_SIGNAL_MSI()])?;
        }
        ThreadKind::Fault => {
            // Spurious IPIs (KVM_SIGNAL_MSI) and stalls (a kick).
            one_of(&mut r, libc::SYS_ioctl, 1, &[KVM_SIGNAL_MSI()])?;
            kick(&mut r)?;
        }
    }
    Ok(r)
}
