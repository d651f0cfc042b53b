"""GenAI metric points → delta points → the same window partials as spans.

Three pure pieces, and the glue that runs them in the dataflow:

* :class:`CumulativeToDelta` turns cumulative points into deltas, one series
  at a time. It must see *every* point of a series, so points are routed by
  a function of the series. Route by :attr:`MetricPoint.key` (the stats key,
  itself a function of the series' attributes): then every series stays on
  one shard, *and* all series of one key meet on the shard that also owns
  that key's span windows (see :func:`route_metrics_to_shards`).
* :func:`points_to_partials` folds delta points into ``{WindowKey: StatsAcc}``,
  exactly what :func:`~observatory.operators.stats.preaggregate` gives for spans.
* :class:`ReportedCostKeys` remembers which keys report a cost metric, so a
  computed cost never adds to a reported one.

How a histogram becomes latency quantiles
-----------------------------------------

A histogram tells how many calls fell in each bucket ``(lo, hi]``, not where
inside it. Each bucket's count is added to the sketch at one representative
value, the *harmonic mean* ``2·lo·hi / (lo + hi)``: it has the same largest
relative error at both ends of the bucket, ``(hi - lo) / (hi + lo)``. So the
error of a quantile is the bucket resolution, not the sketch's 0.5%:

* the conventions' boundaries (0.01, 0.02, 0.04 … 81.92 s, ×2) give at most
  ±33%;
* the SDKs' default boundaries (0, 5, 10, 25 … in *seconds*) put every call
  under 5 s in one bucket: nearly useless, unless min/max or a single
  non-empty bucket pin the values down (below).

Known values narrow the buckets: the lowest non-empty bucket starts at
``min`` and the highest ends at ``max`` when the point has them; values are
non-negative, so the first bucket starts at 0; the overflow bucket without a
``max`` is represented by its lower bound (an underestimate). When only one
bucket is non-empty, all values are placed at the mean ``sum / count``
(exact for one call, or when ``min == max``). A point without buckets is
added at its mean. ``latency_max_ms`` is the point's ``max`` if present,
else the upper bound of the highest non-empty finite bucket (the largest
finite bound when only the overflow bucket is non-empty: a lower bound).

What metrics cannot tell
------------------------

* Cost: a reported ``gen_ai.usage.cost`` wins. Otherwise cost is computed as
  input tokens × input price + output tokens × output price at the point's
  time. Metrics carry no cached or reasoning split, so cached input tokens
  are priced as full input tokens (an overestimate where prompt caching is
  used) and ``cached_input_tokens``/``reasoning_tokens`` stay 0.
* ``unpriced_calls`` counts the calls (duration points) of a model without a
  price, when its key reports no cost metric.
* Exemplars: each duration point offers its exemplars' trace ids.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import pickle
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from observatory.operators.ingest import shard_name, shard_of
from observatory.operators.sketch import QuantileSketch
from observatory.operators.stats import StatsAcc, StatsKey, WindowKey
from observatory.operators.windows import CountersRow, ShardInput
from observatory.schemas.otlp_metrics import (
    COST,
    CUMULATIVE,
    DELTA,
    DURATION,
    TOKEN_INPUT,
    TOKEN_OUTPUT,
    TTFT,
    MetricPoint,
    MetricsDecodeCounters,
    MetricsDecoder,
)
from observatory.schemas.pricing import PriceTable
from observatory.schemas.records import DeadLetter, RecordBatch, SourceRef

NS = 1_000_000_000
INITIAL_VALUES = ("auto", "keep", "drop")


# --- cumulative to delta ------------------------------------------------------------------


@dataclass(slots=True)
class DeltaCounters:
    """What :class:`CumulativeToDelta` did with the points it was given."""

    delta_passed: int = 0  #: delta points passed through
    cumulative_deltas: int = 0  #: differences of two cumulative points
    first_kept: int = 0  #: first cumulative points taken as a delta from their start
    first_dropped: int = 0  #: first cumulative points kept only as the baseline
    resets: int = 0  #: start changed or values went down: the point itself is the delta
    bucketless: int = 0  #: bucket layout changed: the delta keeps count/sum, not buckets
    unchanged: int = 0  #: nothing happened since the previous point
    duplicates: int = 0  #: same time (cumulative) or same interval (delta) seen before
    out_of_order: int = 0  #: older than the series' latest point
    rebased_after_eviction: int = 0  #: an evicted series came back: baseline only
    evicted_idle: int = 0
    evicted_lru: int = 0

    def values(self) -> tuple[tuple[str, int], ...]:
        return tuple(
            (f"metric_delta_{f.name}", getattr(self, f.name)) for f in dataclasses.fields(self)
        )


def _rebucket(
    bounds: tuple[float, ...], counts: tuple[int, ...], onto: tuple[float, ...]
) -> list[int] | None:
    """``counts`` over ``bounds`` moved onto the buckets of ``onto``; None if a
    non-empty old bucket straddles a new bound (it cannot be split).

    Exponential histograms that lower their scale or widen their range line up:

    >>> _rebucket((1.0, 2.0, 4.0), (0, 3, 5, 0), (1.0, 4.0, 16.0))
    [0, 8, 0, 0]
    >>> _rebucket((1.0, 4.0), (0, 3, 0), (1.0, 2.0, 4.0)) is None
    True
    """
    out = [0] * (len(onto) + 1)
    for i, n in enumerate(counts):
        if not n:
            continue
        lo = bounds[i - 1] if i > 0 else -math.inf
        hi = bounds[i] if i < len(bounds) else math.inf
        j = bisect.bisect_left(onto, hi)  # the new bucket (onto[j-1], onto[j]] that holds hi
        if (onto[j - 1] if j > 0 else -math.inf) > lo:
            return None
        out[j] += n
    return out


class CumulativeToDelta:
    """Turn every series' points into deltas (OpenTelemetry data model).

    Pure, picklable and bounded: a series not seen for ``idle_ttl_ns`` of
    event time (the latest point time this instance saw) is evicted, and
    past ``max_series`` the least recently updated one is. An evicted series
    leaves a tombstone (its start time, bounded the same way) so that coming
    back with the same start is not mistaken for a new series.

    * delta points pass through; an exact repeat of a series' latest interval
      is a duplicate (``None``);
    * a cumulative point after an earlier one of its series gives their
      difference over ``(previous time, time]``;
    * a reset (start time changed, or count/sum/a bucket went down) gives the
      point itself: everything since the new start;
    * a point at or before the series' latest time (out of order, duplicate)
      gives ``None`` and leaves the state alone;
    * the first cumulative point of a series depends on ``initial_value``:
      ``keep`` takes it as a delta from its start when the start is known;
      ``auto`` (default) only when the start is also at most
      ``max_initial_age_ns`` before it (a series seen from its birth, not one
      joined in the middle: the Collector's ``cumulativetodelta`` ``auto``
      rule, in event time); ``drop`` never does. Otherwise it is only the
      baseline.

    >>> p = MetricPoint("s", "duration", "cumulative", 10, 20, count=2, sum=3.0)
    >>> c = CumulativeToDelta()
    >>> c.delta(p).count
    2
    >>> d = c.delta(dataclasses.replace(p, time_ns=30, count=5, sum=9.0))
    >>> (d.temporality, d.start_ns, d.time_ns, d.count, d.sum)
    ('delta', 20, 30, 3, 6.0)
    """

    def __init__(
        self,
        *,
        idle_ttl_ns: int = 3600 * NS,
        max_series: int = 200_000,
        initial_value: str = "auto",
        max_initial_age_ns: int = 600 * NS,
    ):
        if initial_value not in INITIAL_VALUES:
            raise ValueError(f"initial_value must be one of {INITIAL_VALUES}")
        if max_series < 1 or idle_ttl_ns <= 0:
            raise ValueError("max_series and idle_ttl_ns must be positive")
        self.idle_ttl_ns = idle_ttl_ns
        self.max_series = max_series
        self.initial_value = initial_value
        self.max_initial_age_ns = max_initial_age_ns
        self.counters = DeltaCounters()
        self._series: OrderedDict[str, MetricPoint] = OrderedDict()
        self._tombstones: OrderedDict[str, int] = OrderedDict()
        self._clock_ns = 0
        self._swept_ns = 0

    def __len__(self) -> int:
        return len(self._series)

    def __contains__(self, series_id: str) -> bool:
        return series_id in self._series

    # --- bounds -----------------------------------------------------------------

    def _evict(self, series_id: str, last: MetricPoint) -> None:
        if last.temporality == CUMULATIVE:
            self._tombstones[series_id] = last.start_ns
            self._tombstones.move_to_end(series_id)
            while len(self._tombstones) > self.max_series:
                self._tombstones.popitem(last=False)

    def _advance(self, time_ns: int) -> None:
        if time_ns <= self._clock_ns:
            return
        self._clock_ns = time_ns
        horizon = time_ns - self.idle_ttl_ns
        series = self._series
        # Cheap: the least recently updated series sit at the front.
        while series:
            series_id, last = next(iter(series.items()))
            if last.time_ns >= horizon:
                break
            del series[series_id]
            self._evict(series_id, last)
            self.counters.evicted_idle += 1
        # Exact: a full sweep every quarter of the TTL of event time.
        if time_ns - self._swept_ns >= self.idle_ttl_ns // 4:
            self._swept_ns = time_ns
            for series_id in [s for s, last in series.items() if last.time_ns < horizon]:
                self._evict(series_id, series.pop(series_id))
                self.counters.evicted_idle += 1

    def _remember(self, point: MetricPoint) -> None:
        series = self._series
        series[point.series_id] = point
        series.move_to_end(point.series_id)
        while len(series) > self.max_series:
            series_id, last = series.popitem(last=False)
            self._evict(series_id, last)
            self.counters.evicted_lru += 1

    # --- the operation ------------------------------------------------------------

    def delta(self, point: MetricPoint) -> MetricPoint | None:
        self._advance(point.time_ns)
        counters = self.counters
        last = self._series.get(point.series_id)
        if point.temporality == DELTA:
            if (
                last is not None
                and last.temporality == DELTA
                and (last.start_ns, last.time_ns) == (point.start_ns, point.time_ns)
            ):
                counters.duplicates += 1
                return None
            self._remember(point)
            counters.delta_passed += 1
            return point
        if point.temporality != CUMULATIVE:
            raise ValueError(f"unknown temporality {point.temporality!r}")

        if last is None or last.temporality != CUMULATIVE:
            tombstone = self._tombstones.pop(point.series_id, None)
            self._remember(point)
            if tombstone is not None and tombstone == point.start_ns:
                counters.rebased_after_eviction += 1
                return None
            return self._first(point)
        if point.time_ns <= last.time_ns:
            if point.time_ns == last.time_ns:
                counters.duplicates += 1
            else:
                counters.out_of_order += 1
            return None
        self._remember(point)
        if point.start_ns != last.start_ns or _went_down(point, last):
            counters.resets += 1
            start = point.start_ns or last.time_ns
            return self._as_delta(point, start) if _nonzero(point) else None
        return self._difference(point, last)

    def _first(self, point: MetricPoint) -> MetricPoint | None:
        start, at = point.start_ns, point.time_ns
        keep = self.initial_value != "drop" and 0 < start < at
        if keep and self.initial_value == "auto":
            keep = at - start <= self.max_initial_age_ns
        if not keep:
            self.counters.first_dropped += 1
            return None
        self.counters.first_kept += 1
        return self._as_delta(point, start) if _nonzero(point) else None

    @staticmethod
    def _as_delta(point: MetricPoint, start_ns: int) -> MetricPoint:
        return dataclasses.replace(point, temporality=DELTA, start_ns=start_ns)

    def _difference(self, point: MetricPoint, last: MetricPoint) -> MetricPoint | None:
        counters = self.counters
        count = point.count - last.count
        total = None if point.sum is None or last.sum is None else point.sum - last.sum
        bounds, buckets = point.bounds, ()
        if point.bucket_counts:
            if last.bucket_counts and point.bounds == last.bounds:
                buckets = tuple(
                    a - b for a, b in zip(point.bucket_counts, last.bucket_counts, strict=True)
                )
            else:
                before = (
                    _rebucket(last.bounds, last.bucket_counts, point.bounds)
                    if last.bucket_counts
                    else None
                )
                if before is not None and all(
                    a >= b for a, b in zip(point.bucket_counts, before, strict=True)
                ):
                    buckets = tuple(a - b for a, b in zip(point.bucket_counts, before, strict=True))
                else:
                    counters.bucketless += 1
                    bounds = ()
        if count == 0 and not total:
            counters.unchanged += 1
            return None
        counters.cumulative_deltas += 1
        # A cumulative min/max covers the whole series; it belongs to this interval
        # only if it moved in it.
        high = low = None
        if point.max is not None and (last.max is None or point.max > last.max):
            high = point.max
        if point.min is not None and (last.min is None or point.min < last.min):
            low = point.min
        return dataclasses.replace(
            point,
            temporality=DELTA,
            start_ns=last.time_ns,
            count=count,
            sum=total,
            bounds=bounds if buckets else (),
            bucket_counts=buckets,
            min=low,
            max=high,
        )


def _went_down(point: MetricPoint, last: MetricPoint) -> bool:
    if point.count < last.count:
        return True
    if point.sum is not None and last.sum is not None and point.sum < last.sum:
        return True
    if point.bounds == last.bounds and len(point.bucket_counts) == len(last.bucket_counts):
        return any(a < b for a, b in zip(point.bucket_counts, last.bucket_counts, strict=True))
    return False


def _nonzero(point: MetricPoint) -> bool:
    return bool(point.count or point.sum)


# --- reported cost ---------------------------------------------------------------------------


class ReportedCostKeys:
    """The stats keys that report a cost metric, bounded like :class:`CumulativeToDelta`.

    >>> keys = ReportedCostKeys()
    >>> keys.note(("t", "s", "p", "m", "chat"), 10)
    >>> ("t", "s", "p", "m", "chat") in keys, ("t", "s", "p", "x", "chat") in keys
    (True, False)
    """

    def __init__(self, *, idle_ttl_ns: int = 3600 * NS, max_keys: int = 200_000):
        self.idle_ttl_ns = idle_ttl_ns
        self.max_keys = max_keys
        self._keys: OrderedDict[StatsKey, int] = OrderedDict()

    def __contains__(self, key: StatsKey) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def note(self, key: StatsKey, time_ns: int) -> None:
        keys = self._keys
        keys[key] = max(time_ns, keys.get(key, 0))
        keys.move_to_end(key)
        horizon = time_ns - self.idle_ttl_ns
        while keys:
            oldest, seen = next(iter(keys.items()))
            if seen >= horizon and len(keys) <= self.max_keys:
                break
            del keys[oldest]


# --- points to partials ------------------------------------------------------------------------


def _representatives(point: MetricPoint) -> list[tuple[float, int]]:
    """(value, weight) pairs standing for the values of a histogram point (module doc)."""
    count = point.count
    if count <= 0:
        return []
    counts, bounds = point.bucket_counts, point.bounds
    mean = point.sum / count if point.sum is not None else None
    if not counts:
        return [] if mean is None else [(mean, count)]
    filled = [i for i, n in enumerate(counts) if n]
    lowest, highest = filled[0], filled[-1]
    out = []
    for i in filled:
        lo = max(bounds[i - 1], 0.0) if i > 0 else 0.0
        hi = bounds[i] if i < len(bounds) else None
        if i == lowest and point.min is not None:
            lo = max(lo, point.min)
        if i == highest and point.max is not None:
            hi = point.max if hi is None else min(hi, point.max)
        if hi is None:
            hi = lo  # the overflow bucket, no max: its lower bound
        lo = min(lo, hi)
        if lowest == highest and mean is not None:
            value = min(max(mean, lo), hi)
        elif lo > 0:
            value = 2.0 * lo * hi / (lo + hi)
        else:
            value = hi / 2.0
        out.append((value, counts[i]))
    return out


def _max_estimate(point: MetricPoint) -> float | None:
    if point.max is not None:
        return point.max
    counts, bounds = point.bucket_counts, point.bounds
    if not counts:
        return point.sum / point.count if point.sum is not None and point.count else None
    highest = max(i for i, n in enumerate(counts) if n)
    if highest < len(bounds):
        return bounds[highest]
    return bounds[-1] if bounds else (point.sum / point.count if point.sum is not None else None)


def points_to_partials(
    points: Iterable[MetricPoint],
    window_ns: int,
    prices: PriceTable,
    *,
    reported_cost: ReportedCostKeys | None = None,
) -> dict[WindowKey, StatsAcc]:
    """Fold *delta* points into ``{(StatsKey, window start): StatsAcc}``.

    A point belongs to the window that contains its ``time_ns``. A key's
    cost is the reported ``gen_ai.usage.cost`` when the key reports one — in
    this batch for this window, or (with ``reported_cost``) at any time within
    its TTL — and the computed token cost otherwise (see the module doc).

    >>> from observatory.schemas.pricing import PriceTable
    >>> p = MetricPoint("a", "token_input", "delta", 0, 90 * NS, sum=1_000_000.0,
    ...                 model="gpt-4o", provider="openai", operation="chat")
    >>> [(start, acc.input_tokens, acc.cost_usd) for (key, start), acc in
    ...  points_to_partials([p], 60 * NS, PriceTable.bundled()).items()]
    [(60000000000, 1000000, 2.5)]
    """
    groups: dict[WindowKey, StatsAcc] = {}
    computed: dict[WindowKey, float] = {}
    unpriced: dict[WindowKey, int] = {}
    reported: set[WindowKey] = set()
    for point in points:
        if point.temporality != DELTA:
            raise ValueError("points_to_partials takes delta points: run CumulativeToDelta first")
        if not (point.count or point.sum):
            continue
        key = point.key
        window_key = (key, point.time_ns - point.time_ns % window_ns)
        acc = groups.get(window_key)
        if acc is None:
            acc = groups[window_key] = StatsAcc()
        kind = point.kind
        if kind == DURATION:
            acc.calls += point.count
            if point.is_error:
                acc.errors += point.count
            for value, weight in _representatives(point):
                acc.latency.add(value, weight)
            high = _max_estimate(point)
            if high is not None and high > acc.latency_max_ms:
                acc.latency_max_ms = high
            for value, trace_id in point.exemplars:
                acc._offer_exemplar(value, trace_id)
            if prices.lookup(point.model, point.time_ns / 1e9) is None:
                unpriced[window_key] = unpriced.get(window_key, 0) + point.count
        elif kind == TTFT:
            if acc.ttft is None:
                acc.ttft = QuantileSketch()
            for value, weight in _representatives(point):
                acc.ttft.add(value, weight)
        elif kind in (TOKEN_INPUT, TOKEN_OUTPUT):
            tokens = round(point.sum or 0.0)
            price = prices.lookup(point.model, point.time_ns / 1e9)
            if kind == TOKEN_INPUT:
                acc.input_tokens += tokens
                rate = price.input if price is not None else 0.0
            else:
                acc.output_tokens += tokens
                rate = price.output if price is not None else 0.0
            computed[window_key] = computed.get(window_key, 0.0) + tokens * rate / 1_000_000
        elif kind == COST:
            acc.cost_usd += point.sum or 0.0
            reported.add(window_key)
            if reported_cost is not None:
                reported_cost.note(key, point.time_ns)
    for window_key, acc in groups.items():
        if window_key in reported or (reported_cost is not None and window_key[0] in reported_cost):
            continue
        acc.cost_usd += computed.get(window_key, 0.0)
        acc.unpriced_calls += unpriced.get(window_key, 0)
    return groups


# --- glue for the dataflow -----------------------------------------------------------------------


@dataclass(slots=True)
class DecodedMetricsBatch:
    part_id: str
    caught_up: bool
    max_event_ns: int = 0
    points: list[MetricPoint] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    counters: MetricsDecodeCounters = field(default_factory=MetricsDecodeCounters)


def decode_metrics_batch(decoder: MetricsDecoder, batch: RecordBatch) -> DecodedMetricsBatch:
    """Decode every record of one metrics-topic batch (no aggregation yet: deltas need state)."""
    out = DecodedMetricsBatch(batch.part_id, batch.caught_up)
    for record in batch.records:
        result = decoder.decode(
            record.value, SourceRef(record.topic, record.partition, record.offset), record.headers
        )
        out.points.extend(result.points)
        out.dead_letters.extend(result.dead_letters)
        out.counters.add(result.counters)
    if out.points:
        out.max_event_ns = max(point.time_ns for point in out.points)
    return out


@dataclass(slots=True)
class MetricsShardInput:
    """What one metrics batch sends to one shard: its points plus progress."""

    partition: str
    max_event_ns: int
    caught_up: bool
    points: list[MetricPoint] = field(default_factory=list)
    counters: MetricsDecodeCounters | None = None  #: sent to shard 0 only


def route_metrics_to_shards(
    decoded: DecodedMetricsBatch, shards: int
) -> Iterator[tuple[str, MetricsShardInput]]:
    """Points go to the shard of their stats key (the one that owns the key's span
    windows, and every point of each series); progress goes to every shard."""
    per_shard: list[list[MetricPoint]] = [[] for _ in range(shards)]
    for point in decoded.points:
        per_shard[shard_of(point.key, shards)].append(point)
    for index in range(shards):
        yield (
            shard_name(index),
            MetricsShardInput(
                decoded.part_id,
                decoded.max_event_ns,
                decoded.caught_up,
                per_shard[index],
                decoded.counters if index == 0 else None,
            ),
        )


@dataclass(slots=True)
class _MetricsState:
    deltas: CumulativeToDelta
    reported_cost: ReportedCostKeys
    decode_counters: MetricsDecodeCounters = field(default_factory=MetricsDecodeCounters)
    dirty: bool = False


class MetricsShard:
    """The stateful step between routing and the window shards.

    Turns each :class:`MetricsShardInput` into one :class:`ShardInput` (its
    partials plus the partition's progress, so the window shards' watermark
    counts metric partitions like span partitions), and now and then a
    :class:`CountersRow`. State (deltas, reported-cost keys, counters)
    pickles; the price table is not part of it.
    """

    def __init__(
        self,
        *,
        window_s: int,
        prices: PriceTable,
        idle_ttl_s: float = 3600.0,
        max_series: int = 200_000,
        initial_value: str = "auto",
        max_initial_age_s: float = 600.0,
        name: str = "metrics",
        resume: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.window_ns = window_s * NS
        self.prices = prices
        self.name = name
        self._clock = clock
        self._counters_at = 0.0
        self.state: _MetricsState = (
            pickle.loads(resume)
            if resume
            else _MetricsState(
                CumulativeToDelta(
                    idle_ttl_ns=int(idle_ttl_s * NS),
                    max_series=max_series,
                    initial_value=initial_value,
                    max_initial_age_ns=int(max_initial_age_s * NS),
                ),
                ReportedCostKeys(idle_ttl_ns=int(idle_ttl_s * NS), max_keys=max_series),
            )
        )

    def on_points(self, points: Iterable[MetricPoint]) -> dict[WindowKey, StatsAcc]:
        deltas = self.state.deltas
        found = [d for d in (deltas.delta(p) for p in points) if d is not None]
        if not found:
            return {}
        self.state.dirty = True
        return points_to_partials(
            found, self.window_ns, self.prices, reported_cost=self.state.reported_cost
        )

    def on_batch(self, items: list[MetricsShardInput]) -> list[ShardInput | CountersRow]:
        out: list[ShardInput | CountersRow] = []
        for item in items:
            if item.counters is not None:
                self.state.decode_counters.add(item.counters)
                self.state.dirty = True
            partials = self.on_points(item.points)
            out.append(
                ShardInput(
                    item.partition, item.max_event_ns, item.caught_up, list(partials.items())
                )
            )
        self._emit_counters(out)
        return out

    def on_eof(self) -> list[CountersRow]:
        out: list = []
        self._emit_counters(out, force=True)
        return out

    def _emit_counters(self, out: list, force: bool = False) -> None:
        now = self._clock()
        if not force and (not self.state.dirty or now - self._counters_at < 1.0):
            return
        self._counters_at = now
        self.state.dirty = False
        values = (
            *self.state.decode_counters.values(),
            *self.state.deltas.counters.values(),
            ("metric_series_live", len(self.state.deltas)),
        )
        out.append(CountersRow(self.name, values))

    def snapshot(self) -> bytes:
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
