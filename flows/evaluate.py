"""``observatory eval``: how well the detectors catch labelled incidents, end to end.

Every scenario goes through the real path — simulated OTLP into Kafka, the
flow, TimescaleDB, the alert outbox and a local HTTP receiver standing in for
Slack and PagerDuty:

* **labelled** (one per seed): hours of seasonal, noisy multi-tenant traffic
  with ``--per-kind`` incidents of every kind, after ``--warmup-hours`` of
  incident-free traffic (the detectors learn before they may alert);
* **quiet day** (one per seed, seed + 1): 24 hours of event time with no
  incident at all.

Alerts (PagerDuty triggers, as received) are matched to incidents by kind,
subject and time: an alert is *true* when an incident that shows in its
signal was running (or ended at most two windows before); an incident is
*detected* by the first alert of its own kind. Per kind the report gives
precision, recall and two delays, in windows of event time from the
incident's start:

* **decision**: to the event time of the verdict that raised the alert: the
  end of a window, or for an early check (``pipeline.checks_per_window``) the
  point of the open window it was made at;
* **to webhook**: to the receiver getting it, i.e. the decision, plus the
  watermark delay (the event time the flow waits past a window's end before
  closing it), plus the measured wall-clock time from the alert's outbox row
  to the receiver. In a replay event time runs ~300x faster than the wall
  clock, so the wall-clock part is added as it is rather than converted.

``--live`` measures the whole chain in wall-clock time instead: paced
traffic (event time = wall time, short windows) with one incident of each
kind, after a fast backfill of history so that the detectors are warm.

Results go to ``bench/eval.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import yaml
from confluent_kafka.admin import AdminClient, NewTopic

from observatory.flows.config import PipelineConfig
from observatory.flows.receiver import AlertReceiver, Received
from observatory.flows.simulate import publish
from observatory.flows.traffic import (
    INCIDENT_KINDS,
    MINUTE_NS,
    NS,
    Incident,
    Simulator,
    plan_incidents,
)

#: Which alert kinds answer (detect) which incident kind.
ANSWERS = {
    "cost_spike": {"cost_spike", "budget"},
    "runaway_loop": {"runaway_loop"},
    "latency_degradation": {"latency_anomaly"},
    "error_surge": {"error_surge"},
    "tool_error_surge": {"tool_error_surge"},
    "token_blowup": {"token_anomaly"},
}
#: Which incident kinds explain an alert kind (an alert they explain is not false):
#: a token blow-up multiplies the spend of its key, so a cost alert on it is right.
EXPLAINED_BY = {
    "cost_spike": {"cost_spike", "token_blowup"},
    "budget": {"cost_spike", "token_blowup"},
    "runaway_loop": {"runaway_loop"},
    "latency_anomaly": {"latency_degradation"},
    "error_surge": {"error_surge"},
    "tool_error_surge": {"tool_error_surge"},
    "token_anomaly": {"token_blowup"},
}
SLACK_ENV = "OBSERVATORY_EVAL_SLACK_URL"
PAGERDUTY_ENV = "OBSERVATORY_EVAL_PAGERDUTY_KEY"
TARGET = {"precision": 0.9, "recall": 0.9, "delay_p95_windows": 2.0}
#: Spacing plan_incidents needs per incident: its 10 minutes and 10 quiet ones.
_SLOT_MINUTES = 20


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile, rounding the rank up (p95 of up to 20 values is the max).

    >>> percentile([1, 2, 3, 4], 0.5), percentile([1.0] * 19 + [3.0], 0.95), percentile([], 0.5)
    (3, 3.0, None)
    """
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, math.ceil(q * (len(ordered) - 1) - 1e-9))]


@dataclass
class KindResult:
    incidents: int = 0
    detected: int = 0
    alerts: int = 0
    true_alerts: int = 0
    #: per detected incident: the deciding verdict's event time - incident start, in windows
    decision_windows: list[float] = field(default_factory=list)
    #: per detected incident: webhook received - incident start, in windows (see module doc)
    webhook_windows: list[float] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.true_alerts / self.alerts if self.alerts else 1.0

    @property
    def recall(self) -> float:
        return self.detected / self.incidents if self.incidents else 1.0

    @property
    def delays_windows(self) -> list[float]:
        """The delays the targets are judged on: to the webhook."""
        return self.webhook_windows

    def delay_p95(self) -> float | None:
        return percentile(self.webhook_windows, 0.95)

    def add(self, other: KindResult) -> None:
        self.incidents += other.incidents
        self.detected += other.detected
        self.alerts += other.alerts
        self.true_alerts += other.true_alerts
        self.decision_windows += other.decision_windows
        self.webhook_windows += other.webhook_windows

    def meets_targets(self) -> bool:
        p95 = self.delay_p95()
        return (
            self.precision >= TARGET["precision"]
            and self.recall >= TARGET["recall"]
            and (p95 is None or p95 <= TARGET["delay_p95_windows"])
        )

    def as_dict(self) -> dict:
        return {
            "incidents": self.incidents,
            "detected": self.detected,
            "alerts": self.alerts,
            "true_alerts": self.true_alerts,
            "precision": self.precision,
            "recall": self.recall,
            "decision_p50_windows": percentile(self.decision_windows, 0.5),
            "decision_p95_windows": percentile(self.decision_windows, 0.95),
            "delay_p50_windows": percentile(self.webhook_windows, 0.5),
            "delay_p95_windows": self.delay_p95(),
            "decision_windows": [round(d, 3) for d in self.decision_windows],
            "delays_windows": [round(d, 3) for d in self.webhook_windows],
        }


def _log(text: str) -> None:
    print(f"[eval] {text}", flush=True)


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def alert_facts(message: Received) -> tuple[str, dict[str, str], float]:
    """(kind, dimensions, detected_at epoch s) of a PagerDuty trigger.

    An ``error_surge`` about a tool (the ``tool_error_rate`` signal) is told
    apart as ``tool_error_surge``: it answers tool incidents, not model ones.
    """
    payload = message.body["payload"]
    details = payload.get("custom_details") or {}
    dims = {k: str(v) for k, v in (details.get("dimensions") or {}).items()}
    kind = payload["class"]
    if kind == "error_surge" and "tool" in dims:
        kind = "tool_error_surge"
    return kind, dims, _parse_time(payload["timestamp"])


def notification_key(message: Received) -> tuple[str, float, int] | None:
    """(dedup key, opened_at epoch s, sequence) of a trigger: its outbox row's key."""
    body = message.body
    details = (body.get("payload") or {}).get("custom_details") or {}
    if "opened_at" not in details or "notification" not in details:
        return None
    return body["dedup_key"], round(_parse_time(details["opened_at"]), 3), details["notification"]


def subject_matches(incident: Incident, dims: dict[str, str]) -> bool:
    """The alert is about the incident's subject (it may name fewer dimensions)."""
    return all(dims.get(k) in (None, v) for k, v in incident.subject().items())


def matches(incident: Incident, kind: str, dims: dict[str, str], at_s: float, window_s: int):
    """Whether an alert detects ``incident`` (its own kind, subject and time)."""
    if kind not in ANSWERS[incident.kind]:
        return False
    return subject_matches(incident, dims) and _during(incident, at_s, window_s)


def _during(incident: Incident, at_s: float, window_s: int) -> bool:
    return incident.start_ns / NS <= at_s <= incident.end_ns / NS + 2 * window_s


def explained(
    incidents: Iterable[Incident], kind: str, dims: dict[str, str], at_s: float, window_s: int
) -> bool:
    """Whether some incident that shows in this alert's signal explains it."""
    causes = EXPLAINED_BY.get(kind, set())
    return any(
        i.kind in causes and subject_matches(i, dims) and _during(i, at_s, window_s)
        for i in incidents
    )


def false_alerts(
    incidents: list[Incident], triggers: list[Received], window_s: int
) -> list[tuple[str, dict[str, str], float]]:
    """(kind, dimensions, detected_at) of the triggers no incident explains."""
    out = []
    for message in triggers:
        kind, dims, at_s = alert_facts(message)
        if kind in EXPLAINED_BY and not explained(incidents, kind, dims, at_s, window_s):
            out.append((kind, dims, at_s))
    return out


def _utc_text(at_s: float) -> str:
    return datetime.fromtimestamp(at_s, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def score(
    incidents: list[Incident],
    triggers: list[Received],
    window_s: int,
    *,
    watermark_s: float = 0.0,
    created_at: dict[tuple[str, float, int], float] | None = None,
) -> dict[str, KindResult]:
    """Precision, recall and delays per incident kind.

    ``created_at`` maps a notification (:func:`notification_key`) to the wall
    time its outbox row was written; the time from there to the trigger's
    arrival is added to the delay to the webhook (0 when unknown).
    """
    results = {kind: KindResult() for kind in INCIDENT_KINDS}
    facts = []
    for message in triggers:
        kind, dims, at_s = alert_facts(message)
        key = notification_key(message)
        written = (created_at or {}).get(key) if key is not None else None
        dispatch_s = max(message.at - written, 0.0) if written is not None else 0.0
        facts.append((kind, dims, at_s, dispatch_s))
    for kind, result in results.items():
        family = ANSWERS[kind]
        mine = [i for i in incidents if i.kind == kind]
        result.incidents = len(mine)
        alerts = [f for f in facts if f[0] in family]
        result.alerts = len(alerts)
        result.true_alerts = sum(
            1 for k, d, t, _ in alerts if explained(incidents, k, d, t, window_s)
        )
        for incident in mine:
            start_s = incident.start_ns / NS
            hits = [
                (t - start_s, t - start_s + watermark_s + dispatch)
                for k, d, t, dispatch in alerts
                if matches(incident, k, d, t, window_s)
            ]
            if hits:
                decision, webhook = min(hits)
                result.detected += 1
                result.decision_windows.append(decision / window_s)
                result.webhook_windows.append(webhook / window_s)
    return results


# --- running a scenario ---------------------------------------------------------------


def _fresh_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1)])[name].result(30)


def _drop_topic(bootstrap: str, name: str) -> None:
    AdminClient({"bootstrap.servers": bootstrap}).delete_topics([name], operation_timeout=30)


def _reset_database(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        from observatory.schemas import migrations

        migrations.apply(conn, progress=lambda _: None)
        migrations.empty_data_tables(conn)


def _flow_config(
    *,
    name: str,
    topic: str,
    bootstrap: str,
    database_url: str,
    workdir: Path,
    receiver: AlertReceiver,
    detectors: dict,
    pipeline: dict | None = None,
) -> Path:
    config = {
        "kafka": {"bootstrap_servers": bootstrap, "topics": {"spans": topic}},
        "database": {"url": database_url},
        "pipeline": {"recovery_dir": str(workdir / f"recovery-{name}"), **(pipeline or {})},
        "detectors": detectors,
        "alerts": {
            "routes": {
                # A replay compresses hours of event time into minutes of wall
                # time: the per-route cap on notifications an hour (wall clock)
                # is for people, not for an evaluation.
                "slack": {"type": "slack", "url_env": SLACK_ENV, "max_per_hour": 100_000},
                "pagerduty": {
                    "type": "pagerduty",
                    "routing_key_env": PAGERDUTY_ENV,
                    "url": f"{receiver.url}/pagerduty",
                    "max_per_hour": 100_000,
                },
            },
            "poll_interval_seconds": 0.2,
        },
    }
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _flow_command(config_path: Path, *, stop_at_end: bool) -> list[str]:
    command = [sys.executable, "-m", "observatory.flows.cli", "run", "--config", str(config_path)]
    return command + (["--stop-at-end"] if stop_at_end else [])


def _outbox_times(database_url: str) -> dict[tuple[str, float, int], float]:
    """Wall time each PagerDuty notification's outbox row was written."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT dedup_key, extract(epoch FROM opened_at)::float8, sequence,"
            " extract(epoch FROM created_at)::float8 FROM alert_outbox WHERE route = 'pagerduty'"
        ).fetchall()
    return {(key, round(opened, 3), seq): created for key, opened, seq, created in rows}


@dataclass
class ScenarioRun:
    incidents: list[Incident]
    triggers: list[Received]
    created_at: dict[tuple[str, float, int], float]
    counters: dict
    spans: int
    seconds: float


def last_midnight() -> int:
    """The last UTC midnight (epoch s): scenarios end there, so a seed is the same every day."""
    return int(time.time()) // 86400 * 86400


def run_scenario(
    *,
    name: str,
    hours: float,
    calls_per_minute: float,
    incident_kinds: list[str],
    per_kind: int,
    seed: int,
    bootstrap: str,
    database_url: str,
    workdir: Path,
    extra_detectors: dict,
    warmup_hours: float = 2.0,
    end_s: int | None = None,
) -> ScenarioRun:
    """Simulate, run the flow to the end of the topic, and collect what the receiver got."""
    began = time.monotonic()
    end_ns = (end_s if end_s is not None else last_midnight()) * NS
    start_ns = end_ns - int(hours * 3600 * NS)
    rng = random.Random(seed)
    tenants = ["tenant-a", "tenant-b", "tenant-c"]
    incidents = (
        plan_incidents(
            rng,
            start_ns=start_ns,
            end_ns=end_ns - 30 * MINUTE_NS,
            kinds=incident_kinds,
            per_kind=per_kind,
            tenants=tenants,
            quiet_head_ns=int(warmup_hours * 60) * MINUTE_NS,
        )
        if incident_kinds
        else []
    )
    topic = f"eval_{name}_{int(time.time())}"
    _fresh_topic(bootstrap, topic)
    _reset_database(database_url)
    sim = Simulator(
        start_ns=start_ns,
        end_ns=end_ns,
        calls_per_minute=calls_per_minute,
        incidents=incidents,
        seed=seed,
        keep_truth=False,
    )
    started = time.monotonic()
    publish(
        sim.stream(),
        topic,
        {"bootstrap.servers": bootstrap},
        summary=sim.summary,
        seed=seed,
        encoding="otlp_proto",
        max_spans=40,
    )
    _log(
        f"{name}: simulated {hours:g} h of event time, {sim.summary.spans:,} spans, "
        f"{len(incidents)} incidents, in {time.monotonic() - started:.0f}s"
    )
    receiver = AlertReceiver().start()
    config_path = _flow_config(
        name=name,
        topic=topic,
        bootstrap=bootstrap,
        database_url=database_url,
        workdir=workdir,
        receiver=receiver,
        detectors=extra_detectors,
    )
    env = {**os.environ, SLACK_ENV: f"{receiver.url}/slack", PAGERDUTY_ENV: "e" * 32}
    started = time.monotonic()
    result = subprocess.run(
        _flow_command(config_path, stop_at_end=True),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        receiver.stop()
        raise RuntimeError(f"the flow failed:\n{result.stderr[-3000:]}")
    _log(f"{name}: the flow processed it in {time.monotonic() - started:.0f}s")
    time.sleep(1.0)
    receiver.stop()
    with psycopg.connect(database_url) as conn:
        counters = dict(
            conn.execute(
                "SELECT name, sum(value)::bigint FROM pipeline_counters GROUP BY name"
            ).fetchall()
        )
    created_at = _outbox_times(database_url)
    _drop_topic(bootstrap, topic)
    return ScenarioRun(
        incidents,
        receiver.pagerduty_triggers(),
        created_at,
        counters,
        sim.summary.spans,
        time.monotonic() - began,
    )


# --- reporting ------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(results: dict[str, KindResult], quiet_alerts: int, title: str) -> str:
    lines = [
        title,
        f"{'incident kind':<21}{'incidents':>9}{'detected':>9}{'alerts':>7}{'precision':>10}"
        f"{'recall':>7}{'decision p50/p95':>18}{'webhook p50/p95':>17}{'targets':>8}",
    ]
    for kind, r in results.items():
        decision = f"{_fmt(percentile(r.decision_windows, 0.5))}/"
        decision += _fmt(percentile(r.decision_windows, 0.95))
        webhook = f"{_fmt(percentile(r.webhook_windows, 0.5))}/{_fmt(r.delay_p95())}"
        lines.append(
            f"{kind:<21}{r.incidents:>9}{r.detected:>9}{r.alerts:>7}{r.precision:>10.2f}"
            f"{r.recall:>7.2f}{decision:>18}{webhook:>17}"
            f"{'met' if r.meets_targets() else 'MISSED':>8}"
        )
    lines.append(f"alerts on the incident-free day(s): {quiet_alerts}")
    return "\n".join(lines)


def hours_needed(kinds: int, per_kind: int, warmup_hours: float) -> float:
    """Scenario length plan_incidents needs: warm-up, 20 minutes per incident, 30 min tail."""
    return warmup_hours + kinds * per_kind * _SLOT_MINUTES / 60 + 0.5


# --- live: wall-clock time to the webhook under paced load ---------------------------


def _paced(spans: Iterable, until_ns: int) -> Iterator:
    """Each span when the wall clock reaches its end time (the past goes at once)."""
    for span in spans:
        if span.end_time > until_ns:
            return
        delay = span.end_time / NS - time.time()
        if delay > 0:
            time.sleep(delay)
        yield span


def live_incidents(
    rng: random.Random, *, first_ns: int, stagger_s: float, duration_s: float, window_s: int
) -> list[Incident]:
    """One incident of every kind, subjects as the simulator plans them, staggered in time."""
    planned = plan_incidents(
        rng,
        start_ns=0,
        end_ns=(len(INCIDENT_KINDS) * _SLOT_MINUTES + 60) * MINUTE_NS,
        per_kind=1,
        tenants=["tenant-a", "tenant-b", "tenant-c"],
    )
    out = []
    for i, incident in enumerate(sorted(planned, key=lambda x: INCIDENT_KINDS.index(x.kind))):
        start = first_ns + int(i * stagger_s * NS)
        start -= start % (window_s * NS)  # incidents start at a window boundary
        out.append(
            dataclasses.replace(incident, start_ns=start, end_ns=start + int(duration_s * NS))
        )
    return out


def run_live(args: argparse.Namespace, detectors: dict) -> dict:
    """Paced live traffic with one incident per kind; wall-clock seconds to each webhook."""
    window_s = args.live_window_seconds
    workdir = Path(tempfile.mkdtemp(prefix="observatory-eval-live-"))
    topic = f"eval_live_{int(time.time())}"
    receiver = AlertReceiver().start()
    _fresh_topic(args.bootstrap, topic)
    _reset_database(args.database_url)
    pipeline = {
        "window_seconds": window_s,
        "watermark_delay_seconds": args.live_watermark_delay,
    }
    config_path = _flow_config(
        name="live",
        topic=topic,
        bootstrap=args.bootstrap,
        database_url=args.database_url,
        workdir=workdir,
        receiver=receiver,
        detectors=detectors,
        pipeline=pipeline,
    )
    env = {**os.environ, SLACK_ENV: f"{receiver.url}/slack", PAGERDUTY_ENV: "e" * 32}
    flow_log = open(workdir / "flow.log", "w")  # noqa: SIM115 - closed with the process
    flow = subprocess.Popen(
        _flow_command(config_path, stop_at_end=False),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=flow_log,
    )
    try:
        time.sleep(5)  # let the flow connect before traffic starts
        now = time.time()
        live_start_ns = int((now + args.live_lead_seconds) * NS)
        history_ns = int(args.live_history_minutes * 60 * NS)
        incidents = live_incidents(
            random.Random(args.seeds[0]),
            first_ns=live_start_ns,
            stagger_s=args.live_stagger_seconds,
            duration_s=args.live_incident_seconds,
            window_s=window_s,
        )
        end_ns = max(i.end_ns for i in incidents) + int(args.live_tail_seconds * NS)
        sim = Simulator(
            start_ns=live_start_ns - history_ns,
            end_ns=end_ns,
            calls_per_minute=args.live_calls_per_minute,
            incidents=incidents,
            seed=args.seeds[0],
            keep_truth=False,
        )
        _log(
            f"live: {args.live_history_minutes:g} min of history at once, then "
            f"{(end_ns - live_start_ns) / NS:.0f}s paced at {args.live_calls_per_minute:g} "
            f"calls/min, {window_s}s windows, watermark delay {args.live_watermark_delay:g}s; "
            f"flow log {workdir / 'flow.log'}"
        )
        publish(
            _paced(sim.stream(), end_ns),
            topic,
            {"bootstrap.servers": args.bootstrap, "linger.ms": 5},
            summary=sim.summary,
            seed=args.seeds[0],
            encoding="otlp_proto",
            max_spans=5,  # small records: a record waits for its last span
        )
        time.sleep(max(3 * window_s, args.live_watermark_delay + 10))
    finally:
        flow.terminate()
        try:
            flow.wait(30)
        except subprocess.TimeoutExpired:
            flow.kill()
            flow.wait(10)
        flow_log.close()
        receiver.stop()
        _drop_topic(args.bootstrap, topic)
    created_at = _outbox_times(args.database_url)
    facts = []
    for message in receiver.pagerduty_triggers():
        kind, dims, at_s = alert_facts(message)
        key = notification_key(message)
        facts.append((kind, dims, at_s, message.at, created_at.get(key) if key else None))
    rows = []
    for incident in incidents:
        start_s = incident.start_ns / NS
        hits = sorted(
            (received, window_end, written)
            for kind, dims, window_end, received, written in facts
            if matches(incident, kind, dims, window_end, window_s)
        )
        row = {"kind": incident.kind, "subject": incident.subject(), "start": start_s}
        if hits:
            received, window_end, written = hits[0]
            row.update(
                seconds=received - start_s,
                windows=(received - start_s) / window_s,
                decision_windows=(window_end - start_s) / window_s,
                window_end_to_webhook_s=received - window_end,
                outbox_to_webhook_s=None if written is None else received - written,
            )
        rows.append(row)
    shutil.rmtree(workdir, ignore_errors=True)
    seconds = [r["seconds"] for r in rows if "seconds" in r]
    summary = {
        "window_seconds": window_s,
        "watermark_delay_seconds": args.live_watermark_delay,
        "calls_per_minute": args.live_calls_per_minute,
        "incidents": rows,
        "detected": len(seconds),
        "p50_seconds": percentile(seconds, 0.5),
        "p95_seconds": percentile(seconds, 0.95),
    }
    print()
    print(
        f"live ({window_s}s windows, watermark delay {args.live_watermark_delay:g}s, "
        f"{args.live_calls_per_minute:g} calls/min paced): incident start -> webhook received"
    )
    print(f"{'incident kind':<21}{'seconds':>9}{'windows':>9}{'decision':>10}{'end->hook s':>13}")
    for r in rows:
        if "seconds" in r:
            print(
                f"{r['kind']:<21}{r['seconds']:>9.1f}{r['windows']:>9.2f}"
                f"{r['decision_windows']:>10.0f}{r['window_end_to_webhook_s']:>13.2f}"
            )
        else:
            print(f"{r['kind']:<21}{'missed':>9}")
    p50, p95 = summary["p50_seconds"], summary["p95_seconds"]
    if p50 is not None:
        print(
            f"p50 {p50:.1f}s ({p50 / window_s:.2f} windows), p95 {p95:.1f}s "
            f"({p95 / window_s:.2f} windows); {len(seconds)}/{len(rows)} detected"
        )
    return summary


# --- main -----------------------------------------------------------------------------


def _seeds(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="observatory eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("OBSERVATORY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "OBSERVATORY_EVAL_DATABASE_URL",
            "postgresql://observatory:observatory@127.0.0.1:5433/observatory_test",
        ),
        help="a database the evaluation may empty (default: $OBSERVATORY_EVAL_DATABASE_URL, "
        "else the test database)",
    )
    parser.add_argument("--seeds", type=_seeds, default=[11, 12], help="comma-separated")
    parser.add_argument("--per-kind", type=int, default=6, help="incidents of each kind")
    parser.add_argument("--warmup-hours", type=float, default=2.0, help="before any incident")
    parser.add_argument(
        "--hours", type=float, default=None, help="labelled scenario length (default: what fits)"
    )
    parser.add_argument("--quiet-hours", type=float, default=24.0, help="incident-free scenario")
    # 1000 calls a minute over 48 (tenant, service, model) keys: ~20 a minute per
    # key. At 250 some incidents' subjects had no call at all in their first two
    # windows, which no detector can see (see the README's evaluation section).
    parser.add_argument("--calls-per-minute", type=float, default=1000.0)
    parser.add_argument("--end", type=int, default=None, help="epoch s (default: last midnight)")
    parser.add_argument("--json", default="bench/eval.json", help="where to write the results")
    live = parser.add_argument_group("live mode")
    live.add_argument("--live", action="store_true", help="measure wall-clock time to webhook")
    live.add_argument("--live-window-seconds", type=int, default=10)
    live.add_argument("--live-watermark-delay", type=float, default=2.0)
    live.add_argument("--live-calls-per-minute", type=float, default=600.0)
    live.add_argument("--live-history-minutes", type=float, default=40.0)
    live.add_argument("--live-lead-seconds", type=float, default=60.0)
    live.add_argument("--live-stagger-seconds", type=float, default=40.0)
    live.add_argument("--live-incident-seconds", type=float, default=90.0)
    live.add_argument("--live-tail-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    began = time.monotonic()
    window_s = 60
    # The simulated spend is small: $0.05 per minute is material here.
    detectors = {"cost_spike": {"min_effect": 0.05}}
    if args.live:
        live_detectors = {"cost_spike": {"min_effect": 0.05 * args.live_window_seconds / 60}}
        summary = run_live(args, live_detectors)
        summary["runtime_seconds"] = round(time.monotonic() - began)
        print(f"runtime {summary['runtime_seconds']}s")
        if args.json:
            path = Path(args.json).with_name(Path(args.json).stem + "_live.json")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary, indent=2))
        return 0

    kinds = list(INCIDENT_KINDS)
    hours = args.hours or hours_needed(len(kinds), args.per_kind, args.warmup_hours)
    watermark_s = PipelineConfig().watermark_delay_seconds
    end_s = args.end if args.end is not None else last_midnight()
    per_seed: dict[int, dict] = {}
    pooled = {kind: KindResult() for kind in INCIDENT_KINDS}
    quiet_total: list[tuple] = []
    workdir = Path(tempfile.mkdtemp(prefix="observatory-eval-"))
    try:
        for seed in args.seeds:
            labelled = run_scenario(
                name=f"labelled{seed}",
                hours=hours,
                calls_per_minute=args.calls_per_minute,
                incident_kinds=kinds,
                per_kind=args.per_kind,
                seed=seed,
                bootstrap=args.bootstrap,
                database_url=args.database_url,
                workdir=workdir,
                extra_detectors=detectors,
                warmup_hours=args.warmup_hours,
                end_s=end_s,
            )
            results = score(
                labelled.incidents,
                labelled.triggers,
                window_s,
                watermark_s=watermark_s,
                created_at=labelled.created_at,
            )
            quiet: list[Received] = []
            if args.quiet_hours > 0:
                quiet = run_scenario(
                    name=f"quiet{seed + 1}",
                    hours=args.quiet_hours,
                    calls_per_minute=args.calls_per_minute,
                    incident_kinds=[],
                    per_kind=0,
                    seed=seed + 1,
                    bootstrap=args.bootstrap,
                    database_url=args.database_url,
                    workdir=workdir,
                    extra_detectors=detectors,
                    end_s=end_s,
                ).triggers
            quiet_facts = [alert_facts(m) for m in quiet]
            quiet_total += quiet_facts
            for kind, result in results.items():
                pooled[kind].add(result)
            unexplained = false_alerts(labelled.incidents, labelled.triggers, window_s)
            per_seed[seed] = {
                "kinds": {k: r.as_dict() for k, r in results.items()},
                "false_alerts": [list(f) for f in unexplained],
                "quiet_day_alerts": [list(f) for f in quiet_facts],
                "spans": labelled.spans,
            }
            print()
            print(table(results, len(quiet), f"seed {seed} (quiet day: seed {seed + 1})"))
            for kind, dims, at_s in unexplained:
                print(f"  false alert: {kind} {dims} at {_utc_text(at_s)}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(table(pooled, len(quiet_total), f"all seeds {args.seeds}"))
    for kind, dims, at_s in quiet_total:
        print(f"  quiet-day alert: {kind} {dims} at {_utc_text(at_s)}")
    print(
        f"\n{hours:g} h labelled ({args.warmup_hours:g} h warm-up, {args.per_kind} incidents of "
        f"each kind) + {args.quiet_hours:g} h quiet per seed, {args.calls_per_minute:g} calls/min, "
        f"{window_s}s windows. Delays in windows from the incident's start; 'webhook' = the "
        f"deciding verdict's event time (a window's end, or a point inside it for an early "
        f"check) + watermark delay ({watermark_s:g}s) + outbox-to-receiver time "
        "(wall clock, measured). p95 is nearest-rank (the max for up to 20 incidents)."
    )
    ok = all(r.meets_targets() for r in pooled.values()) and not quiet_total
    runtime = round(time.monotonic() - began)
    print(
        "targets (precision ≥ 0.9, recall ≥ 0.9, time to webhook p95 ≤ 2 windows, quiet day "
        f"silent): {'MET' if ok else 'NOT MET'}; runtime {runtime}s"
    )
    if args.json:
        report = {
            "window_seconds": window_s,
            "watermark_delay_seconds": watermark_s,
            "seeds": args.seeds,
            "hours": hours,
            "warmup_hours": args.warmup_hours,
            "per_kind": args.per_kind,
            "quiet_hours": args.quiet_hours,
            "calls_per_minute": args.calls_per_minute,
            "end": end_s,
            "kinds": {k: r.as_dict() for k, r in pooled.items()},
            "quiet_day_alerts": len(quiet_total),
            "per_seed": per_seed,
            "targets_met": ok,
            "runtime_seconds": runtime,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
