"""A mergeable quantile sketch with a relative-error guarantee (DDSketch-style).

Values are counted in logarithmic buckets ``gamma**(i-1) < x <= gamma**i``
with ``gamma = (1 + a) / (1 - a)``; the estimate of a bucket is within ``a``
of every value in it. Sketches merge by adding bucket counts, so minute
sketches fold into exact hourly sketches (no averaging of quantiles).

The quantile ``q`` is the value at 0-based rank ``floor(q * (n - 1))`` of the
sorted values (pandas ``quantile(q, interpolation="lower")``), within the
relative accuracy.
"""

from __future__ import annotations

import math

#: 0.5% relative accuracy: comfortably inside the promised 1%.
DEFAULT_ACCURACY = 0.005
#: Values at or below this (ms) are counted as zero.
_MIN_VALUE = 1e-6


class QuantileSketch:
    """Mergeable quantile sketch.

    >>> s = QuantileSketch()
    >>> for v in range(1, 101):
    ...     s.add(float(v))
    >>> abs(s.quantile(0.5) - 50) <= 50 * 0.01
    True
    >>> t = QuantileSketch(); t.add(1000.0); s.merge(t); s.count
    101
    """

    __slots__ = ("_log_gamma", "accuracy", "bins", "count", "zeros")

    def __init__(self, accuracy: float = DEFAULT_ACCURACY):
        self.accuracy = accuracy
        self._log_gamma = math.log((1 + accuracy) / (1 - accuracy))
        self.bins: dict[int, int] = {}
        self.zeros = 0
        self.count = 0

    def __getstate__(self):
        return (self.accuracy, self.bins, self.zeros, self.count)

    def __setstate__(self, state):
        self.accuracy, self.bins, self.zeros, self.count = state
        self._log_gamma = math.log((1 + self.accuracy) / (1 - self.accuracy))

    def add(self, value: float, weight: int = 1) -> None:
        self.count += weight
        if value <= _MIN_VALUE:
            self.zeros += weight
            return
        index = math.ceil(math.log(value) / self._log_gamma)
        bins = self.bins
        bins[index] = bins.get(index, 0) + weight

    def merge(self, other: QuantileSketch) -> None:
        if other.accuracy != self.accuracy:
            raise ValueError("cannot merge sketches of different accuracy")
        self.count += other.count
        self.zeros += other.zeros
        bins = self.bins
        for index, n in other.bins.items():
            bins[index] = bins.get(index, 0) + n

    def copy(self) -> QuantileSketch:
        clone = QuantileSketch(self.accuracy)
        clone.bins = dict(self.bins)
        clone.zeros = self.zeros
        clone.count = self.count
        return clone

    def quantiles(self, qs: list[float]) -> list[float | None]:
        """Several quantiles in one pass over the sorted buckets (``qs`` ascending).

        >>> s = QuantileSketch()
        >>> for v in range(1, 101):
        ...     s.add(float(v))
        >>> [round(x) for x in s.quantiles([0.5, 0.99])] == [round(s.quantile(0.5)),
        ...                                                    round(s.quantile(0.99))]
        True
        """
        if self.count == 0:
            return [None] * len(qs)
        gamma = math.exp(self._log_gamma)
        out: list[float | None] = []
        ranks = [math.floor(q * (self.count - 1)) for q in qs]
        seen = self.zeros
        i = 0
        while i < len(ranks) and ranks[i] < seen:
            out.append(0.0)
            i += 1
        for index in sorted(self.bins):
            if i == len(ranks):
                break
            seen += self.bins[index]
            while i < len(ranks) and seen > ranks[i]:
                out.append(2.0 * gamma**index / (gamma + 1.0))
                i += 1
        return out

    def quantile(self, q: float) -> float | None:
        if self.count == 0:
            return None
        rank = math.floor(q * (self.count - 1))
        if rank < self.zeros:
            return 0.0
        seen = self.zeros
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen > rank:
                gamma = math.exp(self._log_gamma)
                # The midpoint (in relative terms) of the bucket (gamma**(i-1), gamma**i].
                return 2.0 * gamma**index / (gamma + 1.0)
        return None  # unreachable: counts are consistent
