//! Attribute values as the Python decoder sees them, and the few Python
//! built-ins the normalizer applies to them (`bool()`, `str()`, `float()`,
//! `str.strip()`), reproduced exactly where that is simple and refused
//! (`Unsupported`, so the record falls back to Python) where it is not.

use std::borrow::Cow;

/// `_any_value()`'s result: None, str, bool, int, float, list (only its
/// length matters to the normalizer) or dict (kvlist / JSON object; entries in
/// order, a repeated key's last value wins like in a dict display).
#[derive(Clone, Debug, Default)]
pub enum Val<'a> {
    #[default]
    Unset,
    Str(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(usize),
    Dict(Vec<(Cow<'a, str>, Val<'a>)>),
}

/// Why a value cannot be handled natively: the whole record goes to Python.
#[derive(Debug, Clone, Copy)]
pub struct Unsupported(pub &'static str);

impl<'a> Val<'a> {
    /// Python truthiness.
    #[inline]
    pub fn truthy(&self) -> bool {
        match self {
            Val::Unset => false,
            Val::Str(s) => !s.is_empty(),
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Double(f) => *f != 0.0, // NaN is truthy
            Val::Array(n) => *n != 0,
            Val::Dict(entries) => !entries.is_empty(),
        }
    }

    /// `value is None or value == ""`
    #[inline]
    pub fn is_none_or_empty_str(&self) -> bool {
        match self {
            Val::Unset => true,
            Val::Str(s) => s.is_empty(),
            _ => false,
        }
    }

    #[inline]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    /// `str(value)` where the result is used (or its length is).
    pub fn to_text(&self) -> Result<Cow<'_, str>, Unsupported> {
        match self {
            Val::Unset => Ok(Cow::Borrowed("None")),
            Val::Str(s) => Ok(Cow::Borrowed(s)),
            Val::Bool(true) => Ok(Cow::Borrowed("True")),
            Val::Bool(false) => Ok(Cow::Borrowed("False")),
            Val::Int(i) => Ok(Cow::Owned(i.to_string())),
            // repr(float) is left to Python: a float where text is expected is rare.
            Val::Double(_) => Err(Unsupported("float attribute used as text")),
            Val::Array(0) => Ok(Cow::Borrowed("[]")),
            Val::Array(_) => Err(Unsupported("array attribute used as text")),
            Val::Dict(e) if e.is_empty() => Ok(Cow::Borrowed("{}")),
            Val::Dict(_) => Err(Unsupported("kvlist attribute used as text")),
        }
    }
}

/// `str.isspace()` of Python 3.11 (Unicode 14), every code point listed.
#[inline]
pub fn py_isspace(c: char) -> bool {
    matches!(
        c as u32,
        0x09..=0x0d
            | 0x1c..=0x20
            | 0x85
            | 0xa0
            | 0x1680
            | 0x2000..=0x200a
            | 0x2028
            | 0x2029
            | 0x202f
            | 0x205f
            | 0x3000
    )
}

/// `str.strip()`
#[inline]
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

pub enum PyFloat {
    Ok(f64),
    /// `float(s)` raises ValueError
    Invalid,
}

/// `float(s)` for a str. Exact for ASCII text without underscores (the only
/// whitespace `float()` strips from ASCII is " \t\n\v\f\r"; the grammar is
/// C99 decimal / inf / infinity / nan with a sign); anything else is left to Python.
pub fn py_float_from_str(s: &str) -> Result<PyFloat, Unsupported> {
    if !s.is_ascii() {
        return Err(Unsupported("non-ASCII number text"));
    }
    let t = s.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r'));
    if t.contains('_') {
        return Err(Unsupported("number text with underscores"));
    }
    let b = t.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        negative = b[i] == b'-';
        i += 1;
    }
    let rest = &t[i..];
    if rest.eq_ignore_ascii_case("inf") || rest.eq_ignore_ascii_case("infinity") {
        return Ok(PyFloat::Ok(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }));
    }
    if rest.eq_ignore_ascii_case("nan") {
        return Ok(PyFloat::Ok(f64::NAN));
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let int_digits = digits(&mut i);
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        frac_digits = digits(&mut i);
    }
    if int_digits + frac_digits == 0 {
        return Ok(PyFloat::Invalid);
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return Ok(PyFloat::Invalid);
        }
    }
    if i != b.len() {
        return Ok(PyFloat::Invalid);
    }
    // Rust's parser is correctly rounded, like Python's (David Gay's strtod).
    match t.parse::<f64>() {
        Ok(f) => Ok(PyFloat::Ok(f)),
        Err(_) => Err(Unsupported("number text Rust does not parse")),
    }
}

/// Lower-case hex of bytes, like `bytes.hex()`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 15) as usize]);
    }
    // SAFETY: only ASCII hex digits were pushed.
    unsafe { String::from_utf8_unchecked(out) }
}

/// A span's trace id as lower-case hex, without a heap allocation for ids of
/// up to 32 bytes (OTLP's are 16).
pub enum HexId {
    Inline { len: u8, buf: [u8; 64] },
    Heap(String),
}

impl HexId {
    #[inline]
    pub fn of(bytes: &[u8]) -> HexId {
        if bytes.len() > 32 {
            return HexId::Heap(hex(bytes));
        }
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 64];
        for (i, b) in bytes.iter().enumerate() {
            buf[2 * i] = DIGITS[(b >> 4) as usize];
            buf[2 * i + 1] = DIGITS[(b & 15) as usize];
        }
        HexId::Inline {
            len: (bytes.len() * 2) as u8,
            buf,
        }
    }
}

impl std::ops::Deref for HexId {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        match self {
            // SAFETY: only ASCII hex digits were written.
            HexId::Inline { len, buf } => unsafe {
                std::str::from_utf8_unchecked(&buf[..*len as usize])
            },
            HexId::Heap(s) => s,
        }
    }
}
