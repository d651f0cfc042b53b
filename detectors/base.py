"""The vocabulary every detector shares: points, verdicts, thresholds, keys.

A detector (:class:`Detector`) only scores and learns; it never decides.
:class:`Thresholded` turns scores into :class:`Verdict`\\ s (score, effect size
and direction), and keeps incidents out of the baseline. :class:`KeyedDetectors`
runs one of those per key (tenant, model, ...) with bounded memory.

Everything here is plain Python state, so Bytewax can snapshot it with pickle.
"""

from __future__ import annotations

import abc
import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Detector",
    "KeyedDetectors",
    "Point",
    "Thresholded",
    "Verdict",
    "run_series",
    "threshold_for_looks",
]

Direction = Literal["up", "down", "both"]


@dataclass(frozen=True, slots=True)
class Point:
    """One window's value of one series.

    Parameters
    ----------
    t
        Epoch seconds of the window start (event time).
    value
        The value, in its own units (USD, ms, error rate, tokens per call);
        ``None`` when the window has no value (e.g. no calls).
    weight
        How much evidence is behind the value, e.g. the number of calls a rate
        or a percentile was computed from.

    >>> Point(60.0, 1.5, weight=12)
    Point(t=60.0, value=1.5, weight=12)
    """

    t: float
    value: float | None
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a thresholded detector concluded about one point.

    ``observed`` and ``expected`` are in the value's units so that an alert can
    say "observed $12.40/min, expected $2.10/min". ``reason`` names the rule
    or feature that fired, for detectors that have several.
    """

    anomalous: bool
    score: float
    observed: float | None
    expected: float | None
    reason: str = ""


class Detector(abc.ABC):
    """A streaming scorer of one series.

    Contract, checked for every detector by ``tests/test_detectors.py``:

    - ``score_one`` returns a float >= 0 (higher = more anomalous), 0.0 while
      warming up or for a missing value, and never changes the state;
    - ``learn_one`` tolerates missing values (it ignores them);
    - the state is bounded (it does not grow with the number of points),
      picklable, and deterministic given the constructor arguments.
    """

    @abc.abstractmethod
    def learn_one(self, x: Point) -> None:
        """Update the state with one point."""

    def skip_one(self, x: Point) -> None:  # noqa: B027 - optional hook, no-op by default
        """``x`` was seen but is not to be learned (it is an anomaly).

        Detectors whose score looks at the last few points record it here,
        without moving their baseline; the others need not do anything.
        """

    @abc.abstractmethod
    def score_one(self, x: Point) -> float:
        """How anomalous ``x`` is given what was learned so far (no side effects)."""

    @abc.abstractmethod
    def expected(self) -> float | None:
        """The current expectation of the value, in the value's units (None: no idea yet)."""

    @property
    @abc.abstractmethod
    def warmed_up(self) -> bool:
        """Whether enough points were learned for scores to mean something."""


def threshold_for_looks(threshold: float, looks: int) -> float:
    """The threshold that keeps ``looks`` looks at one window as quiet as one look.

    An early check scores a window several times as it fills up; for a value
    that can go up and down within the window (a rate, a per-call mean) each
    look is another chance for an ordinary minute to cross the threshold. For
    a z-like score the tail beyond ``z`` is about ``exp(-z**2 / 2)``, so ``k``
    looks at ``sqrt(z**2 + 2 ln k)`` raise a false alarm about as often as one
    look at ``z`` (a Bonferroni margin: exact for independent looks, and
    conservative for the overlapping ones of a filling window).

    >>> threshold_for_looks(5.0, 1), round(threshold_for_looks(4.75, 3), 2)
    (5.0, 4.98)
    """
    if looks < 1:
        raise ValueError("looks must be at least 1")
    if looks == 1 or not math.isfinite(threshold) or threshold <= 0:
        return threshold
    return math.sqrt(threshold * threshold + 2.0 * math.log(looks))


def _direction_ok(direction: Direction, observed: float, expected: float) -> bool:
    if direction == "up":
        return observed > expected
    if direction == "down":
        return observed < expected
    return True


class Thresholded:
    """A detector plus the decision: score, decide, then learn.

    A point is anomalous when the detector is warmed up, its score reaches
    ``threshold``, the absolute effect ``|observed - expected|`` reaches
    ``min_effect`` (in the value's units: "$0.30 more than usual" is not worth
    paging anyone over, however surprising) and it goes in ``direction``.

    Anomalous points are not learned (unless ``learn_anomalies``), so an
    incident does not become the new normal. A sustained change, though, must
    eventually be accepted: after ``relearn_after`` consecutive anomalous
    windows they are learned again (None: never).

    >>> from observatory.detectors.robust import RobustZScore
    >>> th = Thresholded(RobustZScore(warmup=5), threshold=5.0, min_effect=1.0)
    >>> verdicts = [th.update(Point(60.0 * i, 10.0 + (i % 3) * 0.1)) for i in range(20)]
    >>> any(v.anomalous for v in verdicts)
    False
    >>> v = th.update(Point(1200.0, 50.0))
    >>> v.anomalous, v.observed, round(v.expected, 1)
    (True, 50.0, 10.1)
    >>> th.update(Point(1260.0, 10.9)).anomalous  # surprising, but below min_effect
    False
    """

    __slots__ = (
        "detector",
        "direction",
        "learn_anomalies",
        "min_effect",
        "relearn_after",
        "streak",
        "threshold",
    )

    def __init__(
        self,
        detector: Detector,
        *,
        threshold: float,
        min_effect: float = 0.0,
        direction: Direction = "up",
        learn_anomalies: bool = False,
        relearn_after: int | None = None,
    ):
        if direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be up, down or both, not {direction!r}")
        self.detector = detector
        self.threshold = threshold
        self.min_effect = min_effect
        self.direction: Direction = direction
        self.learn_anomalies = learn_anomalies
        self.relearn_after = relearn_after
        #: Consecutive anomalous points not learned.
        self.streak = 0

    def __getstate__(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state):
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)

    def decide(self, x: Point, score: float, expected: float | None, *, threshold: float) -> bool:
        observed = x.value
        if observed is None or expected is None or not self.detector.warmed_up:
            return False
        if not score >= threshold:  # also False for NaN
            return False
        if abs(observed - expected) < self.min_effect:
            return False
        return _direction_ok(self.direction, observed, expected)

    def peek(self, x: Point, *, looks: int = 1) -> Verdict:
        """The verdict on ``x`` without learning it: for a window still filling up.

        ``looks``: how many times the window is looked at before it closes;
        the threshold is raised to :func:`threshold_for_looks` so that the
        looks together alarm about as often as one.

        >>> from observatory.detectors.robust import RobustZScore
        >>> th = Thresholded(RobustZScore(warmup=3), threshold=5.0)
        >>> for i in range(5):
        ...     _ = th.update(Point(60.0 * i, 10.0 + i % 2))
        >>> before = th.detector.loc
        >>> th.peek(Point(300.0, 80.0)).anomalous, th.detector.loc == before
        (True, True)
        """
        detector = self.detector
        score = detector.score_one(x)
        expected = detector.expected()
        threshold = threshold_for_looks(self.threshold, looks)
        return Verdict(
            self.decide(x, score, expected, threshold=threshold), score, x.value, expected
        )

    def update(self, x: Point) -> Verdict:
        """Score ``x``, decide, learn it unless it is an anomaly, and say why."""
        detector = self.detector
        verdict = self.peek(x)
        if verdict.anomalous and not self.learn_anomalies:
            self.streak += 1
            if self.relearn_after is not None and self.streak > self.relearn_after:
                detector.learn_one(x)
            else:
                detector.skip_one(x)
        else:
            self.streak = 0
            detector.learn_one(x)
        return verdict


class KeyedDetectors:
    """One :class:`Thresholded` per key, created on first sight, with bounded memory.

    A key idle for ``idle_ttl_s`` seconds of *event* time (the points' own
    ``t``, so replays and backfills behave like live traffic) is forgotten,
    and at most ``max_keys`` keys are kept (the least recently updated goes
    first). ``factory`` builds a new :class:`Thresholded`; it must be
    picklable (a module-level function or a :func:`functools.partial`), since
    it is part of the state.

    >>> from observatory.detectors.robust import RobustZScore
    >>> def factory():
    ...     return Thresholded(RobustZScore(warmup=3), threshold=5.0)
    >>> keyed = KeyedDetectors(factory, idle_ttl_s=3600, max_keys=2)
    >>> for key in ["a", "b", "c"]:
    ...     _ = keyed.update(key, Point(0.0, 1.0))
    >>> sorted(keyed.keys())  # "a" was the least recently updated
    ['b', 'c']
    >>> _ = keyed.update("b", Point(7200.0, 1.0))  # "c" has been idle for 2 h
    >>> sorted(keyed.keys())
    ['b']
    """

    def __init__(
        self,
        factory: Callable[[], Thresholded],
        *,
        idle_ttl_s: float = 6 * 3600.0,
        max_keys: int = 100_000,
    ):
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.factory = factory
        self.idle_ttl_s = idle_ttl_s
        self.max_keys = max_keys
        #: key -> [Thresholded, t of its last point], least recently updated first
        self.entries: OrderedDict[Hashable, list] = OrderedDict()
        #: The latest event time seen, our only clock.
        self.clock = -math.inf
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.entries

    def keys(self) -> list[Hashable]:
        return list(self.entries)

    def get(self, key: Hashable) -> Thresholded | None:
        entry = self.entries.get(key)
        return entry[0] if entry is not None else None

    def update(self, key: Hashable, x: Point) -> Verdict:
        """Route ``x`` to ``key``'s detector (creating it), then evict what is idle or over cap."""
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = [self.factory(), x.t]
        else:
            self.entries.move_to_end(key)
            entry[1] = max(entry[1], x.t)
        verdict = entry[0].update(x)
        if x.t > self.clock:
            self.clock = x.t
        self._evict()
        return verdict

    def peek(self, key: Hashable, x: Point, *, looks: int = 1) -> Verdict | None:
        """``key``'s verdict on ``x`` without learning it (None for a key never seen)."""
        entry = self.entries.get(key)
        return entry[0].peek(x, looks=looks) if entry is not None else None

    def _evict(self) -> None:
        # Entries are in update order, which is event-time order up to the
        # disorder the watermark allows, so the idle ones are at the front:
        # eviction is amortised O(1) and never scans the live keys.
        entries = self.entries
        horizon = self.clock - self.idle_ttl_s
        while entries:
            key, (_, last_t) = next(iter(entries.items()))
            if last_t >= horizon and len(entries) <= self.max_keys:
                break
            del entries[key]
            self.evicted += 1


def run_series(
    model: Detector | Thresholded,
    series: Iterable[tuple[float, float | None]],
    *,
    threshold: float = math.inf,
) -> list[Verdict]:
    """Run a detector over a plain ``(timestamp, value)`` series, offline.

    A bare :class:`Detector` is wrapped in :class:`Thresholded` with
    ``threshold`` (by default nothing is anomalous and you read the scores).
    The model learns as it goes, exactly as it would online.

    >>> from observatory.detectors.robust import RobustZScore
    >>> series = [(60.0 * i, 100.0 + (-1) ** i) for i in range(40)] + [(2400.0, 400.0)]
    >>> verdicts = run_series(RobustZScore(warmup=10), series, threshold=6.0)
    >>> [i for i, v in enumerate(verdicts) if v.anomalous]
    [40]
    """
    if not isinstance(model, Thresholded):
        model = Thresholded(model, threshold=threshold, direction="both")
    return [model.update(Point(t, value)) for t, value in series]
