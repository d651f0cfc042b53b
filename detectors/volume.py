"""Call volume: whether a window has far more calls than its key usually has.

Spend per window is heavy-tailed: one long agent session on an expensive
model can make a quiet key's minute 10+ sigma, so spend alone cannot alert
on a single window (:class:`~.robust.RobustZScore` scores runs of windows
instead, and waits for the second window at best). A real cost spike from
more traffic, though, also multiplies the number of calls, and that number
is known: it is the weight of every cost point. :class:`CallVolume` scores
it, and :class:`SpendWithVolume` lets a single window alert when its spend
*and* its call volume are both surprising.

Calls per window are an over-dispersed count: sessions arrive as a Poisson
process but each brings several calls (a compound Poisson count), so the
variance is ``dispersion`` times the mean, with a dispersion of about the
mean square session length over the mean (~6 for sessions of 1-12 calls).
The score is the quasi-Poisson test of the count against the learned mean:
the signed root of the Poisson deviance, divided by the root of the learned
dispersion (cf. :class:`~.rate.RateSurge`, the same for binomial rates).
"""

from __future__ import annotations

import math

from observatory.detectors.base import Detector, Point
from observatory.detectors.robust import RobustZScore, fading

__all__ = ["CallVolume", "SpendWithVolume", "poisson_deviance"]

#: The mean count never goes below this, so that a key idle for hours does not
#: make its next call an infinitely surprising one.
_MIN_MEAN = 1e-3


def poisson_deviance(n: float, mean: float) -> float:
    """Twice the log-likelihood ratio of a Poisson count ``n`` against ``mean`` (> 0).

    >>> poisson_deviance(5.0, 5.0), poisson_deviance(0.0, 2.0)
    (0.0, 4.0)
    >>> round(poisson_deviance(40.0, 5.0), 2)
    96.36
    """
    if n <= 0.0:
        return 2.0 * mean
    return max(2.0 * (n * math.log(n / mean) - (n - mean)), 0.0)


class CallVolume(Detector):
    """How surprising a window's number of calls (the point's weight) is, for its key.

    Only surges score (a drop in traffic is not a cost spike): the score is
    ``sqrt(deviance / dispersion)`` of the calls of the window, or of the
    pooled calls of the last ``L`` windows for each ``L`` in ``spans``,
    against ``L`` times the learned mean, and 0 when there are fewer calls
    than the mean. Roughly a z-score: 5 is a count about as rare as 5 sigma
    if the count were Gaussian.

    The point's value is not used, except that a point without one (None or
    not finite) is no window at all. A window with no calls usually produces
    no point: windows missing between two points are learned as windows
    with no calls, so a key with a call every few minutes has a mean below
    1, not the mean of its busy minutes. The window length is taken to be
    the shortest time seen between two points (``t`` is the window start):
    until a key has had calls in two consecutive windows its gaps are not
    counted, which errs on the side of a higher mean, i.e. of silence.

    Parameters
    ----------
    half_life
        Half-life of the mean, in windows: follows a daily cycle.
    dispersion_half_life
        Half-life of the over-dispersion (variance over mean of the count),
        in windows. It is a property of how calls cluster into sessions and
        changes slowly.
    warmup
        Windows with calls learned before scoring starts; they are learned
        as they are, without the clip below.
    clip
        Largest count learned, in standard deviations above the mean: a
        surge not yet flagged must not teach the key that surges are normal.
    spans
        Run lengths scored; the score is the largest over them.
    min_dispersion
        Floor of the dispersion: 1 is a Poisson count (calls one by one).

    Examples
    --------

    Sessions of 1 to 12 calls arrive 1.5 a minute on average, following a
    daily cycle; then one long session alone, and then 20 extra sessions a
    minute.

    >>> import math, random
    >>> rng = random.Random(1)
    >>> def calls(sessions_per_minute):
    ...     n = 0
    ...     for _ in range(sum(rng.random() < sessions_per_minute / 50 for _ in range(50))):
    ...         n += max(1, min(int(rng.expovariate(1 / 3)) + 1, 12))
    ...     return n
    >>> det = CallVolume(warmup=60)
    >>> scores = []
    >>> for minute in range(2880):
    ...     rate = 1.5 * (1 + 0.5 * math.sin(2 * math.pi * minute / 1440))
    ...     n = calls(rate)
    ...     if n:  # as in the flow: a window without calls has no point
    ...         x = Point(60.0 * minute, 0.01 * n, weight=n)
    ...         scores.append(det.score_one(x))
    ...         det.learn_one(x)
    >>> round(det.mean(), 1), round(det.dispersion(), 1)  # calls come in clumps: sessions
    (5.2, 5.3)
    >>> round(max(scores), 1)
    4.0
    >>> round(det.score_one(Point(60.0 * 2880, 0.12, weight=12)), 1)  # one 12-call session
    1.1
    >>> n = calls(1.5 + 20)
    >>> n, round(det.score_one(Point(60.0 * 2880, 0.01 * n, weight=n)), 1)
    (85, 7.7)
    """

    def __init__(
        self,
        *,
        half_life: float = 30.0,
        dispersion_half_life: float = 240.0,
        warmup: int = 30,
        clip: float = 3.0,
        spans: tuple[int, ...] = (1,),
        min_dispersion: float = 1.0,
    ):
        if warmup < 1:
            raise ValueError("warmup must be at least 1")
        if not spans or min(spans) < 1:
            raise ValueError("spans must be positive run lengths")
        if min_dispersion <= 0:
            raise ValueError("min_dispersion must be positive")
        self.half_life = half_life
        self.dispersion_half_life = dispersion_half_life
        self.warmup = warmup
        self.clip = clip
        self.spans = tuple(sorted(set(spans)))
        self.min_dispersion = min_dispersion
        self._decay = 1.0 - fading(half_life)
        self._dispersion_decay = 1.0 - fading(dispersion_half_life)
        #: EW sums of calls and windows, whose ratio is the mean.
        self.calls = 0.0
        self.windows = 0.0
        #: EW sums of squared deviations and of means, whose ratio is the dispersion.
        self._excess = 0.0
        self._excess_weight = 0.0
        #: Windows with calls learned.
        self.learned = 0
        #: Calls of the last max(spans) - 1 windows (missing ones as 0), newest last.
        self._recent: list[float] = []
        #: The latest point's time, and the shortest time seen between two points.
        self._last_t: float | None = None
        self._step: float | None = None

    # -- the pieces ---------------------------------------------------------

    @staticmethod
    def _usable(x: Point) -> bool:
        return x.value is not None and math.isfinite(x.value) and math.isfinite(x.weight)

    def mean(self) -> float | None:
        """The learned mean number of calls per window (None before any)."""
        return max(self.calls / self.windows, _MIN_MEAN) if self.windows > 0 else None

    def dispersion(self) -> float:
        """The learned variance over mean of the count (at least ``min_dispersion``)."""
        if self._excess_weight <= 0.0:
            return self.min_dispersion
        return max(self._excess / self._excess_weight, self.min_dispersion)

    def _missing_before(self, t: float) -> int:
        """Windows with no point between the latest point and ``t``."""
        if self._last_t is None or self._step is None or t <= self._last_t:
            return 0
        # Beyond ~10 half-lives without calls the mean is ~0 anyway: bounded work.
        cap = int(10 * self.half_life) + max(self.spans)
        return min(max(round((t - self._last_t) / self._step) - 1, 0), cap)

    def _see(self, x: Point) -> int:
        """Note ``x``'s time; returns how many windows without calls came before it."""
        missing = self._missing_before(x.t)
        last = self._last_t
        if last is not None and x.t > last:
            gap = x.t - last
            self._step = gap if self._step is None else min(self._step, gap)
        if last is None or x.t > last:
            self._last_t = x.t
        return missing

    def _remember(self, n: float) -> None:
        keep = self.spans[-1] - 1
        if keep > 0:
            self._recent.append(n)
            if len(self._recent) > keep:
                del self._recent[0]

    def _learn_count(self, n: float) -> None:
        mean = self.mean()
        if mean is not None:
            dispersion = self.dispersion()
            if self.learned >= self.warmup:
                n = min(n, mean + self.clip * math.sqrt(dispersion * mean))
            decay = self._dispersion_decay
            self._excess = decay * self._excess + (n - mean) ** 2
            self._excess_weight = decay * self._excess_weight + mean
        self.calls = self._decay * self.calls + n
        self.windows = self._decay * self.windows + 1.0

    def _statistic(self, n: float, expected: float) -> float:
        if n <= expected:
            return 0.0
        return math.sqrt(poisson_deviance(n, expected) / self.dispersion())

    # -- the Detector protocol -----------------------------------------------

    @property
    def warmed_up(self) -> bool:
        return self.learned >= self.warmup

    def expected(self) -> float | None:
        """The mean number of calls per window: this detector's value is the weight."""
        return self.mean()

    def learn_one(self, x: Point) -> None:
        if not self._usable(x):
            return
        for _ in range(self._see(x)):
            self._learn_count(0.0)
            self._remember(0.0)
        n = max(x.weight, 0.0)
        self._learn_count(n)
        self._remember(n)
        self.learned += 1

    def skip_one(self, x: Point) -> None:
        if not self._usable(x):
            return
        # The windows without calls before the anomaly were normal: learned.
        for _ in range(self._see(x)):
            self._learn_count(0.0)
            self._remember(0.0)
        self._remember(max(x.weight, 0.0))

    def score_one(self, x: Point) -> float:
        mean = self.mean()
        if not self.warmed_up or mean is None or not self._usable(x):
            return 0.0
        keep = self.spans[-1] - 1
        missing = min(self._missing_before(x.t), keep)
        previous = (self._recent + [0.0] * missing)[-keep:] if keep > 0 else []
        n = max(x.weight, 0.0)
        best = self._statistic(n, mean) if self.spans[0] == 1 else 0.0
        for length in range(2, min(self.spans[-1], len(previous) + 1) + 1):
            n += previous[-(length - 1)]
            if length in self.spans:
                best = max(best, self._statistic(n, length * mean))
        return best


class SpendWithVolume(Detector):
    """Spend over runs of windows, or in a single window when its call volume surges too.

    A single window of high spend may be one long session; a single window
    of high spend *and* many more calls than usual is more traffic, a real
    spike. So the score is the larger of

    - ``spend``'s own score (a :class:`~.robust.RobustZScore` whose spans
      leave out single windows: runs of 2+ windows), and
    - for the window alone, ``threshold * min(z / spend_threshold, v /
      volume_threshold)``, where ``z`` is the robust z-score of the window's
      spend and ``v`` the :class:`CallVolume` score of its calls: it reaches
      ``threshold`` when both reach theirs.

    ``threshold`` is the score at which the caller alerts (the
    :class:`~.base.Thresholded` threshold), so that both paths are reported
    on one scale. The expectation is the spend's, in USD. The single-window
    score never decreases as a window's spend or calls grow, so a look at a
    window still filling up flags nothing there that the closed window
    would not.

    Parameters
    ----------
    spend
        The spend model; its spans are the run path.
    volume
        The call volume model (None: the run path only).
    threshold
        Score at which a window alerts.
    spend_threshold
        Robust z of the window's spend (alone) needed by the single-window path.
    volume_threshold
        Call volume score needed by the single-window path.

    Examples
    --------

    A key with ~1.5 sessions a minute of 1 to 12 calls at ~$0.005 a call
    (so its minutes swing x5 on their own), then twenty extra sessions a
    minute. The heaviest quiet minute (a few long sessions) has a high spend
    but not that many calls; the spike's first window has both, and alerts,
    although runs of 2+ windows of spend alone cannot flag it yet.

    >>> import random
    >>> rng = random.Random(2)
    >>> def minute(sessions_per_minute):
    ...     calls = spend = 0
    ...     for _ in range(sum(rng.random() < sessions_per_minute / 50 for _ in range(50))):
    ...         for _ in range(max(1, min(int(rng.expovariate(1 / 3)) + 1, 12))):
    ...             calls += 1
    ...             spend += 0.005 * rng.lognormvariate(0, 0.5)
    ...     return calls, spend
    >>> det = SpendWithVolume(
    ...     RobustZScore(warmup=60, offset=0.01, spans=(2, 3, 4, 6)),
    ...     CallVolume(warmup=60, spans=(1, 2)),
    ...     threshold=5.0, spend_threshold=2.0, volume_threshold=7.0,
    ... )
    >>> def evidence(x):
    ...     z, v = det.spend.standardised(x), det.volume.score_one(x)
    ...     return x.weight, round(z, 1), round(v, 1), round(det.score_one(x), 1)
    >>> quiet, heaviest = [], None
    >>> for t in range(2880):
    ...     calls, spend = minute(1.5)
    ...     if calls:
    ...         x = Point(60.0 * t, spend, weight=calls)
    ...         quiet.append(det.score_one(x))
    ...         if heaviest is None or spend > heaviest[0]:
    ...             heaviest = (spend, evidence(x))
    ...         det.learn_one(x)
    >>> round(max(quiet), 1), heaviest[1]  # calls, spend z, volume score, score
    (3.2, (34, 2.5, 3.5, 2.5))
    >>> calls, spend = minute(1.5 + 20)
    >>> spike = Point(60.0 * 2880, spend, weight=calls)
    >>> evidence(spike), round(det.spend.score_one(spike), 1)
    ((99, 4.1, 8.9, 6.4), 2.4)
    """

    def __init__(
        self,
        spend: RobustZScore,
        volume: CallVolume | None = None,
        *,
        threshold: float = 5.0,
        spend_threshold: float = 2.0,
        volume_threshold: float = 7.0,
    ):
        if threshold <= 0 or spend_threshold <= 0 or volume_threshold <= 0:
            raise ValueError("thresholds must be positive")
        self.spend = spend
        self.volume = volume
        self.threshold = threshold
        self.spend_threshold = spend_threshold
        self.volume_threshold = volume_threshold

    @property
    def warmed_up(self) -> bool:
        return self.spend.warmed_up

    def expected(self) -> float | None:
        return self.spend.expected()

    def learn_one(self, x: Point) -> None:
        self.spend.learn_one(x)
        if self.volume is not None:
            self.volume.learn_one(x)

    def skip_one(self, x: Point) -> None:
        self.spend.skip_one(x)
        if self.volume is not None:
            self.volume.skip_one(x)

    def corroborated(self, x: Point) -> float:
        """The single-window path's score of ``x`` (0.0 without a volume model)."""
        if self.volume is None:
            return 0.0
        z = self.spend.standardised(x)
        v = self.volume.score_one(x)
        if z <= 0.0 or v <= 0.0:
            return 0.0
        return self.threshold * min(z / self.spend_threshold, v / self.volume_threshold)

    def score_one(self, x: Point) -> float:
        return max(self.spend.score_one(x), self.corroborated(x))
