"""Error surges: k errors out of n calls against an EW baseline rate.

An error *rate* alone cannot be thresholded: 1 error out of 2 calls is a 50 %
rate and means nothing, while 50 errors out of 1,000 calls against a usual
1 % is a real surge. So the score is a binomial test, expressed as a z-like
number: the signed root of the likelihood ratio, ``sqrt(2 n KL(k/n || p0))``.
Unlike the normal approximation it stays calibrated in the tail when ``n p0``
is small (the Chernoff bound ``P <= exp(-n KL)`` holds for any ``n``).

Real error rates wobble more than a binomial does (a retry storm here, a flaky
upstream there), which would make a plain binomial test fire at high volume.
The extra variance of the rate is learned (a beta-binomial-like dispersion)
and divides the statistic.
"""

from __future__ import annotations

import math

from observatory.detectors.base import Detector, Point
from observatory.detectors.robust import fading

__all__ = ["RateSurge", "binomial_kl"]


def binomial_kl(p_hat: float, p0: float) -> float:
    """KL divergence of Bernoulli(p_hat) from Bernoulli(p0), in nats.

    >>> round(binomial_kl(0.5, 0.01), 4), binomial_kl(0.01, 0.01)
    (1.6145, 0.0)
    """
    total = 0.0
    if p_hat > 0.0:
        total += p_hat * math.log(p_hat / p0)
    if p_hat < 1.0:
        total += (1.0 - p_hat) * math.log((1.0 - p_hat) / (1.0 - p0))
    return max(total, 0.0)


class RateSurge(Detector):
    """Binomial-aware surprise of an error rate; the value is the rate, the weight the calls.

    Parameters
    ----------
    half_life
        Half-life of the baseline rate, in windows.
    warmup
        Windows with calls learned before scoring starts.
    prior_rate
        The rate assumed before any data, ...
    prior_calls
        ... worth this many calls: a key with little traffic leans on it, so
        its first error is not "infinitely" surprising.
    min_calls
        Fewer calls (in the run scored) are not scored: a handful of calls
        cannot make an error surge.
    clip
        Largest learning step, in standard deviations of the error count. It
        bounds what an incident's first windows, not yet flagged, teach the
        baseline rate and the over-dispersion: at 4 (the old default) six
        windows of a 40 % surge on 10 calls a minute raised the dispersion
        1.6x, the surge's own score fell to 4.5 and it was never flagged.
    spans
        Run lengths scored: the errors and calls of the last ``L`` windows
        are pooled and tested together, for each ``L`` in ``spans``, and the
        largest statistic is the score. A key with 4 calls a minute cannot
        show a surge in one window, but can in three.

    Examples
    --------

    1 % errors at 20 to 200 calls a minute, then 10 % for a while.

    >>> import random
    >>> rng = random.Random(1)
    >>> det = RateSurge(warmup=30)
    >>> def window(minute, rate):
    ...     n = rng.randint(20, 200)
    ...     k = sum(rng.random() < rate for _ in range(n))
    ...     return Point(60.0 * minute, k / n, weight=n)
    >>> quiet = []
    >>> for minute in range(500):
    ...     x = window(minute, 0.01)
    ...     quiet.append(det.score_one(x))
    ...     det.learn_one(x)
    >>> max(quiet) < 5, round(det.expected(), 3)
    (True, 0.011)
    >>> det.score_one(Point(30000.0, 0.5, weight=2))  # 1 of 2 calls: too few to judge
    0.0
    >>> det.score_one(Point(30000.0, 0.10, weight=150)) > 5
    True
    """

    def __init__(
        self,
        *,
        half_life: float = 120.0,
        warmup: int = 30,
        prior_rate: float = 0.01,
        prior_calls: float = 50.0,
        min_calls: float = 10.0,
        clip: float = 3.0,
        spans: tuple[int, ...] = (1,),
    ):
        if not spans or min(spans) < 1:
            raise ValueError("spans must be positive run lengths")
        if not 0.0 < prior_rate < 1.0:
            raise ValueError("prior_rate must be in (0, 1)")
        self.half_life = half_life
        self.warmup = warmup
        self.prior_rate = prior_rate
        self.prior_calls = prior_calls
        self.min_calls = min_calls
        self.clip = clip
        self.spans = tuple(sorted(set(spans)))
        self._decay = 1.0 - fading(half_life)
        #: EW sums of errors and calls, whose ratio is the baseline rate.
        self.errors = 0.0
        self.calls = 0.0
        #: EW sums whose ratio is the extra-binomial variance of the rate.
        self._excess = 0.0
        self._excess_weight = 0.0
        self.windows = 0
        #: (errors, calls) of the last max(spans) - 1 windows, newest last.
        self._recent: list[tuple[float, float]] = []

    @staticmethod
    def _usable(x: Point) -> bool:
        value = x.value
        return value is not None and math.isfinite(value) and x.weight > 0

    @staticmethod
    def _counts(x: Point) -> tuple[float, float]:
        n = x.weight
        return n * min(max(x.value, 0.0), 1.0), n

    def _remember(self, x: Point) -> None:
        keep = self.spans[-1] - 1
        if keep > 0:
            self._recent.append(self._counts(x))
            if len(self._recent) > keep:
                del self._recent[0]

    def _statistic(self, k: float, n: float, p0: float) -> float:
        """Signed-root likelihood ratio of k errors in n calls, over-dispersion removed."""
        if n < self.min_calls:
            return 0.0
        return math.sqrt(2.0 * n * binomial_kl(k / n, p0) / self.dispersion(n, p0))

    def baseline(self) -> float:
        """The baseline error rate, shrunk to the prior when there is little data."""
        p0 = (self.errors + self.prior_rate * self.prior_calls) / (self.calls + self.prior_calls)
        return min(max(p0, 1e-6), 1.0 - 1e-6)

    def dispersion(self, n: float, p0: float) -> float:
        """Variance of the count over the binomial variance, for ``n`` calls (>= 1)."""
        if self._excess_weight <= 0.0:
            return 1.0
        extra_var_of_rate = max(self._excess / self._excess_weight, 0.0)
        return 1.0 + n * extra_var_of_rate / (p0 * (1.0 - p0))

    @property
    def warmed_up(self) -> bool:
        return self.windows >= self.warmup

    def expected(self) -> float | None:
        return self.baseline() if self.windows else None

    def skip_one(self, x: Point) -> None:
        if self._usable(x):
            self._remember(x)

    def learn_one(self, x: Point) -> None:
        if not self._usable(x):
            return
        self._remember(x)
        k, n = self._counts(x)
        p0 = self.baseline()
        binomial_var = n * p0 * (1.0 - p0)
        # Clip the error count: a surge just under the threshold must not
        # drag the baseline up (nor an outage of the error path drag it down).
        sd = math.sqrt(binomial_var * self.dispersion(n, p0))
        k = min(max(k, n * p0 - self.clip * sd), n * p0 + self.clip * sd)
        decay = self._decay
        self.errors = decay * self.errors + k
        self.calls = decay * self.calls + n
        # Unbiased per-window estimate of the extra variance of the rate,
        # ((k - n p0)^2 - binomial variance) / n^2, weighted by n.
        self._excess = decay * self._excess + ((k - n * p0) ** 2 - binomial_var) / n
        self._excess_weight = decay * self._excess_weight + n
        self.windows += 1

    def score_one(self, x: Point) -> float:
        if not self.warmed_up or not self._usable(x):
            return 0.0
        p0 = self.baseline()
        k, n = self._counts(x)
        spans = self.spans
        best = self._statistic(k, n, p0) if spans[0] == 1 else 0.0
        recent = self._recent
        for length in range(2, min(spans[-1], len(recent) + 1) + 1):
            errors, calls = recent[-(length - 1)]
            k += errors
            n += calls
            if length in spans:
                best = max(best, self._statistic(k, n, p0))
        return best
