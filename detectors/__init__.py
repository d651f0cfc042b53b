"""Streaming anomaly detectors for LLM and agent telemetry, River style.

- :mod:`.base`: :class:`Point`, :class:`Verdict`, the :class:`Detector`
  protocol, :class:`Thresholded` (score, decide, learn), :class:`KeyedDetectors`
  and :func:`run_series`;
- :mod:`.robust`: :class:`RobustZScore` (cost), :class:`QuantileZScore`
  (p95 latency) and :class:`PerCallRatio` (tokens per call);
- :mod:`.rate`: :class:`RateSurge` (error rates, binomial);
- :mod:`.volume`: :class:`CallVolume` (calls per window, an over-dispersed
  count) and :class:`SpendWithVolume` (cost: runs of spend, or one window
  whose spend and calls both surge);
- :mod:`.river_models`: :class:`HalfSpaceTreesDetector`, River's model as the
  measured alternative;
- :mod:`.runaway`: :class:`RunawayLoop` on :class:`SessionSnapshot`;
- :mod:`.budget`: :class:`Budget` of :class:`BudgetLimit` on :class:`Spend`;
- :mod:`.config`: the ``detectors:`` configuration and :func:`build_detectors`;
- :mod:`.evaluate`: the labelled synthetic benchmark that chose the defaults.
"""

from observatory.detectors.base import (
    Detector,
    KeyedDetectors,
    Point,
    Thresholded,
    Verdict,
    run_series,
)
from observatory.detectors.budget import Budget, BudgetLimit, Spend
from observatory.detectors.rate import RateSurge
from observatory.detectors.robust import PerCallRatio, QuantileZScore, RobustZScore
from observatory.detectors.runaway import RunawayLoop, SessionSnapshot
from observatory.detectors.volume import CallVolume, SpendWithVolume

__all__ = [
    "Budget",
    "BudgetLimit",
    "CallVolume",
    "Detector",
    "HalfSpaceTreesDetector",
    "KeyedDetectors",
    "PerCallRatio",
    "Point",
    "QuantileZScore",
    "RateSurge",
    "RobustZScore",
    "RunawayLoop",
    "SessionSnapshot",
    "Spend",
    "SpendWithVolume",
    "Thresholded",
    "Verdict",
    "run_series",
]


def __getattr__(name: str):
    # River's anomaly module takes ~1 s to import: loaded on first use.
    if name == "HalfSpaceTreesDetector":
        from observatory.detectors.river_models import HalfSpaceTreesDetector

        return HalfSpaceTreesDetector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
