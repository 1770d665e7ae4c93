//! glibc's malloc looks some things up lazily, once per process, by
//! opening a file, which a vCPU thread's filter forbids (`openat`):
//! `/sys/devices/system/cpu/online` when a ninth arena is needed, and
//! `/proc/sys/vm/overcommit_memory` at the first `free()` that shrinks a
//! thread arena's heap. `vmm::seccomp::settle_malloc` settles both before
//! any filtered thread runs. Each lookup happens once per process, so the
//! check runs in a fresh child process (this test binary again): many
//! threads whose filter traps `openat` (as the vCPU kind's does) each take
//! an arena and then grow and shrink its heap; a lookup would end the
//! child with exit 159. The threads are plain pthreads that install their
//! filter before their first allocation (std's thread start allocates).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Barrier;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// Set in the child's environment: run the filtered threads.
const CHILD: &str = "SMPCALL_SECCOMP_MALLOC_CHILD";
/// Filtered threads alive at once: more than glibc's 8 arenas before it
/// looks the CPU count up.
const THREADS: usize = 40;
/// Blocks each thread allocates, then frees, last first: below the mmap
/// threshold, together enough to make the heap shrink on free.
const BLOCK: usize = 120 * 1024;
const BLOCKS: usize = 8;

/// What every filtered thread shares.
struct Shared {
    program: BpfProgram,
    filtered: Barrier,
    allocated: Barrier,
}

extern "C" fn filtered_thread(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `arg` is the `Shared` the child keeps alive until every
    // thread is joined.
    let shared = unsafe { &*arg.cast::<Shared>() };
    // The filter first: no allocation before it.
    seccompiler::apply_filter(&shared.program).expect("seccomp filter");
    shared.filtered.wait();
    // The first allocations take the thread an arena.
    let blocks: Vec<Vec<u8>> = (0..BLOCKS).map(|_| vec![1u8; BLOCK]).collect();
    shared.allocated.wait();
    drop(blocks.into_iter().rev().collect::<Vec<_>>());
    std::ptr::null_mut()
}

fn filtered_threads() {
    vmm::seccomp::settle_malloc();
    vmm::seccomp::install_sigsys().unwrap();
    let rules = BTreeMap::from([(libc::SYS_openat, Vec::new())]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Trap,
        TargetArch::x86_64,
    )
    .unwrap();
    let shared = Shared {
        program: BpfProgram::try_from(filter).unwrap(),
        filtered: Barrier::new(THREADS),
        allocated: Barrier::new(THREADS),
    };
    let arg = (&raw const shared).cast_mut().cast::<libc::c_void>();
    let mut threads = Vec::new();
    for _ in 0..THREADS {
        let mut t: libc::pthread_t = 0;
        // SAFETY: default attributes; `filtered_thread` only reads
        // `shared`, which outlives every thread (all joined below).
        let rc = unsafe { libc::pthread_create(&mut t, std::ptr::null(), filtered_thread, arg) };
        assert_eq!(rc, 0, "pthread_create");
        threads.push(t);
    }
    for t in threads {
        // SAFETY: `t` is a joinable thread created above, joined once.
        assert_eq!(unsafe { libc::pthread_join(t, std::ptr::null_mut()) }, 0);
    }
}

#[test]
fn filtered_threads_malloc_and_free_without_opening_files() {
    if std::env::var_os(CHILD).is_some() {
        filtered_threads();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "filtered_threads_malloc_and_free_without_opening_files",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child ended with {:?}:\n{err}",
        out.status
    );
    assert!(!err.contains("forbidden syscall"), "{err}");
}
