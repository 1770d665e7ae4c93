//! Guest command-line tokenizing, shared so the host can validate what it
//! hands over and the guest can parse it.

/// Longest command line the VMM hands over (it must fit its region).
pub const CMDLINE_MAX: usize = crate::layout::CMDLINE.size as usize;

/// One `key` or `key=value` word of the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param<'a> {
    /// Text before the first `=`.
    pub key: &'a str,
    /// Text after the first `=`, if there was one.
    pub value: Option<&'a str>,
}

/// Splits a command line into parameters on ASCII whitespace.
pub fn params(cmdline: &str) -> impl Iterator<Item = Param<'_>> {
    cmdline
        .split_ascii_whitespace()
        .map(|word| match word.split_once('=') {
            Some((key, value)) => Param {
                key,
                value: Some(value),
            },
            None => Param {
                key: word,
                value: None,
            },
        })
}

/// Why a number could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberError {
    /// No value (`key` or `key=`).
    Missing,
    /// Not a number, or a sign where none is allowed.
    Invalid,
    /// Does not fit.
    Overflow,
}

/// Parses an unsigned decimal or `0x` hexadecimal number.
pub fn parse_u64(value: Option<&str>) -> Result<u64, NumberError> {
    let v = value.ok_or(NumberError::Missing)?;
    if v.is_empty() {
        return Err(NumberError::Missing);
    }
    let (digits, radix) = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (v, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(NumberError::Invalid);
    }
    u64::from_str_radix(digits, radix).map_err(|_| NumberError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn splits_words() {
        let p: Vec<_> = params("  nosmp maxcpus=2  run=selftest a=b=c ").collect();
        assert_eq!(
            p,
            [
                Param {
                    key: "nosmp",
                    value: None
                },
                Param {
                    key: "maxcpus",
                    value: Some("2")
                },
                Param {
                    key: "run",
                    value: Some("selftest")
                },
                Param {
                    key: "a",
                    value: Some("b=c")
                },
            ]
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(Some("12")), Ok(12));
        assert_eq!(parse_u64(Some("0x1f")), Ok(31));
        assert_eq!(parse_u64(Some("")), Err(NumberError::Missing));
        assert_eq!(parse_u64(None), Err(NumberError::Missing));
        assert_eq!(parse_u64(Some("abc")), Err(NumberError::Invalid));
        assert_eq!(parse_u64(Some("-1")), Err(NumberError::Invalid));
        assert_eq!(parse_u64(Some("+1")), Err(NumberError::Invalid));
        assert_eq!(parse_u64(Some("0x")), Err(NumberError::Invalid));
        assert_eq!(
            parse_u64(Some("99999999999999999999999")),
            Err(NumberError::Overflow)
        );
    }
}
