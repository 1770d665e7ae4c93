//! The console: whole lines, prefixed with the CPU number, each handed to
//! the VMM by address in one port write (one VM exit, no lock: lines from
//! different CPUs never interleave inside a line).

use core::fmt::{self, Write};

use shared::ports::{CONSOLE_HEADER, Port};

use crate::arch::x86_64::{cpu, percpu};

/// Longest console line; longer ones are cut.
pub const LINE_MAX: usize = 200;

/// A line being formatted on the stack, in the console wire format: the
/// length prefix directly followed by the text.
#[repr(C)]
pub struct Line {
    len_prefix: [u8; CONSOLE_HEADER],
    buf: [u8; LINE_MAX],
    len: usize,
}

impl Line {
    /// An empty line.
    pub const fn new() -> Self {
        Line {
            len_prefix: [0; CONSOLE_HEADER],
            buf: [0; LINE_MAX],
            len: 0,
        }
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = LINE_MAX - 1 - self.len; // keep one byte for '\n'
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Prints one line, prefixed with the current CPU.
pub fn print_line(args: fmt::Arguments<'_>) {
    let mut line = Line::new();
    let _ = write!(line, "[cpu{}] ", percpu::this_cpu().0);
    let _ = line.write_fmt(args);
    line.buf[line.len] = b'\n';
    line.len_prefix = ((line.len + 1) as u16).to_le_bytes();
    // The guest is identity-mapped: the address of the buffer is its
    // guest-physical address, below 4 GiB.
    cpu::out_buffer(Port::Console as u16, &line);
}

/// Prints a line on the console, prefixed with the CPU number.
#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => {
        $crate::console::print_line(format_args!($($arg)*))
    };
}
