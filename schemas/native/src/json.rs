//! `json.loads()` for Langfuse's usage/cost attributes (flat objects of numbers).
//!
//! The grammar is that of Python's json module (its C scanner): whitespace
//! " \t\n\r", objects (a repeated key's last value wins), arrays, strings
//! with the standard escapes and no raw control characters,
//! true/false/null, NaN/Infinity/-Infinity, and numbers by
//! `-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?` (int if neither fraction nor
//! exponent, else float()). A text outside it is `Invalid` (json.loads raises
//! ValueError too). Three things Python accepts are left to it
//! (`Unsupported`, the record falls back): ints longer than 18 digits (and
//! Python's 4300-digit limit), lone surrogates (not representable in Rust
//! strings) and nesting deeper than 32 (Python's RecursionError depth).

use crate::pyval::{Unsupported, Val};
use std::borrow::Cow;

const MAX_DEPTH: u32 = 32;

pub enum JsonError {
    /// json.loads raises ValueError
    Invalid,
    /// left to Python
    Unsupported(Unsupported),
}

impl From<Unsupported> for JsonError {
    fn from(u: Unsupported) -> Self {
        JsonError::Unsupported(u)
    }
}

pub fn loads(text: &str) -> Result<Val<'_>, JsonError> {
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        i: 0,
    };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(JsonError::Invalid); // "Extra data"
    }
    Ok(v)
}

struct Parser<'t> {
    s: &'t [u8],
    text: &'t str,
    i: usize,
}

const BAD: JsonError = JsonError::Invalid;

impl<'t> Parser<'t> {
    #[inline]
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn lit(&mut self, word: &str) -> bool {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: u32) -> Result<Val<'t>, JsonError> {
        if depth > MAX_DEPTH {
            return Err(Unsupported("deeply nested JSON").into());
        }
        match self.peek().ok_or(BAD)? {
            b'{' => {
                self.i += 1;
                let mut entries = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Val::Dict(entries));
                }
                loop {
                    if self.peek() != Some(b'"') {
                        return Err(BAD);
                    }
                    let key = self.string()?;
                    self.ws();
                    if self.peek() != Some(b':') {
                        return Err(BAD);
                    }
                    self.i += 1;
                    self.ws();
                    let v = self.value(depth + 1)?;
                    entries.push((key, v));
                    self.ws();
                    match self.peek() {
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Val::Dict(entries));
                        }
                        Some(b',') => {
                            self.i += 1;
                            self.ws();
                        }
                        _ => return Err(BAD),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut n = 0usize;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Val::Array(0));
                }
                loop {
                    self.value(depth + 1)?;
                    n += 1;
                    self.ws();
                    match self.peek() {
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Val::Array(n));
                        }
                        Some(b',') => {
                            self.i += 1;
                            self.ws();
                        }
                        _ => return Err(BAD),
                    }
                }
            }
            b'"' => Ok(Val::Str(self.string()?)),
            b'n' if self.lit("null") => Ok(Val::Unset),
            b't' if self.lit("true") => Ok(Val::Bool(true)),
            b'f' if self.lit("false") => Ok(Val::Bool(false)),
            b'N' if self.lit("NaN") => Ok(Val::Double(f64::NAN)),
            b'I' if self.lit("Infinity") => Ok(Val::Double(f64::INFINITY)),
            b'-' if self.s[self.i..].starts_with(b"-Infinity") => {
                self.i += 9;
                Ok(Val::Double(f64::NEG_INFINITY))
            }
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(BAD),
        }
    }

    fn number(&mut self) -> Result<Val<'t>, JsonError> {
        let s = self.s;
        let start = self.i;
        let mut i = self.i;
        if s[i] == b'-' {
            i += 1;
        }
        match s.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while i < s.len() && s[i].is_ascii_digit() {
                    i += 1;
                }
            }
            _ => return Err(BAD),
        }
        let mut is_float = false;
        if i + 1 < s.len() && s[i] == b'.' && s[i + 1].is_ascii_digit() {
            is_float = true;
            i += 2;
            while i < s.len() && s[i].is_ascii_digit() {
                i += 1;
            }
        }
        if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
            let e_start = i;
            i += 1;
            if i < s.len() && (s[i] == b'-' || s[i] == b'+') {
                i += 1;
            }
            let digits_start = i;
            while i < s.len() && s[i].is_ascii_digit() {
                i += 1;
            }
            if i > digits_start {
                is_float = true;
            } else {
                i = e_start; // not an exponent: Python backs off, then fails on the 'e'
            }
        }
        let text = &self.text[start..i];
        self.i = i;
        if is_float {
            text.parse::<f64>().map(Val::Double).map_err(|_| BAD)
        } else {
            if text.len() > 18 {
                return Err(Unsupported("long JSON integer").into());
            }
            text.parse::<i64>().map(Val::Int).map_err(|_| BAD)
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let h = self.s.get(self.i..self.i + 4).ok_or(BAD)?;
        let mut v = 0u32;
        for &c in h {
            v = v * 16 + (c as char).to_digit(16).ok_or(BAD)?;
        }
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<Cow<'t, str>, JsonError> {
        self.i += 1; // opening quote
        let start = self.i;
        let s = self.s;
        // Fast path: no escapes.
        let mut i = start;
        while i < s.len() {
            match s[i] {
                b'"' => {
                    self.i = i + 1;
                    return Ok(Cow::Borrowed(&self.text[start..i]));
                }
                b'\\' => break,
                c if c < 0x20 => return Err(BAD), // strict: control characters
                _ => i += 1,
            }
        }
        let mut out = String::from(&self.text[start..i]);
        self.i = i;
        loop {
            let c = *s.get(self.i).ok_or(BAD)?;
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                b'\\' => {
                    let e = *s.get(self.i + 1).ok_or(BAD)?;
                    self.i += 2;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let u = self.hex4()?;
                            let cp = if (0xd800..0xdc00).contains(&u) {
                                if s.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err(Unsupported("lone surrogate in JSON").into());
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return Err(Unsupported("lone surrogate in JSON").into());
                                }
                                0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00)
                            } else if (0xdc00..0xe000).contains(&u) {
                                return Err(Unsupported("lone surrogate in JSON").into());
                            } else {
                                u
                            };
                            out.push(char::from_u32(cp).ok_or(BAD)?);
                        }
                        _ => return Err(BAD),
                    }
                }
                c if c < 0x20 => return Err(BAD),
                _ => {
                    // copy one UTF-8 character
                    let ch = self.text[self.i..].chars().next().ok_or(BAD)?;
                    out.push(ch);
                    self.i += ch.len_utf8();
                }
            }
        }
    }
}
