//! Guest code addresses as `function+0xoff`, from the guest ELF's symbol
//! table (read with `object`, demangled with `rustc-demangle`, printed
//! without the hash). Used by the trace, the csd stall reports, crash
//! reports and watchdog dumps.
//!
//! The addresses come from the guest (untrusted): a lookup is one binary
//! search over the table built here, never panics, and an address outside
//! every function prints as hex.

use std::fmt;

use object::{Object, ObjectSymbol, SymbolKind};

/// Symbols kept at most (the guest has a few thousand; a `--kernel` file
/// is bounded by guest memory, this bounds the table too).
pub const MAX_SYMBOLS: usize = 1 << 20;
/// Longest name kept, in bytes (a demangled generic can be long).
pub const MAX_NAME: usize = 256;

/// Why the guest ELF's symbols could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SymbolsError {
    /// `object` could not parse the file.
    #[error("cannot read the guest ELF's symbol table: {0}")]
    Parse(#[from] object::Error),
}

/// One function: `[start, start + size)`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Func {
    start: u64,
    size: u64,
    name: String,
}

/// The guest's functions by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Symbols {
    /// Sorted by `start`; no two with the same start.
    funcs: Vec<Func>,
}

/// Demangles `raw` without the hash, cut at [`MAX_NAME`] bytes.
fn demangle(raw: &str) -> String {
    let mut s = format!("{:#}", rustc_demangle::demangle(raw));
    if s.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl Symbols {
    /// The function symbols of an ELF image (sizes as the table gives
    /// them; a symbol of size 0 matches only its own address).
    pub fn from_elf(bytes: &[u8]) -> Result<Symbols, SymbolsError> {
        let file = object::File::parse(bytes)?;
        let mut funcs: Vec<Func> = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.address() != 0)
            .filter_map(|s| {
                Some(Func {
                    start: s.address(),
                    size: s.size(),
                    name: demangle(s.name().ok()?),
                })
            })
            .take(MAX_SYMBOLS)
            .collect();
        Ok(Symbols::from_funcs(&mut funcs))
    }

    fn from_funcs(funcs: &mut Vec<Func>) -> Symbols {
        // The larger of two symbols at one address (an alias of size 0
        // must not hide the function).
        funcs.sort_by(|a, b| a.start.cmp(&b.start).then(b.size.cmp(&a.size)));
        funcs.dedup_by_key(|f| f.start);
        Symbols {
            funcs: std::mem::take(funcs),
        }
    }

    /// A table from `(start, size, name)` triples (for tests and tools).
    pub fn from_list(list: &[(u64, u64, &str)]) -> Symbols {
        let mut funcs = list
            .iter()
            .map(|&(start, size, name)| Func {
                start,
                size,
                name: name.to_string(),
            })
            .collect();
        Symbols::from_funcs(&mut funcs)
    }

    /// How many functions the table holds.
    pub fn len(&self) -> usize {
        self.funcs.len()
    }

    /// Whether the table is empty (no ELF symbols).
    pub fn is_empty(&self) -> bool {
        self.funcs.is_empty()
    }

    /// The function holding `addr` and the offset into it.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.funcs.partition_point(|f| f.start <= addr);
        let f = self.funcs.get(i.checked_sub(1)?)?;
        let off = addr - f.start;
        (off < f.size.max(1)).then_some((f.name.as_str(), off))
    }

    /// `addr` for printing: `function+0xoff`, `function` at offset 0,
    /// else `0x...`.
    pub fn at(&self, addr: u64) -> Sym<'_> {
        Sym { syms: self, addr }
    }
}

/// An address printed by its symbol ([`Symbols::at`]).
#[derive(Clone, Copy, Debug)]
pub struct Sym<'a> {
    syms: &'a Symbols,
    addr: u64,
}

impl fmt::Display for Sym<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.syms.lookup(self.addr) {
            Some((name, 0)) => f.write_str(name),
            Some((name, off)) => write!(f, "{name}+{off:#x}"),
            None => write!(f, "{:#x}", self.addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_functions_with_offsets_and_unknown_as_hex() {
        let s = Symbols::from_list(&[
            (0x1000, 0x20, "a::f"),
            (0x1020, 0x10, "a::g"),
            (0x1020, 0, "alias"),
            (0x2000, 0, "marker"),
        ]);
        assert_eq!(s.len(), 3);
        assert_eq!(s.at(0x1000).to_string(), "a::f");
        assert_eq!(s.at(0x101f).to_string(), "a::f+0x1f");
        assert_eq!(s.at(0x1024).to_string(), "a::g+0x4");
        assert_eq!(s.at(0x1030).to_string(), "0x1030");
        assert_eq!(s.at(0x2000).to_string(), "marker");
        assert_eq!(s.at(0x2001).to_string(), "0x2001");
        assert_eq!(s.at(0).to_string(), "0x0");
        assert_eq!(s.at(u64::MAX).to_string(), "0xffffffffffffffff");
        assert_eq!(Symbols::default().at(0x1000).to_string(), "0x1000");
    }

    #[test]
    fn demangles_without_the_hash_and_bounds_names() {
        let d = demangle("_ZN9scenarios5bench3nop17h0123456789abcdefE");
        assert_eq!(d, "scenarios::bench::nop");
        assert!(demangle(&"x".repeat(1000)).len() <= MAX_NAME + '…'.len_utf8());
    }

    #[test]
    fn reads_the_embedded_guest_and_refuses_garbage() {
        let s = Symbols::from_elf(crate::EMBEDDED_GUEST).unwrap();
        assert!(s.len() > 10);
        assert!(s.funcs.iter().any(|f| f.name.contains("smp")));
        assert!(Symbols::from_elf(b"not an elf").is_err());
    }
}
