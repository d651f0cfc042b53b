"""Native fast path of the OTLP trace decoder (``observatory.schemas._native``).

``FastTraceDecoder(decoder).decode_batch(batch, window_ns)`` returns what
``operators.ingest.decode_batch(decoder, batch, window_ns)`` returns (without
``calls``), several times faster: the Rust extension parses protobuf records,
normalizes the GenAI dialects, validates, prices, assigns windows and
pre-aggregates window statistics and session partials; Python builds the
result objects.

Prices: the extension asks ``PriceTable.lookup(model, day * 86400.0)`` once
per model and UTC day of a batch. Prices change only at UTC midnights
(``valid_from`` is a date), so that is the price ``PriceTable.apply`` finds
for every call of the model whose ``end_ns / 1e9`` falls on that day. The
cost of a call is ``Price.cost``'s arithmetic, the same float operations in
the same order, so costs are equal to the last bit.

What stays in Python, per record, with the same code as the pure path:

* records that are not protobuf, or are empty, oversized or mislabelled
  (``TraceDecoder.decode`` gives their calls or dead letters);
* records that the native code does not reproduce exactly: it stops on the
  rare values whose handling needs more of Python than it carries (``repr``
  of a float or a non-empty list used as text, Unicode case mapping of
  non-ASCII provider names and span kinds, unusual number, JSON or timestamp
  text); it never guesses;
* the bytes of a dead-lettered span: the record is parsed again by upb and
  the letter built by ``TraceDecoder._dead_span_proto``, so it is
  byte-identical to the pure path's.

Calls that Python decoded are folded into the native accumulators in record
order (session partials keep the first service/agent/trace id seen, so order
matters). The dialect key lists, value maps, limits, price table, clock and
sketch settings all come from the objects the pure path uses: there is one
source of truth for each.

Settings the native code cannot represent exactly (a ``TraceDecoder`` or
``PriceTable`` subclass, non-integer limits, a map key that could be the
``str()`` of a number) make :class:`FastTraceDecoder` use the pure path for
everything; :attr:`FastTraceDecoder.native` tells which one is used.

The decoder's settings are read once, at construction.

Two things are not literally the pure path's:

* the clock (``TraceDecoder``'s ``now``, called only when a skew limit is
  set) is called once per GenAI span, as in Python, but a record that falls
  back to Python after the native code read the clock for some of its spans
  has those spans' clock read again;
* a batch in which Python decoded a call the native accumulators cannot hold
  (an OTLP/JSON end time of 2**64 ns or more; a lone surrogate in a JSON
  string no longer reaches a call: ``dialects.checked_text`` rejects it) is
  decoded again, whole, by the pure path.

Neither changes a result unless the clock is not a clock (it has side effects).
Per record the native path costs a few microseconds more than per span, so
spans/s are lower for records of one or two spans than for the Collector's
usual batches.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from observatory.operators import sessions as _sessions
from observatory.operators import sketch as _sketch
from observatory.operators import stats as _stats
from observatory.operators.sessions import SessionPartial
from observatory.operators.sketch import QuantileSketch
from observatory.operators.stats import StatsAcc
from observatory.schemas import dialects
from observatory.schemas.dialects import Limits, Reject
from observatory.schemas.otlp import JSON, PROTO, DecodeResult, TraceDecoder, header_encoding
from observatory.schemas.pricing import PriceTable
from observatory.schemas.records import DeadLetter, DecodeCounters, RecordBatch, SourceRef

try:
    from observatory.schemas import _native
except ImportError:  # built without Rust (the extension is optional)
    _native = None

log = logging.getLogger(__name__)

if _native is not None:
    _OK = _native.FEED_OK
    _FALLBACK = _native.FEED_FALLBACK
    _SPAN_DEAD_LETTERS = _native.FEED_SPAN_DEAD_LETTERS
    _RECORD_DEAD_LETTER = _native.FEED_RECORD_DEAD_LETTER

#: Whether SessionPartial keeps (end_ns, cost) of each LLM call.
_HAS_LLM_EVENTS = "llm_events" in {f.name for f in dataclasses.fields(SessionPartial)}

__all__ = ["FastTraceDecoder", "available"]


def available() -> bool:
    """Whether the native extension was built and imports."""
    return _native is not None


# --- what the native code is told ---------------------------------------------------
# Key lists of dialects.py, by name. Literal strings that dialects.build_call,
# TraceDecoder and the session code use outside any table are listed here,
# each with where it comes from.
_LISTS = (
    "PROVIDER",
    "RESPONSE_MODEL",
    "REQUEST_MODEL",
    "INPUT_TOKENS",
    "OUTPUT_TOKENS",
    "TOTAL_TOKENS",
    "CACHED_TOKENS",
    "REASONING_TOKENS",
    "COST",
    "AGENT",
    "TOOL",
    "TOOL_ARGS",
    "SESSION",
    "TTFT_SECONDS",
    "ERROR_TYPE",
    "ENVIRONMENT",
)
_SINGLES = (
    "OPERATION_NAME",
    "OPENINFERENCE_KIND",
    "TRACELOOP_KIND",
    "TRACELOOP_ENTITY",
    "LLM_REQUEST_TYPE",
    "LANGFUSE_TYPE",
    "LANGFUSE_LEVEL",
    "LANGFUSE_USAGE",
    "LANGFUSE_COST",
    "LANGFUSE_COMPLETION_START",
)
#: TraceDecoder._make_call reads the resource's "service.name" by that literal.
_SERVICE_KEY = "service.name"
#: dialects.build_call: the keys it reads from Langfuse's usage/cost objects,
#: as ``usage.get(first, usage.get(second))`` pairs.
_USAGE_KEYS = {
    "input": ["input", "prompt_tokens"],
    "output": ["output", "completion_tokens"],
    "total": ["total"],
    "cached": ["cache_read_input_tokens", "input_cached_tokens"],
    "reasoning": ["output_reasoning_tokens"],
    "cost_total": ["total"],
}
_LITERALS = {
    "chat": "chat",  # build_call: the operation of a span with a model or tokens
    "other": "other",  # _operation's default, and build_call's last resort
    "default_tenant": "default",  # TraceDecoder._tenant
    "error_type": "error",  # build_call: error without a type
    "traceloop_agent": "agent",  # build_call: traceloop.span.kind values that name
    "traceloop_tool": "tool",  # the entity as agent / tool
    "level_error": "ERROR",  # build_call: langfuse.observation.level
    "tool_operation": "execute_tool",  # SessionPartial.add
}
_STATUS_ERROR = 2  # otlp._STATUS_ERROR

_WIRE = {
    FieldDescriptor.TYPE_DOUBLE: "i64",
    FieldDescriptor.TYPE_FIXED64: "i64",
    FieldDescriptor.TYPE_SFIXED64: "i64",
    FieldDescriptor.TYPE_FLOAT: "i32",
    FieldDescriptor.TYPE_FIXED32: "i32",
    FieldDescriptor.TYPE_SFIXED32: "i32",
    FieldDescriptor.TYPE_INT32: "varint",
    FieldDescriptor.TYPE_INT64: "varint",
    FieldDescriptor.TYPE_UINT32: "varint",
    FieldDescriptor.TYPE_UINT64: "varint",
    FieldDescriptor.TYPE_SINT32: "varint",
    FieldDescriptor.TYPE_SINT64: "varint",
    FieldDescriptor.TYPE_BOOL: "varint",
    FieldDescriptor.TYPE_ENUM: "varint",
    FieldDescriptor.TYPE_STRING: "str",
    FieldDescriptor.TYPE_BYTES: "bytes",
}
_WIRE_TYPE = {"varint": 0, "i64": 1, "str": 2, "bytes": 2, "msg": 2, "i32": 5}


class _Unrepresentable(Exception):
    """A Python-decoded call the native accumulators cannot hold."""


class _NotNative(Exception):
    """A setting the native code cannot reproduce exactly."""


def _wire_schema() -> list[list[tuple[int, str, int]]]:
    """Every message type reachable from TracesData, TracesData first, as
    (field number, kind, submessage index) lists: what upb validates."""
    order = [TracesData.DESCRIPTOR]
    index = {TracesData.DESCRIPTOR.full_name: 0}
    schema = []
    at = 0
    while at < len(order):
        fields = []
        for f in order[at].fields:
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                sub = f.message_type
                if sub.full_name not in index:
                    index[sub.full_name] = len(order)
                    order.append(sub)
                fields.append((f.number, "msg", index[sub.full_name]))
            elif f.type in _WIRE:
                kind = _WIRE[f.type]
                if f.is_repeated and kind in ("varint", "i64", "i32"):
                    kind = "packed_" + kind
                fields.append((f.number, kind, 0))
            else:  # groups (proto2 only)
                raise _NotNative(f"field {f.full_name} of type {f.type}")
        schema.append(fields)
        at += 1
    return schema


def _anyvalue_other_oneof() -> list[tuple[int, int]]:
    """Members of AnyValue's oneof besides fields 1..7 (e.g. string_value_strindex):
    setting one makes ``_any_value`` return None."""
    known = {1: "string_value", 2: "bool_value", 3: "int_value", 4: "double_value",
             5: "array_value", 6: "kvlist_value", 7: "bytes_value"}  # fmt: skip
    out = []
    for f in AnyValue.DESCRIPTOR.oneofs_by_name["value"].fields:
        if known.get(f.number) == f.name:
            continue
        if f.number in known:
            raise _NotNative(f"AnyValue field {f.number} is {f.name}")
        kind = "msg" if f.type == FieldDescriptor.TYPE_MESSAGE else _WIRE.get(f.type)
        if kind is None:
            raise _NotNative(f"AnyValue field {f.name}")
        out.append((f.number, _WIRE_TYPE[kind]))
    return out


def _text_safe(key: str) -> bool:
    """A value-map key that ``str()`` of a non-str attribute value (int,
    float, bool, list, dict, also upper-cased) can never equal: the native
    code maps such values to "other" without formatting them."""
    if key[:1] in ("[", "{") or key.lower() in ("true", "false"):
        return False
    try:
        float(key)
    except ValueError:
        return True
    return False


def _exact_float(value: Any, name: str) -> float:
    if type(value) is float:
        return value
    if type(value) is int and abs(value) <= 2**53:
        return float(value)
    raise _NotNative(f"{name}={value!r}")


def _native_config(decoder: TraceDecoder) -> dict[str, Any]:
    if type(decoder) is not TraceDecoder:
        raise _NotNative(f"decoder is a {type(decoder).__name__}")
    if type(decoder.prices) is not PriceTable:
        # Pricing per (model, UTC day) relies on PriceTable's dated histories.
        raise _NotNative(f"prices is a {type(decoder.prices).__name__}")
    limits = decoder.limits
    if type(limits) is not Limits:
        raise _NotNative(f"limits is a {type(limits).__name__}")
    if type(limits.max_tokens) is not int or not -(2**63) <= limits.max_tokens < 2**63:
        raise _NotNative(f"max_tokens={limits.max_tokens!r}")
    max_attr = limits.max_attribute_bytes
    if type(max_attr) is not int or not 0 <= max_attr < 2**63:
        raise _NotNative(f"max_attribute_bytes={max_attr!r}")
    max_dim = limits.max_dimension_bytes
    if type(max_dim) is not int or not 0 <= max_dim < 2**63:
        raise _NotNative(f"max_dimension_bytes={max_dim!r}")
    if any(type(k) is not str for k in decoder.tenant_keys):
        raise _NotNative("a tenant key is not a str")
    maps = {
        "operations": dialects._OPERATIONS,
        "openinference_ops": dialects._OPENINFERENCE_OPS,
        "llm_request_types": dialects._LLM_REQUEST_TYPES,
        "traceloop_ops": dialects._TRACELOOP_OPS,
        "langfuse_ops": dialects._LANGFUSE_OPS,
        "provider_aliases": dialects._PROVIDER_ALIASES,
    }
    for name, mapping in maps.items():
        if name != "provider_aliases" and not all(map(_text_safe, mapping)):
            raise _NotNative(f"dialects map {name} has a key like str() of a number")
    probe = QuantileSketch()
    return {
        "schema": _wire_schema(),
        "anyvalue_other_oneof": _anyvalue_other_oneof(),
        "span_keys": sorted(decoder._span_keys),
        "resource_keys": sorted(decoder._resource_keys),
        "signal_keys": sorted(dialects.GENAI_SIGNAL_KEYS),
        "tenant_keys": list(decoder.tenant_keys),
        "lists": {name: list(getattr(dialects, name)) for name in _LISTS},
        "singles": {
            **{name: getattr(dialects, name) for name in _SINGLES},
            "SERVICE_NAME": _SERVICE_KEY,
        },
        "maps": {name: dict(mapping) for name, mapping in maps.items()},
        "usage_keys": _USAGE_KEYS,
        "literals": _LITERALS,
        "status_error": _STATUS_ERROR,
        "limits": (
            limits.max_tokens,
            _exact_float(limits.max_cost_usd, "max_cost_usd"),
            max_attr,
            max_dim,
            _exact_float(limits.max_past_skew_s, "max_past_skew_s"),
            _exact_float(limits.max_future_skew_s, "max_future_skew_s"),
        ),
        "sketch": (probe._log_gamma, float(_sketch._MIN_VALUE)),
        "max_exemplars": _stats._MAX_EXEMPLARS,
        # stats.tool_key: (the operation keyed by tool name, longest name kept)
        "tool_key": (_stats.TOOL_OPERATION, _stats.MAX_TOOL_KEY_CHARS),
        "llm_operations": sorted(_sessions._LLM_OPERATIONS),
        "now": decoder._now,
        "price_lookup": decoder.prices.lookup,
    }


def _python_decode_batch(decoder: TraceDecoder, batch: RecordBatch, window_ns: int):
    # Imported here: operators.ingest may import this module.
    from observatory.operators import ingest

    pure = getattr(ingest, "decode_batch_python", None) or ingest.decode_batch
    return pure(decoder, batch, window_ns)


class FastTraceDecoder:
    """``decode_batch`` of a :class:`TraceDecoder`, with the native fast path.

    >>> fast = FastTraceDecoder(TraceDecoder())
    >>> fast.decode_batch(RecordBatch("spans-0"), 60 * 10**9).counters.records
    0
    """

    def __init__(self, decoder: TraceDecoder):
        self.decoder = decoder
        self._native = None
        #: why the pure path is used for everything ("" when the native one is)
        self.reason = ""
        #: records decoded so far by the native code / handed to TraceDecoder.decode
        self.native_records = 0
        self.python_records = 0
        if _native is None:
            self.reason = "the native extension is not built"
            return
        try:
            self._native = _native.Decoder(_native_config(decoder))
        except _NotNative as exc:
            self.reason = f"setting not supported natively: {exc}"
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            # A table this module reads was renamed or changed shape: the pure
            # path, and tests/test_fastpath.py fails on `native` being False.
            log.warning("native trace decoder disabled: %s: %s", type(exc).__name__, exc)
            self.reason = f"cannot configure the native decoder: {type(exc).__name__}: {exc}"

    @property
    def native(self) -> bool:
        return self._native is not None

    def decode_batch(self, batch: RecordBatch, window_ns: int):
        native = self._native
        if native is None or type(window_ns) is not int or not 0 < window_ns < 2**64:
            return _python_decode_batch(self.decoder, batch, window_ns)
        try:
            return self._decode_batch(native.batch(window_ns), batch, window_ns)
        except _Unrepresentable:
            return _python_decode_batch(self.decoder, batch, window_ns)
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":
                raise
            log.exception("native trace decoder failed; using the Python decoder from now on")
            self._native = None
            self.reason = f"native decoder panicked: {exc}"
            return _python_decode_batch(self.decoder, batch, window_ns)

    def _decode_batch(self, acc, batch: RecordBatch, window_ns: int):
        from observatory.operators.ingest import DecodedBatch

        decoder = self.decoder
        out = DecodedBatch(batch.part_id, batch.caught_up)
        dead_letters = out.dead_letters
        counters = out.counters
        feed = acc.feed
        max_bytes = decoder.max_record_bytes
        default_native = decoder.default_encoding != JSON
        native_records = python_records = 0
        for record in batch.records:
            value = record.value
            headers = record.headers
            if type(value) is bytes and value and len(value) <= max_bytes:
                if headers:
                    try:
                        declared = header_encoding(headers)
                    except Exception:
                        declared = JSON  # TraceDecoder.decode turns it into a dead letter
                    use_native = declared == PROTO or (declared is None and default_native)
                else:
                    use_native = default_native
                if use_native:
                    status = feed(value)
                    if status != _FALLBACK:
                        native_records += 1
                    if status == _OK:
                        continue
                    if status == _SPAN_DEAD_LETTERS:
                        self._span_dead_letters(acc.take_span_dead_letters(), record, dead_letters)
                        continue
                    if status == _RECORD_DEAD_LETTER:
                        reason, detail = acc.take_record_dead_letter()
                        source = SourceRef(record.topic, record.partition, record.offset)
                        dead_letters.append(
                            DeadLetter(reason, detail[:500], value, source, list(headers or []))
                        )
                        continue
            python_records += 1
            result = decoder.decode(
                value, SourceRef(record.topic, record.partition, record.offset), headers
            )
            if result.calls:
                try:
                    acc.add_calls(result.calls)
                except (OverflowError, UnicodeEncodeError, ValueError) as exc:
                    # A call the native accumulators cannot hold (an end time
                    # beyond 64 bits, only from OTLP/JSON; text they could not
                    # hold, a lone surrogate, is dead-lettered by checked_text):
                    # the pure path for this batch.
                    raise _Unrepresentable from exc
            dead_letters.extend(result.dead_letters)
            counters.add(result.counters)
        self.native_records += native_records
        self.python_records += python_records
        max_event_ns, native_counters, groups, sessions = acc.finish()
        counters.add(DecodeCounters(*native_counters))
        out.max_event_ns = max_event_ns
        out.partials = self._partials(groups)
        out.sessions = self._sessions(sessions)
        return out

    def _span_dead_letters(self, items, record, dead_letters: list[DeadLetter]) -> None:
        # The same letter as the pure path: upb parses the record again (only
        # records with a rejected span pay for it) and TraceDecoder builds it.
        data = TracesData()
        data.ParseFromString(record.value)
        source = SourceRef(record.topic, record.partition, record.offset)
        headers = list(record.headers or [])
        result = DecodeResult()
        for reason, detail, rs_index, ss_index, span_index in items:
            resource_spans = data.resource_spans[rs_index]
            scope_spans = resource_spans.scope_spans[ss_index]
            span = scope_spans.spans[span_index]
            self.decoder._dead_span_proto(
                result, resource_spans, scope_spans, span, source, headers, Reject(reason, detail)
            )
        dead_letters.extend(result.dead_letters)

    @staticmethod
    def _partials(groups) -> dict:
        partials: dict = {}
        for (
            tenant,
            service,
            provider,
            model,
            operation,
            tool,
            window_start,
            calls,
            errors,
            input_tokens,
            output_tokens,
            cached_tokens,
            reasoning_tokens,
            cost,
            unpriced,
            latency,
            latency_max,
            ttft,
            exemplars,
        ) in groups:
            acc = StatsAcc()
            acc.calls = calls
            acc.errors = errors
            acc.input_tokens = input_tokens
            acc.output_tokens = output_tokens
            acc.cached_input_tokens = cached_tokens
            acc.reasoning_tokens = reasoning_tokens
            acc.cost_usd = cost
            acc.unpriced_calls = unpriced
            acc.latency.bins, acc.latency.zeros, acc.latency.count = latency
            acc.latency_max_ms = latency_max
            if ttft is not None:
                acc.ttft = QuantileSketch()
                acc.ttft.bins, acc.ttft.zeros, acc.ttft.count = ttft
            acc.exemplars = exemplars
            partials[(tenant, service, provider, model, operation, tool), window_start] = acc
        return partials

    @staticmethod
    def _sessions(sessions) -> dict[str, SessionPartial]:
        out: dict[str, SessionPartial] = {}
        for (
            key,
            tenant,
            session_id,
            service,
            agent,
            first_ns,
            last_ns,
            llm_calls,
            tool_calls,
            errors,
            input_tokens,
            output_tokens,
            cost,
            unpriced,
            tool_events,
            trace_id,
            llm_events,
        ) in sessions:
            part = SessionPartial(
                tenant=tenant,
                session_id=session_id,
                service=service,
                agent=agent,
                first_ns=first_ns,
                last_ns=last_ns,
                llm_calls=llm_calls,
                tool_calls=tool_calls,
                errors=errors,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=cost,
                unpriced_calls=unpriced,
                tool_events=tool_events,
                trace_id=trace_id,
            )
            if _HAS_LLM_EVENTS:
                part.llm_events = llm_events
            out[key] = part
        return out
