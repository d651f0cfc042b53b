//! Protobuf wire format: the readers, and a validator that accepts exactly
//! what upb (the parser behind Python's `TracesData.ParseFromString`) accepts.
//!
//! upb's rules, each checked against the installed upb (tests/test_fastpath.py
//! fuzzes this validator against it):
//! * a tag is a varint of at most 5 bytes whose value fits 32 bits; field 0 is corrupt;
//! * a varint value takes at most 10 bytes (bits beyond 64 are dropped);
//! * a length takes at most 5 bytes, is below 2**31 and must fit the message;
//! * fixed64 / fixed32 need 8 / 4 bytes;
//! * wire types 6 and 7 are corrupt; an end-group tag outside its group is corrupt;
//! * a known field with another wire type than its own is an unknown field;
//!   unknown groups are parsed (nested tags must be well formed and matched);
//! * `string` fields (proto3) must be valid UTF-8, also inside repeated fields;
//! * messages and groups nest at most 100 deep (the top-level message is depth 0).
//!
//! The schema (which field of which message is a string, a submessage, ...)
//! comes from the Python descriptors at construction, so a newer
//! opentelemetry-proto with more fields is validated like upb validates it.

pub const MAX_DEPTH: u32 = 100;

pub const WT_VARINT: u8 = 0;
pub const WT_I64: u8 = 1;
pub const WT_LEN: u8 = 2;
pub const WT_SGROUP: u8 = 3;
pub const WT_EGROUP: u8 = 4;
pub const WT_I32: u8 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Varint,
    I64,
    I32,
    Str,
    Bytes,
    Msg(u16),
    /// repeated numeric fields: their own wire type, or LEN (packed)
    PackedVarint,
    PackedI64,
    PackedI32,
}

#[derive(Default)]
pub struct Schema {
    /// per message type: field number -> kind (dense; field numbers of OTLP are small)
    pub msgs: Vec<Vec<Option<Kind>>>,
}

impl Schema {
    #[inline]
    fn kind(&self, msg: usize, field: u32) -> Option<Kind> {
        let fields = &self.msgs[msg];
        if (field as usize) < fields.len() {
            fields[field as usize]
        } else {
            None
        }
    }
}

#[inline(always)]
pub fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let p = *pos;
    let first = *buf.get(p)?;
    if first < 0x80 {
        *pos = p + 1;
        return Some(first as u64);
    }
    let mut result: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(p + i)?;
        // The 10th byte contributes its lowest bit only (shifted out otherwise).
        result |= ((b & 0x7f) as u64).wrapping_shl(7 * i as u32);
        if b < 0x80 {
            *pos = p + i + 1;
            return Some(result);
        }
    }
    None
}

/// A tag: (field number, wire type).
#[inline(always)]
pub fn read_tag(buf: &[u8], pos: &mut usize) -> Option<(u32, u8)> {
    let p = *pos;
    let first = *buf.get(p)?;
    let value: u64 = if first < 0x80 {
        *pos = p + 1;
        first as u64
    } else {
        let mut result: u64 = 0;
        let mut done = false;
        for i in 0..5 {
            let b = *buf.get(p + i)?;
            result |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                *pos = p + i + 1;
                done = true;
                break;
            }
        }
        if !done || result > u32::MAX as u64 {
            return None;
        }
        result
    };
    let field = (value >> 3) as u32;
    if field == 0 {
        return None;
    }
    Some((field, (value & 7) as u8))
}

/// A length prefix and the slice it covers.
#[inline(always)]
pub fn read_len<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let p = *pos;
    let mut result: u64 = 0;
    let mut end = 0;
    for i in 0..5 {
        let b = *buf.get(p + i)?;
        result |= ((b & 0x7f) as u64) << (7 * i);
        if b < 0x80 {
            end = p + i + 1;
            break;
        }
    }
    if end == 0 || result > i32::MAX as u64 {
        return None;
    }
    let len = result as usize;
    if len > buf.len() - end {
        return None;
    }
    *pos = end + len;
    Some(&buf[end..end + len])
}

#[inline(always)]
pub fn read_fixed64(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let p = *pos;
    let bytes: [u8; 8] = buf.get(p..p + 8)?.try_into().ok()?;
    *pos = p + 8;
    Some(u64::from_le_bytes(bytes))
}

#[inline(always)]
pub fn skip_fixed(buf: &[u8], pos: &mut usize, n: usize) -> Option<()> {
    if buf.len() - *pos < n {
        return None;
    }
    *pos += n;
    Some(())
}

/// Validate a whole serialized message of type 0 of the schema.
pub fn validate(schema: &Schema, buf: &[u8]) -> Result<(), &'static str> {
    validate_msg(schema, buf, 0, 0)
}

const CORRUPT: &str = "Wire format was corrupt";

#[allow(clippy::collapsible_match)]
fn validate_msg(schema: &Schema, buf: &[u8], msg: usize, depth: u32) -> Result<(), &'static str> {
    let mut pos = 0;
    while pos < buf.len() {
        let (field, wt) = read_tag(buf, &mut pos).ok_or(CORRUPT)?;
        let kind = schema.kind(msg, field);
        match wt {
            WT_VARINT => {
                read_varint(buf, &mut pos).ok_or(CORRUPT)?;
            }
            WT_I64 => skip_fixed(buf, &mut pos, 8).ok_or(CORRUPT)?,
            WT_I32 => skip_fixed(buf, &mut pos, 4).ok_or(CORRUPT)?,
            WT_LEN => {
                let sub = read_len(buf, &mut pos).ok_or(CORRUPT)?;
                match kind {
                    Some(Kind::Str) => {
                        if std::str::from_utf8(sub).is_err() {
                            return Err("String field had bad UTF-8");
                        }
                    }
                    Some(Kind::Msg(m)) => {
                        if depth + 1 > MAX_DEPTH {
                            return Err("Exceeded upb_DecodeOptions_MaxDepth");
                        }
                        validate_msg(schema, sub, m as usize, depth + 1)?;
                    }
                    Some(Kind::PackedVarint) => {
                        let mut p = 0;
                        while p < sub.len() {
                            read_varint(sub, &mut p).ok_or(CORRUPT)?;
                        }
                    }
                    Some(Kind::PackedI64) => {
                        if sub.len() % 8 != 0 {
                            return Err(CORRUPT);
                        }
                    }
                    Some(Kind::PackedI32) => {
                        if sub.len() % 4 != 0 {
                            return Err(CORRUPT);
                        }
                    }
                    _ => {}
                }
            }
            WT_SGROUP => {
                if depth + 1 > MAX_DEPTH {
                    return Err(CORRUPT);
                }
                pos = skip_group(buf, pos, field, depth + 1).ok_or(CORRUPT)?;
            }
            _ => return Err(CORRUPT), // stray end group, wire types 6 and 7
        }
    }
    Ok(())
}

/// Skip an (unknown) group that started before `pos`; returns the position after its end tag.
fn skip_group(buf: &[u8], mut pos: usize, group: u32, depth: u32) -> Option<usize> {
    loop {
        if pos >= buf.len() {
            return None; // unterminated
        }
        let (field, wt) = read_tag(buf, &mut pos)?;
        match wt {
            WT_VARINT => {
                read_varint(buf, &mut pos)?;
            }
            WT_I64 => skip_fixed(buf, &mut pos, 8)?,
            WT_I32 => skip_fixed(buf, &mut pos, 4)?,
            WT_LEN => {
                read_len(buf, &mut pos)?;
            }
            WT_SGROUP => {
                if depth + 1 > MAX_DEPTH {
                    return None;
                }
                pos = skip_group(buf, pos, field, depth + 1)?;
            }
            WT_EGROUP => {
                return if field == group { Some(pos) } else { None };
            }
            _ => return None,
        }
    }
}

/// Iterate over the fields of a validated message: (field, wire type, payload).
pub enum Payload<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Len(&'a [u8]),
    Group,
}

pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    #[inline]
    pub fn new(buf: &'a [u8]) -> Self {
        Fields { buf, pos: 0 }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u32, Payload<'a>);
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let buf = self.buf;
        let (field, wt) = match read_tag(buf, &mut self.pos) {
            Some(t) => t,
            None => {
                self.pos = buf.len();
                return None;
            }
        };
        let payload = match wt {
            WT_VARINT => read_varint(buf, &mut self.pos).map(Payload::Varint),
            WT_I64 => read_fixed64(buf, &mut self.pos).map(Payload::Fixed64),
            WT_I32 => skip_fixed(buf, &mut self.pos, 4).map(|_| Payload::Fixed32),
            WT_LEN => read_len(buf, &mut self.pos).map(Payload::Len),
            WT_SGROUP => skip_group(buf, self.pos, field, 0).map(|p| {
                self.pos = p;
                Payload::Group
            }),
            _ => None,
        };
        match payload {
            Some(p) => Some((field, p)),
            None => {
                self.pos = buf.len();
                None
            }
        }
    }
}
