//! The one little-endian reader and writer of the host/guest protocol,
//! used by the records ([`crate::record`]) and the bench results
//! ([`crate::bench`]), and [`Wire`], the trait of every field type they
//! carry.
//!
//! The reader never panics and never reads past its buffer: the guest is
//! untrusted.

use crate::{ApicId, CpuId};

/// The writer ran out of room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow;

/// Why a field could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than the field.
    Truncated,
    /// The bytes hold a value outside the field's range (the raw value).
    BadValue(u64),
    /// A string is not UTF-8.
    BadUtf8,
}

/// Writes fields one after the other into a buffer. Running out of room
/// is sticky: [`Writer::finish`] reports it once at the end, so encoders
/// are a plain list of [`Writer::put`]s.
pub struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
    overflow: bool,
}

impl<'b> Writer<'b> {
    /// A writer that starts at byte `pos` of `buf`.
    pub fn at(buf: &'b mut [u8], pos: usize) -> Self {
        Writer {
            buf,
            pos,
            overflow: false,
        }
    }

    /// Appends raw bytes (or notes the overflow).
    pub fn bytes(&mut self, b: &[u8]) {
        let end = self.pos.saturating_add(b.len());
        match self.buf.get_mut(self.pos..end) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(b);
                self.pos = end;
            }
            _ => self.overflow = true,
        }
    }

    /// Appends one field.
    pub fn put<'a, T: Wire<'a>>(&mut self, v: &T) {
        v.put(self);
    }

    /// Bytes written so far, counted from the start of the buffer.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The whole buffer, for a header written last.
    pub fn buf(&mut self) -> &mut [u8] {
        self.buf
    }

    /// The end position, or [`Overflow`] if anything did not fit.
    pub fn finish(&self) -> Result<usize, Overflow> {
        if self.overflow {
            Err(Overflow)
        } else {
            Ok(self.pos)
        }
    }
}

/// Reads fields one after the other from a buffer.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader that starts at byte `pos` of `buf`.
    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let b = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(b)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    /// The next field.
    pub fn get<T: Wire<'a>>(&mut self) -> Result<T, WireError> {
        T::get(self)
    }

    /// Bytes consumed so far, counted from the start of the buffer.
    pub fn pos(&self) -> usize {
        self.pos
    }
}

/// A type that crosses the host/guest boundary as a field: fixed-width
/// little-endian numbers, 0/1 booleans, `wire_enum!` values (as their
/// number), CPU numbers and APIC ids (as u32), and strings (a u8 length
/// and that many UTF-8 bytes; longer ones are cut at a character
/// boundary).
pub trait Wire<'a>: Sized {
    /// Appends the encoding.
    fn put(&self, w: &mut Writer<'_>);
    /// Reads one value; never panics.
    fn get(r: &mut Reader<'a>) -> Result<Self, WireError>;
}

macro_rules! wire_int {
    ($($t:ty),*) => {$(
        impl Wire<'_> for $t {
            fn put(&self, w: &mut Writer<'_>) {
                w.bytes(&self.to_le_bytes());
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
                Ok(<$t>::from_le_bytes(r.array()?))
            }
        }
    )*};
}
wire_int!(u8, u16, u32, u64);

impl Wire<'_> for bool {
    fn put(&self, w: &mut Writer<'_>) {
        w.put(&u8::from(*self));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        match r.get::<u8>()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(WireError::BadValue(v.into())),
        }
    }
}

impl Wire<'_> for CpuId {
    fn put(&self, w: &mut Writer<'_>) {
        w.put(&self.0);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.get().map(CpuId)
    }
}

impl Wire<'_> for ApicId {
    fn put(&self, w: &mut Writer<'_>) {
        w.put(&self.0);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.get().map(ApicId)
    }
}

impl<'a> Wire<'a> for &'a str {
    fn put(&self, w: &mut Writer<'_>) {
        let mut n = self.len().min(usize::from(u8::MAX));
        while !self.is_char_boundary(n) {
            n -= 1;
        }
        w.put(&(n as u8));
        w.bytes(&self.as_bytes()[..n]);
    }
    fn get(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let n = usize::from(r.get::<u8>()?);
        core::str::from_utf8(r.bytes(n)?).map_err(|_| WireError::BadUtf8)
    }
}

/// `N` reserved bytes: written as zeros, and anything else is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved<const N: usize>;

impl<const N: usize> Wire<'_> for Reserved<N> {
    fn put(&self, w: &mut Writer<'_>) {
        w.bytes(&[0; N]);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        match r.bytes(N)?.iter().find(|&&b| b != 0) {
            Some(&b) => Err(WireError::BadValue(b.into())),
            None => Ok(Reserved),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_overflow_is_sticky() {
        let mut buf = [0u8; 32];
        let mut w = Writer::at(&mut buf, 0);
        w.put(&0x1234u16);
        w.put(&true);
        w.put(&CpuId(7));
        w.put(&"hé");
        w.put(&Reserved::<2>);
        w.put(&u64::MAX);
        let n = w.finish().unwrap();
        assert_eq!(n, 2 + 1 + 4 + 4 + 2 + 8);
        let mut r = Reader::at(&buf[..n], 0);
        assert_eq!(r.get::<u16>(), Ok(0x1234));
        assert_eq!(r.get::<bool>(), Ok(true));
        assert_eq!(r.get::<CpuId>(), Ok(CpuId(7)));
        assert_eq!(r.get::<&str>(), Ok("hé"));
        assert_eq!(r.get::<Reserved<2>>(), Ok(Reserved));
        assert_eq!(r.get::<u64>(), Ok(u64::MAX));
        assert_eq!(r.get::<u8>(), Err(WireError::Truncated));

        let mut small = [0u8; 3];
        let mut w = Writer::at(&mut small, 0);
        w.put(&1u32);
        w.put(&1u8);
        assert_eq!(w.finish(), Err(Overflow));
    }

    #[test]
    fn bad_values_are_refused() {
        assert_eq!(
            Reader::at(&[2], 0).get::<bool>(),
            Err(WireError::BadValue(2))
        );
        assert_eq!(
            Reader::at(&[0, 9], 0).get::<Reserved<2>>(),
            Err(WireError::BadValue(9))
        );
        assert_eq!(
            Reader::at(&[1, 0xff], 0).get::<&str>(),
            Err(WireError::BadUtf8)
        );
        assert_eq!(
            Reader::at(&[usize::MAX as u8], usize::MAX).get::<u8>(),
            Err(WireError::Truncated)
        );
    }
}
