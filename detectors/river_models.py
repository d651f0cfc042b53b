"""River's own anomaly models behind the :class:`Detector` interface.

They are the measured alternative to the robust z-scores (see
``observatory.detectors.evaluate``): off-the-shelf, multivariate-capable, but
they say "how isolated is this point", not "how many usual deviations above
the usual value", and they carry no expectation of their own, so one is kept
beside them (an EW mean) for the alert text.
"""

from __future__ import annotations

import math
import statistics
from typing import Literal

from river import anomaly, preprocessing, stats

from observatory.detectors.base import Detector, Point
from observatory.detectors.robust import fading

Scaling = Literal["minmax", "warmup"]

__all__ = ["HalfSpaceTreesDetector"]

_TINY = 1e-12


class HalfSpaceTreesDetector(Detector):
    """River's ``HalfSpaceTrees`` on the log value, scaled one of two ways.

    Parameters
    ----------
    n_trees, height, window_size, seed
        Passed to :class:`river.anomaly.HalfSpaceTrees`. Scores start after
        the first ``window_size`` points (the trees' first reference window).
    log, offset
        Score ``log(value + offset)``, as :class:`~.robust.RobustZScore` does.
    half_life
        Half-life, in points, of the EW mean kept as the expectation.
    min_weight
        Points with a smaller weight are neither scored nor learned.
    scaling
        ``"minmax"``: River's ``preprocessing.MinMaxScaler`` in front, as its
        docs suggest; a *rolling* min-max over ``window_size`` points, so that
        one early spike does not squash the range forever. Its weakness: a
        spike beyond the recent maximum lands in the same edge leaf as the
        largest normal points, so it hardly scores higher than them.
        ``"warmup"``: fixed ``limits`` of median +- ``limit_scales`` robust
        sigmas of the first ``window_size`` points (the warm-up), so that the
        normal range fills the middle of the trees and a spike lands in an
        empty region.
    limit_scales
        Half-width of the ``"warmup"`` limits, in robust sigmas.

    Examples
    --------

    >>> import random
    >>> rng = random.Random(0)
    >>> det = HalfSpaceTreesDetector(n_trees=5, height=6, window_size=100, seed=42)
    >>> for minute in range(300):
    ...     det.learn_one(Point(60.0 * minute, rng.lognormvariate(0, 0.2)))
    >>> normal, spike = det.score_one(Point(18000.0, 1.0)), det.score_one(Point(18000.0, 5.0))
    >>> round(normal, 2), round(spike, 2)  # isolation scores, in [0, 1]
    (0.76, 0.98)
    >>> round(det.expected(), 1)
    1.0
    """

    def __init__(
        self,
        *,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int | None = None,
        log: bool = True,
        offset: float = 0.0,
        half_life: float = 30.0,
        min_weight: float = 0.0,
        scaling: Scaling = "minmax",
        limit_scales: float = 6.0,
    ):
        if scaling not in ("minmax", "warmup"):
            raise ValueError(f"scaling must be minmax or warmup, not {scaling!r}")
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.log = log
        self.offset = offset
        self.half_life = half_life
        self.min_weight = min_weight
        self.scaling = scaling
        self.limit_scales = limit_scales
        self.scaler = preprocessing.MinMaxScaler(window_size=window_size)
        self.trees = anomaly.HalfSpaceTrees(
            n_trees=n_trees, height=height, window_size=window_size, seed=seed
        )
        self.mean = stats.EWMean(fading_factor=fading(half_life))
        self.n = 0
        #: "warmup" scaling: the first window's features, until the trees are built.
        self._buffer: list[dict[str, float]] | None = [] if scaling == "warmup" else None

    def _features(self, x: Point) -> dict[str, float] | None:
        value = x.value
        if value is None or not math.isfinite(value) or x.weight < self.min_weight:
            return None
        y = math.log(max(value + self.offset, _TINY)) if self.log else value
        return {"y": y}

    @property
    def warmed_up(self) -> bool:
        return self.n >= self.window_size

    def expected(self) -> float | None:
        if not self.n:
            return None
        y = self.mean.get()
        return math.exp(y) - self.offset if self.log else y

    def _build_from_buffer(self, buffer: list[dict[str, float]]) -> None:
        ys = [f["y"] for f in buffer]
        center = statistics.median(ys)
        sigma = max(1.4826 * statistics.median(abs(y - center) for y in ys), 0.05)
        half = self.limit_scales * sigma
        self.trees = anomaly.HalfSpaceTrees(
            n_trees=self.n_trees,
            height=self.height,
            window_size=self.window_size,
            limits={"y": (center - half, center + half)},
            seed=self.seed,
        )
        # Two passes: the trees' first window fills, the second makes it the reference.
        for features in buffer + buffer:
            self.trees.learn_one(features)

    def learn_one(self, x: Point) -> None:
        features = self._features(x)
        if features is None:
            return
        self.mean.update(features["y"])
        self.n += 1
        buffer = self._buffer
        if buffer is not None:
            buffer.append(features)
            if len(buffer) >= self.window_size:
                self._build_from_buffer(buffer)
                self._buffer = None
            return
        if self.scaling == "minmax":
            self.scaler.learn_one(features)
            features = self.scaler.transform_one(features)
        self.trees.learn_one(features)

    def score_one(self, x: Point) -> float:
        features = self._features(x)
        if features is None or not self.warmed_up:
            return 0.0
        if self.scaling == "minmax":
            features = self.scaler.transform_one(features)
        return float(self.trees.score_one(features))
