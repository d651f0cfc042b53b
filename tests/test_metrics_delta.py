"""Cumulative-to-delta conversion, reported-cost keys and the metrics shard's state.

Hand-made points pin down each rule; the real SDK (helpers from
``test_otlp_metrics``) checks restarts, redelivery and exponential rescaling.
"""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from otel_helpers import PRICES, PROTO
from test_otlp_metrics import (
    CUMULATIVE_T,
    CURRENT,
    CURRENT_KEY,
    NS,
    START_NS,
    WINDOW_NS,
    GenAiApp,
    decode_ok,
    install_clock,
)

from observatory.operators.metrics import (
    CumulativeToDelta,
    MetricsShard,
    ReportedCostKeys,
    points_to_partials,
)
from observatory.schemas.otlp_metrics import MetricPoint

BOUNDS = (10.0, 20.0, 40.0)
KEY = ("acme", "svc", "openai", "gpt-4o", "chat", "")  # metrics have no tool


def point(
    time_s: float,
    count: int,
    total: float | None = None,
    buckets: tuple[int, ...] | None = None,
    *,
    start_s: float = 0.5,
    series: str = "s1",
    temporality: str = "cumulative",
    kind: str = "duration",
    bounds: tuple[float, ...] = BOUNDS,
    low: float | None = None,
    high: float | None = None,
) -> MetricPoint:
    """A point with times in seconds after START_NS; ``start_s=None`` is an unknown start."""
    if buckets is None:
        buckets = (0, count, 0, 0)
    return MetricPoint(
        series_id=series,
        kind=kind,
        temporality=temporality,
        start_ns=0 if start_s is None else START_NS + round(start_s * NS),
        time_ns=START_NS + round(time_s * NS),
        count=count,
        sum=float(count * 15) if total is None else total,
        bounds=bounds if buckets else (),
        bucket_counts=buckets,
        min=low,
        max=high,
        tenant=KEY[0],
        service=KEY[1],
        provider=KEY[2],
        model=KEY[3],
        operation=KEY[4],
    )


def summary(p: MetricPoint | None):
    if p is None:
        return None
    return (p.temporality, p.start_ns - START_NS, p.time_ns - START_NS, p.count, p.sum,
            p.bucket_counts)  # fmt: skip


# --- the rules -----------------------------------------------------------------------------------


def test_delta_points_pass_through_and_exact_repeats_are_duplicates():
    c = CumulativeToDelta()
    a = point(10, 2, start_s=0, temporality="delta")
    b = point(20, 1, start_s=10, temporality="delta")
    assert c.delta(a) is a
    assert c.delta(b) is b
    assert c.delta(dataclasses.replace(b)) is None  # the same interval again
    assert c.delta(a) is a  # an older interval is not a repeat of the latest: it passes
    assert (c.counters.delta_passed, c.counters.duplicates) == (3, 1)


def test_cumulative_points_give_differences():
    c = CumulativeToDelta()
    assert summary(c.delta(point(10, 2, buckets=(1, 1, 0, 0), low=5.0, high=12.0))) == (
        "delta", 0.5 * NS, 10 * NS, 2, 30.0, (1, 1, 0, 0)
    )  # fmt: skip
    d = c.delta(point(20, 5, 100.0, (1, 2, 1, 1), low=5.0, high=90.0))
    assert summary(d) == ("delta", 10 * NS, 20 * NS, 3, 70.0, (0, 1, 1, 1))
    # The cumulative max moved in this interval, the min did not.
    assert (d.max, d.min) == (90.0, None)
    d = c.delta(point(30, 6, 101.0, (2, 2, 1, 1), low=1.0, high=90.0))
    assert (d.count, d.sum, d.min, d.max) == (1, 1.0, 1.0, None)
    assert c.delta(point(40, 6, 101.0, (2, 2, 1, 1))) is None  # nothing new
    assert c.counters.unchanged == 1 and c.counters.cumulative_deltas == 2


@pytest.mark.parametrize(
    ("mode", "start_s", "kept"),
    [
        ("auto", 0.5, True),  # born just before its first point
        ("auto", -3600, False),  # joined in the middle of its life
        ("auto", None, False),  # unknown start
        ("keep", -3600, True),
        ("keep", None, False),
        ("drop", 0.5, False),
    ],
)
def test_first_point(mode, start_s, kept):
    c = CumulativeToDelta(initial_value=mode, max_initial_age_ns=600 * NS)
    first = c.delta(point(10, 4, start_s=start_s))
    assert (first is not None) == kept
    if kept:
        assert first.start_ns == START_NS + round(start_s * NS) and first.count == 4
    assert (c.counters.first_kept, c.counters.first_dropped) == (int(kept), int(not kept))
    # Either way it is the baseline for the next one.
    assert summary(c.delta(point(20, 5, start_s=start_s)))[3] == 1


def test_initial_value_is_checked():
    with pytest.raises(ValueError):
        CumulativeToDelta(initial_value="sometimes")
    with pytest.raises(ValueError):
        CumulativeToDelta(max_series=0)


@pytest.mark.parametrize(
    ("after", "why"),
    [
        (point(20, 3, start_s=15), "start changed"),
        (point(20, 1, 99.0, start_s=None), "count went down"),
        (point(20, 5, 10.0, (0, 5, 0, 0), start_s=None), "sum went down"),
        (point(20, 5, 90.0, (5, 0, 0, 0), start_s=None), "a bucket went down"),
    ],
)
def test_resets_give_the_point_itself(after, why):
    c = CumulativeToDelta(initial_value="keep")
    before = point(10, 4, 60.0, (0, 4, 0, 0), start_s=None if after.start_ns == 0 else 0.5)
    c.delta(before)
    d = c.delta(after)
    assert d is not None, why
    assert (d.count, d.sum, d.bucket_counts) == (after.count, after.sum, after.bucket_counts)
    # Known start: from it; unknown: from the previous point.
    assert d.start_ns == (after.start_ns or before.time_ns)
    assert c.counters.resets == 1
    assert summary(c.delta(dataclasses.replace(after, time_ns=after.time_ns + NS,
                                               count=after.count + 1)))[3] == 1  # fmt: skip


def test_out_of_order_and_duplicates_leave_the_state_alone():
    c = CumulativeToDelta()
    c.delta(point(10, 2))
    c.delta(point(30, 6))
    assert c.delta(point(20, 4)) is None  # older than the latest
    assert c.delta(point(30, 6)) is None  # the same time again (redelivery)
    assert c.delta(point(30, 7)) is None
    assert summary(c.delta(point(40, 9)))[1:4] == (30 * NS, 40 * NS, 3)
    assert (c.counters.out_of_order, c.counters.duplicates) == (1, 2)


def test_bucket_layout_changes():
    c = CumulativeToDelta()
    c.delta(point(10, 3, 30.0, (1, 2, 0, 0)))
    # Coarser buckets that contain the old ones (an exponential downscale): exact.
    d = c.delta(point(20, 5, 60.0, (1, 4, 0), bounds=(10.0, 40.0)))
    assert (d.bounds, d.bucket_counts, d.count) == ((10.0, 40.0), (0, 2, 0), 2)
    # Finer buckets: the old counts cannot be split; count and sum stay exact.
    d = c.delta(point(30, 6, 70.0, (1, 3, 2, 0, 0), bounds=(10.0, 15.0, 40.0, 80.0)))
    assert (d.bounds, d.bucket_counts, d.count, d.sum) == ((), (), 1, 10.0)
    assert c.counters.bucketless == 1
    acc = points_to_partials([d], WINDOW_NS, PRICES)[(KEY, START_NS)]
    assert acc.latency.count == 1 and acc.latency.quantile(0.5) == pytest.approx(10.0, rel=0.01)


# --- bounded state -------------------------------------------------------------------------------


def test_idle_series_are_evicted_in_event_time():
    c = CumulativeToDelta(idle_ttl_ns=100 * NS)
    c.delta(point(10, 2, series="quiet"))
    c.delta(point(10, 2, series="busy"))
    for t in range(20, 200, 20):
        c.delta(point(t, t, series="busy"))
    assert "quiet" not in c and "busy" in c
    assert c.counters.evicted_idle == 1
    # Coming back with the same start: its baseline is gone, so no delta (never the
    # whole cumulative value again); the next point differences normally.
    assert c.delta(point(300, 9, series="quiet")) is None
    assert c.counters.rebased_after_eviction == 1
    assert summary(c.delta(point(310, 10, series="quiet")))[3] == 1
    # A restarted process (new start) is a new series: its first point counts.
    c2 = CumulativeToDelta(idle_ttl_ns=100 * NS)
    c2.delta(point(10, 2, series="quiet"))
    c2.delta(point(500, 1, series="busy"))
    assert summary(c2.delta(point(600, 3, series="quiet", start_s=590)))[3] == 3


def test_the_sweep_finds_idle_series_behind_recent_ones():
    c = CumulativeToDelta(idle_ttl_ns=100 * NS)
    c.delta(point(50, 1, series="late-arrival"))
    c.delta(point(10, 1, series="old"))  # updated last, but older in event time
    c.delta(point(150, 2, series="late-arrival"))
    assert "old" not in c and len(c) == 1


def test_the_series_count_is_capped():
    c = CumulativeToDelta(max_series=3)
    for i in range(5):
        c.delta(point(10, 1, series=f"s{i}"))
    c.delta(point(11, 2, series="s2"))  # recently used: kept
    c.delta(point(12, 1, series="s5"))
    assert len(c) == 3 and "s2" in c and "s0" not in c
    assert c.counters.evicted_lru == 3
    assert c.delta(point(20, 5, series="s0")) is None  # tombstone: baseline only
    assert c.counters.rebased_after_eviction == 1
    assert len(c._tombstones) <= 3


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 500)), max_size=300))
def test_state_stays_bounded(events):
    c = CumulativeToDelta(max_series=10, idle_ttl_ns=50 * NS)
    for series, t in events:
        c.delta(point(t + 1, t, series=f"s{series}"))
        assert len(c) <= 10 and len(c._tombstones) <= 10


# --- restarts, redelivery and rescaling with the real SDK ----------------------------------------


def test_sdk_process_restart_and_redelivery(monkeypatch):
    clock = install_clock(monkeypatch)
    c = CumulativeToDelta()
    app = GenAiApp(CUMULATIVE_T)
    clock.at(1)
    app.call(seconds=1, input_tokens=100)
    clock.at(10)
    first = app.record(PROTO)
    app.call(seconds=1, input_tokens=50)
    clock.at(70)
    second = app.record(PROTO)
    # The process restarts: same resource and attributes (same series), new start time.
    clock.at(100)
    restarted = GenAiApp(CUMULATIVE_T)
    restarted.call(seconds=1, input_tokens=7)
    clock.at(130)
    third = restarted.record(PROTO)
    totals = {"calls": 0, "input": 0}
    for value in (first, second, second, first, third, third):  # redelivered records
        for p in decode_ok(value, PROTO).points:
            d = c.delta(p)
            if d is not None:
                totals["calls" if d.kind == "duration" else "input"] += (
                    d.count if d.kind == "duration" else round(d.sum)
                )
    assert totals == {"calls": 3, "input": 157}
    assert (c.counters.resets, c.counters.first_kept) == (2, 2)
    assert (c.counters.duplicates, c.counters.out_of_order) == (4, 2)


def test_sdk_exponential_rescale_is_differenced_exactly(monkeypatch):
    clock = install_clock(monkeypatch)
    c = CumulativeToDelta()
    app = GenAiApp(CUMULATIVE_T, exponential=True)
    deltas = []
    for at, values in ((10, [1.0, 1.01]), (20, [950.0]), (30, [0.003, 3.0])):
        for v in values:
            app.call(seconds=v)
        clock.at(at)
        (p,) = decode_ok(app.record(PROTO), PROTO).points
        deltas.append((p.bounds[0], c.delta(p)))
    # The SDK widened the range by lowering the scale; each delta keeps its buckets.
    assert deltas[0][0] != deltas[1][0]
    assert [d.count for _, d in deltas] == [2, 1, 2]
    assert all(sum(d.bucket_counts) == d.count and d.bounds for _, d in deltas[:2])
    acc = points_to_partials([deltas[1][1]], WINDOW_NS, PRICES)[(CURRENT_KEY, START_NS)]
    assert acc.latency.quantile(0.5) == pytest.approx(950_000.0, rel=0.2)


# --- reported cost across batches, and the shard's state -----------------------------------------


def test_reported_cost_keys_across_batches():
    tokens = dataclasses.replace(
        point(30, 0, 1_000_000.0, (), temporality="delta", kind="token_input"), start_ns=0
    )
    cost = dataclasses.replace(tokens, kind="cost", sum=0.5, series_id="c")
    keys = ReportedCostKeys(idle_ttl_ns=600 * NS)
    first = points_to_partials([cost], WINDOW_NS, PRICES, reported_cost=keys)
    assert first[(KEY, START_NS)].cost_usd == 0.5
    # Later tokens of the same key, in another batch: not priced again.
    later = dataclasses.replace(tokens, time_ns=START_NS + 90 * NS)
    assert (
        points_to_partials([later], WINDOW_NS, PRICES, reported_cost=keys)[
            (KEY, START_NS + 60 * NS)
        ].cost_usd
        == 0.0
    )
    # Without the memory (or once it expired) the tokens are priced: 1M x $2.50.
    assert points_to_partials([later], WINDOW_NS, PRICES)[
        (KEY, START_NS + 60 * NS)
    ].cost_usd == pytest.approx(2.5)
    keys.note(("other",) * 5, START_NS + 10_000 * NS)
    assert KEY not in keys and len(keys) == 1
    capped = ReportedCostKeys(max_keys=2)
    for i in range(5):
        capped.note((str(i),) * 5, START_NS)
    assert len(capped) == 2


def test_partials_take_delta_points_only():
    with pytest.raises(ValueError, match="delta"):
        points_to_partials([point(10, 1)], WINDOW_NS, PRICES)


def test_metrics_shard_snapshot_resumes_differencing(monkeypatch):
    clock = install_clock(monkeypatch)
    app = GenAiApp(CUMULATIVE_T)
    app.call(CURRENT, seconds=1, input_tokens=10)
    clock.at(10)
    first = decode_ok(app.record(PROTO), PROTO).points
    app.call(CURRENT, seconds=1, input_tokens=10)
    clock.at(70)
    second = decode_ok(app.record(PROTO), PROTO).points

    shard = MetricsShard(window_s=60, prices=PRICES)
    assert shard.on_points(first)[(CURRENT_KEY, START_NS)].calls == 1
    resumed = MetricsShard(window_s=60, prices=PRICES, resume=shard.snapshot())
    parts = resumed.on_points(second)
    assert list(parts) == [(CURRENT_KEY, START_NS + 60 * NS)]
    acc = parts[(CURRENT_KEY, START_NS + 60 * NS)]
    assert (acc.calls, acc.input_tokens) == (1, 10)
    (row,) = resumed.on_eof()
    assert dict(row.values)["metric_delta_cumulative_deltas"] == 2


def test_pickle_round_trip_mid_stream():
    stream = [
        point(t, t // 10 + (5 if t > 100 else 0), series=f"s{t % 3}") for t in range(10, 200, 7)
    ]
    straight = CumulativeToDelta(idle_ttl_ns=60 * NS, max_series=2)
    expected = [summary(straight.delta(p)) for p in stream]
    c = CumulativeToDelta(idle_ttl_ns=60 * NS, max_series=2)
    got = []
    for i, p in enumerate(stream):
        if i % 5 == 0:
            c = pickle.loads(pickle.dumps(c, protocol=pickle.HIGHEST_PROTOCOL))
        got.append(summary(c.delta(p)))
    assert got == expected
    assert c.counters == straight.counters


# --- the totals property -------------------------------------------------------------------------


@st.composite
def lifetimes(draw):
    """Cumulative points of one series over several process lifetimes, delivered with
    duplicates and local reordering; returns (delivery order, exact totals)."""
    segments = draw(
        st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=8), min_size=1, max_size=4)
    )
    points, totals, t = [], [0, 0, 0], 0
    for segment in segments:
        start = t + 1
        count = total = low = 0
        for increment in segment:
            t += 10
            count += increment
            low += increment  # every value lands in the first bucket (value 5)
            total += 5 * increment
            points.append(point(t, count, float(total), (low, 0, 0, 0), start_s=start))
        totals[0] += count
        totals[1] += total
        totals[2] += low
    order = list(points)
    for _ in range(draw(st.integers(0, 5))):  # redeliveries, after the original
        copy = draw(st.sampled_from(points))
        order.insert(draw(st.integers(order.index(copy) + 1, len(order))), copy)
    for _ in range(draw(st.integers(0, 5))):  # swaps inside one lifetime
        i = draw(st.integers(0, max(len(order) - 2, 0)))
        if i + 1 < len(order) and order[i].start_ns == order[i + 1].start_ns:
            order[i], order[i + 1] = order[i + 1], order[i]
    return order, totals


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(lifetimes())
def test_deltas_add_up_to_what_was_recorded(case):
    order, (count, total, first_bucket) = case
    c = CumulativeToDelta(initial_value="keep")
    deltas = [d for d in map(c.delta, order) if d is not None]
    # Copies and reordered points are dropped (not newer than the latest), never counted.
    assert sum(d.count for d in deltas) == count
    assert sum(d.sum for d in deltas) == total
    assert sum(d.bucket_counts[0] for d in deltas if d.bucket_counts) == first_bucket
    assert all(d.temporality == "delta" and d.time_ns > d.start_ns for d in deltas)
