"""False alerts per quiet day of the error-rate and token detectors, over many days.

``python -m bench.quiet [--days N] [--detectors YAML] [--seed S] [--calls-per-minute R] [--jobs J]``

``make eval`` runs two incident-free days end to end, and a detector that
raises a false alert once in twenty days hardly shows in two. This measures
the rate over many days, for the detectors whose inputs can be redrawn from
the simulator's own null model:

* one quiet day of the simulator's traffic (``flows/traffic.py``, 1000 LLM
  calls a minute, the daily cycle included) fixes how many calls every key
  has in every quarter minute; it is simulated once and cached;
* each measured day redraws what the detectors judge, as the simulator draws
  it when nothing is wrong: every call fails with the base error rate (LLM
  calls and tool calls), and its input tokens are log-normal around its
  model's median;
* the day goes through the flow's own :class:`DetectionStage` (closed windows
  and, with ``checks_per_window``, the early looks) and alert lifecycle, as in
  ``observatory run``. Every alert opened is a false one.

Spend and latency are not redrawn (the cost and latency detectors are off
here); ``make eval`` covers them. The rate printed is per day with an exact
Poisson 95 % upper bound, so "0 in 100 days" reads "< 0.030 a day".
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import pickle
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from observatory.detectors.config import DetectorsConfig
from observatory.flows.config import PipelineConfig
from observatory.flows.traffic import (
    BASE_ERROR_RATE,
    INPUT_TOKENS_SIGMA,
    MINUTE_NS,
    MODELS,
    NS,
    TOOL_BASE_ERROR_RATE,
    Simulator,
)
from observatory.operators.alerting import LifecyclePolicy
from observatory.operators.detect import DetectFeed, DetectionStage
from observatory.operators.stats import TOOL_OPERATION, PartialTally, StatsAcc, StatsKey

CACHE = Path(__file__).resolve().parent / ".cache"
LLM_OPERATIONS = frozenset(("chat", "text_completion", "embeddings"))
#: (provider, input tokens median) of each simulated model
_MODEL_FACTS = {model: (provider, median) for provider, model, _, median in MODELS}
#: 2026-11-25 00:00 UTC: the day is the same whatever day this runs.
_END_S = 1_795_564_800
#: Only what can be redrawn is judged.
_OFF = {"cost_spike": {"enabled": False}, "latency_anomaly": {"enabled": False}}


def log(message: str) -> None:
    print(f"[quiet {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the calls of one quiet day ------------------------------------------------------------


def day_counts(seed: int, calls_per_minute: float, hop_ns: int) -> dict[int, dict[StatsKey, int]]:
    """Calls per stats key per hop (hop start in ns) of one simulated quiet day, cached."""
    path = CACHE / f"quiet-{seed}-{calls_per_minute:g}-{hop_ns}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    end_ns = _END_S * NS
    sim = Simulator(
        start_ns=end_ns - 1440 * MINUTE_NS,
        end_ns=end_ns,
        calls_per_minute=calls_per_minute,
        seed=seed,
        keep_truth=True,
    )
    counts: dict[int, dict[StatsKey, int]] = defaultdict(lambda: defaultdict(int))
    began = time.monotonic()

    def drain() -> None:
        for call in sim.truth:
            if call.operation == TOOL_OPERATION:
                key = (call.tenant, call.service, "", "", TOOL_OPERATION, call.tool)
            elif call.operation in LLM_OPERATIONS:
                provider = _MODEL_FACTS[call.model][0]
                key = (call.tenant, call.service, provider, call.model, call.operation, "")
            else:
                continue
            counts[call.end_ns - call.end_ns % hop_ns][key] += 1
        sim.truth.clear()

    for i, _ in enumerate(sim.stream()):
        if i % 50_000 == 0:
            drain()
            if i % 500_000 == 0 and i:
                log(f"simulating the quiet day (seed {seed}): {i:,} spans")
    drain()
    plain = {hop: dict(keys) for hop, keys in counts.items()}
    CACHE.mkdir(exist_ok=True)
    path.write_bytes(pickle.dumps(plain))
    log(f"simulated and cached in {time.monotonic() - began:.0f}s: {path}")
    return plain


# --- one redrawn day -------------------------------------------------------------------------


class NullModel:
    """One quiet day's calls per key and hop, and draws of what the detectors judge."""

    def __init__(self, counts: dict[int, dict[StatsKey, int]]):
        self.rows = [(hop, key) for hop in sorted(counts) for key in sorted(counts[hop])]
        self.calls = np.array([counts[hop][key] for hop, key in self.rows], dtype=np.int64)
        tool = np.array([key[4] == TOOL_OPERATION for _, key in self.rows])
        self.error_rate = np.where(tool, TOOL_BASE_ERROR_RATE, BASE_ERROR_RATE)
        medians = [
            1.0 if key[4] == TOOL_OPERATION else _MODEL_FACTS[key[3]][1] for _, key in self.rows
        ]
        self.log_median = np.log(np.array(medians))
        self.llm = ~tool

    def draw(self, rng: np.random.Generator) -> dict[int, list[tuple[StatsKey, PartialTally]]]:
        """Errors and input tokens of every call, as the simulator draws them when all is well."""
        errors = rng.binomial(self.calls, self.error_rate)
        token_calls = np.where(self.llm, self.calls, 0)
        row_of_call = np.repeat(np.arange(len(self.rows)), token_calls)
        draws = rng.lognormal(self.log_median[row_of_call], INPUT_TOKENS_SIGMA)
        tokens = np.bincount(row_of_call, weights=np.floor(draws), minlength=len(self.rows))
        out: dict[int, list[tuple[StatsKey, PartialTally]]] = defaultdict(list)
        for (hop, key), calls, k, t in zip(
            self.rows, self.calls.tolist(), errors.tolist(), tokens.tolist(), strict=True
        ):
            tally = PartialTally()
            tally.calls, tally.errors, tally.input_tokens = calls, k, int(t)
            out[hop].append((key, tally))
        return out


def _closed(hops: list[list[tuple[StatsKey, PartialTally]]]) -> list[tuple[StatsKey, StatsAcc]]:
    """A window's accumulators from its hops (counts only: no latency, no spend)."""
    merged: dict[StatsKey, StatsAcc] = {}
    for entries in hops:
        for key, tally in entries:
            acc = merged.get(key)
            if acc is None:
                acc = merged[key] = StatsAcc()
            acc.calls += tally.calls
            acc.errors += tally.errors
            acc.input_tokens += tally.input_tokens
    return list(merged.items())


def false_alerts(stage: DetectionStage, day: dict[int, list]) -> list:
    """Feed a day to ``stage`` hop by hop, as one shard would; the alerts it opens."""
    opened = []
    window_ns, hop_ns = stage.window_ns, stage.hop_ns
    checks = window_ns // hop_ns
    first = min(day) - min(day) % window_ns
    for start in range(first, max(day) + 1, window_ns):
        hops = [day.get(start + i * hop_ns, []) for i in range(checks)]
        feeds = [
            # The shard hands over each hop of an open window but its last.
            DetectFeed("quiet", start + (i + 1) * hop_ns, hops=[(start + i * hop_ns, hops[i])])
            for i in range(checks - 1)
        ]
        feeds.append(DetectFeed("quiet", start + window_ns, closed=[(start, _closed(hops))]))
        for feed in feeds:
            opened += [a for a in stage.on_batch([feed]) if a.state == "firing" and a.sequence == 1]
    return opened


def poisson_upper(events: int, days: int) -> float:
    """Exact one-sided 95 % upper bound of a Poisson rate per day."""
    if events == 0:
        return -math.log(0.05) / days
    low, high = events / days, (events + 10 * math.sqrt(events) + 10) / days
    for _ in range(60):  # P(X <= events | rate) = 0.05, by bisection
        mid = (low + high) / 2
        lam = mid * days
        cdf = sum(
            math.exp(-lam + k * math.log(lam) - math.lgamma(k + 1)) for k in range(events + 1)
        )
        low, high = (mid, high) if cdf > 0.05 else (low, mid)
    return high


_WORKER: dict = {}


def _init_worker(
    counts: dict, detectors: DetectorsConfig, pipeline: PipelineConfig, seed: int
) -> None:
    _WORKER.update(model=NullModel(counts), detectors=detectors, pipeline=pipeline, seed=seed)


def _one_day(d: int) -> list[tuple[int, str, str, str, float]]:
    """(day, detector, subject, detected at, score) of the false alerts of redrawn day ``d``."""
    pipeline = _WORKER["pipeline"]
    stage = DetectionStage(
        window_s=pipeline.window_seconds,
        shards=["quiet"],
        detectors=_WORKER["detectors"],
        policy=LifecyclePolicy(),
        checks_per_window=pipeline.checks_per_window,
    )
    day = _WORKER["model"].draw(np.random.default_rng([_WORKER["seed"], d]))
    return [
        (
            d,
            alert.detector,
            ", ".join(f"{k}={v}" for k, v in alert.subject),
            f"{alert.detected_at:%H:%M:%S}",
            alert.score,
        )
        for alert in false_alerts(stage, day)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quiet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--days", type=int, default=100, help="redrawn quiet days")
    parser.add_argument("--seed", type=int, default=13, help="the simulated day's seed")
    parser.add_argument("--calls-per-minute", type=float, default=1000.0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument(
        "--detectors",
        default="{}",
        help="YAML (or JSON) of the detectors section to measure, e.g. "
        "'{error_surge: {sensitivity: 5.0}}' (default: the defaults)",
    )
    args = parser.parse_args(argv)
    overrides = yaml.safe_load(args.detectors) or {}
    if not isinstance(overrides, dict):
        parser.error("--detectors must be a mapping, the config's detectors section")
    for kind, off in _OFF.items():
        overrides[kind] = {**overrides.get(kind, {}), **off}
    detectors = DetectorsConfig.model_validate(overrides)
    pipeline = PipelineConfig()
    hop_ns = pipeline.window_seconds * NS // pipeline.checks_per_window
    counts = day_counts(args.seed, args.calls_per_minute, hop_ns)
    began = time.monotonic()
    found: list[tuple[int, str, str, str, float]] = []
    with multiprocessing.Pool(
        max(args.jobs, 1),
        initializer=_init_worker,
        initargs=(counts, detectors, pipeline, args.seed),
    ) as pool:
        for done, alerts in enumerate(pool.imap_unordered(_one_day, range(args.days)), 1):
            found += alerts
            if done % 10 == 0 or done == args.days:
                log(f"{done}/{args.days} days, {len(found)} false alerts so far")
    per_detector = defaultdict(int)
    for _, detector, *_rest in found:
        per_detector[detector] += 1
    print(
        f"\n{args.days} redrawn quiet days of seed {args.seed} at "
        f"{args.calls_per_minute:g} calls/min, checks_per_window "
        f"{pipeline.checks_per_window} ({time.monotonic() - began:.0f}s)"
    )
    print(f"{'detector':<18} {'false alerts':>12} {'per day':>8} {'95% upper':>10}")
    for name in ("error_rate", "tool_error_rate", "tokens_per_call"):
        n = per_detector.get(name, 0)
        print(f"{name:<18} {n:>12} {n / args.days:>8.3f} {poisson_upper(n, args.days):>10.3f}")
    for d, detector, subject, at, score in sorted(found):
        print(f"  day {d}: {detector} {subject} at {at}, score {score:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
