//! Creating the control socket, and who is on the other end of a
//! connection.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, UnixCredentials, getsockopt, sockopt,
};
use nix::sys::stat::{Mode, fchmod};

/// Why the control socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A process accepts connections on the path.
    #[error("another process is serving this socket; stop it or choose another path")]
    InUse,
    /// The path is taken by something else than a socket.
    #[error("exists and is not a socket; refusing to replace it")]
    NotASocket,
    /// A system call failed.
    #[error("cannot {op}: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

impl BindError {
    fn os(op: &'static str) -> impl FnOnce(Errno) -> BindError {
        move |e| BindError::Os {
            op,
            source: e.into(),
        }
    }
}

/// Creates the listening socket at `path`, mode 0600, close-on-exec and
/// non-blocking. A socket file nobody listens on (left by a VMM that
/// died) is replaced; a socket somebody listens on, or anything that is
/// not a socket, is refused and left alone.
///
/// Not closed here: between the check and the bind another process may
/// take the path. Two VMMs started at the same instant on one stale path
/// may both find it stale; the later bind then fails (`EADDRINUSE`), or,
/// if it removed the other's fresh socket first, leaves that VMM
/// unreachable.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let addr = UnixAddr::new(path).map_err(BindError::os("use the path as a socket address"))?;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(BindError::Os {
                op: "inspect the path",
                source,
            });
        }
        Ok(meta) if !meta.file_type().is_socket() => return Err(BindError::NotASocket),
        Ok(_) if is_live(&addr)? => return Err(BindError::InUse),
        Ok(_) => {
            log::info!(
                "control socket {}: replacing a stale socket",
                path.display()
            );
            std::fs::remove_file(path).map_err(|source| BindError::Os {
                op: "remove the stale socket",
                source,
            })?;
        }
    }
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(BindError::os("create a socket"))?;
    // bind() gives the file it creates this socket's inode mode less the
    // umask (Linux's unix_bind_bsd): setting it first makes the socket
    // 0600 from its first instant, without changing the process-wide
    // umask under other threads' feet.
    fchmod(fd.as_fd(), Mode::S_IRUSR | Mode::S_IWUSR).map_err(BindError::os("set the mode"))?;
    nix::sys::socket::bind(fd.as_raw_fd(), &addr).map_err(BindError::os("bind"))?;
    nix::sys::socket::listen(&fd, Backlog::MAXCONN).map_err(BindError::os("listen"))?;
    let listener = UnixListener::from(fd);
    listener
        .set_nonblocking(true)
        .map_err(|source| BindError::Os {
            op: "make the socket non-blocking",
            source,
        })?;
    Ok(listener)
}

/// Whether a process accepts connections at `addr`. The probe never
/// blocks: a full backlog (`EAGAIN`) also means somebody listens.
fn is_live(addr: &UnixAddr) -> Result<bool, BindError> {
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(BindError::os("create a socket"))?;
    match nix::sys::socket::connect(fd.as_raw_fd(), addr) {
        Ok(()) | Err(Errno::EAGAIN) => Ok(true),
        Err(Errno::ECONNREFUSED) => Ok(false),
        Err(e) => Err(BindError::os("connect to the existing socket")(e)),
    }
}

/// The process at the other end of a connection (`SO_PEERCRED`).
pub fn peer(stream: &impl AsFd) -> Option<UnixCredentials> {
    getsockopt(stream, sockopt::PeerCredentials).ok()
}
