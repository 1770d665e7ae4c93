//! Where a trapped syscall came from, for the SIGSYS report: the address
//! of the `syscall` instruction (`si_call_addr`) and the code addresses
//! found on the thread's stack, each as an object file and the address
//! inside it that `addr2line -Cfie FILE ADDR` resolves.
//!
//! The handler may only do async-signal-safe work, and in a filtered
//! thread only what the filter allows (no `openat` for
//! `/proc/self/maps`, no `dladdr` that could wait for the loader's lock),
//! so what it needs is gathered beforehand, unfiltered: the executable
//! segments of every object loaded when the handler was installed
//! ([`record_objects`]), and each filtered thread's stack end
//! ([`note_stack`]).

use std::cell::Cell;
use std::ffi::CStr;
use std::fmt::Write as _;
use std::sync::OnceLock;

/// An executable segment of a loaded object.
struct Segment {
    /// Its first address.
    start: usize,
    /// Past its last address.
    end: usize,
    /// The object's load bias (address minus the file's virtual address).
    bias: usize,
    /// The object's path, in [`Objects::names`].
    name: usize,
}

/// The objects loaded when the SIGSYS handler was installed.
struct Objects {
    names: Vec<Box<str>>,
    segments: Vec<Segment>,
}

static OBJECTS: OnceLock<Objects> = OnceLock::new();

thread_local! {
    /// Past the end of the calling thread's stack (0: unknown), noted
    /// before its filter is installed (a const initializer: nothing lazy
    /// in the handler).
    static STACK_END: Cell<usize> = const { Cell::new(0) };
}

/// How many stack words the report scans at most (32 KiB).
const SCAN_WORDS: usize = 4096;
/// How many stack addresses it prints at most.
const SCAN_SHOWN: usize = 24;

struct Walk {
    main: Box<str>,
    objects: Objects,
}

extern "C" fn each_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes the `Walk` given to it below (alive
    // and not otherwise borrowed during the walk) and a valid info.
    let (walk, info) = unsafe { (&mut *data.cast::<Walk>(), &*info) };
    let name: Box<str> = if info.dlpi_name.is_null() {
        walk.main.clone()
    } else {
        // SAFETY: a non-null dlpi_name is a NUL-terminated string.
        match unsafe { CStr::from_ptr(info.dlpi_name) }.to_string_lossy() {
            n if n.is_empty() => walk.main.clone(),
            n => n.into(),
        }
    };
    let phdrs = if info.dlpi_phdr.is_null() {
        &[][..]
    } else {
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
    };
    let bias = info.dlpi_addr as usize;
    let index = walk.objects.names.len();
    let mut any = false;
    for ph in phdrs {
        if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
            let start = bias.wrapping_add(ph.p_vaddr as usize);
            walk.objects.segments.push(Segment {
                start,
                end: start.wrapping_add(ph.p_memsz as usize),
                bias,
                name: index,
            });
            any = true;
        }
    }
    if any {
        walk.objects.names.push(name);
    }
    0
}

/// Records the executable segments of every loaded object (once per
/// process; call unfiltered, before filtered threads run).
pub(super) fn record_objects() {
    OBJECTS.get_or_init(|| {
        let main = std::env::current_exe()
            .map(|p| p.to_string_lossy().into())
            .unwrap_or_else(|_| "the vmm executable".into());
        let mut walk = Walk {
            main,
            objects: Objects {
                names: Vec::new(),
                segments: Vec::new(),
            },
        };
        // SAFETY: the callback only reads what dl_iterate_phdr passes and
        // writes `walk`, which outlives the call.
        unsafe { libc::dl_iterate_phdr(Some(each_object), (&raw mut walk).cast()) };
        walk.objects
    });
}

/// Notes where the calling thread's stack ends (call before its filter:
/// for the main thread glibc reads `/proc/self/maps` to know).
pub(super) fn note_stack() {
    // SAFETY: pthread_attr_t is plain data, filled by pthread_getattr_np.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: `attr` is writable; pthread_self is the calling thread.
    if unsafe { libc::pthread_getattr_np(libc::pthread_self(), &mut attr) } != 0 {
        return;
    }
    let mut addr: *mut libc::c_void = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: `attr` was initialised above; `addr` and `size` are writable.
    let rc = unsafe { libc::pthread_attr_getstack(&attr, &mut addr, &mut size) };
    // SAFETY: `attr` was initialised by pthread_getattr_np, destroyed once.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    if rc == 0 {
        STACK_END.with(|e| e.set((addr as usize).saturating_add(size)));
    }
}

/// A line built on the stack, cut at its capacity (no allocation).
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }

    /// Writes the line and a newline to stderr.
    fn emit(&mut self) {
        if self.len == self.buf.len() {
            self.buf[self.len - 1] = b'\n';
        } else {
            self.buf[self.len] = b'\n';
            self.len += 1;
        }
        // SAFETY: writes `len` initialized bytes of `buf` to stderr.
        let _ = unsafe { libc::write(libc::STDERR_FILENO, self.buf.as_ptr().cast(), self.len) };
        self.len = 0;
    }
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The object and file address of `addr`, if it is in recorded code.
fn locate(objects: &Objects, addr: usize) -> Option<(&str, usize)> {
    let s = objects
        .segments
        .iter()
        .find(|s| s.start <= addr && addr < s.end)?;
    Some((&objects.names[s.name], addr.wrapping_sub(s.bias)))
}

/// Writes where the trapped call came from: `call` (si_call_addr) and the
/// code addresses on the stack above `rsp`. Async-signal-safe: reads what
/// was recorded, the stack, and formats into a stack buffer.
pub(super) fn report(call: usize, rsp: usize) {
    let Some(objects) = OBJECTS.get() else { return };
    let mut line = Line::new();
    let _ = match locate(objects, call) {
        Some((name, at)) => write!(line, "vmm: seccomp: syscall made at {name}+{at:#x}"),
        None => write!(
            line,
            "vmm: seccomp: syscall made at {call:#x} (no recorded object)"
        ),
    };
    line.emit();
    let end = STACK_END.with(Cell::get);
    if rsp == 0 || end <= rsp {
        return;
    }
    let _ = write!(
        line,
        "vmm: seccomp: code addresses on its stack, innermost first (stale ones possible; \
         resolve with addr2line -Cfie FILE ADDR):"
    );
    line.emit();
    let first = rsp.next_multiple_of(8);
    let words = (end.saturating_sub(first) / 8).min(SCAN_WORDS);
    let mut shown = 0;
    for i in 0..words {
        // SAFETY: [first, end) is the thread's own mapped stack, read
        // word by word at 8-byte alignment.
        let word = unsafe { (first as *const usize).add(i).read_volatile() };
        if let Some((name, at)) = locate(objects, word) {
            let _ = write!(line, "vmm: seccomp:   {name} {at:#x}");
            line.emit();
            shown += 1;
            if shown == SCAN_SHOWN {
                break;
            }
        }
    }
}
