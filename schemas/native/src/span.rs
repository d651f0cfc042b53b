//! One validated `TracesData` record → normalized calls, span rejects and
//! counters, mirroring `TraceDecoder._decode_proto`, `_make_call`,
//! `_check_times`, `_tenant` and `dialects.build_call` step by step, in the
//! same order (the first Reject raised decides the reason).
//!
//! Each step either computes exactly what Python computes, raises the same
//! Reject, or stops with `Stop::Fallback` when exactness would need more of
//! Python than is reproduced here (repr of floats and lists, Unicode case
//! mapping, unusual number/JSON/timestamp text). A fallback discards the
//! record's native results; Python then decodes the whole record.

use crate::agg::day_of;
use crate::blake2b::blake2b;
use crate::config::{Config, KeyId, NO_KEY};
use crate::isotime;
use crate::json;
use crate::pyval::{hex, py_float_from_str, py_strip, HexId, PyFloat, Unsupported, Val};
use crate::wire::{Fields, Payload};
use std::borrow::Cow;

pub enum Stop {
    Reject(&'static str, String),
    Fallback(&'static str),
    /// A Python exception other than Reject (the clock raised): `decode_error` for the record.
    Error(String),
}

impl From<Unsupported> for Stop {
    fn from(u: Unsupported) -> Stop {
        Stop::Fallback(u.0)
    }
}

#[inline]
fn reject<T>(reason: &'static str, detail: String) -> Result<T, Stop> {
    Err(Stop::Reject(reason, detail))
}

/// A normalized call: the fields of `LlmCall` that the window statistics and
/// the session partials read.
pub struct Call<'a> {
    pub tenant: Cow<'a, str>,
    pub service: Cow<'a, str>,
    pub provider: Cow<'a, str>,
    pub model: Cow<'a, str>,
    pub operation: Cow<'a, str>,
    pub agent: Cow<'a, str>,
    pub tool: Cow<'a, str>,
    pub tool_args_hash: Cow<'a, str>,
    pub session_id: Cow<'a, str>,
    pub trace_id: HexId,
    pub end_ns: u64,
    pub duration_ms: f64,
    pub is_error: bool,
    pub input: i64,
    pub output: i64,
    pub cached: i64,
    pub reasoning: i64,
    /// After pricing: the reported or computed cost; None: unpriced.
    pub cost: Option<f64>,
    pub ttft_ms: Option<f64>,
}

/// A `Price` of the price table, as `Price.cost` uses it.
pub struct PriceRow {
    pub provider: String,
    pub input: f64,
    pub output: f64,
    pub cached_input: Option<f64>,
    pub reasoning: Option<f64>,
}

impl PriceRow {
    /// `Price.cost(call)`: the same float operations in the same order.
    pub fn cost(&self, input: i64, output: i64, cached: i64, reasoning: i64) -> f64 {
        let uncached = if cached <= input {
            input - cached
        } else {
            input
        };
        let reasoning = reasoning.min(output);
        let plain = output - reasoning;
        let cached_price = self.cached_input.unwrap_or(self.input);
        let reasoning_price = self.reasoning.unwrap_or(self.output);
        (uncached as f64 * self.input
            + cached as f64 * cached_price
            + plain as f64 * self.output
            + reasoning as f64 * reasoning_price)
            / 1_000_000.0
    }
}

/// `PriceTable.lookup(model, day * 86400.0)` (cached by the caller).
pub type Pricer<'p> = dyn FnMut(&str, i64) -> Result<Option<std::sync::Arc<PriceRow>>, Stop> + 'p;

pub struct SpanReject {
    pub reason: &'static str,
    pub detail: String,
    pub rs: u32,
    pub ss: u32,
    pub sp: u32,
}

#[derive(Default)]
pub struct RecordOut<'a> {
    pub calls: Vec<Call<'a>>,
    pub dead: Vec<SpanReject>,
    pub spans: u64,
    pub normalized: u64,
    pub skipped: u64,
}

pub enum RecordOutcome {
    Done,
    Fallback(&'static str),
    DecodeError(String),
}

/// Where each kept key's value is, per span: kept across records (it holds
/// no borrowed data), so a record does not pay for a table of every key.
pub struct Slots {
    gen: Vec<u32>,
    pos: Vec<u16>,
    cur: u32,
}

impl Slots {
    pub fn new(n_keys: usize) -> Self {
        Slots { gen: vec![0; n_keys], pos: vec![0; n_keys], cur: 0 }
    }
}

/// The kept attributes of one span (or resource): `attrs` of the Python decoder.
pub struct Attrs<'a, 's> {
    slots: &'s mut Slots,
    vals: Vec<Val<'a>>,
    pub genai: bool,
}

impl<'a, 's> Attrs<'a, 's> {
    fn new(slots: &'s mut Slots) -> Self {
        Attrs { slots, vals: Vec::new(), genai: false }
    }

    #[inline]
    fn reset(&mut self) {
        let slots = &mut *self.slots;
        slots.cur = slots.cur.wrapping_add(1);
        if slots.cur == 0 {
            slots.gen.fill(0);
            slots.cur = 1;
        }
        self.vals.clear();
        self.genai = false;
    }

    #[inline]
    fn set(&mut self, k: KeyId, v: Val<'a>) {
        let i = k as usize;
        let slots = &mut *self.slots;
        if slots.gen[i] == slots.cur {
            self.vals[slots.pos[i] as usize] = v; // a repeated key: the last value wins
        } else {
            slots.gen[i] = slots.cur;
            slots.pos[i] = self.vals.len() as u16;
            self.vals.push(v);
        }
    }

    /// `attrs.get(key)`: None when absent or when the value is None.
    #[inline]
    pub fn value(&self, k: KeyId) -> Option<&Val<'a>> {
        if k == NO_KEY {
            return None;
        }
        let i = k as usize;
        if self.slots.gen[i] == self.slots.cur {
            match &self.vals[self.slots.pos[i] as usize] {
                Val::Unset => None,
                v => Some(v),
            }
        } else {
            None
        }
    }

    /// `dialects._first`: the first value that is not None and not "".
    #[inline]
    pub fn first(&self, keys: &[KeyId]) -> Option<&Val<'a>> {
        for &k in keys {
            if let Some(v) = self.value(k) {
                if !v.is_none_or_empty_str() {
                    return Some(v);
                }
            }
        }
        None
    }
}

// --- AnyValue ----------------------------------------------------------------

/// The oneof state of an AnyValue while its (possibly repeated, merged)
/// occurrences are read, like upb merges them.
enum Av<'a> {
    Unset,
    Str(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(usize),
    KvList(Vec<&'a [u8]>),
    Bytes(&'a [u8]),
}

#[inline]
fn wire_type(p: &Payload) -> u8 {
    match p {
        Payload::Varint(_) => 0,
        Payload::Fixed64(_) => 1,
        Payload::Len(_) => 2,
        Payload::Group => 3,
        Payload::Fixed32 => 5,
    }
}

fn feed_anyvalue<'a>(cfg: &Config, st: &mut Av<'a>, buf: &'a [u8]) {
    for (field, p) in Fields::new(buf) {
        match (field, &p) {
            (1, Payload::Len(s)) => *st = Av::Str(s),
            (2, Payload::Varint(v)) => *st = Av::Bool(*v != 0),
            (3, Payload::Varint(v)) => *st = Av::Int(*v as i64),
            (4, Payload::Fixed64(v)) => *st = Av::Double(f64::from_bits(*v)),
            (5, Payload::Len(s)) => {
                let n = Fields::new(s)
                    .filter(|(f, p)| *f == 1 && matches!(p, Payload::Len(_)))
                    .count();
                if let Av::Array(m) = st {
                    *m += n; // same oneof case again: upb merges (values append)
                } else {
                    *st = Av::Array(n);
                }
            }
            (6, Payload::Len(s)) => {
                if let Av::KvList(v) = st {
                    v.push(s);
                } else {
                    *st = Av::KvList(vec![s]);
                }
            }
            (7, Payload::Len(s)) => *st = Av::Bytes(s),
            _ => {
                if cfg.is_other_oneof(field, wire_type(&p)) {
                    *st = Av::Unset; // e.g. string_value_strindex: `_any_value` gives None
                }
            }
        }
    }
}

/// A string field of a validated record.
#[inline]
fn utf8(b: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(b).is_ok());
    // SAFETY: only called on KeyValue.key and AnyValue.string_value of a
    // record that wire::validate accepted, and it checks every `string`
    // field of every message type of the schema, as upb does.
    unsafe { std::str::from_utf8_unchecked(b) }
}

/// `_any_value(value, depth)`.
fn finish_anyvalue<'a>(cfg: &Config, st: Av<'a>, depth: u32) -> Val<'a> {
    match st {
        Av::Unset => Val::Unset,
        Av::Str(s) => Val::Str(Cow::Borrowed(utf8(s))),
        Av::Bool(b) => Val::Bool(b),
        Av::Int(i) => Val::Int(i),
        Av::Double(f) => Val::Double(f),
        Av::Array(n) => {
            if depth < 8 {
                Val::Array(n)
            } else {
                Val::Unset
            }
        }
        Av::KvList(slices) => {
            if depth >= 8 {
                return Val::Unset;
            }
            let mut entries = Vec::new();
            for s in slices {
                for (f, p) in Fields::new(s) {
                    if let (1, Payload::Len(kv)) = (f, p) {
                        let (key, st) = read_kv(cfg, kv, true);
                        entries.push((
                            Cow::Borrowed(utf8(key)),
                            finish_anyvalue(cfg, st, depth + 1),
                        ));
                    }
                }
            }
            Val::Dict(entries)
        }
        Av::Bytes(b) => Val::Str(Cow::Owned(hex(b))),
    }
}

/// A KeyValue: its key (the last one) and, when asked, its merged value.
#[inline]
fn read_kv<'a>(cfg: &Config, kv: &'a [u8], with_value: bool) -> (&'a [u8], Av<'a>) {
    let mut key: &[u8] = b"";
    let mut st = Av::Unset;
    for (f, p) in Fields::new(kv) {
        match (f, p) {
            (1, Payload::Len(s)) => key = s,
            (2, Payload::Len(s)) if with_value => feed_anyvalue(cfg, &mut st, s),
            _ => {}
        }
    }
    (key, st)
}

#[inline]
fn store_kv<'a>(cfg: &Config, kv: &'a [u8], attrs: &mut Attrs<'a, '_>, kept: &[bool]) {
    // One pass for the usual KeyValue (a key, then one value); a second one
    // only when the value is given more than once.
    let mut key: &[u8] = b"";
    let mut value: Option<&'a [u8]> = None;
    let mut values = 0;
    for (f, p) in Fields::new(kv) {
        match (f, p) {
            (1, Payload::Len(s)) => key = s,
            (2, Payload::Len(s)) => {
                values += 1;
                value = Some(s);
            }
            _ => {}
        }
    }
    let id = cfg.key_id(key);
    if id == NO_KEY || !kept[id as usize] {
        return;
    }
    let st = if values > 1 {
        read_kv(cfg, kv, true).1
    } else {
        let mut st = Av::Unset;
        if let Some(v) = value {
            feed_anyvalue(cfg, &mut st, v);
        }
        st
    };
    attrs.set(id, finish_anyvalue(cfg, st, 0));
    if cfg.signal[id as usize] {
        attrs.genai = true;
    }
}

// --- the record -----------------------------------------------------------------

#[allow(clippy::too_many_arguments)]
pub fn process_record<'a>(
    cfg: &'a Config,
    buf: &'a [u8],
    now: &mut dyn FnMut() -> Result<f64, Stop>,
    price: &mut Pricer<'_>,
    span_slots: &mut Slots,
    resource_slots: &mut Slots,
    out: &mut RecordOut<'a>,
) -> RecordOutcome {
    let mut span_attrs = Attrs::new(span_slots);
    let mut res_attrs = Attrs::new(resource_slots);
    let mut rs_idx = 0u32;
    for (f, p) in Fields::new(buf) {
        let rs = match (f, p) {
            (1, Payload::Len(rs)) => rs,
            _ => continue,
        };
        res_attrs.reset();
        for (f2, p2) in Fields::new(rs) {
            if let (1, Payload::Len(resource)) = (f2, p2) {
                for (f3, p3) in Fields::new(resource) {
                    if let (1, Payload::Len(kv)) = (f3, p3) {
                        store_kv(cfg, kv, &mut res_attrs, &cfg.resource_kept);
                    }
                }
            }
        }
        let mut ss_idx = 0u32;
        for (f2, p2) in Fields::new(rs) {
            let ss = match (f2, p2) {
                (2, Payload::Len(ss)) => ss,
                _ => continue,
            };
            let mut sp_idx = 0u32;
            for (f3, p3) in Fields::new(ss) {
                let span = match (f3, p3) {
                    (2, Payload::Len(span)) => span,
                    _ => continue,
                };
                out.spans += 1;
                span_attrs.reset();
                let mut trace_id: &[u8] = b"";
                let mut start = 0u64;
                let mut end = 0u64;
                let mut code = 0i32;
                for (f4, p4) in Fields::new(span) {
                    match (f4, p4) {
                        (1, Payload::Len(s)) => trace_id = s,
                        (7, Payload::Fixed64(v)) => start = v,
                        (8, Payload::Fixed64(v)) => end = v,
                        (9, Payload::Len(kv)) => store_kv(cfg, kv, &mut span_attrs, &cfg.span_kept),
                        (15, Payload::Len(status)) => {
                            for (f5, p5) in Fields::new(status) {
                                if let (3, Payload::Varint(v)) = (f5, p5) {
                                    code = v as u32 as i32; // int32 enum: the low 32 bits
                                }
                            }
                        }
                        _ => {}
                    }
                }
                let span_in = SpanIn {
                    trace_id,
                    start,
                    end,
                    status_error: code == cfg.lit.status_error,
                };
                match make_call(cfg, &span_attrs, &res_attrs, &span_in, now, price) {
                    Ok(Some(call)) => {
                        out.normalized += 1;
                        out.calls.push(call);
                    }
                    Ok(None) => out.skipped += 1,
                    Err(Stop::Reject(reason, detail)) => out.dead.push(SpanReject {
                        reason,
                        detail,
                        rs: rs_idx,
                        ss: ss_idx,
                        sp: sp_idx,
                    }),
                    Err(Stop::Fallback(why)) => return RecordOutcome::Fallback(why),
                    Err(Stop::Error(detail)) => return RecordOutcome::DecodeError(detail),
                }
                sp_idx += 1;
            }
            ss_idx += 1;
        }
        rs_idx += 1;
    }
    RecordOutcome::Done
}

struct SpanIn<'a> {
    trace_id: &'a [u8],
    start: u64,
    end: u64,
    status_error: bool,
}

// --- TraceDecoder._make_call ----------------------------------------------------------

fn make_call<'a>(
    cfg: &'a Config,
    a: &Attrs<'a, '_>,
    r: &Attrs<'a, '_>,
    s: &SpanIn<'a>,
    now: &mut dyn FnMut() -> Result<f64, Stop>,
    price: &mut Pricer<'_>,
) -> Result<Option<Call<'a>>, Stop> {
    if !a.genai {
        return Ok(None);
    }
    // _check_times
    if s.end == 0 {
        return reject("invalid_timestamp", "span has no end time".into());
    }
    if s.start > s.end {
        return reject("invalid_timestamp", "span ends before it starts".into());
    }
    if cfg.clock_needed {
        let now = now()?;
        let end_s = s.end as f64 / 1e9;
        if cfg.past_skew != 0.0 && end_s < now - cfg.past_skew {
            return reject(
                "timestamp_skew",
                format!("span ended {:.0}s ago", now - end_s),
            );
        }
        if cfg.future_skew != 0.0 && end_s > now + cfg.future_skew {
            return reject(
                "timestamp_skew",
                format!("span ends {:.0}s in the future", end_s - now),
            );
        }
    }
    // dialects.check_trace_id: the hex is two bytes a byte
    if s.trace_id.len() * 2 > cfg.max_dim {
        return reject(
            "oversized_dimension",
            format!(
                "trace_id is {} bytes (max_dimension_bytes is {})",
                s.trace_id.len() * 2,
                cfg.max_dim
            ),
        );
    }
    let k = &cfg.k;
    // The keyword arguments of build_call, in order: tenant, service, environment.
    let tenant = tenant(cfg, a, r)?;
    let service = match r.value(k.service_name) {
        Some(v) if v.truthy() => checked_text(cfg, Some(v), "service")?,
        _ => Cow::Borrowed(""),
    };
    let environment = k
        .environment
        .iter()
        .find_map(|&key| r.value(key).filter(|v| v.truthy()));
    // Only whether it is empty matters later (str() of a truthy value never is).
    let env_nonempty = environment.is_some();
    checked_text(cfg, environment, "environment")?;
    let mut call = build_call(cfg, a, s, tenant, service, env_nonempty)?;
    // PriceTable.apply
    if !call.model.is_empty() {
        if let Some(p) = price(&call.model, day_of(call.end_ns))? {
            if call.provider.is_empty() {
                call.provider = Cow::Owned(p.provider.clone());
            }
            if call.cost.is_none() {
                call.cost = Some(p.cost(call.input, call.output, call.cached, call.reasoning));
            }
        }
    }
    Ok(Some(call))
}

/// `str(value)`, borrowing the record's bytes where the value is a str.
fn text_of<'a>(v: &Val<'a>) -> Result<Cow<'a, str>, Unsupported> {
    Ok(match v {
        Val::Str(Cow::Borrowed(s)) => Cow::Borrowed(*s),
        Val::Str(Cow::Owned(s)) => Cow::Owned(s.clone()),
        other => Cow::Owned(other.to_text()?.into_owned()),
    })
}

fn tenant<'a>(cfg: &'a Config, a: &Attrs<'a, '_>, r: &Attrs<'a, '_>) -> Result<Cow<'a, str>, Stop> {
    for &key in &cfg.k.tenant {
        let mut v = r.value(key);
        if v.is_none_or(|v| v.is_none_or_empty_str()) {
            v = a.value(key);
        }
        if let Some(v) = v {
            if !v.is_none_or_empty_str() {
                return checked_text(cfg, Some(v), "tenant");
            }
        }
    }
    Ok(Cow::Borrowed(cfg.lit.default_tenant.as_str()))
}

// --- dialects.build_call ---------------------------------------------------------------

/// A usage/cost object: `_json_object`'s result.
enum Obj<'s> {
    Borrowed(&'s [(Cow<'s, str>, Val<'s>)]),
    Owned(Vec<(Cow<'s, str>, Val<'s>)>),
}

impl<'s> Obj<'s> {
    fn entries(&self) -> &[(Cow<'s, str>, Val<'s>)] {
        match self {
            Obj::Borrowed(e) => e,
            Obj::Owned(e) => e,
        }
    }

    /// `obj.get(key)`
    fn get(&self, key: &str) -> Option<&Val<'s>> {
        self.entries()
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// `obj.get(first, obj.get(second))`
    fn get2(&self, first: &str, second: &str) -> Option<&Val<'s>> {
        match self.entries().iter().rev().find(|(k, _)| k == first) {
            Some((_, v)) => Some(v),
            None => self.get(second),
        }
    }
}

fn json_object<'s>(v: Option<&'s Val<'s>>) -> Result<Obj<'s>, Stop> {
    match v {
        None => Ok(Obj::Owned(Vec::new())),
        Some(Val::Dict(e)) => Ok(Obj::Borrowed(e)),
        Some(Val::Str(s)) => match json::loads(s) {
            Ok(Val::Dict(e)) => Ok(Obj::Owned(e)),
            Ok(_) | Err(json::JsonError::Invalid) => {
                reject("invalid_attribute", "not a JSON object".into())
            }
            Err(json::JsonError::Unsupported(u)) => Err(u.into()),
        },
        // json.loads() of an int/float/bool/list raises TypeError
        Some(_) => reject("invalid_attribute", "not a JSON object".into()),
    }
}

fn as_count(v: Option<&Val>, field: &str, max_tokens: i64) -> Result<Option<i64>, Stop> {
    let bad = |what: &str| reject("invalid_token_count", format!("{field} {what}"));
    let f = match v {
        None | Some(Val::Unset) => return Ok(None),
        Some(Val::Bool(_)) => return bad("is a boolean"),
        Some(Val::Int(i)) => {
            if *i < 0 || *i > max_tokens {
                return bad("is out of range");
            }
            return Ok(Some(*i));
        }
        Some(Val::Str(s)) => match py_float_from_str(s)? {
            PyFloat::Ok(f) => f,
            PyFloat::Invalid => return bad("is not a number"),
        },
        Some(Val::Double(f)) => *f,
        Some(Val::Array(_)) | Some(Val::Dict(_)) => return bad("has a non-numeric type"),
    };
    if !f.is_finite() || f != f.trunc() {
        return bad("is not a whole number");
    }
    // int(f) compared exactly with max_tokens (an i64)
    if !(0.0..9_223_372_036_854_775_808.0).contains(&f) || (f as i64) > max_tokens {
        return bad("is out of range");
    }
    Ok(Some(f as i64))
}

fn as_cost(v: Option<&Val>, field: &str, max_cost: f64) -> Result<Option<f64>, Stop> {
    let bad = |what: &str| reject("invalid_cost", format!("{field} {what}"));
    let cost = match v {
        None | Some(Val::Unset) => return Ok(None),
        Some(Val::Bool(_)) => return bad("is a boolean"),
        Some(Val::Int(i)) => *i as f64,
        Some(Val::Double(f)) => *f,
        Some(Val::Str(s)) => match py_float_from_str(s)? {
            PyFloat::Ok(f) => f,
            PyFloat::Invalid => return bad("is not a number"),
        },
        Some(Val::Array(_)) | Some(Val::Dict(_)) => return bad("is not a number"),
    };
    if !cost.is_finite() || cost < 0.0 || cost > max_cost {
        return bad("is out of range");
    }
    Ok(Some(cost))
}

/// `dialects.checked_text`: a dimension that TimescaleDB can store and index.
/// The same checks in the same order: the attribute limit, the dimension
/// limit (both on UTF-8 bytes), then NUL, which PostgreSQL text cannot hold.
/// (Python also rejects lone surrogates; a validated record has none.)
fn checked_text<'a>(cfg: &Config, v: Option<&Val<'a>>, field: &str) -> Result<Cow<'a, str>, Stop> {
    match v {
        None | Some(Val::Unset) => Ok(Cow::Borrowed("")),
        Some(v) => {
            let text = text_of(v)?;
            let size = text.len();
            if size > cfg.max_attr {
                return reject("oversized_attribute", format!("{field} is {size} bytes"));
            }
            if size > cfg.max_dim {
                return reject(
                    "oversized_dimension",
                    format!(
                        "{field} is {size} bytes (max_dimension_bytes is {})",
                        cfg.max_dim
                    ),
                );
            }
            if has_nul(text.as_bytes()) {
                return reject("invalid_text", format!("{field} holds a NUL character"));
            }
            Ok(text)
        }
    }
}

/// Whether a string holds a NUL byte, a word at a time: dimensions are a few
/// dozen bytes, where `[u8]::contains` (a byte at a time) cost 2% of the whole
/// decode, more than the rest of `checked_text`. Exact: `x - 0x01.. & !x &
/// 0x80..` is non-zero if and only if some byte of `x` is 0.
#[inline]
fn has_nul(b: &[u8]) -> bool {
    #[inline(always)]
    fn zero_in_u64(x: u64) -> bool {
        x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 != 0
    }
    #[inline(always)]
    fn zero_in_u32(x: u32) -> bool {
        x.wrapping_sub(0x0101_0101) & !x & 0x8080_8080 != 0
    }
    let n = b.len();
    if n < 8 {
        if n < 4 {
            return b.contains(&0);
        }
        let first = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let last = u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]);
        return zero_in_u32(first) || zero_in_u32(last); // the two may overlap
    }
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let mut i = 0;
    while i + 8 <= n {
        if zero_in_u64(word(i)) {
            return true;
        }
        i += 8;
    }
    i < n && zero_in_u64(word(n - 8)) // the tail, overlapping the last word read
}

/// `map.get(str(value), "other")` for a truthy value. Python checks at
/// construction that no map key is the str() of a non-str scalar, so
/// anything but a str maps to "other".
fn lookup_op<'a>(
    cfg: &'a Config,
    map: &'a std::collections::HashMap<String, String>,
    v: &Val,
    upper: bool,
) -> Result<&'a str, Stop> {
    match v {
        Val::Str(s) => {
            let found = if upper {
                if !s.is_ascii() {
                    return Err(Stop::Fallback("non-ASCII span kind (str.upper)"));
                }
                map.get(&s.to_ascii_uppercase())
            } else {
                map.get(s.as_ref())
            };
            Ok(found.map_or(cfg.lit.other.as_str(), |v| v.as_str()))
        }
        _ => Ok(cfg.lit.other.as_str()),
    }
}

fn operation<'a>(cfg: &'a Config, a: &Attrs<'_, '_>) -> Result<&'a str, Stop> {
    let k = &cfg.k;
    let m = &cfg.maps;
    for (key, map, upper) in [
        (k.operation_name, &m.operations, false),
        (k.openinference_kind, &m.openinference_ops, true),
        (k.llm_request_type, &m.llm_request_types, false),
        (k.traceloop_kind, &m.traceloop_ops, false),
        (k.langfuse_type, &m.langfuse_ops, false),
    ] {
        if let Some(v) = a.value(key) {
            if v.truthy() {
                return lookup_op(cfg, map, v, upper);
            }
        }
    }
    Ok("")
}

fn normalize_provider<'a>(cfg: &'a Config, text: Cow<'a, str>) -> Result<Cow<'a, str>, Stop> {
    if !text.is_ascii() {
        return Err(Stop::Fallback("non-ASCII provider (str.lower)"));
    }
    let lower: Cow<'a, str> = match text {
        Cow::Borrowed(t) => {
            let stripped = py_strip(t);
            if stripped.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(stripped.to_ascii_lowercase())
            } else {
                Cow::Borrowed(stripped)
            }
        }
        Cow::Owned(t) => Cow::Owned(py_strip(&t).to_ascii_lowercase()),
    };
    if let Some(alias) = cfg.maps.provider_aliases.get(lower.as_ref()) {
        return Ok(Cow::Borrowed(alias.as_str()));
    }
    Ok(lower)
}

fn args_hash(v: Option<&Val>) -> Result<String, Stop> {
    let text: Cow<str> = match v {
        None | Some(Val::Unset) => return Ok(String::new()),
        Some(Val::Str(s)) => Cow::Borrowed(s),
        Some(Val::Int(i)) => Cow::Owned(i.to_string()),
        Some(Val::Bool(true)) => Cow::Borrowed("true"),
        Some(Val::Bool(false)) => Cow::Borrowed("false"),
        Some(_) => {
            return Err(Stop::Fallback(
                "tool arguments that json.dumps would format",
            ))
        }
    };
    Ok(hex(&blake2b(text.as_bytes(), 8)))
}

/// `dialects._ttft_ms`
fn ttft_ms(cfg: &Config, a: &Attrs<'_, '_>, start_ns: u64, end_ns: u64) -> Result<Option<f64>, Stop> {
    let k = &cfg.k;
    let ms = if let Some(v) = a.first(&k.ttft_seconds) {
        let seconds = match v {
            Val::Str(s) => match py_float_from_str(s)? {
                PyFloat::Ok(f) => f,
                PyFloat::Invalid => return Ok(None),
            },
            Val::Int(i) => *i as f64,
            Val::Double(f) => *f,
            Val::Bool(b) => {
                if *b {
                    1.0
                } else {
                    0.0
                }
            }
            Val::Array(_) | Val::Dict(_) | Val::Unset => return Ok(None), // float() raises TypeError
        };
        seconds * 1000.0
    } else {
        let started = match a.value(k.langfuse_completion_start) {
            Some(v) if v.truthy() && start_ns != 0 => v,
            _ => return Ok(None),
        };
        let text = match started {
            Val::Str(s) => s.replace('Z', "+00:00"),
            // str() of a list/dict starts with '[' / '{': fromisoformat raises ValueError
            Val::Array(_) | Val::Dict(_) => return Ok(None),
            _ => return Err(Stop::Fallback("non-text completion start time")),
        };
        let micros = isotime::parse_micros(&text)?;
        (micros as f64 / 1e6 * 1e9 - start_ns as f64) / 1e6
    };
    let too_long = start_ns != 0 && ms > (end_ns - start_ns) as f64 / 1e6;
    if !ms.is_finite() || ms < 0.0 || too_long {
        return Ok(None);
    }
    Ok(Some(ms))
}

fn build_call<'a>(
    cfg: &'a Config,
    a: &Attrs<'a, '_>,
    s: &SpanIn<'a>,
    tenant: Cow<'a, str>,
    service: Cow<'a, str>,
    env_nonempty: bool,
) -> Result<Call<'a>, Stop> {
    let k = &cfg.k;
    let u = &cfg.usage;
    let max_tokens = cfg.max_tokens;
    let usage = json_object(a.value(k.langfuse_usage))?;
    let costs = json_object(a.value(k.langfuse_cost))?;

    let model = match a.first(&k.response_model) {
        Some(v) if v.truthy() => Some(v),
        _ => a.first(&k.request_model),
    };
    let mut op = operation(cfg, a)?;
    let mut input = as_count(a.first(&k.input_tokens), "input_tokens", max_tokens)?;
    let mut output = as_count(a.first(&k.output_tokens), "output_tokens", max_tokens)?;
    if input.is_none() {
        input = as_count(
            usage.get2(&u.input.0, &u.input.1),
            "usage_details.input",
            max_tokens,
        )?;
    }
    if output.is_none() {
        output = as_count(
            usage.get2(&u.output.0, &u.output.1),
            "usage_details.output",
            max_tokens,
        )?;
    }
    let mut total = as_count(a.first(&k.total_tokens), "total_tokens", max_tokens)?;
    if total.is_none() {
        total = as_count(usage.get(&u.total), "usage_details.total", max_tokens)?;
    }
    if let Some(t) = total {
        match (input, output) {
            (None, Some(out)) => input = Some((t - out).max(0)),
            (Some(inp), None) => output = Some((t - inp).max(0)),
            _ => {}
        }
    }
    let input = input.unwrap_or(0);
    let output = output.unwrap_or(0);
    let mut cached = as_count(a.first(&k.cached_tokens), "cache_read_tokens", max_tokens)?;
    if cached.is_none() {
        cached = as_count(
            usage.get2(&u.cached.0, &u.cached.1),
            "usage_details.cache_read",
            max_tokens,
        )?;
    }
    let mut reasoning = as_count(a.first(&k.reasoning_tokens), "reasoning_tokens", max_tokens)?;
    if reasoning.is_none() {
        reasoning = as_count(
            usage.get(&u.reasoning),
            "usage_details.reasoning",
            max_tokens,
        )?;
    }
    let mut cost = as_cost(a.first(&k.cost), "cost", cfg.max_cost)?;
    if cost.is_none() && !costs.entries().is_empty() {
        cost = as_cost(costs.get(&u.cost_total), "cost_details.total", cfg.max_cost)?;
    }
    if op.is_empty() {
        op = if model.is_some_and(|m| m.truthy()) || input != 0 || output != 0 {
            cfg.lit.chat.as_str()
        } else {
            cfg.lit.other.as_str()
        };
    }

    let mut agent = a.first(&k.agent);
    let mut tool = a.first(&k.tool);
    if let Some(entity) = a.value(k.traceloop_entity) {
        if entity.truthy() {
            let kind = a.value(k.traceloop_kind).and_then(|v| v.as_str());
            if kind == Some(cfg.lit.traceloop_agent.as_str()) && !agent.is_some_and(|v| v.truthy())
            {
                agent = Some(entity);
            } else if kind == Some(cfg.lit.traceloop_tool.as_str())
                && !tool.is_some_and(|v| v.truthy())
            {
                tool = Some(entity);
            }
        }
    }

    let error_value = a.first(&k.error_type);
    // str(x).upper() == "ERROR": only a str can spell it; no non-ASCII
    // character upper-cases to E, R or O (checked over all of Unicode).
    let level_error = match a.value(k.langfuse_level) {
        Some(Val::Str(s)) => s.is_ascii() && s.eq_ignore_ascii_case(&cfg.lit.level_error),
        _ => false,
    };
    let is_error = s.status_error || error_value.is_some_and(|v| v.truthy()) || level_error;
    let default_error = Val::Str(Cow::Borrowed(cfg.lit.error_type.as_str()));
    let error_value = if is_error && !error_value.is_some_and(|v| v.truthy()) {
        Some(&default_error)
    } else {
        error_value
    };

    // LlmCall(...) arguments, in order.
    if !env_nonempty {
        checked_text(cfg, a.first(&k.environment), "environment")?;
    }
    let provider = match a.first(&k.provider) {
        Some(p) if p.truthy() => normalize_provider(cfg, checked_text(cfg, Some(p), "provider")?)?,
        _ => Cow::Borrowed(""),
    };
    let model = match checked_text(cfg, model, "model")? {
        Cow::Borrowed(m) => Cow::Borrowed(py_strip(m)),
        Cow::Owned(m) => Cow::Owned(py_strip(&m).to_owned()),
    };
    let agent = checked_text(cfg, agent, "agent")?;
    let tool = checked_text(cfg, tool, "tool")?;
    let tool_args_hash = Cow::Owned(args_hash(a.first(&k.tool_args))?);
    let session_id = checked_text(cfg, a.first(&k.session), "session_id")?;
    let ttft = ttft_ms(cfg, a, s.start, s.end)?;
    checked_text(cfg, error_value, "error_type")?;

    Ok(Call {
        tenant,
        service,
        provider,
        model,
        operation: Cow::Borrowed(op),
        agent,
        tool,
        tool_args_hash,
        session_id,
        trace_id: HexId::of(s.trace_id),
        end_ns: s.end,
        duration_ms: if s.start != 0 {
            (s.end - s.start) as f64 / 1e6
        } else {
            0.0
        },
        is_error,
        input,
        output,
        cached: cached.unwrap_or(0),
        reasoning: reasoning.unwrap_or(0),
        cost,
        ttft_ms: ttft,
    })
}
