"""The ``detectors:`` section of the configuration, and the detectors it builds.

Every kind of alert has its own section with the same core knobs (``enabled``,
``scope``, ``severity``, ``routes`` and, where they mean something,
``sensitivity``, ``warmup_windows`` and ``min_effect``) plus its own. The
defaults are the values chosen with ``python -m observatory.detectors.evaluate``
(see its table); each says why next to it.

>>> cfg = DetectorsConfig.model_validate({
...     "cost_spike": {"min_effect": 0.5, "scope": {"tenants": ["acme"]}},
...     "budget": {"budgets": [{"name": "acme-hourly", "tenants": ["acme"],
...                             "period": "hour", "limit_usd": 100}]},
... })
>>> detectors = build_detectors(cfg)
>>> sorted(detectors.series)  # doctest: +NORMALIZE_WHITESPACE
['cost_key', 'cost_tenant', 'error_rate', 'latency_p95', 'tokens_per_call',
 'tool_error_rate', 'ttft_p95']
>>> detectors.update("cost_key", ("globex", "chat", "gpt-4o"), Point(0.0, 1.0)) is None
True
>>> detectors.update("cost_key", ("acme", "chat", "gpt-4o"), Point(0.0, 1.0)).anomalous
False
>>> DetectorsConfig.model_validate({"cost_spike": {"sensitivity": 5, "treshold": 3}})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for DetectorsConfig
cost_spike.treshold
  Extra inputs are not permitted [type=extra_forbidden, input_value=3, input_type=int]
    ...
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from observatory.detectors.base import Detector, KeyedDetectors, Point, Thresholded, Verdict
from observatory.detectors.budget import Budget, BudgetLimit, Period, Spend
from observatory.detectors.rate import RateSurge
from observatory.detectors.robust import PerCallRatio, QuantileZScore, RobustZScore
from observatory.detectors.runaway import RunawayLoop, SessionSnapshot
from observatory.detectors.volume import CallVolume, SpendWithVolume

__all__ = [
    "KINDS",
    "SIGNALS",
    "BudgetConfig",
    "BudgetSpec",
    "CostSpikeConfig",
    "DetectorSet",
    "DetectorsConfig",
    "ErrorSurgeConfig",
    "LatencyAnomalyConfig",
    "RunawayLoopConfig",
    "Scope",
    "TokenAnomalyConfig",
    "build_detectors",
    "parse_detectors",
]

Severity = Literal["critical", "error", "warning", "info"]
Method = Literal["robust", "hst"]
Feature = Literal["current_identical_run", "calls_last_minute", "steps", "cost_usd"]

KINDS = ("cost_spike", "latency_anomaly", "error_surge", "token_anomaly", "runaway_loop", "budget")

#: Each series the detectors watch: its kind and the dimensions of its key.
SIGNALS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "cost_key": ("cost_spike", ("tenant", "service", "model")),  # USD per window
    "cost_tenant": ("cost_spike", ("tenant",)),  # USD per window
    "latency_p95": ("latency_anomaly", ("provider", "model")),  # ms, weight = calls
    "ttft_p95": ("latency_anomaly", ("provider", "model")),  # ms, weight = calls
    "error_rate": ("error_surge", ("service", "model")),  # errors / calls, weight = calls
    "tool_error_rate": ("error_surge", ("service", "tool")),  # execute_tool errors / calls
    "tokens_per_call": ("token_anomaly", ("tenant", "service", "model")),  # weight = calls
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scope(_Model):
    """Which keys a detector watches: a dimension with an empty list matches everything."""

    tenants: list[str] = Field(default_factory=list)
    services: list[str] = Field(default_factory=list)
    providers: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)

    def matches(self, dimensions: Mapping[str, str]) -> bool:
        """Whether a key with these dimensions is in scope (a dimension it lacks is not checked).

        >>> Scope(tenants=["acme"]).matches({"tenant": "acme", "model": "m"})
        True
        >>> Scope(tenants=["acme"]).matches({"provider": "openai", "model": "m"})
        True
        >>> Scope(models=["m"]).matches({"tenant": "acme", "model": "other"})
        False
        """
        for dimension, allowed in (
            ("tenant", self.tenants),
            ("service", self.services),
            ("provider", self.providers),
            ("model", self.models),
        ):
            if allowed and dimension in dimensions and dimensions[dimension] not in allowed:
                return False
        return True


class _Kind(_Model):
    enabled: bool = True
    scope: Scope = Scope()
    severity: Severity = "warning"
    #: Names of alert routes; checked against the ``alerts:`` section by its loader.
    routes: list[str] = Field(default_factory=list)


class _SeriesKind(_Kind):
    """Knobs shared by the detectors of per-window series."""

    #: ``robust``: the robust EW z-score (default); ``hst``: River's HalfSpaceTrees.
    method: Method = "robust"
    #: Score at which a window is anomalous (robust z, or HST score for ``hst``).
    sensitivity: float = Field(default=6.0, gt=0)
    #: Windows of a key learned before it can alert (the median and MAD of
    #: 30 windows make a shaky scale: 60 gave no early false alarms).
    warmup_windows: int = Field(default=60, ge=2, le=10_000)
    #: Smallest |observed - expected| worth an alert, in the value's units.
    min_effect: float = Field(default=0.0, ge=0)
    #: Half-life of the baseline, in windows: follows a daily cycle, not a 10-minute spike.
    half_life_windows: float = Field(default=30.0, gt=0)
    #: Half-life of the noise scale, in windows.
    scale_half_life_windows: float = Field(default=240.0, gt=0)
    #: Run lengths (windows) scored together; see ``RobustZScore(spans=...)``.
    spans: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    #: Clip of each residual in runs of two or more windows, in scales.
    span_clip: float = Field(default=4.0, gt=0)
    #: Consecutive anomalous windows after which the new level is learned (null: never).
    relearn_after_windows: int | None = Field(default=120, ge=1)
    #: A key with no data for this long is forgotten.
    idle_ttl_seconds: float = Field(default=6 * 3600.0, gt=0)
    #: Keys remembered per series (least recently seen evicted first).
    max_keys: int = Field(default=100_000, ge=1)
    #: HalfSpaceTrees settings (``method: hst`` only).
    hst_window: int = Field(default=250, ge=10)
    hst_trees: int = Field(default=10, ge=1)
    hst_height: int = Field(default=8, ge=1, le=15)
    #: ``warmup``: fixed limits from the first window; ``minmax``: River's MinMaxScaler.
    hst_scaling: Literal["minmax", "warmup"] = "warmup"
    seed: int = 42


class CostSpikeConfig(_SeriesKind):
    """Spend per window per (tenant, service, model) and per tenant, in USD."""

    # Heavy-tailed spend: one huge call can make a single window 10+ sigma, so
    # spend alone never alerts on one window (runs of 2+, each residual clipped
    # at 4 sigma); 5.0 is just above the worst run of a quiet day, $0.30/min the
    # materiality. Runs of 4 and 6 windows catch a sustained x10 on a sparse key
    # whose own minutes swing x5-9 (bursts of long sessions): its windows score
    # ~3 each, a 3-window run 4.9 and no more, so with spans [2, 3] it was never
    # flagged. A single window alerts when its calls surge too (volume_*).
    sensitivity: float = Field(default=5.0, gt=0)
    min_effect: float = Field(default=0.30, ge=0)  # USD per window: $0.30 a minute = $18 an hour
    spans: list[int] = Field(default_factory=lambda: [2, 3, 4, 6], min_length=1)
    #: Added to the spend before the log, so that near-zero windows are not huge ratios.
    offset_usd: float = Field(default=0.01, ge=0)
    #: A single window alerts when its call volume (the calls behind the spend,
    #: an over-dispersed count: ``CallVolume``) scores this much and its spend
    #: alone ``volume_spend_sensitivity``: more traffic, not one long session
    #: (null: runs of windows only, as before). ``method: robust`` only.
    volume_sensitivity: float | None = Field(default=7.0, gt=0)
    #: Robust z-score of the window's spend alone that must go with the volume surge.
    volume_spend_sensitivity: float = Field(default=2.0, gt=0)
    #: Run lengths (windows) whose calls are pooled for the volume score: a
    #: spike whose first window is not clear yet is by its second.
    volume_spans: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)
    # Measured on the end-to-end evaluation's traffic replayed offline
    # (flows/traffic.py, 250 calls/min; flows/evaluate.py's scenarios, seeds 11,
    # 12 and 21 labelled, 12, 13, 22 and 23 incident-free; min_effect $0.05): a
    # cost spike's first window has a volume score of 4.8-11 (spend z 2.5-4.8),
    # its first two pooled 6.6-16; incident-free minutes reach 6.2 at worst (46
    # calls of a few long sessions where 2.8 are usual: 6.0 alerted on it), the
    # next 5.0, and 5.1 pooled. 7.0 flags 10 of 18 spikes in their first window
    # and 17 by their second (one by its third, through the spend runs), where
    # runs alone took 2-4 windows, and no incident-free window. 2.0 only says
    # that the spend rose with the calls: the volume decides.
    severity: Severity = "error"

    @model_validator(mode="after")
    def _positive_volume_spans(self) -> CostSpikeConfig:
        if min(self.volume_spans) < 1:
            raise ValueError("volume_spans must be positive run lengths (windows)")
        return self


class LatencyAnomalyConfig(_SeriesKind):
    """p95 latency and p95 time-to-first-token per (provider, model), in ms."""

    # Quiet days peak at 4.5-5.6 (the end-to-end evaluation's incident-free
    # days, seeds 12, 13, 22, 23 at 250 and 1000 calls/min, replayed offline),
    # a x4 slowdown's first window scores 6.5-25 (6.5 on 6 calls: slowed calls
    # end late, so a first window can be thin).
    sensitivity: float = Field(default=6.0, gt=0)
    min_effect: float = Field(default=250.0, ge=0)  # ms
    #: Windows with fewer calls are neither scored nor learned. A hard floor of
    #: 20 (the old default) left a model with 15 calls a minute unwatched at
    #: its quiet hours: a x4 slowdown waited 3-6 windows for a busy one.
    min_calls: int = Field(default=3, ge=1)
    #: A window of fewer calls moves the baseline and the scale less, by
    #: calls / full_weight_calls: the p95 of 3 calls is their median, biased
    #: low (null: every window counts fully, as a plain robust z-score, and
    #: ``pseudo_calls`` does not apply).
    full_weight_calls: float | None = Field(default=10.0, ge=1)
    #: The log p95 of n calls wobbles as 1/sqrt(n), from 3 calls to hundreds:
    #: residuals are scaled by sqrt(calls + pseudo_calls), so the scale is a
    #: single call's and a quieter minute of a busy model is judged on the
    #: precision it has. Scaled by sqrt(min(calls, 10)) instead, every window
    #: of 10+ calls counted alike: at 1000 calls/min (60-190 calls a minute per
    #: model) the scale learned over busy minutes made a 59-call minute's p95
    #: of 1.5x the usual score 6.25 on an incident-free day. ``pseudo_calls``
    #: stops the residual of a window of very few calls shrinking further (its
    #: "p95" is a lower order statistic, biased low, with a thin upper tail):
    #: measured on the evaluation's traffic, the top 0.1 % of quiet windows'
    #: scores are then alike (3.1-3.7) for every size from 12 to 250 calls
    #: (2.7-4.3 before), and 20-40 all keep each x4 slowdown's first window.
    pseudo_calls: float = Field(default=30.0, ge=0)
    #: A real service's p95 moves from minute to minute by itself (load, prompt
    #: mix), which no number of calls averages away: past about this many calls
    #: a window counts as this many (softly). The simulator has no such
    #: variation, so it did not choose the value: on its traffic 1000 changes
    #: nothing; it bounds how much more a model's busiest minutes are trusted.
    max_calls: float = Field(default=1000.0, gt=0)


class ErrorSurgeConfig(_Kind):
    """Error rate per (service, model) and per (service, tool); the statistic is binomial."""

    # A binomial z. Over 100 redrawn quiet days (python -m bench.quiet), 4.75
    # raised 6 false error_rate alerts, 5.25 none; on the offline workloads
    # (python -m observatory.detectors.evaluate) 5.25 is one incident of 36
    # later (recall within 2 windows 0.944 -> 0.917).
    sensitivity: float = Field(default=5.25, gt=0)
    warmup_windows: int = Field(default=30, ge=2, le=10_000)
    min_effect: float = Field(default=0.05, ge=0, le=1)  # absolute rate: +5 points
    half_life_windows: float = Field(default=120.0, gt=0)
    #: Fewer calls (pooled over the run scored) are not scored.
    min_calls: int = Field(default=10, ge=1)
    #: Run lengths (windows) whose errors and calls are pooled and tested: a
    #: key with 5 calls a minute needs 3-5 minutes to show a 40 % surge.
    spans: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    #: Baseline rate assumed for a new key, worth ``prior_calls`` calls.
    prior_rate: float = Field(default=0.01, gt=0, lt=1)
    prior_calls: float = Field(default=50.0, ge=0)
    relearn_after_windows: int | None = Field(default=120, ge=1)
    idle_ttl_seconds: float = Field(default=6 * 3600.0, gt=0)
    max_keys: int = Field(default=100_000, ge=1)
    severity: Severity = "error"


class TokenAnomalyConfig(_SeriesKind):
    """Input tokens per call per (tenant, service, model): context blow-up."""

    # Residuals are per call (x sqrt(calls)): 5.5 is above every quiet run
    # with a 60-window warm-up; 6 lost 8 points of recall on growing prompts.
    sensitivity: float = Field(default=5.5, gt=0)
    min_effect: float = Field(default=500.0, ge=0)  # tokens per call


class RunawayLoopConfig(_Kind):
    """Live agent sessions against hard limits and each agent's learned normal."""

    #: Score at which a session alerts: 1.0 = the moment a limit is reached.
    sensitivity: float = Field(default=1.0, gt=0)
    #: Normal snapshots an agent needs before its learned limits apply.
    warmup_windows: int = Field(default=200, ge=10)
    max_identical_tool_calls: int | None = Field(default=25, ge=1)
    max_calls_per_minute: float | None = Field(default=200.0, gt=0)
    # 1000 steps was reached by normal long sessions twice a day.
    max_steps: int | None = Field(default=2000, ge=1)
    max_session_cost_usd: float | None = Field(default=50.0, gt=0)
    learned_quantile: float = Field(default=0.99, gt=0.5, lt=1)
    # 2 x p99 paged on a bursty normal session (7x the median velocity).
    learned_margin: float = Field(default=2.5, ge=1)
    #: Learned limits never go below these (feature -> value).
    floors: dict[Feature, float] = Field(default_factory=dict)
    #: Features with learned per-agent limits (the others: hard limits only).
    learned_features: list[Feature] = Field(
        default_factory=lambda: ["current_identical_run", "calls_last_minute"]
    )
    max_agents: int = Field(default=10_000, ge=1)
    severity: Severity = "critical"


class BudgetSpec(_Model):
    """One static budget: ``limit_usd`` per ``period`` over a scope."""

    name: str
    limit_usd: float = Field(gt=0)
    period: Period = "hour"
    tenants: list[str] = Field(default_factory=list)
    services: list[str] = Field(default_factory=list)
    providers: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    #: Apply the limit to each value of these dimensions separately.
    group_by: list[Literal["tenant", "service", "provider", "model"]] = Field(default_factory=list)

    def limit(self) -> BudgetLimit:
        return BudgetLimit(
            name=self.name,
            limit_usd=self.limit_usd,
            period=self.period,
            tenants=tuple(self.tenants),
            services=tuple(self.services),
            providers=tuple(self.providers),
            models=tuple(self.models),
            group_by=tuple(self.group_by),
        )


class BudgetConfig(_Kind):
    budgets: list[BudgetSpec] = Field(default_factory=list)
    #: Also alert when the linear projection to the end of the period reaches the limit.
    project: bool = True
    #: Fraction of the period that must have elapsed before projecting (a quarter:
    #: precision 0.79 and quiet alerts; a linear projection extrapolates bursts).
    min_elapsed_fraction: float = Field(default=0.5, ge=0, lt=1)
    #: ... and only when it reaches this multiple of the limit.
    projection_margin: float = Field(default=1.25, ge=1)
    max_groups: int = Field(default=100_000, ge=1)
    severity: Severity = "error"

    @model_validator(mode="after")
    def _unique_names(self) -> BudgetConfig:
        names = [b.name for b in self.budgets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"budget names must be unique: {duplicates}")
        return self


class DetectorsConfig(_Model):
    cost_spike: CostSpikeConfig = CostSpikeConfig()
    latency_anomaly: LatencyAnomalyConfig = LatencyAnomalyConfig()
    error_surge: ErrorSurgeConfig = ErrorSurgeConfig()
    token_anomaly: TokenAnomalyConfig = TokenAnomalyConfig()
    runaway_loop: RunawayLoopConfig = RunawayLoopConfig()
    budget: BudgetConfig = BudgetConfig()

    def kind(self, name: str) -> _Kind:
        return getattr(self, name)


def parse_detectors(raw: Any) -> DetectorsConfig:
    """Validate the raw ``detectors:`` mapping (None = all defaults)."""
    return DetectorsConfig.model_validate(raw or {})


# -- building -------------------------------------------------------------------


def _hst(cfg: _SeriesKind, *, offset: float = 0.0, min_weight: float = 0.0) -> Detector:
    # River's anomaly module takes ~1 s to import: only flows that use it pay.
    from observatory.detectors.river_models import HalfSpaceTreesDetector

    return HalfSpaceTreesDetector(
        n_trees=cfg.hst_trees,
        height=cfg.hst_height,
        window_size=cfg.hst_window,
        seed=cfg.seed,
        offset=offset,
        half_life=cfg.half_life_windows,
        min_weight=min_weight,
        scaling=cfg.hst_scaling,
    )


def series_detector(signal: str, cfg: Any) -> Detector:
    """The (unthresholded) detector for one key of ``signal`` under ``cfg``."""
    kind = SIGNALS[signal][0]
    if kind == "error_surge":
        return RateSurge(
            half_life=cfg.half_life_windows,
            warmup=cfg.warmup_windows,
            prior_rate=cfg.prior_rate,
            prior_calls=cfg.prior_calls,
            min_calls=cfg.min_calls,
            spans=tuple(cfg.spans),
        )
    offset = cfg.offset_usd if kind == "cost_spike" else 0.0
    min_weight = float(getattr(cfg, "min_calls", 0))
    if cfg.method == "hst":
        return _hst(cfg, offset=offset, min_weight=min_weight)
    # Tokens per call is a mean over calls: residuals scale with sqrt(calls).
    # Cost is a sum, and a p95's noise is not a mean's: plain robust z-scores.
    extra: dict[str, Any] = {}
    cls = PerCallRatio if kind == "token_anomaly" else RobustZScore
    if kind == "latency_anomaly" and cfg.full_weight_calls is not None:
        # getattr: a configuration pickled (in the detection state) before the knob existed.
        extra = {
            "full_weight": cfg.full_weight_calls,
            "pseudo_calls": getattr(cfg, "pseudo_calls", QuantileZScore.PSEUDO_CALLS),
            "max_calls": getattr(cfg, "max_calls", QuantileZScore.MAX_CALLS),
        }
        cls = QuantileZScore
    detector = cls(
        **extra,
        half_life=cfg.half_life_windows,
        scale_half_life=cfg.scale_half_life_windows,
        warmup=cfg.warmup_windows,
        offset=offset,
        min_weight=min_weight,
        spans=tuple(cfg.spans),
        span_clip=cfg.span_clip,
    )
    if kind == "cost_spike" and cfg.volume_sensitivity is not None:
        # A point's weight is its calls: a single window whose calls surge
        # with its spend is more traffic, not one long session.
        volume = CallVolume(
            half_life=cfg.half_life_windows,
            dispersion_half_life=cfg.scale_half_life_windows,
            warmup=cfg.warmup_windows,
            spans=tuple(cfg.volume_spans),
        )
        return SpendWithVolume(
            detector,
            volume,
            threshold=cfg.sensitivity,
            spend_threshold=cfg.volume_spend_sensitivity,
            volume_threshold=cfg.volume_sensitivity,
        )
    return detector


def thresholded(signal: str, cfg: Any) -> Thresholded:
    """A new :class:`Thresholded` for one key of ``signal`` (the keyed factory)."""
    return Thresholded(
        series_detector(signal, cfg),
        threshold=cfg.sensitivity,
        min_effect=cfg.min_effect,
        direction="up",
        relearn_after=cfg.relearn_after_windows,
    )


@dataclass
class DetectorSet:
    """Everything ``build_detectors`` made: keyed series detectors, runaway loops, budgets."""

    config: DetectorsConfig
    series: dict[str, KeyedDetectors] = field(default_factory=dict)
    runaway: RunawayLoop | None = None
    budget: Budget | None = None

    def update(self, signal: str, key: tuple[Hashable, ...], x: Point) -> Verdict | None:
        """Feed one window of one key of ``signal``; None when it is disabled or out of scope."""
        keyed = self._watching(signal, key)
        return keyed.update(key, x) if keyed is not None else None

    def peek(
        self, signal: str, key: tuple[Hashable, ...], x: Point, *, looks: int = 1
    ) -> Verdict | None:
        """:meth:`update`'s verdict without learning (a window still open); None as there.

        ``looks``: see :meth:`Thresholded.peek`.
        """
        keyed = self._watching(signal, key)
        return keyed.peek(key, x, looks=looks) if keyed is not None else None

    def _watching(self, signal: str, key: tuple[Hashable, ...]) -> KeyedDetectors | None:
        """The detectors of ``signal`` if it is enabled and ``key`` is in its scope."""
        keyed = self.series.get(signal)
        if keyed is None:
            return None
        kind, dimensions = SIGNALS[signal]
        if not self.config.kind(kind).scope.matches(dict(zip(dimensions, key, strict=True))):
            return None
        return keyed

    def update_session(self, snapshot: SessionSnapshot) -> Verdict | None:
        """Check one live session snapshot; None when disabled or out of scope."""
        if self.runaway is None:
            return None
        scope = self.config.runaway_loop.scope
        if not scope.matches({"tenant": snapshot.tenant, "service": snapshot.service}):
            return None
        return self.runaway.update(snapshot)

    def update_spend(self, spend: Spend) -> list[Verdict]:
        """Add one window's spend to the budgets; returns the budget alerts it triggers."""
        if self.budget is None:
            return []
        dimensions = {d: getattr(spend, d) for d in ("tenant", "service", "provider", "model")}
        if not self.config.budget.scope.matches(dimensions):
            return []
        return self.budget.update(spend)


def build_detectors(cfg: DetectorsConfig) -> DetectorSet:
    """Build every enabled detector of ``cfg`` (picklable, ready to be operator state)."""
    out = DetectorSet(cfg)
    for signal, (kind, _) in SIGNALS.items():
        kind_cfg = cfg.kind(kind)
        if not kind_cfg.enabled:
            continue
        out.series[signal] = KeyedDetectors(
            functools.partial(thresholded, signal, kind_cfg),
            idle_ttl_s=kind_cfg.idle_ttl_seconds,
            max_keys=kind_cfg.max_keys,
        )
    loop = cfg.runaway_loop
    if loop.enabled:
        out.runaway = RunawayLoop(
            max_identical_run=loop.max_identical_tool_calls,
            max_calls_per_minute=loop.max_calls_per_minute,
            max_steps=loop.max_steps,
            max_cost_usd=loop.max_session_cost_usd,
            quantile=loop.learned_quantile,
            margin=loop.learned_margin,
            floors=loop.floors,
            learned=tuple(loop.learned_features),
            warmup=loop.warmup_windows,
            threshold=loop.sensitivity,
            max_agents=loop.max_agents,
        )
    budget = cfg.budget
    if budget.enabled and budget.budgets:
        out.budget = Budget(
            [spec.limit() for spec in budget.budgets],
            project=budget.project,
            min_elapsed_fraction=budget.min_elapsed_fraction,
            projection_margin=budget.projection_margin,
            max_groups=budget.max_groups,
        )
    return out
