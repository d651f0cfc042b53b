"""Runaway agent loops, caught while they still run.

A live session is checked every time its snapshot changes against two kinds
of limits per feature:

- hard limits from the configuration ("never more than 25 identical
  consecutive tool calls"), which work from the first session on;
- learned limits: ``margin`` times the ``quantile`` of the feature over the
  normal snapshots of the same agent (River's P² ``stats.Quantile``, constant
  memory), once the agent has ``warmup`` of them. A learned limit never goes
  below a per-feature floor, so an agent whose sessions are all tiny does not
  page on its first slightly longer one.

By default only the *rate-like* features are learned (calls in the last
minute, the current run of identical tool calls): they are what a loop
changes at once. Session length and cost are heavy-tailed among normal
sessions (one long legitimate session in a hundred is the norm), so a learned
quantile of them pages on normal sessions; they get hard limits only.

The score is the largest ``value / limit`` over the features, so 1.0 means a
limit was reached, and the verdict names the feature and the limit.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from river import stats

from observatory.detectors.base import Verdict

__all__ = ["FEATURES", "RunawayLoop", "SessionSnapshot"]

#: The features of a snapshot that are checked, in reporting-priority order.
FEATURES = ("current_identical_run", "calls_last_minute", "steps", "cost_usd")

DEFAULT_FLOORS: Mapping[str, float] = {
    "current_identical_run": 6.0,
    "calls_last_minute": 30.0,
    "steps": 100.0,
    "cost_usd": 2.0,
}


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """A live session as it stands at event time ``t`` (epoch seconds).

    ``current_identical_run`` is the length of the run of identical consecutive
    tool calls (same tool, same arguments) the session is in right now;
    ``calls_last_minute`` its LLM + tool calls in the last minute. ``None``
    means unknown (e.g. the cost of unpriced calls). ``tenant``, ``service``
    and ``session_id`` are only carried for scoping and for the alert text.
    """

    agent: str
    t: float
    steps: int
    tool_calls: int
    llm_calls: int
    current_identical_run: int
    calls_last_minute: float | None
    cost_usd: float | None
    tenant: str = ""
    service: str = ""
    session_id: str = ""


class _AgentProfile:
    """The learned quantiles of one agent's normal snapshots."""

    __slots__ = ("n", "quantiles")

    def __init__(self, q: float):
        self.n = 0
        self.quantiles = {feature: stats.Quantile(q) for feature in FEATURES}

    def __getstate__(self):
        return (self.n, self.quantiles)

    def __setstate__(self, state):
        self.n, self.quantiles = state


def _value(snapshot: SessionSnapshot, feature: str) -> float | None:
    value = getattr(snapshot, feature)
    if value is None or not math.isfinite(value):
        return None
    return float(value)


class RunawayLoop:
    """Hard and learned per-agent limits on live session snapshots.

    Parameters
    ----------
    max_identical_run, max_calls_per_minute, max_steps, max_cost_usd
        Hard limits (None: no hard limit on that feature).
    quantile
        Quantile of each feature learned per agent from normal snapshots.
    margin
        The learned limit is ``margin`` x that quantile ...
    floors
        ... but never below these per-feature floors (missing features: the
        defaults in ``DEFAULT_FLOORS``).
    learned
        The features that get learned limits (see above).
    warmup
        Normal snapshots an agent needs before its learned limits apply.
    threshold
        Score (``value / limit``) at which a snapshot is anomalous: 1.0 fires
        exactly at the limits, 0.8 at 80 % of them.
    max_agents
        Agents remembered; the least recently seen is forgotten first.

    Examples
    --------

    >>> det = RunawayLoop(max_identical_run=20, warmup=50)
    >>> def snap(minute, calls=6, run=1, steps=None):
    ...     steps = steps if steps is not None else 6 * minute
    ...     return SessionSnapshot("planner", 60.0 * minute, steps, steps // 2, steps // 2,
    ...                            run, calls, 0.01 * steps)
    >>> verdicts = [det.update(snap(m % 10, run=1 + m % 3)) for m in range(200)]
    >>> any(v.anomalous for v in verdicts), det.warmed_up_for("planner")
    (False, True)
    >>> v = det.update(snap(3, run=25))
    >>> v.anomalous, v.reason
    (True, 'current_identical_run 25 >= hard limit 20')
    >>> v = det.update(snap(3, calls=90))
    >>> v.anomalous, v.reason
    (True, 'calls_last_minute 90 > learned limit 30 (max(floor 30, 2.5 x p99 6) for planner)')
    """

    def __init__(
        self,
        *,
        max_identical_run: float | None = 25,
        max_calls_per_minute: float | None = 200,
        max_steps: float | None = 2000,
        max_cost_usd: float | None = 50.0,
        quantile: float = 0.99,
        margin: float = 2.5,
        floors: Mapping[str, float] | None = None,
        learned: tuple[str, ...] = ("current_identical_run", "calls_last_minute"),
        warmup: int = 200,
        threshold: float = 1.0,
        max_agents: int = 10_000,
    ):
        self.max_identical_run = max_identical_run
        self.max_calls_per_minute = max_calls_per_minute
        self.max_steps = max_steps
        self.max_cost_usd = max_cost_usd
        self.quantile = quantile
        self.margin = margin
        self.floors = {**DEFAULT_FLOORS, **(floors or {})}
        unknown = set(learned) - set(FEATURES)
        if unknown:
            raise ValueError(f"cannot learn {sorted(unknown)}; features are {FEATURES}")
        self.learned = tuple(learned)
        self.warmup = warmup
        self.threshold = threshold
        self.max_agents = max_agents
        self.hard_limits = {
            "current_identical_run": max_identical_run,
            "calls_last_minute": max_calls_per_minute,
            "steps": max_steps,
            "cost_usd": max_cost_usd,
        }
        self.agents: OrderedDict[str, _AgentProfile] = OrderedDict()

    # -- limits -------------------------------------------------------------

    def warmed_up_for(self, agent: str) -> bool:
        profile = self.agents.get(agent)
        return profile is not None and profile.n >= self.warmup

    def expected(self, agent: str, feature: str) -> float | None:
        """The learned quantile of ``feature`` for ``agent`` (None during warm-up)."""
        profile = self.agents.get(agent)
        if profile is None or profile.n < self.warmup:
            return None
        return profile.quantiles[feature].get()

    def learned_limit(self, agent: str, feature: str) -> float | None:
        if feature not in self.learned:
            return None
        learned = self.expected(agent, feature)
        if learned is None:
            return None
        return max(self.floors[feature], self.margin * learned)

    def _check(self, snapshot: SessionSnapshot) -> tuple[float, str, float, float, str]:
        """(score, feature, value, limit, reason) of the feature nearest (or past) its limit.

        A hard limit that is reached is reported in preference to a learned
        one: it is the rule someone wrote down, and the easier one to act on.
        """
        hard_best = learned_best = (0.0, "", math.nan, math.nan, "")
        for feature in FEATURES:
            value = _value(snapshot, feature)
            if value is None:
                continue
            hard = self.hard_limits[feature]
            if hard is not None and hard > 0 and value / hard > hard_best[0]:
                reason = f"{feature} {value:g} >= hard limit {hard:g}"
                hard_best = (value / hard, feature, value, hard, reason)
            learned = self.learned_limit(snapshot.agent, feature)
            if learned is None or learned <= 0:
                continue
            # Strictly above a learned limit: the quantile of a discrete
            # feature is often a value normal sessions do reach.
            score = value / learned if value > learned else min(value / learned, 0.999)
            if score > learned_best[0]:
                q = self.expected(snapshot.agent, feature)
                reason = (
                    f"{feature} {value:g} > learned limit {learned:g} "
                    f"(max(floor {self.floors[feature]:g}, {self.margin:g} x "
                    f"p{100 * self.quantile:g} {q:.3g}) for {snapshot.agent})"
                )
                learned_best = (score, feature, value, learned, reason)
        if hard_best[0] >= 1.0 or hard_best[0] >= learned_best[0]:
            return hard_best
        return learned_best

    # -- the detector protocol ------------------------------------------------

    @property
    def warmed_up(self) -> bool:
        """Hard limits need no warm-up; learned ones are per agent (:meth:`warmed_up_for`)."""
        return True

    def score_one(self, snapshot: SessionSnapshot) -> float:
        """``value / limit`` of the feature nearest its limit (>= 1: a limit is reached)."""
        return self._check(snapshot)[0]

    def learn_one(self, snapshot: SessionSnapshot) -> None:
        agents = self.agents
        profile = agents.get(snapshot.agent)
        if profile is None:
            profile = agents[snapshot.agent] = _AgentProfile(self.quantile)
            while len(agents) > self.max_agents:
                agents.popitem(last=False)
        else:
            agents.move_to_end(snapshot.agent)
        for feature in FEATURES:
            value = _value(snapshot, feature)
            if value is not None:
                profile.quantiles[feature].update(value)
        profile.n += 1

    def hard_limit(self, snapshot: SessionSnapshot) -> Verdict | None:
        """An anomalous verdict if the snapshot reached a hard limit, else None.

        Looks only at the written-down limits, learns nothing: the flow asks it
        as soon as the watermark passes new calls of a session, so a loop is
        flagged within the watermark delay instead of at the next window end.

        >>> det = RunawayLoop(max_identical_run=20)
        >>> det.hard_limit(SessionSnapshot("planner", 0.0, 40, 20, 20, 20, 10.0, 0.1)).reason
        'current_identical_run 20 >= hard limit 20'
        >>> det.hard_limit(SessionSnapshot("planner", 0.0, 40, 20, 20, 19, 10.0, 0.1)) is None
        True
        """
        best = None
        for feature in FEATURES:
            value = _value(snapshot, feature)
            hard = self.hard_limits[feature]
            if value is None or hard is None or hard <= 0 or value < hard:
                continue
            if best is None or value / hard > best.score:
                reason = f"{feature} {value:g} >= hard limit {hard:g}"
                best = Verdict(True, value / hard, value, hard, reason)
        return best

    def update(self, snapshot: SessionSnapshot) -> Verdict:
        """Check the snapshot, learn it if it is normal, and say which limit fired."""
        score, feature, value, limit, reason = self._check(snapshot)
        if score < self.threshold:
            self.learn_one(snapshot)
            return Verdict(False, score, value if feature else None, limit if feature else None)
        return Verdict(True, score, value, limit, reason)
