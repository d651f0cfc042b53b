//! `observatory.schemas._native`: the native fast path of the OTLP trace
//! decoder. See schemas/fastpath.py for the Python side and the contract.
//!
//! `Decoder(config)` holds the dialect tables and settings; `Decoder.batch(window_ns)`
//! returns a `Batch` that is fed the records of one Kafka batch in order
//! (`feed` for protobuf records, `add_calls` for the calls Python decoded from
//! the records it handled) and hands back the pre-aggregated partials with `finish`.

mod agg;
mod blake2b;
mod config;
mod isotime;
mod json;
mod pyval;
mod span;
mod wire;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyInt, PyList, PyTuple};
use pyo3::{intern, IntoPyObjectExt};
use std::collections::HashMap;
use std::sync::Arc;

use config::FxMap;
use config::{Config, KeyId};
use span::{Call, PriceRow, RecordOut, RecordOutcome, SpanReject, Stop};
use wire::{Kind, Schema};

/// feed() results
const OK: u8 = 0;
const FALLBACK: u8 = 1;
const SPAN_DEAD_LETTERS: u8 = 2;
const RECORD_DEAD_LETTER: u8 = 3;

fn get<'py, T>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<T>
where
    T: FromPyObjectOwned<'py>,
    for<'a> <T as FromPyObject<'a, 'py>>::Error: Into<PyErr>,
{
    match d.get_item(key)? {
        Some(v) => v.extract::<T>().map_err(Into::into),
        None => Err(PyValueError::new_err(format!(
            "native decoder config lacks {key:?}"
        ))),
    }
}

use pyo3::conversion::FromPyObjectOwned;

fn build_config(d: &Bound<'_, PyDict>) -> PyResult<Config> {
    let mut cfg = Config::default();

    // wire schema: per message, (field number, kind, submessage index)
    let schema: Vec<Vec<(u32, String, i64)>> = get(d, "schema")?;
    let mut msgs = Vec::with_capacity(schema.len());
    for fields in schema {
        let max = fields.iter().map(|f| f.0).max().unwrap_or(0) as usize;
        let mut dense = vec![None; max + 1];
        for (number, kind, sub) in fields {
            let kind = match kind.as_str() {
                "varint" => Kind::Varint,
                "i64" => Kind::I64,
                "i32" => Kind::I32,
                "str" => Kind::Str,
                "bytes" => Kind::Bytes,
                "msg" => Kind::Msg(sub as u16),
                "packed_varint" => Kind::PackedVarint,
                "packed_i64" => Kind::PackedI64,
                "packed_i32" => Kind::PackedI32,
                other => return Err(PyValueError::new_err(format!("unknown field kind {other}"))),
            };
            dense[number as usize] = Some(kind);
        }
        msgs.push(dense);
    }
    cfg.schema = Schema { msgs };
    cfg.anyvalue_other = get(d, "anyvalue_other_oneof")?;

    // key tables
    let lists: HashMap<String, Vec<String>> = get(d, "lists")?;
    let singles: HashMap<String, String> = get(d, "singles")?;
    let span_keys: Vec<String> = get(d, "span_keys")?;
    let resource_keys: Vec<String> = get(d, "resource_keys")?;
    let signal_keys: Vec<String> = get(d, "signal_keys")?;
    let tenant_keys: Vec<String> = get(d, "tenant_keys")?;
    for key in &span_keys {
        let id = cfg.intern(key);
        cfg.span_kept[id as usize] = true;
    }
    for key in &resource_keys {
        let id = cfg.intern(key);
        cfg.resource_kept[id as usize] = true;
    }
    for key in &signal_keys {
        let id = cfg.intern(key);
        cfg.signal[id as usize] = true;
    }
    let mut list = |name: &str| -> PyResult<Vec<KeyId>> {
        let keys = lists.get(name).ok_or_else(|| {
            PyValueError::new_err(format!("native decoder config lacks list {name}"))
        })?;
        Ok(keys.iter().map(|k| cfg.intern(k)).collect())
    };
    let mut k = config::Keys {
        provider: list("PROVIDER")?,
        response_model: list("RESPONSE_MODEL")?,
        request_model: list("REQUEST_MODEL")?,
        input_tokens: list("INPUT_TOKENS")?,
        output_tokens: list("OUTPUT_TOKENS")?,
        total_tokens: list("TOTAL_TOKENS")?,
        cached_tokens: list("CACHED_TOKENS")?,
        reasoning_tokens: list("REASONING_TOKENS")?,
        cost: list("COST")?,
        agent: list("AGENT")?,
        tool: list("TOOL")?,
        tool_args: list("TOOL_ARGS")?,
        session: list("SESSION")?,
        ttft_seconds: list("TTFT_SECONDS")?,
        error_type: list("ERROR_TYPE")?,
        environment: list("ENVIRONMENT")?,
        ..Default::default()
    };
    let single = |cfg: &mut Config, name: &str| -> PyResult<KeyId> {
        let key = singles.get(name).ok_or_else(|| {
            PyValueError::new_err(format!("native decoder config lacks key {name}"))
        })?;
        Ok(cfg.intern(key))
    };
    k.operation_name = single(&mut cfg, "OPERATION_NAME")?;
    k.openinference_kind = single(&mut cfg, "OPENINFERENCE_KIND")?;
    k.traceloop_kind = single(&mut cfg, "TRACELOOP_KIND")?;
    k.traceloop_entity = single(&mut cfg, "TRACELOOP_ENTITY")?;
    k.llm_request_type = single(&mut cfg, "LLM_REQUEST_TYPE")?;
    k.langfuse_type = single(&mut cfg, "LANGFUSE_TYPE")?;
    k.langfuse_level = single(&mut cfg, "LANGFUSE_LEVEL")?;
    k.langfuse_usage = single(&mut cfg, "LANGFUSE_USAGE")?;
    k.langfuse_cost = single(&mut cfg, "LANGFUSE_COST")?;
    k.langfuse_completion_start = single(&mut cfg, "LANGFUSE_COMPLETION_START")?;
    k.service_name = single(&mut cfg, "SERVICE_NAME")?;
    k.tenant = tenant_keys.iter().map(|t| cfg.intern(t)).collect();
    cfg.k = k;
    if cfg.n_keys() >= KeyId::MAX as usize {
        return Err(PyValueError::new_err("too many attribute keys"));
    }

    let maps: HashMap<String, HashMap<String, String>> = get(d, "maps")?;
    let map = |name: &str| -> PyResult<HashMap<String, String>> {
        maps.get(name)
            .cloned()
            .ok_or_else(|| PyValueError::new_err(format!("native decoder config lacks map {name}")))
    };
    cfg.maps = config::Maps {
        operations: map("operations")?,
        openinference_ops: map("openinference_ops")?,
        llm_request_types: map("llm_request_types")?,
        traceloop_ops: map("traceloop_ops")?,
        langfuse_ops: map("langfuse_ops")?,
        provider_aliases: map("provider_aliases")?,
    };
    let usage: HashMap<String, Vec<String>> = get(d, "usage_keys")?;
    let pair = |name: &str| -> PyResult<(String, String)> {
        match usage.get(name).map(|v| v.as_slice()) {
            Some([a, b]) => Ok((a.clone(), b.clone())),
            Some([a]) => Ok((a.clone(), String::new())),
            _ => Err(PyValueError::new_err(format!("bad usage key {name}"))),
        }
    };
    cfg.usage = config::UsageKeys {
        input: pair("input")?,
        output: pair("output")?,
        total: pair("total")?.0,
        cached: pair("cached")?,
        reasoning: pair("reasoning")?.0,
        cost_total: pair("cost_total")?.0,
    };
    let lit: HashMap<String, String> = get(d, "literals")?;
    let l = |name: &str| -> PyResult<String> {
        lit.get(name).cloned().ok_or_else(|| {
            PyValueError::new_err(format!("native decoder config lacks literal {name}"))
        })
    };
    cfg.lit = config::Literals {
        chat: l("chat")?,
        other: l("other")?,
        default_tenant: l("default_tenant")?,
        error_type: l("error_type")?,
        traceloop_agent: l("traceloop_agent")?,
        traceloop_tool: l("traceloop_tool")?,
        level_error: l("level_error")?,
        tool_operation: l("tool_operation")?,
        status_error: get(d, "status_error")?,
    };
    type Limits = (i64, f64, usize, usize, f64, f64);
    let (max_tokens, max_cost, max_attr, max_dim, past, future): Limits = get(d, "limits")?;
    cfg.max_tokens = max_tokens;
    cfg.max_cost = max_cost;
    cfg.max_attr = max_attr;
    cfg.max_dim = max_dim;
    cfg.past_skew = past;
    cfg.future_skew = future;
    cfg.clock_needed = past != 0.0 || future != 0.0;
    let (log_gamma, min_value): (f64, f64) = get(d, "sketch")?;
    cfg.log_gamma = log_gamma;
    cfg.min_value = min_value;
    cfg.max_exemplars = get(d, "max_exemplars")?;
    let (tool_operation, max_tool_chars): (String, usize) = get(d, "tool_key")?;
    cfg.tool_key_operation = tool_operation;
    cfg.max_tool_key_chars = max_tool_chars;
    let llm_ops: Vec<String> = get(d, "llm_operations")?;
    cfg.llm_operations = llm_ops.into_iter().collect();
    Ok(cfg)
}

#[pyclass(module = "observatory.schemas._native", frozen)]
struct Decoder {
    cfg: Arc<Config>,
    now: Py<PyAny>,
    lookup: Py<PyAny>,
}

#[pymethods]
impl Decoder {
    #[new]
    fn new(config: &Bound<'_, PyDict>) -> PyResult<Self> {
        let cfg = build_config(config)?;
        let now: Py<PyAny> = get(config, "now")?;
        let lookup: Py<PyAny> = get(config, "price_lookup")?;
        Ok(Decoder {
            cfg: Arc::new(cfg),
            now,
            lookup,
        })
    }

    /// A new accumulator for one batch.
    fn batch(&self, py: Python<'_>, window_ns: u64) -> PyResult<Batch> {
        if window_ns == 0 {
            return Err(PyValueError::new_err("window_ns must be positive"));
        }
        Ok(Batch {
            cfg: self.cfg.clone(),
            now: self.now.clone_ref(py),
            lookup: self.lookup.clone_ref(py),
            prices: FxMap::default(),
            span_slots: span::Slots::new(self.cfg.n_keys()),
            resource_slots: span::Slots::new(self.cfg.n_keys()),
            agg: agg::Agg::new(window_ns),
            counters: [0; 6],
            span_dead: Vec::new(),
            record_dead: None,
        })
    }

    /// Only whether a record parses, as upb decides it (for tests).
    fn validate(&self, value: &[u8]) -> Option<&'static str> {
        wire::validate(&self.cfg.schema, value).err()
    }
}

#[pyclass(module = "observatory.schemas._native")]
struct Batch {
    cfg: Arc<Config>,
    now: Py<PyAny>,
    lookup: Py<PyAny>,
    /// (model, UTC day) -> price, for this batch
    prices: PriceCache,
    span_slots: span::Slots,
    resource_slots: span::Slots,
    agg: agg::Agg,
    /// records, spans, normalized, skipped_non_genai, dead_lettered_spans,
    /// dead_lettered_records of the records decoded natively
    counters: [u64; 6],
    span_dead: Vec<SpanReject>,
    record_dead: Option<(&'static str, String)>,
}

/// Whether `sniff_encoding` could say JSON: `value.lstrip(b" \t\r\n")`
/// starts with `{`. (It says PROTO for a protobuf whose first entry is 123
/// bytes long, "\n{...", after trying json.loads: Python decides those.)
fn maybe_json(value: &[u8]) -> bool {
    value
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&b| b == b'{')
}

impl Batch {
    /// A record that is one dead letter: its spans are not counted.
    fn dead_record(&mut self, reason: &'static str, detail: String) -> u8 {
        self.counters[0] += 1;
        self.counters[5] += 1;
        self.record_dead = Some((reason, detail));
        RECORD_DEAD_LETTER
    }
}

/// model -> [(UTC day, price)]
type PriceCache = FxMap<String, Vec<(i64, Option<Arc<PriceRow>>)>>;

/// `PriceTable.lookup(model, day * 86400.0)`, once per (model, day) and batch.
/// Prices change only at UTC midnights, so this is the price of every call
/// of that model whose `end_ns / 1e9` falls on that day.
fn price_of(
    py: Python<'_>,
    lookup: &Py<PyAny>,
    cache: &mut PriceCache,
    model: &str,
    day: i64,
) -> Result<Option<Arc<PriceRow>>, Stop> {
    if let Some(days) = cache.get(model) {
        if let Some((_, found)) = days.iter().find(|(d, _)| *d == day) {
            return Ok(found.clone());
        }
    }
    let fallback = |_| Stop::Fallback("price lookup failed");
    let price = lookup
        .call1(py, (model, day as f64 * 86400.0))
        .map_err(fallback)?;
    let price = price.bind(py);
    let row = if price.is_none() {
        None
    } else {
        let float = |name: &str| -> Result<Option<f64>, Stop> {
            let v = price.getattr(name).map_err(fallback)?;
            if v.is_none() {
                Ok(None)
            } else if v.is_exact_instance_of::<PyFloat>() {
                Ok(Some(v.extract::<f64>().map_err(fallback)?))
            } else {
                Err(Stop::Fallback("a price that is not a float"))
            }
        };
        let provider: String = price
            .getattr("provider")
            .and_then(|p| p.extract())
            .map_err(fallback)?;
        let input = float("input")?.ok_or(Stop::Fallback("a price without input"))?;
        let output = float("output")?.ok_or(Stop::Fallback("a price without output"))?;
        Some(Arc::new(PriceRow {
            provider,
            input,
            output,
            cached_input: float("cached_input")?,
            reasoning: float("reasoning")?,
        }))
    };
    cache
        .entry(model.to_owned())
        .or_default()
        .push((day, row.clone()));
    Ok(row)
}

fn call_clock(py: Python<'_>, now: &Py<PyAny>) -> Result<f64, Stop> {
    let value = now.call0(py).map_err(|e| Stop::Error(format!("{}", e)))?;
    let value = value.bind(py);
    if value.is_instance_of::<PyFloat>() || value.is_instance_of::<PyInt>() {
        value
            .extract::<f64>()
            .map_err(|e| Stop::Error(format!("{}", e)))
    } else {
        Err(Stop::Fallback("clock returned neither float nor int"))
    }
}

#[pymethods]
impl Batch {
    /// Decode one protobuf record. Returns 0 (done), 1 (not handled: decode it
    /// in Python and `add_calls` its calls), 2 (done, span dead letters to
    /// `take_span_dead_letters`) or 3 (the record is one dead letter:
    /// `take_record_dead_letter`).
    fn feed(&mut self, py: Python<'_>, value: &[u8]) -> u8 {
        if maybe_json(value) {
            return FALLBACK;
        }
        let cfg = self.cfg.clone();
        if let Err(e) = wire::validate(&cfg.schema, value) {
            return self.dead_record("invalid_protobuf", format!("Error parsing message: {e}"));
        }
        let mut out = RecordOut::default();
        let now = &self.now;
        let mut clock = || call_clock(py, now);
        let (lookup, prices) = (&self.lookup, &mut self.prices);
        let mut price = |model: &str, day: i64| price_of(py, lookup, prices, model, day);
        let (span_slots, resource_slots) = (&mut self.span_slots, &mut self.resource_slots);
        match span::process_record(&cfg, value, &mut clock, &mut price, span_slots, resource_slots, &mut out) {
            RecordOutcome::Fallback(_) => FALLBACK,
            RecordOutcome::DecodeError(detail) => self.dead_record("decode_error", detail),
            RecordOutcome::Done => {
                if out.spans == 0 {
                    return self.dead_record("empty_record", "record holds no spans".into());
                }
                let c = &mut self.counters;
                c[0] += 1;
                c[1] += out.spans;
                c[2] += out.normalized;
                c[3] += out.skipped;
                c[4] += out.dead.len() as u64;
                for call in &out.calls {
                    self.agg.add(&cfg, call);
                }
                if out.dead.is_empty() {
                    OK
                } else {
                    self.span_dead = out.dead;
                    SPAN_DEAD_LETTERS
                }
            }
        }
    }

    /// Why `feed` would fall back for this record (None: it would not), for tests.
    fn fallback_reason(&mut self, py: Python<'_>, value: &[u8]) -> Option<&'static str> {
        if maybe_json(value) {
            return Some("JSON");
        }
        if wire::validate(&self.cfg.schema, value).is_err() {
            return None;
        }
        let mut out = RecordOut::default();
        let now = &self.now;
        let mut clock = || call_clock(py, now);
        let (lookup, prices) = (&self.lookup, &mut self.prices);
        let mut price = |model: &str, day: i64| price_of(py, lookup, prices, model, day);
        let (span_slots, resource_slots) = (&mut self.span_slots, &mut self.resource_slots);
        match span::process_record(&self.cfg, value, &mut clock, &mut price, span_slots, resource_slots, &mut out) {
            RecordOutcome::Fallback(why) => Some(why),
            _ => None,
        }
    }

    /// [(reason, detail, resource_spans index, scope_spans index, span index)]
    fn take_span_dead_letters<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let dead = std::mem::take(&mut self.span_dead);
        let items: Vec<_> = dead
            .into_iter()
            .map(|d| (d.reason, d.detail, d.rs, d.ss, d.sp))
            .collect();
        PyList::new(py, items)
    }

    /// (reason, detail)
    fn take_record_dead_letter(&mut self) -> Option<(&'static str, String)> {
        self.record_dead.take()
    }

    /// Fold in the (already priced) calls Python decoded, in order.
    fn add_calls(&mut self, py: Python<'_>, calls: &Bound<'_, PyList>) -> PyResult<()> {
        let cfg = self.cfg.clone();
        for obj in calls.iter() {
            let s = |name: &Bound<'_, pyo3::types::PyString>| -> PyResult<std::borrow::Cow<'static, str>> {
                Ok(std::borrow::Cow::Owned(obj.getattr(name)?.extract::<String>()?))
            };
            let opt_f = |name: &Bound<'_, pyo3::types::PyString>| -> PyResult<Option<f64>> {
                let v = obj.getattr(name)?;
                if v.is_none() {
                    Ok(None)
                } else {
                    Ok(Some(v.extract::<f64>()?))
                }
            };
            let call = Call {
                tenant: s(intern!(py, "tenant"))?,
                service: s(intern!(py, "service"))?,
                provider: s(intern!(py, "provider"))?,
                model: s(intern!(py, "model"))?,
                operation: s(intern!(py, "operation"))?,
                agent: s(intern!(py, "agent"))?,
                tool: s(intern!(py, "tool"))?,
                tool_args_hash: s(intern!(py, "tool_args_hash"))?,
                session_id: s(intern!(py, "session_id"))?,
                trace_id: pyval::HexId::Heap(
                    obj.getattr(intern!(py, "trace_id"))?.extract::<String>()?,
                ),
                end_ns: obj.getattr(intern!(py, "end_ns"))?.extract()?,
                duration_ms: obj.getattr(intern!(py, "duration_ms"))?.extract()?,
                is_error: obj.getattr(intern!(py, "is_error"))?.is_truthy()?,
                input: obj.getattr(intern!(py, "input_tokens"))?.extract()?,
                output: obj.getattr(intern!(py, "output_tokens"))?.extract()?,
                cached: obj.getattr(intern!(py, "cached_input_tokens"))?.extract()?,
                reasoning: obj.getattr(intern!(py, "reasoning_tokens"))?.extract()?,
                cost: opt_f(intern!(py, "cost_usd"))?,
                ttft_ms: opt_f(intern!(py, "ttft_ms"))?,
            };
            if call.end_ns == 0 {
                return Err(PyValueError::new_err("a call without an end time"));
            }
            self.agg.add(&cfg, &call);
        }
        Ok(())
    }

    /// (max_event_ns, counters, groups, sessions); see schemas/fastpath.py.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        // The batch starts over, so it can be reused.
        let window_ns = self.agg.window_ns;
        let agg = std::mem::replace(&mut self.agg, agg::Agg::new(window_ns));
        let counters = std::mem::take(&mut self.counters);
        let groups = PyList::empty(py);
        for g in agg.groups {
            let bins = PyDict::new(py);
            for (k, v) in g.latency.bins.iter() {
                bins.set_item(k, v)?;
            }
            let ttft = match &g.ttft {
                None => py.None().into_bound(py),
                Some(t) => {
                    let tb = PyDict::new(py);
                    for (k, v) in t.bins.iter() {
                        tb.set_item(k, v)?;
                    }
                    (tb, t.zeros, t.count).into_bound_py_any(py)?
                }
            };
            let exemplars = PyList::new(py, g.exemplars.iter().map(|(d, t)| (*d, t.as_str())))?;
            let item: Vec<Bound<'py, PyAny>> = vec![
                g.tenant.into_bound_py_any(py)?,
                g.service.into_bound_py_any(py)?,
                g.provider.into_bound_py_any(py)?,
                g.model.into_bound_py_any(py)?,
                g.operation.into_bound_py_any(py)?,
                g.tool.into_bound_py_any(py)?,
                g.window.into_bound_py_any(py)?,
                g.calls.into_bound_py_any(py)?,
                g.errors.into_bound_py_any(py)?,
                g.input.into_bound_py_any(py)?,
                g.output.into_bound_py_any(py)?,
                g.cached.into_bound_py_any(py)?,
                g.reasoning.into_bound_py_any(py)?,
                g.cost.into_bound_py_any(py)?,
                g.unpriced.into_bound_py_any(py)?,
                (bins, g.latency.zeros, g.latency.count).into_bound_py_any(py)?,
                g.latency_max.into_bound_py_any(py)?,
                ttft,
                exemplars.into_any(),
            ];
            groups.append(PyTuple::new(py, item)?)?;
        }
        let sessions = PyList::empty(py);
        for s in agg.sessions {
            let events = PyList::new(
                py,
                s.tool_events
                    .iter()
                    .map(|(e, t, h)| (*e, t.as_str(), h.as_str())),
            )?;
            let llm_events = PyList::new(py, s.llm_events.iter().copied())?;
            let item: Vec<Bound<'py, PyAny>> = vec![
                s.key.as_str().into_bound_py_any(py)?,
                s.tenant.as_str().into_bound_py_any(py)?,
                s.session_id().into_bound_py_any(py)?,
                s.service.into_bound_py_any(py)?,
                s.agent.into_bound_py_any(py)?,
                s.first_ns.into_bound_py_any(py)?,
                s.last_ns.into_bound_py_any(py)?,
                s.llm_calls.into_bound_py_any(py)?,
                s.tool_calls.into_bound_py_any(py)?,
                s.errors.into_bound_py_any(py)?,
                s.input.into_bound_py_any(py)?,
                s.output.into_bound_py_any(py)?,
                s.cost.into_bound_py_any(py)?,
                s.unpriced.into_bound_py_any(py)?,
                events.into_any(),
                s.trace_id.into_bound_py_any(py)?,
                llm_events.into_any(),
            ];
            sessions.append(PyTuple::new(py, item)?)?;
        }
        let counters = PyTuple::new(py, counters)?;
        PyTuple::new(
            py,
            [
                agg.max_event_ns.into_bound_py_any(py)?,
                counters.into_any(),
                groups.into_any(),
                sessions.into_any(),
            ],
        )
    }
}

// --- helpers exposed for the tests -------------------------------------------------

/// `hashlib.blake2b(data, digest_size=n).hexdigest()`
#[pyfunction]
fn blake2b_hex(data: &[u8], n: usize) -> String {
    pyval::hex(&blake2b::blake2b(data, n))
}

/// `float(text)`: a float, "invalid" (ValueError) or "unsupported" (left to Python).
#[pyfunction]
fn py_float<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    match pyval::py_float_from_str(text) {
        Ok(pyval::PyFloat::Ok(f)) => f.into_bound_py_any(py),
        Ok(pyval::PyFloat::Invalid) => "invalid".into_bound_py_any(py),
        Err(_) => "unsupported".into_bound_py_any(py),
    }
}

/// `datetime.fromisoformat(text).timestamp()` in microseconds, or None (left to Python).
#[pyfunction]
fn iso_micros(text: &str) -> Option<i64> {
    isotime::parse_micros(text).ok()
}

/// The day bucket of an end time (for tests).
#[pyfunction]
fn day_of(end_ns: u64) -> i64 {
    agg::day_of(end_ns)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Decoder>()?;
    m.add_class::<Batch>()?;
    m.add_function(wrap_pyfunction!(blake2b_hex, m)?)?;
    m.add_function(wrap_pyfunction!(py_float, m)?)?;
    m.add_function(wrap_pyfunction!(iso_micros, m)?)?;
    m.add_function(wrap_pyfunction!(day_of, m)?)?;
    m.add("FEED_OK", OK)?;
    m.add("FEED_FALLBACK", FALLBACK)?;
    m.add("FEED_SPAN_DEAD_LETTERS", SPAN_DEAD_LETTERS)?;
    m.add("FEED_RECORD_DEAD_LETTER", RECORD_DEAD_LETTER)?;
    Ok(())
}
