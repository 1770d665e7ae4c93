//! Errors of the vmm library. Each carries the context a user needs: the
//! CPU, the address, the path.

use std::path::PathBuf;

use shared::status::ExitCode;

/// Everything that can stop a VM from being set up or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--cpus 0`.
    #[error("--cpus must be at least 1")]
    NoCpus,
    /// More vCPUs than KVM or the guest supports.
    #[error("--cpus {requested}: {limit}")]
    TooManyCpus {
        /// What was asked for.
        requested: u32,
        /// The limit that applies, and whose it is.
        limit: crate::vm::CpuLimit,
    },
    /// Guest memory smaller than the layout, the kernel and the CPUs need.
    #[error(
        "--mem {mib} MiB is too small: this kernel with {cpus} CPUs needs at least {min_mib} MiB"
    )]
    MemTooSmall {
        /// What was asked for.
        mib: u64,
        /// The CPUs asked for.
        cpus: u32,
        /// The smallest that works.
        min_mib: u64,
    },
    /// Guest memory larger than the layout supports.
    #[error("--mem {mib} MiB is too large: at most {max_mib} MiB is supported")]
    MemTooLarge {
        /// What was asked for.
        mib: u64,
        /// The largest supported.
        max_mib: u64,
    },
    /// A bad `trace_buf=` (command line or `trace_buf_kib`).
    #[error("{0}")]
    TraceBuf(shared::trace::TraceBufError),
    /// The trace rings do not fit the guest's memory limit.
    #[error(
        "the trace rings need {trace_mib} MiB above guest memory, {total_mib} MiB in all; at most {max_mib} MiB is supported (lower trace_buf= or --cpus)"
    )]
    TraceMemTooLarge {
        /// MiB of the rings.
        trace_mib: u64,
        /// Guest memory with them.
        total_mib: u64,
        /// The largest supported.
        max_mib: u64,
    },
    /// The guest command line does not fit its region.
    #[error("--cmdline is {len} bytes; at most {max} fit")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A bad `--numa` map.
    #[error("--numa {spec:?}: {reason}")]
    BadNuma {
        /// The text given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bad hotplug schedule.
    #[error("--hotplug: {0}")]
    BadHotplug(String),
    /// `--hotplug-churn 0`.
    #[error("--hotplug-churn must be at least 1 ms")]
    ZeroChurn,
    /// The control socket could not be created.
    #[error("--api-sock {path}: {source}")]
    ApiSocket {
        /// The socket path.
        path: PathBuf,
        /// What is wrong.
        source: crate::api::BindError,
    },
    /// A bad `--fault`.
    #[error("--fault {0}")]
    BadFault(String),
    /// `--run wait` with nothing that would end it.
    #[error("--run wait {0}")]
    EndlessWait(&'static str),
    /// A bad `--duration`.
    #[error("--duration {0}")]
    BadDuration(String),
    /// A bad APIC id stride.
    #[error("--apic-stride {0}: must be 1 to 16")]
    BadApicStride(u32),
    /// `run=` on the guest command line: the scenario is `--run`.
    #[error("--cmdline run={0}: choose the scenario with --run")]
    RunInCmdline(String),
    /// `/dev/kvm` is missing.
    #[error("{path}: not found; KVM is not available on this host (is the kvm module loaded?)")]
    KvmMissing {
        /// The device path.
        path: PathBuf,
    },
    /// `/dev/kvm` exists but may not be opened.
    #[error("{path}: permission denied; add yourself to the 'kvm' group or run as root")]
    KvmPermission {
        /// The device path.
        path: PathBuf,
    },
    /// The device opened is not KVM.
    #[error("{path}: not a KVM device")]
    NotKvm {
        /// The device path.
        path: PathBuf,
    },
    /// `/dev/kvm` could not be opened for another reason.
    #[error("{path}: cannot open: {source}")]
    KvmOpen {
        /// The device path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// KVM lacks a capability this VMM needs.
    #[error("this host's KVM lacks {0}")]
    MissingCapability(&'static str),
    /// The kernel file could not be read.
    #[error("--kernel {path}: {source}")]
    KernelRead {
        /// The kernel path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kernel path is not a regular file (a device, FIFO, directory,
    /// socket): it is never read, and never opened blocking.
    #[error("--kernel {path}: not a regular file ({kind})")]
    KernelNotRegular {
        /// The kernel path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The kernel file is larger than guest memory: it cannot fit.
    #[error("--kernel {path}: {size} bytes is larger than guest memory ({limit} bytes, --mem)")]
    KernelTooLarge {
        /// The kernel path.
        path: PathBuf,
        /// Its size (at least this; it may still be growing).
        size: u64,
        /// Guest memory in bytes.
        limit: u64,
    },
    /// The kernel is not an ELF this VMM can load.
    #[error("--kernel {path}: {reason}")]
    KernelInvalid {
        /// The kernel path (or `<embedded>`).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A VM-wide KVM call failed.
    #[error("KVM {op} failed: {source}")]
    Kvm {
        /// Which operation.
        op: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// A per-vCPU KVM call failed.
    #[error("vCPU {cpu}: KVM {op} failed: {source}")]
    Vcpu {
        /// The vCPU.
        cpu: u32,
        /// Which operation.
        op: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be set up or written.
    #[error("guest memory: {0}")]
    Memory(String),
    /// A host thread could not be started.
    #[error("cannot start thread for vCPU {cpu}: {source}")]
    Thread {
        /// The vCPU.
        cpu: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kick signal could not be installed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    /// The seccomp filters could not be built.
    #[error("seccomp: {0}")]
    Seccomp(crate::seccomp::BuildError),
    /// The SIGSYS handler (`--seccomp trap`) could not be installed.
    #[error("cannot install the SIGSYS handler for --seccomp trap: {0}")]
    SigsysHandler(std::io::Error),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Kvm { .. }
            | Error::Vcpu { .. }
            | Error::Memory(_)
            | Error::Thread { .. }
            | Error::Signal(_)
            | Error::Seccomp(_)
            | Error::SigsysHandler(_) => ExitCode::Crashed,
            _ => ExitCode::Usage,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
