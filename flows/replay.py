"""``observatory detect``: replay stored aggregates through a detector config.

Reads ``llm_stats`` (and ``agent_sessions``) for a time range from
TimescaleDB, feeds them window by window to the detectors and the alert
lifecycle of the given config, and prints the alerts that config would have
raised next to those actually raised (the ``anomalies`` table) — so a
detector config can be tuned on last week's data before it is deployed.

What a replay cannot know exactly: per-(provider, model) p95 latency is
rebuilt from the stored per-key p95s (call-weighted), since the sketches are
not stored; runaway loops are judged on each stored session's final state
(the live per-minute snapshots are not stored); and windows are judged
closed, as stored: an alert the flow opened early, part way into a window
(``pipeline.checks_per_window``), shows here at that window's end, and one
that only the partial window showed may not show at all.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from itertools import groupby

import psycopg

from observatory.detectors.base import Point
from observatory.detectors.config import SIGNALS, build_detectors
from observatory.detectors.runaway import SessionSnapshot
from observatory.flows.config import Config
from observatory.operators.alerting import AlertLifecycle
from observatory.operators.detect import _METRICS
from observatory.schemas.alerts import Alert, Observation

_LLM = ("chat", "text_completion", "embeddings")
_TOOL = "execute_tool"


def parse_time(text: str) -> datetime:
    """ISO 8601 (naive = UTC), or a duration ago: ``7d``, ``12h``, ``30m`` (``-7d`` too).

    >>> parse_time("2026-01-02T03:04").isoformat()
    '2026-01-02T03:04:00+00:00'
    >>> round((datetime.now(UTC) - parse_time("2h")).total_seconds() / 60)
    120
    """
    relative = text.lstrip("-")
    if relative[:-1].replace(".", "", 1).isdigit() and relative[-1:] in ("d", "h", "m"):
        unit = {"d": "days", "h": "hours", "m": "minutes"}[relative[-1]]
        return datetime.now(UTC) - timedelta(**{unit: float(relative[:-1])})
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _row_subjects(tenant, service, provider, model, operation, tool) -> tuple:
    """(signal, subject key) pairs a stored row counts towards, as ``detect._subjects``."""
    if operation == _TOOL:
        return (("tool_error_rate", (service, tool)),)
    if operation not in _LLM:
        return ()
    return (
        ("cost_key", (tenant, service, model)),
        ("cost_tenant", (tenant,)),
        ("latency_p95", (provider, model)),
        ("ttft_p95", (provider, model)),
        ("error_rate", (service, model)),
        ("tokens_per_call", (tenant, service, model)),
    )


def _window_points(rows: list[tuple]) -> dict[str, dict[tuple, Point]]:
    """One window's stored rows → each signal's subjects and their points."""
    sums: dict[str, dict[tuple, list[float]]] = {s: {} for s in SIGNALS}
    t = rows[0][0].timestamp()
    for (_bucket, tenant, service, provider, model, operation, tool, calls, errors, input_tokens,
         cost, p95, ttft) in rows:  # fmt: skip
        if not calls:
            continue
        for signal, key in _row_subjects(tenant, service, provider, model, operation, tool):
            acc = sums[signal].setdefault(key, [0.0, 0.0, 0.0, 0.0, 0.0])
            acc[0] += calls
            acc[1] += errors
            acc[2] += input_tokens
            acc[3] += cost
            if signal == "latency_p95" and p95 is not None:
                acc[4] += p95 * calls
            if signal == "ttft_p95" and ttft is not None:
                acc[4] += ttft * calls
    points: dict[str, dict[tuple, Point]] = {}
    for signal, subjects in sums.items():
        out = points[signal] = {}
        for key, (calls, errors, tokens, cost, weighted) in subjects.items():
            value = {
                "cost_key": cost,
                "cost_tenant": cost,
                "latency_p95": weighted / calls if weighted else None,
                "ttft_p95": weighted / calls if weighted else None,
                "error_rate": errors / calls,
                "tool_error_rate": errors / calls,
                "tokens_per_call": tokens / calls,
            }.get(signal)
            if value is not None:
                out[key] = Point(t, value, calls)
    return points


def replay(conn: psycopg.Connection, config: Config, start: datetime, end: datetime) -> list[Alert]:
    detectors = build_detectors(config.detectors)
    lifecycle = AlertLifecycle(config.alerts.lifecycle_policy())
    alerts: list[Alert] = []
    rows = conn.execute(
        """SELECT bucket, tenant, service, provider, model, operation, tool, calls, errors,
                  input_tokens, cost_usd, latency_p95_ms, ttft_p95_ms
             FROM llm_stats WHERE bucket >= %s AND bucket < %s
            ORDER BY bucket, tenant, service, provider, model, operation, tool""",
        (start, end),
    ).fetchall()
    sessions = conn.execute(
        """SELECT last_seen, tenant, service, agent, session_id, llm_calls, tool_calls,
                  longest_tool_run, cost_usd
             FROM agent_sessions WHERE last_seen >= %s AND last_seen < %s ORDER BY last_seen""",
        (start, end),
    ).fetchall()
    session_index = 0
    for bucket, group in groupby(rows, key=lambda r: r[0]):
        window_rows = list(group)
        window_s = 60
        window_end = bucket + timedelta(seconds=window_s)
        observations: list[Observation] = []
        for signal, subjects in _window_points(window_rows).items():
            kind, dimensions = SIGNALS[signal]
            for key in sorted(subjects):
                verdict = detectors.update(signal, key, subjects[key])
                if verdict is None:
                    continue
                subject = dict(zip(dimensions, key, strict=True))
                if signal == "ttft_p95":
                    subject["metric"] = "ttft"
                observations.append(
                    Observation.from_verdict(
                        verdict,
                        kind=kind,
                        subject=subject,
                        window_start=bucket,
                        window_end=window_end,
                        detector=signal,
                        tenant=subject.get("tenant", ""),
                        severity=config.detectors.kind(kind).severity,
                        metric=_METRICS.get(signal, ""),
                    )
                )
        while session_index < len(sessions) and sessions[session_index][0] < window_end:
            last, tenant, service, agent, sid, llm, tools, run, cost = sessions[session_index]
            session_index += 1
            verdict = detectors.update_session(
                SessionSnapshot(
                    agent=agent,
                    t=last.timestamp(),
                    steps=llm + tools,
                    tool_calls=tools,
                    llm_calls=llm,
                    current_identical_run=run,
                    calls_last_minute=None,
                    cost_usd=cost,
                    tenant=tenant,
                    service=service,
                    session_id=sid,
                )
            )
            if verdict is not None and verdict.anomalous:
                observations.append(
                    Observation.from_verdict(
                        verdict,
                        kind="runaway_loop",
                        subject={
                            "tenant": tenant,
                            "service": service,
                            "agent": agent,
                            "session": sid,
                        },
                        window_start=bucket,
                        window_end=window_end,
                        detector="runaway_loop",
                        tenant=tenant,
                        severity=config.detectors.runaway_loop.severity,
                        metric="session",
                        session_id=sid,
                    )
                )
        alerts.extend(lifecycle.on_batch(observations))
    return [a for a in alerts if a.state == "firing" and a.sequence == 1]


def main(config: Config, args: argparse.Namespace, conn: psycopg.Connection) -> int:
    start, end = parse_time(args.start), parse_time(args.end)
    would = replay(conn, config, start, end)
    actual = conn.execute(
        """SELECT detected_at, kind, dedup_key, summary FROM anomalies
            WHERE detected_at >= %s AND detected_at < %s ORDER BY detected_at""",
        (start, end),
    ).fetchall()
    print(f"Replayed {start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC through the given config.")
    print(f"\nWould have raised {len(would)} alert(s):")
    for alert in would:
        print(f"  {alert.detected_at:%m-%d %H:%M}  {alert.summary[:150]}")
    print(f"\nActually raised {len(actual)}:")
    for detected_at, _kind, _key, summary in actual:
        print(f"  {detected_at:%m-%d %H:%M}  {summary[:150]}")
    would_keys = {a.dedup_key for a in would}
    actual_keys = {row[2] for row in actual}
    print(
        f"\nonly in the replay: {len(would_keys - actual_keys)}; "
        f"only actually raised: {len(actual_keys - would_keys)}; "
        f"in both: {len(would_keys & actual_keys)}"
    )
    return 0
