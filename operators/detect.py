"""The detection stage: closed windows → detector verdicts → alert lifecycle → alerts.

Window shards send a :class:`DetectFeed` each time their watermark enters a
new window: copies of the windows they just closed, their watermark, and the
runaway-loop observations of their live sessions. One detection stage (a
single key: its work is per window, not per span) merges the shards'
contributions of a window once *every* shard has passed its end, so each
subject's value is complete and the same in every replay; it then feeds the
detectors in window order and the verdicts to the alert lifecycle, whose
alerts go to the durable outbox.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from observatory.detectors.base import Point, Verdict
from observatory.detectors.budget import Spend
from observatory.detectors.config import SIGNALS, DetectorsConfig, DetectorSet, build_detectors
from observatory.operators.alerting import AlertLifecycle, LifecyclePolicy
from observatory.operators.sketch import QuantileSketch
from observatory.operators.stats import TOOL_OPERATION, PartialTally, StatsAcc, StatsKey
from observatory.schemas.alerts import Alert, Observation, dedup_key

NS = 1_000_000_000
_LLM_OPERATIONS = frozenset(("chat", "text_completion", "embeddings"))
#: The measured value of each signal, as alerts name it.
_METRICS = {
    "cost_key": "cost_usd_per_window",
    "cost_tenant": "cost_usd_per_window",
    "latency_p95": "latency_p95_ms",
    "ttft_p95": "ttft_p95_ms",
    "error_rate": "error_rate",
    "tool_error_rate": "error_rate",
    "tokens_per_call": "input_tokens_per_call",
}


@dataclass(slots=True)
class DetectFeed:
    """What one window shard tells the detection stage when its watermark moves on."""

    shard: str
    watermark_ns: int
    #: (window start, [(key, copy of the window's accumulator)]) of newly closed windows
    closed: list[tuple[int, list[tuple[StatsKey, StatsAcc]]]] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    #: runaway hard limits reached in a window still open: alerted at once
    early: list[Observation] = field(default_factory=list)
    #: (hop start, [(key, tally)]) of the hops of open windows the watermark passed
    hops: list[tuple[int, list[tuple[StatsKey, PartialTally]]]] = field(default_factory=list)


class _Agg(PartialTally):
    """One subject's value in one window, merged over keys and shards."""

    __slots__ = ("latency", "ttft")

    def __init__(self) -> None:
        super().__init__()
        self.latency: QuantileSketch | None = None
        self.ttft: QuantileSketch | None = None

    def add(self, acc: StatsAcc | PartialTally, *, sketches: bool = False) -> None:
        super().add(acc)
        if sketches:
            if self.latency is None:
                self.latency = QuantileSketch(acc.latency.accuracy)
            self.latency.merge(acc.latency)
            if acc.ttft is not None:
                if self.ttft is None:
                    self.ttft = QuantileSketch(acc.ttft.accuracy)
                self.ttft.merge(acc.ttft)


#: Signals an early check (part of a window, no sketches) can score.
_EARLY_SIGNALS = frozenset(
    ("cost_key", "cost_tenant", "error_rate", "tool_error_rate", "tokens_per_call")
)
#: Spend only grows as a window fills: an early look that crosses the threshold
#: is one the closed window crosses too, so looking early adds no false alarm.
#: Rates and per-call means go up and down; their early looks pay a margin.
_MONOTONE_SIGNALS = frozenset(("cost_key", "cost_tenant"))


def _subjects(
    entries: Iterable[tuple[StatsKey, StatsAcc | PartialTally]],
    *,
    sketches: bool = True,
    into: dict[str, dict[tuple, _Agg]] | None = None,
) -> dict[str, dict[tuple, _Agg]]:
    """Merge a window's accumulators (or tallies: ``sketches=False``) into signals' subjects.

    ``into``: subjects merged so far (an open window's earlier hops), added to.
    """
    out = into if into is not None else {signal: {} for signal in SIGNALS}

    def add(signal: str, key: tuple, acc: StatsAcc, sketches: bool = False) -> None:
        agg = out[signal].get(key)
        if agg is None:
            agg = out[signal][key] = _Agg()
        agg.add(acc, sketches=sketches)

    for (tenant, service, provider, model, operation, tool), acc in entries:
        if operation == TOOL_OPERATION:
            # Per (service, tool), over tenants, like error_rate per (service, model).
            add("tool_error_rate", (service, tool), acc)
            continue
        if operation not in _LLM_OPERATIONS:
            continue  # agent and other spans carry no model, tokens or cost
        add("cost_key", (tenant, service, model), acc)
        add("cost_tenant", (tenant,), acc)
        add("latency_p95", (provider, model), acc, sketches=sketches)
        add("error_rate", (service, model), acc)
        add("tokens_per_call", (tenant, service, model), acc)
    out["ttft_p95"] = out["latency_p95"]
    return out


def _point(signal: str, t: float, agg: _Agg) -> Point | None:
    if signal in ("cost_key", "cost_tenant"):
        return Point(t, agg.cost_usd, float(agg.calls))
    if signal == "latency_p95":
        value = agg.latency.quantile(0.95) if agg.latency is not None else None
        return Point(t, value, float(agg.calls))
    if signal == "ttft_p95":
        if agg.ttft is None:
            return None
        return Point(t, agg.ttft.quantile(0.95), float(agg.ttft.count))
    if signal in ("error_rate", "tool_error_rate"):
        return Point(t, agg.errors / agg.calls if agg.calls else None, float(agg.calls))
    if signal == "tokens_per_call":
        return Point(t, agg.input_tokens / agg.calls if agg.calls else None, float(agg.calls))
    return None


@dataclass(slots=True)
class _State:
    watermarks: dict[str, int] = field(default_factory=dict)
    pending: dict[int, list[tuple[StatsKey, StatsAcc]]] = field(default_factory=dict)
    pending_observations: dict[int, list[Observation]] = field(default_factory=dict)
    #: hop start -> the shards' tallies of that hop, until every shard has passed it
    pending_hops: dict[int, list[tuple[StatsKey, PartialTally]]] = field(default_factory=dict)
    #: window start -> its subjects merged from the hops checked so far
    partials: dict[int, dict[str, dict[tuple, _Agg]]] = field(default_factory=dict)
    closed_through_ns: int = 0
    verdicts: int = 0
    anomalies: int = 0
    #: anomalous early checks (the alerts some of them opened are counted as alerts)
    early_verdicts: int = 0


class DetectionStage:
    """Detectors and the alert lifecycle over the closed windows of all shards."""

    def __init__(
        self,
        *,
        window_s: int,
        shards: Iterable[str],
        detectors: DetectorsConfig,
        policy: LifecyclePolicy,
        checks_per_window: int = 1,
        resume: bytes | None = None,
    ):
        self.window_ns = window_s * NS
        self.hop_ns = self.window_ns // checks_per_window
        #: Early looks at a window (the last hop is only checked as the closed window).
        self.early_looks = max(checks_per_window - 1, 1)
        self.expected = frozenset(shards)
        self.config = detectors
        self.policy = policy
        if resume:
            state, models, lifecycle = pickle.loads(resume)
            self.state: _State = state
            self.detectors: DetectorSet = models
            self.lifecycle = AlertLifecycle(policy, resume=lifecycle)
            if not hasattr(state, "pending_hops"):  # a store written before early checks
                state.pending_hops, state.partials, state.early_verdicts = {}, {}, 0
        else:
            self.state = _State()
            self.detectors = build_detectors(detectors)
            self.lifecycle = AlertLifecycle(policy)

    def snapshot(self) -> bytes:
        return pickle.dumps(
            (self.state, self.detectors, self.lifecycle.snapshot()),
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    def on_batch(self, feeds: list[DetectFeed]) -> list[Alert]:
        state = self.state
        alerts: list[Alert] = []
        for feed in feeds:
            previous = state.watermarks.get(feed.shard, 0)
            state.watermarks[feed.shard] = max(previous, feed.watermark_ns)
            for start, entries in feed.closed:
                if start < state.closed_through_ns:
                    continue  # already evaluated (a replayed feed)
                state.pending.setdefault(start, []).extend(entries)
            # Session observations wait for their window too, so that the lifecycle
            # sees everything in event-time order whatever the shards' pace.
            for observation in feed.observations:
                start = int(observation.window_start.timestamp() * NS)
                if start >= state.closed_through_ns:
                    state.pending_observations.setdefault(start, []).append(observation)
            # A hard limit needs no other shard's data: it opens its alert now. The
            # window's own check later repeats it, which the lifecycle ignores.
            for observation in feed.early:
                start = int(observation.window_start.timestamp() * NS)
                if start >= state.closed_through_ns:
                    alerts.extend(self._observe([observation]))
            for hop_start, entries in feed.hops:
                if hop_start >= state.closed_through_ns:
                    state.pending_hops.setdefault(hop_start, []).extend(entries)
        if self.expected <= state.watermarks.keys():
            watermark = min(state.watermarks[s] for s in self.expected)
            # What every shard has passed, in event-time order: the early check
            # of each hop at its end, each window's own check at the window's end.
            due = [
                (start + self.window_ns, 1, start)
                for start in set(state.pending) | set(state.pending_observations)
                if start + self.window_ns <= watermark
            ]
            due += [
                (hop + self.hop_ns, 0, hop)
                for hop in state.pending_hops
                if hop + self.hop_ns <= watermark
            ]
            for at, closes, start in sorted(due):
                if not closes:
                    alerts.extend(self._check_early(start, at, state.pending_hops.pop(start)))
                    continue
                state.partials.pop(start, None)
                alerts.extend(
                    self._evaluate(
                        start,
                        state.pending.pop(start, []),
                        state.pending_observations.pop(start, []),
                    )
                )
                state.closed_through_ns = start + self.window_ns
        return alerts

    # --- internals ------------------------------------------------------------------

    def _kind_config(self, kind: str):
        return self.config.kind(kind)

    def _observe(self, observations: Iterable[Observation]) -> list[Alert]:
        out = []
        for observation in observations:
            self.state.verdicts += 1
            self.state.anomalies += observation.anomalous
            out.extend(self._route(self.lifecycle.observe(observation)))
        return out

    def _route(self, alerts: list[Alert]) -> list[Alert]:
        """Detector kinds that name their routes send only there."""
        routed = []
        for alert in alerts:
            kind = self._kind_config(alert.kind) if alert.kind in _KIND_NAMES else None
            if kind is not None and kind.routes:
                alert = replace(alert, routes=tuple(kind.routes))
            routed.append(alert)
        return routed

    def _evaluate(
        self,
        start: int,
        entries: list[tuple[StatsKey, StatsAcc]],
        session_observations: list[Observation],
    ) -> list[Alert]:
        t = start / NS
        window_start = datetime.fromtimestamp(t, tz=UTC)
        window_end = datetime.fromtimestamp((start + self.window_ns) / NS, tz=UTC)
        observations: list[Observation] = []
        subjects = _subjects(entries)
        for signal, kind, dimensions, key, agg, point in self._points(subjects, t, early=False):
            verdict = self.detectors.update(signal, key, point)
            if verdict is None:
                continue
            subject = dict(zip(dimensions, key, strict=True))
            if signal == "ttft_p95":
                # Same kind and dimensions as latency_p95: its own incident key.
                subject["metric"] = "ttft"
            if not verdict.anomalous and (
                dedup_key(kind, tuple(subject.items()), subject.get("tenant", ""))
                not in self.lifecycle
            ):
                continue  # a normal window of a quiet subject changes nothing
            observations.append(
                self._observation(
                    verdict,
                    kind=kind,
                    signal=signal,
                    subject=subject,
                    window_start=window_start,
                    window_end=window_end,
                    severity=self._kind_config(kind).severity,
                    exemplars=tuple(trace for _, trace in agg.exemplars),
                )
            )
        observations.extend(self._budgets(t, entries, window_start, window_end))
        observations.extend(sorted(session_observations, key=lambda o: o.dedup_key))
        alerts = self._route(self.lifecycle.advance_to(window_end))
        return alerts + self._observe(observations)

    def _check_early(
        self, hop_start: int, at: int, entries: list[tuple[StatsKey, PartialTally]]
    ) -> list[Alert]:
        """Score the part of a window that every shard has passed; learn nothing.

        An anomaly this clear already may open its alert now (see
        :meth:`AlertLifecycle.observe_early`); the closed window is checked
        and learned as usual. Spend only grows as a window fills, so a cost
        spike flagged early is one its closed window flags too; rates and
        per-call means are judged at :func:`~observatory.detectors.base.threshold_for_looks`
        of their early looks, so that looking early does not multiply their
        false alarms.
        """
        start = hop_start - hop_start % self.window_ns
        if start < self.state.closed_through_ns:
            return []
        partials = self.state.partials
        partials[start] = subjects = _subjects(entries, sketches=False, into=partials.get(start))
        t = start / NS
        window_start = datetime.fromtimestamp(t, tz=UTC)
        window_end = datetime.fromtimestamp(at / NS, tz=UTC)
        details = {"window_seconds_seen": (at - start) / NS, "window_seconds": self.window_ns / NS}
        alerts: list[Alert] = []
        for signal, kind, dimensions, key, agg, point in self._points(subjects, t, early=True):
            looks = 1 if signal in _MONOTONE_SIGNALS else self.early_looks
            verdict = self.detectors.peek(signal, key, point, looks=looks)
            if verdict is None or not verdict.anomalous:
                continue
            observation = self._observation(
                verdict,
                kind=kind,
                signal=signal,
                subject=dict(zip(dimensions, key, strict=True)),
                window_start=window_start,
                window_end=window_end,
                severity=self._kind_config(kind).severity,
                exemplars=tuple(trace for _, trace in agg.exemplars),
                details=details,
            )
            self.state.early_verdicts += 1
            alerts.extend(self._route(self.lifecycle.observe_early(observation)))
        return alerts

    def _points(self, by_signal: dict[str, dict[tuple, _Agg]], t: float, *, early: bool):
        """(signal, kind, dimensions, key, agg, point) of each subject a window can score.

        ``early``: a window still open, summed from hop tallies (no sketches,
        so no percentiles).
        """
        for signal, subjects in by_signal.items():
            if signal not in self.detectors.series or (early and signal not in _EARLY_SIGNALS):
                continue
            kind, dimensions = SIGNALS[signal]
            for key in sorted(subjects):
                agg = subjects[key]
                point = _point(signal, t, agg)
                if point is not None:
                    yield signal, kind, dimensions, key, agg, point

    def _budgets(self, t, entries, window_start, window_end) -> list[Observation]:
        if self.detectors.budget is None:
            return []
        out = []
        severity = self._kind_config("budget").severity
        for (tenant, service, provider, model, _operation, _tool), acc in sorted(
            entries, key=lambda e: e[0]
        ):
            spend = Spend(t, acc.cost_usd, tenant, service, provider, model, self.window_ns / NS)
            for verdict in self.detectors.update_spend(spend):
                # The reason ends with the budget's name and group ("…: acme hourly").
                budget_name = (getattr(verdict, "reason", "") or "budget").rsplit(": ", 1)[-1]
                out.append(
                    self._observation(
                        verdict,
                        kind="budget",
                        signal="budget",
                        subject={"budget": budget_name},
                        window_start=window_start,
                        window_end=window_end,
                        severity=severity,
                        exemplars=(),
                    )
                )
        return out

    @staticmethod
    def _observation(
        verdict: Verdict,
        *,
        kind,
        signal,
        subject,
        window_start,
        window_end,
        severity,
        exemplars,
        details=None,
    ) -> Observation:
        return Observation.from_verdict(
            verdict,
            kind=kind,
            subject=subject,
            window_start=window_start,
            window_end=window_end,
            detector=signal,
            tenant=subject.get("tenant", ""),
            severity=severity,
            metric=_METRICS.get(signal, "cost_usd"),
            exemplar_trace_ids=exemplars,
            details=details,
        )


_KIND_NAMES = frozenset(
    ("cost_spike", "latency_anomaly", "error_surge", "token_anomaly", "runaway_loop", "budget")
)


def runaway_observation(verdict: Verdict, snapshot, *, window_s: int, severity: str) -> Observation:
    """A runaway-loop verdict about one live session, as of a window boundary."""
    end = snapshot.t
    return Observation.from_verdict(
        verdict,
        kind="runaway_loop",
        subject={
            "tenant": snapshot.tenant,
            "service": snapshot.service,
            "agent": snapshot.agent,
            "session": snapshot.session_id,
        },
        window_start=end - window_s,
        window_end=end,
        detector="runaway_loop",
        tenant=snapshot.tenant,
        severity=severity,
        metric="session",
        session_id=snapshot.session_id,
        details={
            "steps": snapshot.steps,
            "tool_calls": snapshot.tool_calls,
            "llm_calls": snapshot.llm_calls,
            "identical_tool_calls_in_a_row": snapshot.current_identical_run,
            "calls_last_minute": snapshot.calls_last_minute or 0.0,
            "session_cost_usd": snapshot.cost_usd or 0.0,
        },
    )
