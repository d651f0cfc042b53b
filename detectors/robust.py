"""Robust exponentially weighted z-scores, for heavy-tailed, seasonal series.

Spend, latency percentiles and tokens per call are positive and heavy-tailed:
a z-score on the raw values is dominated by the few huge windows. On log
values they are close to symmetric, and a ratio ("3x the usual spend") is
what an operator thinks in anyway.

The baseline is an exponentially weighted (EW) location and scale with a
*clipped* learning step (a Huber-type M-estimator): a point never moves the
location by more than ``clip`` scales, so a spike that stays under the alert
threshold is not absorbed either, while the slow drift of a daily cycle is
followed because its residuals are small. The warm-up starts from the median
and the (clipped) mean absolute deviation of the first ``warmup`` points, not
from whatever the first point was.
"""

from __future__ import annotations

import math
import statistics

from observatory.detectors.base import Detector, Point

__all__ = ["PerCallRatio", "QuantileZScore", "RobustZScore", "fading"]

#: sigma of a normal = this times its mean absolute deviation ...
_MEAN_ABS_TO_SIGMA = math.sqrt(math.pi / 2)
#: ... and this times its median absolute deviation.
_MAD_TO_SIGMA = 1.4826
_TINY = 1e-12


def fading(half_life: float) -> float:
    """The EW weight of a new point for a given half-life in points.

    >>> round(fading(1.0), 3), round(fading(30.0), 4)
    (0.5, 0.0228)
    """
    if half_life <= 0:
        raise ValueError("half_life must be positive")
    return 1.0 - 0.5 ** (1.0 / half_life)


class RobustZScore(Detector):
    """Robust z-score of a value against its EW baseline, on a log scale by default.

    Parameters
    ----------
    half_life
        Half-life of the location, in points (windows). Short enough to follow
        a daily cycle (its lag bias is the cycle's slope times ~1.4 half-lives),
        long enough that a few windows hardly move it.
    scale_half_life
        Half-life of the scale. Longer than the location's: the noise level
        changes slowly, and a stable scale keeps the false alarm rate stable.
    warmup
        Points collected before scoring starts; their median and (clipped)
        mean absolute deviation initialise the baseline.
    clip
        Largest learning step, in scales: the robustness knob.
    log
        Work on ``log(value + offset)`` (ratios) rather than on values.
    offset
        Added before the log, in the value's units, so that zeros are finite
        and tiny values do not look like huge ratios.
    min_scale
        Floor of the scale (in log units when ``log``: 0.05 = 5 %), so an
        almost constant series does not turn every wiggle into an alert.
    min_weight
        Points with a smaller weight (e.g. a p95 over 3 calls) are neither
        scored nor learned.
    spans
        Run lengths scored: the score is the largest ``sum of the last L
        standardised residuals / sqrt(L)`` over ``L`` in ``spans``, taken in
        the direction of the point's own residual (a run of low windows does
        not make the next ordinary one a spike). ``(1,)`` is the plain
        (absolute) z-score. Longer runs see a sustained shift ``sqrt(L)``
        times better; and leaving out ``1`` makes a single wild window
        (one huge call in a heavy-tailed sum) unable to alert alone, since
        each residual of a run is clipped at ``span_clip``.
    span_clip
        Clip of each residual in runs of two or more points, in scales.

    Examples
    --------

    A spend series with a daily cycle of +-50 % and noise: nothing stands out
    until spend jumps to 4x for ten minutes. Points are learned unless they
    score 5 or more (what :class:`~.base.Thresholded` does).

    >>> import math, random
    >>> rng = random.Random(7)
    >>> def spend(minute):
    ...     daily = 1 + 0.5 * math.sin(2 * math.pi * minute / 1440)
    ...     return 2.0 * daily * rng.lognormvariate(0, 0.2)
    >>> det = RobustZScore(warmup=60, spans=(1, 2, 3))
    >>> scores = []
    >>> for minute in range(1440):
    ...     x = Point(60.0 * minute, spend(minute) * (4 if 900 <= minute < 910 else 1))
    ...     scores.append(det.score_one(x))
    ...     if scores[-1] < 5:
    ...         det.learn_one(x)
    ...     else:
    ...         det.skip_one(x)
    >>> max(scores[:900]) < 5, min(scores[900:910]) > 5
    (True, True)
    >>> round(det.expected(), 2), round(det.scale, 2)  # the median spend, the log-scale noise
    (1.8, 0.22)
    """

    def __init__(
        self,
        *,
        half_life: float = 30.0,
        scale_half_life: float = 240.0,
        warmup: int = 30,
        clip: float = 3.0,
        log: bool = True,
        offset: float = 0.0,
        min_scale: float = 0.05,
        min_weight: float = 0.0,
        spans: tuple[int, ...] = (1,),
        span_clip: float = 4.0,
    ):
        if warmup < 2:
            raise ValueError("warmup must be at least 2")
        if not spans or min(spans) < 1:
            raise ValueError("spans must be positive run lengths")
        self.half_life = half_life
        self.scale_half_life = scale_half_life
        self.warmup = warmup
        self.clip = clip
        self.log = log
        self.offset = offset
        self.min_scale = min_scale
        self.min_weight = min_weight
        self.spans = tuple(sorted(set(spans)))
        self.span_clip = span_clip
        self._alpha = fading(half_life)
        self._beta = fading(scale_half_life)
        self.loc = 0.0
        self.scale = 0.0
        #: (transformed value, weight) of the warm-up points; None once warmed up.
        self._buffer: list[tuple[float, float]] | None = []
        #: Clipped standardised residuals of the last max(spans) - 1 points, newest last.
        self._recent: list[float] = []

    # -- the pieces ---------------------------------------------------------

    def _transform(self, value: float) -> float:
        if self.log:
            return math.log(max(value + self.offset, _TINY))
        return value

    def _untransform(self, y: float) -> float:
        return math.exp(y) - self.offset if self.log else y

    def _value(self, x: Point) -> float:
        """The point's value on the scale the baseline is learned on."""
        return self._transform(x.value)

    def _gain(self, weight: float) -> float:
        """How a residual scales with the weight: 1 here (see :class:`PerCallRatio`)."""
        return 1.0

    def _step(self, weight: float) -> float:
        """How much of a full learning step a point of this weight takes: all of it here."""
        return 1.0

    def _usable(self, x: Point) -> bool:
        return x.value is not None and x.weight >= self.min_weight and math.isfinite(x.value)

    def _standardised(self, x: Point) -> float:
        e = (self._value(x) - self.loc) * self._gain(x.weight)
        return e / max(self.scale, self.min_scale)

    def _remember(self, z: float) -> None:
        keep = self.spans[-1] - 1
        if keep > 0:
            recent = self._recent
            recent.append(max(-self.span_clip, min(self.span_clip, z)))
            if len(recent) > keep:
                del recent[0]

    def _init_from_buffer(self, buffer: list[tuple[float, float]]) -> None:
        ys = [y for y, _ in buffer]
        self.loc = statistics.median(ys)
        deviations = [abs(y - self.loc) * self._gain(w) for y, w in buffer]
        # The mean absolute deviation, each clipped at 3 MAD-sigmas as a later
        # learning step is: from 60 points the MAD alone misjudges sigma by
        # ~15 % (this: ~10 %), and an underestimate right after the warm-up
        # turns ordinary windows into alerts (7 of 9 false token alerts in 100
        # redrawn quiet days, python -m bench.quiet, came in its first hour).
        limit = self.clip * _MAD_TO_SIGMA * statistics.median(deviations)
        clipped = [min(d, limit) for d in deviations]
        self.scale = _MEAN_ABS_TO_SIGMA * sum(clipped) / len(clipped)

    # -- the Detector protocol -----------------------------------------------

    @property
    def warmed_up(self) -> bool:
        return self._buffer is None

    def expected(self) -> float | None:
        buffer = self._buffer
        if buffer is None:
            return self._untransform(self.loc)
        if not buffer:
            return None
        return self._untransform(statistics.median(y for y, _ in buffer))

    def learn_one(self, x: Point) -> None:
        if not self._usable(x):
            return
        y = self._value(x)
        buffer = self._buffer
        if buffer is not None:
            buffer.append((y, x.weight))
            if len(buffer) >= self.warmup:
                self._init_from_buffer(buffer)
                self._buffer = None
            return
        self._remember(self._standardised(x))
        gain = self._gain(x.weight)
        scale = max(self.scale, self.min_scale)
        # Clip the standardised residual: one wild window moves the baseline
        # by at most alpha * clip scales, however wild it is.
        e = (y - self.loc) * gain
        e = max(-self.clip * scale, min(self.clip * scale, e))
        self.loc += self._alpha * self._step(x.weight) * e / gain
        self.scale += self._beta * self._step(x.weight) * (_MEAN_ABS_TO_SIGMA * abs(e) - self.scale)

    def skip_one(self, x: Point) -> None:
        if self._buffer is None and self._usable(x):
            self._remember(self._standardised(x))

    def standardised(self, x: Point) -> float:
        """The signed standardised residual of ``x`` alone, unclipped, whatever the spans.

        0.0 while warming up or for an unusable point; no side effects.
        """
        if self._buffer is not None or not self._usable(x):
            return 0.0
        return self._standardised(x)

    def score_one(self, x: Point) -> float:
        if self._buffer is not None or not self._usable(x):
            return 0.0
        z = self._standardised(x)
        spans = self.spans
        best = abs(z) if spans[0] == 1 else 0.0
        if spans[-1] > 1:
            # Runs end at this point; a missing window (no calls) does not break them.
            # A run counts in this point's own direction only: after a dip, a normal
            # window is not a spike (and a run's score only grows with the point).
            sign = 1.0 if z >= 0 else -1.0
            total = max(-self.span_clip, min(self.span_clip, z))
            recent = self._recent
            for length in range(2, min(spans[-1], len(recent) + 1) + 1):
                total += recent[-(length - 1)]
                if length in spans:
                    best = max(best, sign * total / math.sqrt(length))
        return best


class PerCallRatio(RobustZScore):
    """Robust z-score of a per-call average, aware of how many calls are behind it.

    The value is a ratio such as input tokens per call, and the weight the
    number of calls. The mean of ``n`` calls wobbles ~``1/sqrt(n)`` as much as
    one call, so residuals are standardised by ``sqrt(n)``: the scale learned
    is the dispersion of a *single call*, and a quiet night with two calls a
    minute does not look like a context blow-up while a busy hour still
    catches a 30 % drift. Same parameters as :class:`RobustZScore`.

    The log of a mean of ``n`` calls is biased low by about ``s**2 / (2 n)``,
    ``s`` being a single call's relative spread (the learned scale): by Jensen,
    a minute of two calls sits nearer the calls' median, a busy minute nearer
    their mean. Multiplied by ``sqrt(n)``, that gap made an ordinary busy
    minute score half a standard deviation high, and a key's busiest minutes
    crossed the threshold ~20x as often as they should. So the log mean is
    corrected by ``s**2 / (2 n)`` before it is compared or learned, and the
    baseline (``expected()``) is the calls' mean.

    Examples
    --------

    Tokens per call of ~1,000 (log-normal per call) with 2 to 200 calls a
    minute: the same 1.5x rise means little over 2 calls and a lot over 200.

    >>> import random
    >>> rng = random.Random(3)
    >>> det = PerCallRatio(warmup=60)
    >>> for minute in range(600):
    ...     n = rng.choice([2, 20, 200])
    ...     mean = sum(rng.lognormvariate(0, 0.8) for _ in range(n)) / n
    ...     det.learn_one(Point(60.0 * minute, 1000 * mean, weight=n))
    >>> usual = det.expected()
    >>> round(usual, -2)
    1400.0
    >>> [round(det.score_one(Point(36000.0, 1.5 * usual, weight=n))) for n in (2, 20, 200)]
    [1, 2, 7]
    """

    def _gain(self, weight: float) -> float:
        return math.sqrt(max(weight, 1.0))

    def _value(self, x: Point) -> float:
        y = self._transform(x.value)
        if self.log and self._buffer is None:
            y += self._jensen(x.weight)
        return y

    def _jensen(self, weight: float) -> float:
        """How far the log of a mean of ``weight`` calls falls, on average, below log(mean)."""
        scale = max(self.scale, self.min_scale)
        return scale * scale / (2.0 * max(weight, 1.0))

    def _init_from_buffer(self, buffer: list[tuple[float, float]]) -> None:
        super()._init_from_buffer(buffer)
        if self.log:
            # The warm-up's log means, corrected as every later one will be.
            self.loc = statistics.median(y + self._jensen(w) for y, w in buffer)


class QuantileZScore(PerCallRatio):
    """Robust z-score of a per-window percentile (e.g. p95 latency) over few or many calls.

    The log p95 of ``n`` calls wobbles ~``1/sqrt(n)`` as much as a single
    call's value, and keeps doing so well past a few calls: measured on the
    p95s of the flow's sketches (log-normal calls, 3 to 250 a window), its
    standard deviation times ``sqrt(n + 10)`` stays within 6 %. So residuals
    are standardised by ``sqrt(n + pseudo_calls)``: the scale learned is that
    of a single call, and a window with fewer calls than the key's usual
    ones (a quieter minute, the quiet hours of a busy model) is judged on the
    precision it has, not on that of the busy windows the scale was learned
    from. ``pseudo_calls`` keeps the residual of a window of very few calls
    from shrinking much further: their "p95" is a lower order statistic (of 3
    calls, their median), biased low and with a thin upper tail, so it needs
    no more allowance, and a slowdown seen in 6 calls still shows. A window
    also moves the baseline and the scale in proportion to
    ``min(n, full_weight) / full_weight``: a biased-low p95 of 3 calls must not
    drag the baseline down (nor inflate the scale) at quiet hours. A real
    service's p95 also moves from minute to minute by itself (load, the mix
    of prompts), which no number of calls averages away: past ``max_calls``
    calls a window counts as ``max_calls`` (softly: the effective calls are
    ``1 / (1 / (n + pseudo_calls) + 1 / max_calls)``), so a model's busiest
    minutes are not judged on a precision they do not have. Same parameters
    as :class:`RobustZScore`, plus ``full_weight``, ``pseudo_calls`` and
    ``max_calls`` (calls).

    Examples
    --------

    A model answering in ~900 ms (log-normal per call, sigma 0.35) with 4 to
    60 calls a minute, then 3x slower. The busy windows' p95 is precise and
    is judged so; a plain z-score, whose one scale must also cover the
    noisy quiet windows, rates the same slowdown lower.

    >>> import random
    >>> rng = random.Random(0)
    >>> def p95(n, factor=1.0):
    ...     calls = sorted(900 * factor * rng.lognormvariate(0, 0.35) for _ in range(n))
    ...     return calls[int(0.95 * (n - 1))]
    >>> det, plain = QuantileZScore(warmup=60, full_weight=10), RobustZScore(warmup=60)
    >>> quiet = []
    >>> for minute in range(1000):
    ...     n = rng.choice([4, 8, 15, 30, 60])
    ...     x = Point(60.0 * minute, p95(n), weight=n)
    ...     quiet.append(det.score_one(x))
    ...     det.learn_one(x)
    ...     plain.learn_one(x)
    >>> round(max(quiet), 1)
    3.8
    >>> slow = Point(60000.0, p95(60, 3.0), weight=60)
    >>> round(det.score_one(slow), 1), round(plain.score_one(slow), 1)
    (8.7, 5.9)
    """

    #: Default of ``pseudo_calls``; also what a detector pickled before it existed gets.
    PSEUDO_CALLS = 30.0

    #: Default of ``max_calls``; also what a detector pickled before it existed gets.
    MAX_CALLS = 1000.0

    def __init__(
        self,
        *,
        full_weight: float = 10.0,
        pseudo_calls: float = PSEUDO_CALLS,
        max_calls: float = MAX_CALLS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if full_weight < 1:
            raise ValueError("full_weight must be at least 1 call")
        if pseudo_calls < 0:
            raise ValueError("pseudo_calls cannot be negative")
        if max_calls <= 0:
            raise ValueError("max_calls must be positive")
        self.full_weight = full_weight
        self.pseudo_calls = pseudo_calls
        self.max_calls = max_calls

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "pseudo_calls" not in state:
            # Pickled when residuals were scaled by sqrt(min(n, full_weight)): its
            # scale is in other units, and would make every busy window an alert.
            self.pseudo_calls = self.PSEUDO_CALLS
            self.loc, self.scale, self._buffer, self._recent = 0.0, 0.0, [], []
        if "max_calls" not in state:
            self.max_calls = self.MAX_CALLS

    def _gain(self, weight: float) -> float:
        calls = max(weight, 1.0) + self.pseudo_calls
        return math.sqrt(calls * self.max_calls / (calls + self.max_calls))

    def _step(self, weight: float) -> float:
        return min(max(weight, 1.0), self.full_weight) / self.full_weight

    def _jensen(self, weight: float) -> float:
        return 0.0  # a percentile has no Jensen gap: it is compared as it is
