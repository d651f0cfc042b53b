"""Detectors: one contract for all of them, then the behaviour of each piece."""

from __future__ import annotations

import doctest
import functools
import importlib
import math
import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from observatory.detectors.base import (
    KeyedDetectors,
    Point,
    Thresholded,
    Verdict,
    run_series,
    threshold_for_looks,
)
from observatory.detectors.budget import Budget, BudgetLimit, Spend, period_bounds
from observatory.detectors.config import (
    CostSpikeConfig,
    DetectorsConfig,
    LatencyAnomalyConfig,
    build_detectors,
    parse_detectors,
    thresholded,
)
from observatory.detectors.rate import RateSurge
from observatory.detectors.river_models import HalfSpaceTreesDetector
from observatory.detectors.robust import PerCallRatio, QuantileZScore, RobustZScore
from observatory.detectors.runaway import RunawayLoop, SessionSnapshot
from observatory.detectors.volume import CallVolume, SpendWithVolume

# -- the contract ----------------------------------------------------------------


@dataclass
class Case:
    """How to build a detector and feed it normal, anomalous and missing inputs."""

    make: Callable[[], Any]
    normal: Callable[[random.Random, int], Any]
    anomaly: Callable[[random.Random, int], Any]
    missing: Callable[[int], Any]
    #: A cheap normal input, for the 100k-point runs.
    bulk: Callable[[random.Random, int], Any] = lambda rng, i: Point(
        60.0 * i, rng.lognormvariate(0, 0.3), rng.randint(5, 50)
    )
    #: Hard limits (runaway loops) apply from the first input: no silent warm-up.
    silent_warmup: bool = True


def _cost(rng: random.Random, i: int, factor: float = 1.0) -> Point:
    daily = 1 + 0.5 * math.sin(2 * math.pi * i / 1440)
    return Point(60.0 * i, 2.0 * daily * rng.lognormvariate(0, 0.3) * factor, 1.0)


def _rate(rng: random.Random, i: int, p: float = 0.01) -> Point:
    n = rng.randint(50, 150)
    return Point(60.0 * i, sum(rng.random() < p for _ in range(n)) / n, float(n))


def _tokens(rng: random.Random, i: int, factor: float = 1.0) -> Point:
    n = rng.randint(5, 50)
    mean = sum(rng.lognormvariate(0, 0.8) for _ in range(n)) / n
    return Point(60.0 * i, 2000.0 * mean * factor, float(n))


def _p95(rng: random.Random, n: int, factor: float = 1.0, median_ms: float = 900.0) -> float:
    """The p95 (rank floor(0.95 (n - 1)), as the sketch gives it) of n log-normal latencies."""
    calls = sorted(median_ms * factor * rng.lognormvariate(0, 0.35) for _ in range(n))
    return calls[int(0.95 * (n - 1))]


def _latency(rng: random.Random, i: int, factor: float = 1.0) -> Point:
    n = rng.randint(3, 40)
    return Point(60.0 * i, _p95(rng, n, factor), float(n))


def _traffic(rng: random.Random, i: int, extra_sessions: float = 0.0) -> Point:
    """One minute of a key: ~1.5 sessions of 1-12 calls, value = spend, weight = calls."""
    calls, spend = _sessions_minute(
        rng, 1.5 * (1 + 0.5 * math.sin(2 * math.pi * i / 1440)) + extra_sessions
    )
    return Point(60.0 * i, spend, float(calls))


def _spend_with_volume() -> SpendWithVolume:
    return SpendWithVolume(
        RobustZScore(warmup=60, offset=0.01, spans=(2, 3)),
        CallVolume(warmup=60, spans=(1, 2)),
        threshold=5.0,
        spend_threshold=2.0,
        volume_threshold=7.0,
    )


def _snapshot(rng: random.Random, i: int, loop: bool = False) -> SessionSnapshot:
    agent = ("planner", "coder")[i % 2]
    calls = rng.randint(2, 10) * (8 if loop else 1)
    run = 12 if loop else rng.choice([1, 1, 1, 2, 3])
    steps = rng.randint(5, 80)
    return SessionSnapshot(agent, 60.0 * i, steps, steps // 2, steps // 2, run, calls, 0.01 * steps)


CASES = {
    "robust_z": Case(
        lambda: RobustZScore(warmup=60),
        lambda rng, i: _cost(rng, i),
        lambda rng, i: _cost(rng, i, 6.0),
        lambda i: Point(60.0 * i, None),
    ),
    "robust_z_spans": Case(
        lambda: RobustZScore(warmup=60, spans=(2, 3), offset=0.01),
        lambda rng, i: _cost(rng, i),
        lambda rng, i: _cost(rng, i, 6.0),
        lambda i: Point(60.0 * i, None),
    ),
    "per_call_ratio": Case(
        lambda: PerCallRatio(warmup=60),
        lambda rng, i: _tokens(rng, i),
        lambda rng, i: _tokens(rng, i, 4.0),
        lambda i: Point(60.0 * i, None, 0.0),
    ),
    "quantile_z": Case(
        lambda: QuantileZScore(warmup=60, full_weight=10),
        lambda rng, i: _latency(rng, i),
        lambda rng, i: _latency(rng, i, 4.0),
        lambda i: Point(60.0 * i, None, 0.0),
    ),
    "rate_surge": Case(
        lambda: RateSurge(warmup=30, spans=(1, 2, 3)),
        lambda rng, i: _rate(rng, i),
        lambda rng, i: _rate(rng, i, 0.2),
        lambda i: Point(60.0 * i, None, 0.0),
        lambda rng, i: Point(60.0 * i, rng.random() * 0.05, rng.randint(5, 50)),
    ),
    "call_volume": Case(
        lambda: CallVolume(warmup=60, spans=(1, 2)),
        lambda rng, i: _traffic(rng, i),
        lambda rng, i: _traffic(rng, i, 20.0),
        lambda i: Point(60.0 * i, None, 0.0),
    ),
    "spend_with_volume": Case(
        _spend_with_volume,
        lambda rng, i: _traffic(rng, i),
        lambda rng, i: _traffic(rng, i, 20.0),
        lambda i: Point(60.0 * i, None, 0.0),
    ),
    "half_space_trees": Case(
        lambda: HalfSpaceTreesDetector(
            n_trees=5, height=6, window_size=100, seed=7, scaling="warmup"
        ),
        lambda rng, i: _cost(rng, i),
        lambda rng, i: _cost(rng, i, 6.0),
        lambda i: Point(60.0 * i, None),
    ),
    "runaway_loop": Case(
        lambda: RunawayLoop(warmup=100),
        lambda rng, i: _snapshot(rng, i),
        lambda rng, i: _snapshot(rng, i, loop=True),
        lambda i: SessionSnapshot("planner", 60.0 * i, 0, 0, 0, 0, None, None),
        _snapshot,
        silent_warmup=False,
    ),
}


def _stream(case: Case, seed: int, n: int, start: int = 0) -> list:
    rng = random.Random(seed)
    return [case.normal(rng, start + i) for i in range(n)]


def _scores(detector, xs) -> list[float]:
    out = []
    for x in xs:
        out.append(detector.score_one(x))
        detector.learn_one(x)
    return out


def _auc(positives: list[float], negatives: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


@pytest.mark.parametrize("name", sorted(CASES))
def test_detector_contract(name):
    case = CASES[name]
    history = _stream(case, 1, 400)
    future = _stream(case, 2, 100, start=400)

    # Warming up: silent (runaway loops: below the hard limits).
    fresh = case.make()
    first = fresh.score_one(history[0])
    assert first == 0.0 if case.silent_warmup else first < 1.0

    # Seeded determinism: same construction, same stream, same scores.
    a, b = case.make(), case.make()
    assert _scores(a, history) == _scores(b, history)

    # Pickle round trip: the copy scores the future exactly like the original.
    copy = pickle.loads(pickle.dumps(a))
    assert _scores(copy, future) == _scores(a, future)

    # score_one has no side effects.
    before = pickle.dumps(a)
    for x in future[:10]:
        a.score_one(x)
    assert pickle.dumps(a) == before

    # Missing values are tolerated: score 0 and no crash when learned.
    assert a.score_one(case.missing(500)) == 0.0
    a.learn_one(case.missing(500))
    assert a.score_one(future[-1]) >= 0.0

    # Scores are non-negative and finite, and anomalies score above normal points.
    rng = random.Random(3)
    normal = [a.score_one(case.normal(rng, 600 + i)) for i in range(200)]
    anomalous = [a.score_one(case.anomaly(rng, 600 + i)) for i in range(50)]
    assert all(s >= 0.0 and math.isfinite(s) for s in normal + anomalous)
    assert _auc(anomalous, normal) >= 0.85  # HalfSpaceTrees ~0.88, the others ~1.0


@pytest.mark.parametrize("name", sorted(CASES))
def test_detector_state_is_bounded(name):
    case = CASES[name]
    detector = case.make()
    rng = random.Random(4)
    for i in range(1_000):
        detector.learn_one(case.bulk(rng, i))
    small = len(pickle.dumps(detector))
    for i in range(1_000, 100_000):
        detector.learn_one(case.bulk(rng, i))
    assert len(pickle.dumps(detector)) <= 1.1 * small + 512


# -- Thresholded -------------------------------------------------------------------


def _warm(threshold=5.0, **kwargs) -> Thresholded:
    th = Thresholded(RobustZScore(warmup=30, log=False), threshold=threshold, **kwargs)
    rng = random.Random(5)
    for i in range(100):
        th.update(Point(60.0 * i, 100.0 + rng.gauss(0, 1)))
    return th


def test_thresholded_needs_both_score_and_min_effect():
    th = _warm(min_effect=20.0)
    small = th.update(Point(6000.0, 110.0))  # 10 sigma, but only +10
    assert small.score > 5 and not small.anomalous
    big = th.update(Point(6060.0, 150.0))
    assert big.anomalous and big.observed == 150.0 and abs(big.expected - 100.0) < 1.0


@pytest.mark.parametrize(
    ("direction", "up", "down"),
    [("up", True, False), ("down", False, True), ("both", True, True)],
)
def test_thresholded_direction(direction, up, down):
    th = _warm(direction=direction)
    assert th.update(Point(6000.0, 130.0)).anomalous is up
    assert th.update(Point(6060.0, 70.0)).anomalous is down


def test_thresholded_keeps_anomalies_out_of_the_baseline():
    th = _warm()
    expected = th.detector.expected()
    for i in range(20):
        assert th.update(Point(6000.0 + 60 * i, 200.0)).anomalous
    assert th.detector.expected() == expected
    learning = _warm(learn_anomalies=True)
    for i in range(20):
        learning.update(Point(6000.0 + 60 * i, 200.0))
    assert learning.detector.expected() > expected + 1


def test_thresholded_relearns_a_lasting_change():
    th = _warm(relearn_after=10)
    verdicts = [th.update(Point(6000.0 + 60 * i, 200.0)) for i in range(400)]
    assert verdicts[0].anomalous and not verdicts[-1].anomalous


def test_thresholded_is_silent_while_warming_up():
    th = Thresholded(RobustZScore(warmup=30), threshold=1.0)
    rng = random.Random(6)
    verdicts = [th.update(Point(60.0 * i, rng.choice([1.0, 1000.0]))) for i in range(29)]
    assert not any(v.anomalous for v in verdicts)
    assert all(v.score == 0.0 for v in verdicts)


def test_threshold_for_looks_is_a_bonferroni_margin_on_a_gaussian_tail():
    assert threshold_for_looks(5.0, 1) == 5.0
    raised = [threshold_for_looks(4.75, k) for k in (2, 3, 4)]
    assert raised == sorted(raised) and raised[0] > 4.75
    # k looks at the raised threshold alarm about as often as one look at 4.75.
    tail = lambda z: math.erfc(z / math.sqrt(2)) / 2  # noqa: E731
    assert 0.8 < 3 * tail(raised[1]) / tail(4.75) < 1.2
    with pytest.raises(ValueError):
        threshold_for_looks(5.0, 0)


def test_peek_with_several_looks_needs_a_larger_score():
    th = _warm()
    sd = th.detector.scale
    x = Point(6000.0, th.detector.loc + 5.2 * sd)  # between 5.0 and the 3-look threshold
    assert 5.0 <= th.peek(x).score < threshold_for_looks(5.0, 3)
    assert th.peek(x).anomalous and not th.peek(x, looks=3).anomalous
    assert th.peek(Point(6000.0, th.detector.loc + 6 * sd), looks=3).anomalous


def test_per_call_ratio_busy_minutes_are_not_biased_high():
    """The log of a mean of many calls sits above that of a few (Jensen): corrected.

    Without the correction, 64-call minutes among quieter ones scored +0.54 on
    average and crossed z = 4 twenty times as often as a normal variable.
    """
    rng = random.Random(11)
    det = PerCallRatio(warmup=60)
    busy = []
    for minute in range(6000):
        n = (1, 4, 16, 64)[minute % 4]
        x = Point(60.0 * minute, sum(rng.lognormvariate(7, 0.5) for _ in range(n)) / n, n)
        if minute > 500 and n == 64:
            busy.append(det.standardised(x))
        det.learn_one(x)
    mean = sum(busy) / len(busy)
    assert abs(mean) < 0.25, mean
    # The baseline is the calls' mean (e^(7 + 0.5**2 / 2)), not their median (e^7).
    assert abs(det.expected() / math.exp(7.125) - 1) < 0.05


def test_run_series_wraps_a_bare_detector():
    series = [(60.0 * i, 10.0 + (i % 2)) for i in range(100)] + [(6000.0, None), (6060.0, 90.0)]
    verdicts = run_series(RobustZScore(warmup=30), series, threshold=6.0)
    assert len(verdicts) == 102 and isinstance(verdicts[0], Verdict)
    assert [i for i, v in enumerate(verdicts) if v.anomalous] == [101]
    assert verdicts[100].observed is None and not verdicts[100].anomalous


# -- KeyedDetectors ------------------------------------------------------------------


def _factory() -> Thresholded:
    return Thresholded(RobustZScore(warmup=3), threshold=5.0)


def test_keyed_detectors_evict_idle_keys_by_event_time():
    keyed = KeyedDetectors(_factory, idle_ttl_s=600, max_keys=100)
    keyed.update("a", Point(0.0, 1.0))
    keyed.update("b", Point(300.0, 1.0))
    keyed.update("c", Point(650.0, 1.0))  # "a" idle for 650 s > 600 s
    assert sorted(keyed.keys()) == ["b", "c"]
    keyed.update("b", Point(1000.0, 1.0))  # "c" idle for 350 s: kept
    assert sorted(keyed.keys()) == ["b", "c"]
    keyed.update("b", Point(1300.0, 1.0))  # "c" idle for 650 s
    assert keyed.keys() == ["b"] and keyed.evicted == 2


def test_keyed_detectors_cap_is_lru_and_state_is_picklable():
    keyed = KeyedDetectors(_factory, idle_ttl_s=1e9, max_keys=3)
    for i, key in enumerate("abcd"):
        keyed.update(key, Point(float(i), 1.0))
    assert sorted(keyed.keys()) == ["b", "c", "d"]
    keyed.update("b", Point(10.0, 1.0))
    keyed.update("e", Point(11.0, 1.0))  # "c" is now the least recently updated
    assert sorted(keyed.keys()) == ["b", "d", "e"]
    clone = pickle.loads(pickle.dumps(keyed))
    assert clone.update("b", Point(12.0, 1.0)) == keyed.update("b", Point(12.0, 1.0))


# -- latency p95 and cost: what the end-to-end evaluation found ------------------------


def test_latency_p95_of_a_low_volume_model_does_not_fire_but_its_slowdown_does():
    """3 to 18 calls a minute: a p95 of a few calls is noisy, and biased low.

    With the old floor of 20 calls such a model was never scored; now every
    window of 3+ calls is, with its residual scaled by sqrt(calls + pseudo_calls).
    Two days of ordinary windows stay quiet, and a x4 slowdown is flagged in
    the very window it starts, on 10 calls.
    """
    rng = random.Random(2)
    th = thresholded("latency_p95", LatencyAnomalyConfig())
    assert isinstance(th.detector, QuantileZScore)
    scored = 0
    for minute in range(2 * 1440):
        n = sum(rng.random() < 12 * (1 + 0.5 * math.sin(2 * math.pi * minute / 1440)) / 200
                for _ in range(200))  # fmt: skip
        if n == 0:
            continue
        verdict = th.update(Point(60.0 * minute, _p95(rng, n), float(n)))
        scored += verdict.score > 0
        assert not verdict.anomalous, (minute, n, verdict)
    assert scored > 2000  # quiet hours are watched, not skipped
    assert th.update(Point(60.0 * 2880, _p95(rng, 10, 4.0), 10.0)).anomalous


def _sessions_minute(rng: random.Random, sessions: float) -> tuple[int, float]:
    """Calls and spend of a minute of one key: Poisson sessions of 1-12 calls ($0.005 each)."""
    calls, spend = 0, 0.0
    for _ in range(sum(rng.random() < sessions / 100 for _ in range(100))):
        for _ in range(max(1, min(int(rng.expovariate(1 / 3)) + 1, 12))):
            calls += 1
            spend += 0.005 * rng.lognormvariate(0, 0.5)
    return calls, spend


@pytest.mark.parametrize("seed", [0, 1])
def test_cost_spike_of_many_extra_calls_is_flagged_by_its_second_window(seed):
    """A sparse key (1.5 sessions a minute) whose minutes swing x5 on their own.

    Two quiet days raise nothing; twenty extra sessions a minute (spend x10+)
    are flagged in the spike's first or second window.
    """
    rng = random.Random(seed)
    th = thresholded("cost_key", CostSpikeConfig(min_effect=0.05))

    def rate(minute: int) -> float:
        return 1.5 * (1 + 0.5 * math.sin(2 * math.pi * minute / 1440))

    for minute in range(2 * 1440):
        calls, spend = _sessions_minute(rng, rate(minute))
        assert not th.update(Point(60.0 * minute, spend if calls else None, calls)).anomalous
    flagged = []
    for w in range(2):
        minute = 2 * 1440 + w
        calls, spend = _sessions_minute(rng, rate(minute) + 20)
        flagged.append(th.update(Point(60.0 * minute, spend, calls)).anomalous)
    assert any(flagged), flagged


def _quiet_cost_key(seed: int = 0, **overrides) -> Thresholded:
    """The ``cost_key`` detector of the config after two quiet days of a sparse key."""
    rng = random.Random(seed)
    th = thresholded("cost_key", CostSpikeConfig(min_effect=0.05, **overrides))
    for minute in range(2 * 1440):
        x = _traffic(rng, minute)
        if x.weight:  # as in the flow: a minute without calls has no point
            assert not th.update(x).anomalous, (minute, x)
    return th


def _verdict(th: Thresholded, x: Point) -> Verdict:
    return pickle.loads(pickle.dumps(th)).update(x)  # a copy: th stays as it was


def test_one_heavy_window_alerts_only_when_its_calls_surge_too():
    """x15 spend in one window: one long session (usual calls) or more traffic (x20 calls)."""
    th = _quiet_cost_key()
    det = th.detector
    assert isinstance(det, SpendWithVolume)
    spend, calls = det.expected(), det.volume.mean()
    t = 60.0 * 2880
    heavy = Point(t, 15 * spend, float(round(calls)))
    cheap = Point(t, 1.5 * spend, 20 * calls)  # many calls, hardly more spend
    spike = Point(t, 15 * spend, 20 * calls)
    assert det.spend.standardised(heavy) > 2.0  # the spend alone is surprising
    assert not _verdict(th, heavy).anomalous
    assert det.volume.score_one(cheap) > 7.0  # the calls alone are surprising
    assert not _verdict(th, cheap).anomalous
    verdict = _verdict(th, spike)
    assert verdict.anomalous and verdict.expected == pytest.approx(spend)
    # Without the volume path (runs of spend only) the first window is not enough.
    runs_only = _quiet_cost_key(volume_sensitivity=None)
    assert isinstance(runs_only.detector, RobustZScore)
    assert not _verdict(runs_only, spike).anomalous


def test_a_smaller_volume_surge_is_flagged_by_its_second_window_pooled():
    """x12 calls (~55 where ~4.6 are usual): not clear in one window, clear in two."""
    th = _quiet_cost_key(1)
    spend, calls = th.detector.expected(), th.detector.volume.mean()
    first = th.update(Point(60.0 * 2880, 8 * spend, 12 * calls))
    second = th.update(Point(60.0 * 2881, 8 * spend, 12 * calls))
    assert (first.anomalous, second.anomalous) == (False, True)


def test_the_single_window_score_grows_with_spend_and_with_calls():
    """What a look at a window still filling up flags, the closed window flags too."""
    th = _quiet_cost_key()
    det = th.detector
    spend, calls = det.expected(), det.volume.mean()
    factors = (0.5, 1, 2, 5, 10, 20, 50)
    grid = [
        [det.corroborated(Point(60.0 * 2880, a * spend, b * calls)) for b in factors]
        for a in factors
    ]
    for row in grid:
        assert row == sorted(row)
    for column in zip(*grid, strict=True):
        assert list(column) == sorted(column)
    assert grid[0][0] == 0.0 and grid[-1][-1] > th.threshold


def test_call_volume_counts_windows_without_points_as_no_calls():
    every_minute, every_fifth = CallVolume(warmup=10), CallVolume(warmup=10)
    for i in range(600):
        every_minute.learn_one(Point(60.0 * i, 0.01, 1.0))
        if i % 5 == 0 or i == 1:  # minutes 0 and 1 show how long a window is
            every_fifth.learn_one(Point(60.0 * i, 0.05, 5.0))
        else:
            every_fifth.learn_one(Point(60.0 * i, None, 0.0))  # tolerated, as no point
    assert every_minute.mean() == pytest.approx(1.0)
    assert every_fifth.mean() == pytest.approx(1.0, rel=0.15)  # not 5: the gaps count
    # Its 5 calls in one minute are a burst, not what the key does each minute.
    assert every_fifth.score_one(Point(60.0 * 600, 0.05, 5.0)) > 0.0
    assert every_minute.score_one(Point(60.0 * 600, 0.01, 1.0)) == 0.0


def test_call_volume_is_deterministic_and_survives_pickle_mid_stream():
    rng = random.Random(9)
    history = [_traffic(rng, i) for i in range(300)]
    future = [_traffic(rng, 300 + i, 30.0 * (i % 7 == 0)) for i in range(100)]
    a, b = _spend_with_volume(), _spend_with_volume()
    for x in history:
        a.learn_one(x)
        b.learn_one(x)
    copy = pickle.loads(pickle.dumps(a))
    scores = []
    for det in (a, b, copy):
        out = []
        for x in future:
            out.append(det.score_one(x))
            (det.skip_one if out[-1] >= 5.0 else det.learn_one)(x)
        scores.append(out)
    assert scores[0] == scores[1] == scores[2]
    assert max(scores[0]) >= 5.0


def test_a_sustained_spike_scoring_3_a_window_is_caught_by_longer_runs():
    """Each window of the spike is 2.7 scales up: runs of 2-3 never reach 5, 4-6 do."""

    def run(spans: tuple[int, ...]) -> list[int]:
        rng = random.Random(4)
        th = Thresholded(RobustZScore(warmup=60, spans=spans), threshold=5.0)
        for i in range(600):
            th.update(Point(60.0 * i, math.exp(rng.gauss(0, 0.7))))
        scale = th.detector.scale
        spike = [
            Point(60.0 * (600 + w), math.exp(th.detector.loc + 2.7 * scale)) for w in range(10)
        ]
        return [w for w, x in enumerate(spike) if th.update(x).anomalous]

    assert run((2, 3)) == []
    assert run((2, 3, 4, 6))[0] == 3


# -- RateSurge -------------------------------------------------------------------------


def _warm_rate(**kwargs) -> RateSurge:
    det = RateSurge(warmup=30, **kwargs)
    rng = random.Random(7)
    for i in range(300):
        det.learn_one(_rate(rng, i))
    return det


def test_rate_surge_needs_calls_not_just_a_rate():
    det = _warm_rate(min_calls=10)
    assert det.score_one(Point(0.0, 1.0, 2.0)) == 0.0  # 2 of 2 calls failed
    assert det.score_one(Point(0.0, 0.5, 2000.0)) > 20.0


def test_rate_surge_pools_a_run_of_small_windows():
    single, pooled = _warm_rate(min_calls=3), _warm_rate(min_calls=3, spans=(1, 2, 3))
    for i in range(2):  # 2 of 5 calls failing, minute after minute
        for det in (single, pooled):
            det.skip_one(Point(60.0 * i, 0.4, 5.0))
    x = Point(180.0, 0.4, 5.0)
    assert single.score_one(x) < 4.0 < pooled.score_one(x)


def test_rate_surge_not_yet_flagged_does_not_teach_itself_it_is_noise():
    """Sub-threshold windows of a surge are learned (clipped): they must not blind it.

    Ten calls a minute at 2 %, then six minutes of 4 errors in 10 that were
    not flagged (learned as normal windows would be): the learned
    over-dispersion stays low and the surge's next window still scores high.
    """
    det = RateSurge(warmup=30, spans=(1, 2, 3, 4, 5))
    rng = random.Random(3)
    for i in range(300):
        det.learn_one(Point(60.0 * i, sum(rng.random() < 0.02 for _ in range(10)) / 10, 10.0))
    for i in range(300, 306):
        det.learn_one(Point(60.0 * i, 0.4, 10.0))
    assert det.dispersion(10.0, det.baseline()) < 1.3
    assert det.score_one(Point(60.0 * 306, 0.4, 10.0)) > 6.0


# -- RunawayLoop ------------------------------------------------------------------------


def test_runaway_hard_limit_fires_from_the_first_session():
    det = RunawayLoop(max_identical_run=20, warmup=1000)
    verdict = det.update(SessionSnapshot("new-agent", 0.0, 30, 25, 5, 22, 10, 0.5))
    assert verdict.anomalous and verdict.observed == 22 and verdict.expected == 20
    assert verdict.reason == "current_identical_run 22 >= hard limit 20"


def test_runaway_learned_limit_after_warmup_only():
    det = RunawayLoop(max_calls_per_minute=None, warmup=200, margin=2.0)
    rng = random.Random(8)
    fast = SessionSnapshot("planner", 0.0, 40, 20, 20, 1, 80, 0.4)
    assert not det.update(fast).anomalous  # no learned limit yet: learned as normal
    for i in range(300):
        det.update(_snapshot(rng, 2 * i))
    assert det.warmed_up_for("planner")
    verdict = det.update(fast)
    assert verdict.anomalous and verdict.reason.startswith("calls_last_minute 80 > learned limit")
    assert verdict.expected == det.learned_limit("planner", "calls_last_minute")
    # Floors: a learned limit never goes below them.
    assert (
        det.learned_limit("planner", "current_identical_run") >= det.floors["current_identical_run"]
    )
    # Cumulative features are not learned by default.
    assert det.learned_limit("planner", "steps") is None


def test_runaway_does_not_learn_loops():
    det = RunawayLoop(warmup=50)
    rng = random.Random(9)
    for i in range(100):
        det.update(_snapshot(rng, 2 * i))
    before = det.expected("planner", "calls_last_minute")
    for i in range(100):
        assert det.update(_snapshot(rng, 2 * i, loop=True)).anomalous
    assert det.expected("planner", "calls_last_minute") == before


# -- Budget -------------------------------------------------------------------------------


def test_budget_projection_after_min_fraction_then_spent():
    budget = Budget(
        [BudgetLimit("acme", 100.0, "hour", tenants=("acme",))],
        min_elapsed_fraction=0.5,
        projection_margin=1.25,
    )
    alerts = []
    for minute in range(60):
        for verdict in budget.update(Spend(60.0 * minute, 2.5, tenant="acme")):
            alerts.append((minute, verdict.reason.split()[0], round(verdict.observed, 2)))
    # $2.50/min projects to $150 >= 1.25 x $100 as soon as half the hour has passed.
    assert alerts == [(29, "projected", 150.0), (39, "spent", 100.0)]
    assert budget.update(Spend(99.0, 2.5, tenant="other")) == []


def test_budget_groups_periods_and_late_data():
    budget = Budget([BudgetLimit("per-tenant", 10.0, "day", group_by=("tenant",))], project=False)
    assert budget.update(Spend(0.0, 9.0, tenant="a")) == []
    assert budget.update(Spend(60.0, 9.0, tenant="b")) == []
    (verdict,) = budget.update(Spend(120.0, 1.0, tenant="a"))
    assert verdict.anomalous and "tenant=a" in verdict.reason
    assert budget.update(Spend(180.0, 5.0, tenant="a")) == []  # once per period
    assert budget.update(Spend(86400.0, 1.0, tenant="a")) == []  # a new day starts at 0
    assert budget.spent("per-tenant", ("a",)) == 1.0
    assert budget.update(Spend(3600.0, 50.0, tenant="a")) == []  # yesterday: too late
    assert budget.late_usd == 50.0
    assert pickle.loads(pickle.dumps(budget)).spent("per-tenant", ("a",)) == 1.0


def test_period_bounds():
    monday = 1_767_571_200.0  # 2026-01-05
    assert period_bounds(monday + 3 * 86400 + 5, "week") == (monday, monday + 7 * 86400)
    assert period_bounds(monday + 61, "minute") == (monday + 60, monday + 120)


# -- configuration ----------------------------------------------------------------------


def test_config_defaults_build_picklable_detectors():
    detectors = build_detectors(parse_detectors(None))
    assert detectors.runaway is not None and detectors.budget is None  # no budgets configured
    key = ("acme", "chat", "gpt-4o")
    for i in range(100):
        detectors.update("cost_key", key, Point(60.0 * i, 1.0 + 0.1 * (i % 3)))
    clone = pickle.loads(pickle.dumps(detectors))
    x = Point(6000.0, 30.0)
    assert clone.update("cost_key", key, x) == detectors.update("cost_key", key, x)


def test_config_rejects_typos_and_bad_values():
    with pytest.raises(ValidationError):
        DetectorsConfig.model_validate({"cost_spike": {"treshold": 3}})
    with pytest.raises(ValidationError):
        DetectorsConfig.model_validate({"error_surge": {"severity": "panic"}})
    with pytest.raises(ValidationError):
        DetectorsConfig.model_validate(
            {"budget": {"budgets": [{"name": "x", "limit_usd": 1}, {"name": "x", "limit_usd": 2}]}}
        )


def test_config_scope_and_disabled_kinds():
    cfg = DetectorsConfig.model_validate(
        {"latency_anomaly": {"enabled": False}, "error_surge": {"scope": {"models": ["m1"]}}}
    )
    detectors = build_detectors(cfg)
    assert detectors.update("latency_p95", ("openai", "m1"), Point(0.0, 1.0, 50)) is None
    assert detectors.update("error_rate", ("svc", "m2"), Point(0.0, 0.1, 50)) is None
    assert detectors.update("error_rate", ("svc", "m1"), Point(0.0, 0.1, 50)) is not None
    assert detectors.update("tool_error_rate", ("svc", "grep"), Point(0.0, 0.1, 50)) is not None


def test_keyed_factory_from_config_is_a_partial():
    cfg = DetectorsConfig()
    factory = functools.partial(thresholded, "tokens_per_call", cfg.token_anomaly)
    th = pickle.loads(pickle.dumps(factory))()
    assert isinstance(th.detector, PerCallRatio) and th.threshold == cfg.token_anomaly.sensitivity


# -- doctests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        "base",
        "robust",
        "rate",
        "volume",
        "river_models",
        "runaway",
        "budget",
        "config",
        "workload",
    ],
)
def test_doctests(module):
    mod = importlib.import_module(f"observatory.detectors.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_a_run_counts_only_in_the_direction_of_its_last_window():
    """After a dip, an ordinary window is not a spike (the run is scored its own way)."""
    from observatory.detectors.robust import RobustZScore

    det = RobustZScore(warmup=30, spans=(2, 3, 4, 6))
    for minute in range(300):
        det.learn_one(Point(60.0 * minute, 2.0 * (1.1 if minute % 2 else 0.9)))
    for minute in range(300, 305):  # an outage: spend falls to a tenth
        det.learn_one(Point(60.0 * minute, 0.2))
    ordinary = Point(60.0 * 305, 2.2)
    assert det.score_one(ordinary) < 3
    low = Point(60.0 * 305, 0.2)
    assert det.score_one(low) > 5  # the dip itself still scores (as a dip)


# -- latency p95 at 1000 calls a minute: a window with fewer calls than usual ----------


def test_latency_p95_of_a_window_with_fewer_calls_than_usual_is_not_overrated():
    """60 to 190 calls a minute: the p95 of 60 calls wobbles ~1.7x as much as that of 190.

    With the residual's gain capped at ``full_weight`` (10) calls, every busy
    window counted alike, so the scale learned over 190-call minutes judged a
    60-call minute on a precision it did not have: a p95 1.4x the usual, under
    4 sigma of its own noise, scored 6+ and alerted (the incident-free day of
    the 1000 calls/min evaluation). Residuals now grow with sqrt(calls +
    pseudo_calls): windows of 60 and 190 calls spread alike, the 1.4x window
    is unremarkable, and a x4 slowdown over 60 calls still alerts at once.
    """
    rng = random.Random(5)
    th = thresholded("latency_p95", LatencyAnomalyConfig())
    z: dict[int, list[float]] = {60: [], 190: []}
    for minute in range(2000):
        n = 190 if minute < 600 or minute % 2 else 60
        x = Point(60.0 * minute, _p95(rng, n), float(n))
        if minute >= 600:
            z[n].append(th.detector.standardised(x))
        assert not th.update(x).anomalous, (minute, n)
    spread = {n: math.sqrt(sum(v * v for v in zs) / len(zs)) for n, zs in z.items()}
    assert 0.8 < spread[60] / spread[190] < 1.25, spread

    busy = thresholded("latency_p95", LatencyAnomalyConfig())
    for minute in range(600):
        busy.update(Point(60.0 * minute, _p95(rng, 190), 190.0))
    usual = busy.detector.expected()
    wobble = busy.update(Point(36000.0, 1.4 * usual, 60.0))
    assert not wobble.anomalous and wobble.score < 5, wobble
    slow = busy.update(Point(36060.0, _p95(rng, 60, 4.0), 60.0))
    assert slow.anomalous and slow.score > 10, slow
