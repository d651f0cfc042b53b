"""Decode, normalize, price and pre-aggregate one batch of Kafka records.

This is the per-span hot path, and it runs where the records were read,
before anything crosses a worker boundary: a batch of thousands of spans
leaves this step as a handful of partial window aggregates.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from observatory.operators.sessions import SessionPartial, session_partials
from observatory.operators.stats import StatsAcc, WindowKey, preaggregate
from observatory.operators.windows import ShardInput
from observatory.schemas.fastpath import FastTraceDecoder
from observatory.schemas.otlp import TraceDecoder
from observatory.schemas.records import (
    DeadLetter,
    DecodeCounters,
    LlmCall,
    RecordBatch,
    SourceRef,
)


@dataclass(slots=True)
class DecodedBatch:
    part_id: str
    caught_up: bool
    max_event_ns: int = 0
    partials: dict[WindowKey, StatsAcc] = field(default_factory=dict)
    sessions: dict[str, SessionPartial] = field(default_factory=dict)
    calls: list[LlmCall] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    counters: DecodeCounters = field(default_factory=DecodeCounters)
    finished: bool = False


def decode_batch(
    decoder: TraceDecoder,
    batch: RecordBatch,
    window_ns: int,
    *,
    keep_calls: bool = False,
    fast: FastTraceDecoder | None = None,
) -> DecodedBatch:
    """Decode every record of a batch and fold its calls into window partials.

    With ``fast`` (a :class:`~observatory.schemas.fastpath.FastTraceDecoder`
    built on the same decoder) the native path does the work, with results
    equal to the pure-Python path's (``tests/test_fastpath.py``).
    """
    if fast is not None and fast.native and not keep_calls:
        decoded = fast.decode_batch(batch, window_ns)
    else:
        decoded = decode_batch_python(decoder, batch, window_ns, keep_calls=keep_calls)
    decoded.finished = batch.finished
    return decoded


def decode_batch_python(
    decoder: TraceDecoder, batch: RecordBatch, window_ns: int, *, keep_calls: bool = False
) -> DecodedBatch:
    """The pure-Python reference path of :func:`decode_batch`."""
    out = DecodedBatch(batch.part_id, batch.caught_up)
    calls: list[LlmCall] = []
    for record in batch.records:
        result = decoder.decode(
            record.value, SourceRef(record.topic, record.partition, record.offset), record.headers
        )
        calls.extend(result.calls)
        out.dead_letters.extend(result.dead_letters)
        out.counters.add(result.counters)
    if calls:
        out.max_event_ns = max(call.end_ns for call in calls)
        out.partials = preaggregate(calls, window_ns)
        out.sessions = session_partials(calls)
    if keep_calls:
        out.calls = calls
    return out


def shard_of(key: tuple[str, ...], shards: int) -> int:
    """A stable shard for a key (Python's ``hash`` differs between processes)."""
    return zlib.crc32("\x1f".join(key).encode("utf-8", "surrogatepass")) % shards


def shard_name(index: int) -> str:
    return f"shard-{index:04d}"


def route_to_shards(decoded: DecodedBatch, shards: int) -> Iterator[tuple[str, ShardInput]]:
    """Send each partial to its key's shard, and progress to every shard.

    Every shard hears about every source partition's progress, so each can
    compute the same watermark; the counters go to shard 0 only, so they are
    counted once and kept in the recovery snapshots with everything else.
    """
    per_shard: list[list[tuple[WindowKey, StatsAcc]]] = [[] for _ in range(shards)]
    for window_key, acc in decoded.partials.items():
        per_shard[shard_of(window_key[0], shards)].append((window_key, acc))
    sessions: list[list[tuple[str, SessionPartial]]] = [[] for _ in range(shards)]
    for key, part in decoded.sessions.items():
        sessions[shard_of((key,), shards)].append((key, part))
    for index in range(shards):
        yield (
            shard_name(index),
            ShardInput(
                decoded.part_id,
                decoded.max_event_ns,
                decoded.caught_up,
                per_shard[index],
                decoded.counters if index == 0 else None,
                sessions[index],
                decoded.finished,
            ),
        )
