"""A labelled synthetic workload: per-minute series of a multi-tenant LLM platform.

What makes it hard is what makes production hard:

- a daily cycle of +-50 % (each tenant in its own time zone) and a slow
  random walk of the level on top;
- Poisson call counts, so small keys have empty or single-call windows;
- heavy-tailed per-call cost and prompt sizes (log-normal, sigma ~1), so a
  window's spend jumps whenever a huge call lands in it;
- error rates that wobble more than a binomial (over-dispersion), latency
  percentiles computed from the calls of the window.

Incidents are injected with a label saying which series they explain:

- ``cost_spike``: per-call cost x3..x6 for 5..30 min on a (tenant, service,
  model) key (it also shows in the tenant's total);
- ``latency_anomaly``: every call of a (provider, model) x2..x4 slower for
  5..30 min (p95 and TTFT);
- ``error_surge``: the error rate of a (service, model) or a tool jumps to
  8..40 % for 5..30 min;
- ``token_anomaly``: input tokens per call grow x1.3..x1.6 a minute (capped
  at x20) for 10..30 min: context blow-up (spend grows with it);
- ``runaway_loop``: an agent session that, after a normal start, loops:
  either the same tool call over and over (10..40 calls/min) or many
  different calls very fast (60..200 calls/min), for 10..30 min.

Incidents are only put on keys with material traffic (>= 2 calls a minute
on average): a x3 spend "spike" of a key with a call every ten minutes is
neither detectable within two windows by any method, nor worth a page.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np

from observatory.detectors.base import Point
from observatory.detectors.runaway import SessionSnapshot

__all__ = ["Incident", "IncidentSpec", "Session", "Workload", "generate"]

DAY = 1440  # minutes
#: 2026-01-05 00:00 UTC, a Monday.
T0 = 1_767_571_200.0

MODELS = {  # model -> (provider, USD per input token, median latency ms, median TTFT ms)
    "gpt-4o": ("openai", 2.5e-6, 1400.0, 450.0),
    "gpt-4o-mini": ("openai", 0.15e-6, 700.0, 250.0),
    "claude-sonnet": ("anthropic", 3.0e-6, 1800.0, 600.0),
    "claude-haiku": ("anthropic", 0.8e-6, 800.0, 300.0),
}
SERVICES = ("chat-api", "agent")
TOOLS = ("search", "read_file", "write_file", "run_sql", "http_get")
AGENTS = {  # agent -> (new sessions per minute, median calls/min, median minutes)
    "planner": (0.4, 6.0, 6.0),
    "coder": (0.3, 12.0, 10.0),
    "support": (0.5, 4.0, 4.0),
}
#: Calls per minute of each tenant on average: a heavy-tailed mix of sizes.
TENANT_SIZES = (240.0, 80.0, 30.0, 12.0, 5.0, 1.5)
KINDS = ("cost_spike", "latency_anomaly", "error_surge", "token_anomaly", "runaway_loop")


@dataclass(frozen=True)
class IncidentSpec:
    """How strong and how long the injected incidents are (uniform ranges)."""

    cost_factor: tuple[float, float] = (4.0, 10.0)
    latency_factor: tuple[float, float] = (2.0, 4.0)
    error_rate: tuple[float, float] = (0.10, 0.40)
    #: tokens per call multiply by this every minute (capped at x20)
    token_growth: tuple[float, float] = (1.5, 2.5)
    duration: tuple[int, int] = (5, 30)
    #: only keys with at least this many calls a minute on average get incidents
    min_calls_per_minute: float = 10.0
    #: a cost spike adds at least this much spend a minute (USD): it is material
    min_excess_usd_per_minute: float = 0.30


@dataclass(frozen=True)
class Incident:
    """One injected incident: its kind, minutes [start, end), and the series it explains."""

    kind: str
    start: int
    end: int
    #: (signal, key) pairs the incident shows in; the first is where it was injected.
    targets: tuple[tuple[str, Hashable], ...]
    magnitude: float
    session: str = ""  # runaway_loop: the looping session's id


@dataclass
class Session:
    """Ground truth of one simulated agent session."""

    session_id: str
    agent: str
    start: int
    end: int
    loop_start: int | None = None  # runaway sessions only
    loop_end: int | None = None


@dataclass
class Workload:
    minutes: int
    #: signal -> key -> one Point per minute (value None when the key had no calls)
    series: dict[str, dict[Hashable, list[Point]]]
    incidents: list[Incident]
    #: time-ordered snapshots of the live agent sessions, one per session per minute
    snapshots: list[SessionSnapshot]
    sessions: dict[str, Session]
    #: (tenant, service, model) -> USD spent per minute (for budgets)
    spend: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)

    def minute(self, t: float) -> int:
        return round((t - T0) / 60.0)


def mean_spend(key: tuple[str, str, str], calls_per_minute: float) -> float:
    """Average spend a minute of a key: E[tokens] x price x E[output factor] x calls."""
    price = MODELS[key[2]][1]
    per_call = 2000.0 * np.exp(0.9**2 / 2) * price * np.exp(0.3 + 0.7**2 / 2)
    return float(per_call * calls_per_minute)


def _season(minutes: np.ndarray, phase: float) -> np.ndarray:
    return 1.0 + 0.5 * np.sin(2 * np.pi * minutes / DAY + phase)


def _level_walk(
    rng: np.random.Generator, n: int, sd: float = 0.1, hours: float = 3.0
) -> np.ndarray:
    """A slow AR(1) multiplicative wobble of the level (stationary sd ``sd`` in log)."""
    phi = 1.0 - 1.0 / (hours * 60.0)
    shocks = rng.normal(0.0, sd * np.sqrt(1 - phi**2), n)
    log_level = np.empty(n)
    log_level[0] = rng.normal(0.0, sd)
    for i in range(1, n):  # n ~ thousands: fine
        log_level[i] = phi * log_level[i - 1] + shocks[i]
    return np.exp(log_level)


def _windows_p95(values: np.ndarray, minute_of: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """p95 (linear interpolation) of the values of each minute; NaN for empty minutes."""
    order = np.lexsort((values, minute_of))
    ordered = values[order]
    starts = np.cumsum(counts) - counts
    pos = starts + 0.95 * np.maximum(counts - 1, 0)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, np.maximum(starts + counts - 1, 0))
    out = np.full(len(counts), np.nan)
    has = counts > 0
    frac = pos - lo
    out[has] = ordered[lo[has]] * (1 - frac[has]) + ordered[hi[has]] * frac[has]
    return out


def _points(minutes: int, values: np.ndarray, weights: np.ndarray) -> list[Point]:
    return [
        Point(T0 + 60.0 * m, None if w <= 0 or not np.isfinite(v) else float(v), float(w))
        for m, v, w in zip(range(minutes), values, weights, strict=True)
    ]


class _Placer:
    """Draws incident times that do not overlap on the same key (1 h apart at least)."""

    def __init__(self, rng: np.random.Generator, minutes: int, first: int):
        self.rng = rng
        self.minutes = minutes
        self.first = first
        self.taken: dict[Hashable, list[tuple[int, int]]] = {}

    def place(self, key: Hashable, duration: int) -> int | None:
        for _ in range(50):
            start = int(self.rng.integers(self.first, self.minutes - duration))
            spans = self.taken.setdefault(key, [])
            if all(start + duration + 60 <= a or b + 60 <= start for a, b in spans):
                spans.append((start, start + duration))
                return start
        return None


def generate(
    *,
    days: float = 2.0,
    incidents_per_kind: int = 12,
    seed: int = 0,
    first_incident: int = 240,
    spec: IncidentSpec = IncidentSpec(),
) -> Workload:
    """Generate ``days`` of per-minute series with ``incidents_per_kind`` incidents of each kind.

    Incidents start no earlier than minute ``first_incident`` (the detectors
    warm up before it). ``incidents_per_kind=0`` gives an incident-free workload.

    >>> w = generate(days=0.25, incidents_per_kind=2, seed=1, first_incident=60)
    >>> w.minutes, len(w.series["cost_key"]), len(w.series["latency_p95"])
    (360, 24, 4)
    >>> sorted({i.kind for i in w.incidents}) == sorted(KINDS)
    True
    """
    rng = np.random.default_rng(seed)
    minutes = int(days * DAY)
    grid = np.arange(minutes)
    placer = _Placer(rng, minutes, first_incident)
    incidents: list[Incident] = []
    model_names = list(MODELS)

    # -- which tenant uses what ------------------------------------------------
    keys: list[tuple[str, str, str]] = []
    rate: dict[tuple[str, str, str], float] = {}
    phase: dict[str, float] = {}
    for index, size in enumerate(TENANT_SIZES):
        tenant = f"tenant{index}"
        phase[tenant] = float(rng.uniform(0, 2 * np.pi))
        models = rng.choice(model_names, size=2, replace=False)
        for service, service_share in zip(SERVICES, (0.6, 0.4), strict=True):
            for model, model_share in zip(models, (0.7, 0.3), strict=True):
                key = (tenant, service, str(model))
                keys.append(key)
                rate[key] = size * service_share * model_share

    # -- incidents on the keys (drawn before the data so that they shape it) ----
    cost_mult = {key: np.ones(minutes) for key in keys}
    token_mult = {key: np.ones(minutes) for key in keys}
    material = [key for key in keys if rate[key] >= spec.min_calls_per_minute]
    k_lo, k_hi = spec.cost_factor
    expensive = [
        key
        for key in material
        if (k_hi - 1) * mean_spend(key, rate[key]) >= spec.min_excess_usd_per_minute
    ]
    lo, hi = spec.duration
    for _ in range(incidents_per_kind):
        key = expensive[int(rng.integers(len(expensive)))]
        duration = int(rng.integers(lo, hi + 1))
        start = placer.place(key, duration)
        if start is not None:
            k_min = 1 + spec.min_excess_usd_per_minute / mean_spend(key, rate[key])
            k = float(rng.uniform(max(k_lo, k_min), k_hi))
            cost_mult[key][start : start + duration] *= k
            targets = (("cost_key", key), ("cost_tenant", (key[0],)))
            incidents.append(Incident("cost_spike", start, start + duration, targets, k))
        key = material[int(rng.integers(len(material)))]
        duration = int(rng.integers(max(lo, 10), hi + 1))
        start = placer.place(key, duration)
        if start is not None:
            g = float(rng.uniform(*spec.token_growth))
            growth = np.minimum(g ** np.arange(1, duration + 1), 20.0)
            token_mult[key][start : start + duration] *= growth
            targets = (("tokens_per_call", key), ("cost_key", key), ("cost_tenant", (key[0],)))
            incidents.append(Incident("token_anomaly", start, start + duration, targets, g))

    # -- per-key calls, tokens and spend ---------------------------------------
    series: dict[str, dict[Hashable, list[Point]]] = {"cost_key": {}, "tokens_per_call": {}}
    calls: dict[tuple[str, str, str], np.ndarray] = {}
    spend: dict[tuple[str, str, str], np.ndarray] = {}
    tenant_cost: dict[str, np.ndarray] = {}
    tenant_calls: dict[str, np.ndarray] = {}
    for key in keys:
        tenant, _, model = key
        lam = rate[key] * _season(grid, phase[tenant]) * _level_walk(rng, minutes)
        n = rng.poisson(lam)
        minute_of = np.repeat(grid, n)
        tokens = rng.lognormal(np.log(2000.0), 0.9, len(minute_of)) * token_mult[key][minute_of]
        # Spend follows the prompt, times a heavy-tailed output part.
        cost = tokens * MODELS[model][1] * rng.lognormal(0.3, 0.7, len(minute_of))
        cost *= cost_mult[key][minute_of]
        window_tokens = np.bincount(minute_of, weights=tokens, minlength=minutes)
        window_cost = np.bincount(minute_of, weights=cost, minlength=minutes)
        calls[key], spend[key] = n, window_cost
        series["cost_key"][key] = _points(minutes, window_cost, n)
        series["tokens_per_call"][key] = _points(minutes, window_tokens / np.maximum(n, 1), n)
        tenant_cost[tenant] = tenant_cost.get(tenant, 0.0) + window_cost
        tenant_calls[tenant] = tenant_calls.get(tenant, 0) + n
    series["cost_tenant"] = {
        (tenant,): _points(minutes, tenant_cost[tenant], tenant_calls[tenant])
        for tenant in tenant_cost
    }

    # -- latency per (provider, model), from every call of that model ----------
    series["latency_p95"], series["ttft_p95"] = {}, {}
    for model, (provider, _, latency_ms, ttft_ms) in MODELS.items():
        n = sum((calls[k] for k in keys if k[2] == model), np.zeros(minutes, dtype=int))
        key = (provider, model)
        mult = np.ones(minutes)
        if n.mean() >= spec.min_calls_per_minute:
            for _ in range(max(1, incidents_per_kind // 4) if incidents_per_kind else 0):
                duration = int(rng.integers(lo, hi + 1))
                start = placer.place(key, duration)
                if start is None:
                    continue
                k = float(rng.uniform(*spec.latency_factor))
                mult[start : start + duration] = k
                targets = (("latency_p95", key), ("ttft_p95", key))
                incidents.append(Incident("latency_anomaly", start, start + duration, targets, k))
        minute_of = np.repeat(grid, n)
        # Providers are a little slower at their busy hours, and wobble.
        load = (1.0 + 0.1 * np.sin(2 * np.pi * grid / DAY)) * rng.lognormal(0, 0.05, minutes)
        scale = (mult * load)[minute_of]
        latency = rng.lognormal(np.log(latency_ms), 0.45, len(minute_of)) * scale
        ttft = rng.lognormal(np.log(ttft_ms), 0.5, len(minute_of)) * scale
        series["latency_p95"][key] = _points(minutes, _windows_p95(latency, minute_of, n), n)
        series["ttft_p95"][key] = _points(minutes, _windows_p95(ttft, minute_of, n), n)

    # -- error rates per (service, model) and per tool -------------------------
    error_groups: dict[tuple[str, Hashable], np.ndarray] = {}
    for service in SERVICES:
        for model in MODELS:
            n = sum((calls[k] for k in keys if k[1] == service and k[2] == model), 0)
            if np.ndim(n):
                error_groups[("error_rate", (service, model))] = n
    for i, tool in enumerate(TOOLS):
        lam = float(rng.uniform(3.0, 40.0)) * _season(grid, float(rng.uniform(0, 2 * np.pi)))
        # Subjects are (service, tool); one service per tool keeps the draws unchanged.
        error_groups[("tool_error_rate", (SERVICES[i % len(SERVICES)], tool))] = rng.poisson(lam)
    series["error_rate"], series["tool_error_rate"] = {}, {}
    eligible = [g for g, n in error_groups.items() if n.mean() >= spec.min_calls_per_minute]
    surge = {group: np.zeros(minutes) for group in error_groups}
    for _ in range(incidents_per_kind):
        group = eligible[int(rng.integers(len(eligible)))]
        duration = int(rng.integers(lo, hi + 1))
        start = placer.place(group, duration)
        if start is None:
            continue
        p = float(rng.uniform(*spec.error_rate))
        surge[group][start : start + duration] = p
        incidents.append(Incident("error_surge", start, start + duration, (group,), p))
    for (signal, key), n in error_groups.items():
        base = float(rng.uniform(0.003, 0.03))
        # Over-dispersed: the rate itself wobbles minute to minute.
        p = np.minimum(base * rng.lognormal(0.0, 0.3, minutes), 0.5)
        p = np.where(surge[(signal, key)] > 0, surge[(signal, key)], p)
        errors = rng.binomial(n, p)
        series[signal][key] = _points(minutes, errors / np.maximum(n, 1), n)

    snapshots, sessions, loops = _sessions(rng, minutes, incidents_per_kind, first_incident)
    incidents.extend(loops)
    incidents.sort(key=lambda i: (i.start, i.kind))
    return Workload(minutes, series, incidents, snapshots, sessions, spend)


def _normal_run(rng: np.random.Generator) -> int:
    # Normal agents repeat a call now and then (a retry, a re-read), rarely 4-5 times.
    return int(rng.choice([1, 2, 3, 4, 5], p=[0.70, 0.18, 0.08, 0.03, 0.01]))


def _session_rows(
    rng: np.random.Generator,
    sid: str,
    agent: str,
    minutes: range,
    velocity: float,
    cost_per_call: float,
    *,
    identical: bool = False,
    steps: int = 0,
    cost: float = 0.0,
) -> tuple[list[SessionSnapshot], int, float]:
    """One snapshot per minute; ``identical``: every other call repeats the same tool call."""
    rows = []
    run = 0
    for m in minutes:
        n = int(rng.poisson(velocity))
        steps += n
        cost += n * cost_per_call * float(rng.lognormal(0.0, 0.5))
        run = run + n // 2 if identical else _normal_run(rng)
        tool_calls = steps // 2
        rows.append(
            SessionSnapshot(
                agent,
                T0 + 60.0 * m,
                steps,
                tool_calls,
                steps - tool_calls,
                run,
                float(n),
                cost,
                session_id=sid,
            )
        )
    return rows, steps, cost


def _sessions(
    rng: np.random.Generator, minutes: int, n_loops: int, first_incident: int
) -> tuple[list[SessionSnapshot], dict[str, Session], list[Incident]]:
    grid = np.arange(minutes)
    rows: list[SessionSnapshot] = []
    sessions: dict[str, Session] = {}
    incidents: list[Incident] = []
    serial = 0
    for agent, (arrivals, calls_median, minutes_median) in AGENTS.items():
        per_minute = rng.poisson(arrivals * _season(grid, 1.0))
        for start in np.repeat(grid, per_minute).tolist():
            serial += 1
            sid = f"s{serial}"
            duration = max(1, int(rng.lognormal(np.log(minutes_median), 0.7)))
            velocity = float(rng.lognormal(np.log(calls_median), 0.4))
            cost_per_call = float(rng.lognormal(np.log(0.004), 0.8))
            sessions[sid] = Session(sid, agent, start, start + duration)
            span = range(start, min(start + duration, minutes))
            rows += _session_rows(rng, sid, agent, span, velocity, cost_per_call)[0]
    # Runaway sessions: a normal start of 1-4 minutes, then a loop until
    # someone kills it, either hammering one tool call or racing through many.
    agents = list(AGENTS)
    last_start = max(first_incident + 1, minutes - 40)
    for loop_start in rng.integers(first_incident, last_start, n_loops).tolist():
        serial += 1
        sid = f"loop{serial}"
        agent = agents[int(rng.integers(len(agents)))]
        lead = int(rng.integers(1, 5))
        loop_end = min(loop_start + int(rng.integers(10, 31)), minutes)
        identical = bool(rng.random() < 0.5)
        loop_velocity = float(rng.uniform(10, 40) if identical else rng.uniform(60, 200))
        cost_per_call = float(rng.lognormal(np.log(0.004), 0.8))
        velocity = float(rng.lognormal(np.log(AGENTS[agent][1]), 0.4))
        sessions[sid] = Session(sid, agent, loop_start - lead, loop_end, loop_start, loop_end)
        normal, steps, cost = _session_rows(
            rng, sid, agent, range(loop_start - lead, loop_start), velocity, cost_per_call
        )
        looping, _, _ = _session_rows(
            rng,
            sid,
            agent,
            range(loop_start, loop_end),
            loop_velocity,
            cost_per_call,
            identical=identical,
            steps=steps,
            cost=cost,
        )
        rows += normal + looping
        target = (("session", sid),)
        incidents.append(
            Incident("runaway_loop", loop_start, loop_end, target, loop_velocity, session=sid)
        )
    rows.sort(key=lambda r: r.t)
    return rows, sessions, incidents
