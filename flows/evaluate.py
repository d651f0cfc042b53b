"""``observatory eval``: how well the detectors catch labelled incidents, end to end.

Two scenarios, each through the real path — simulated OTLP into Kafka, the
flow, TimescaleDB, the alert outbox and a local HTTP receiver standing in for
Slack and PagerDuty:

* **labelled**: hours of seasonal, noisy multi-tenant traffic with several
  incidents of every kind injected;
* **quiet day**: 24 hours of event time with no incident at all.

Alerts are matched to incidents by kind, subject and time; the report gives
precision, recall and detection delay per kind, and the alerts of the quiet
day (which should be none).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
import yaml
from confluent_kafka.admin import AdminClient, NewTopic

from observatory.flows.receiver import AlertReceiver, Received
from observatory.flows.simulate import publish
from observatory.flows.traffic import INCIDENT_KINDS, NS, Incident, Simulator, plan_incidents

#: Which alert kinds answer which incident kind.
ANSWERS = {
    "cost_spike": {"cost_spike", "budget"},
    "runaway_loop": {"runaway_loop"},
    "latency_degradation": {"latency_anomaly"},
    "error_surge": {"error_surge"},
    "tool_error_surge": {"tool_error_surge"},
    "token_blowup": {"token_anomaly"},
}
TABLES = ("llm_stats", "llm_stats_hourly", "agent_sessions", "pipeline_counters", "anomalies",
          "alert_outbox", "alert_deliveries")  # fmt: skip
SLACK_ENV = "OBSERVATORY_EVAL_SLACK_URL"
PAGERDUTY_ENV = "OBSERVATORY_EVAL_PAGERDUTY_KEY"


@dataclass
class KindResult:
    incidents: int = 0
    detected: int = 0
    alerts: int = 0
    true_alerts: int = 0
    delays_windows: list[float] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.true_alerts / self.alerts if self.alerts else 1.0

    @property
    def recall(self) -> float:
        return self.detected / self.incidents if self.incidents else 1.0

    def delay_p95(self) -> float | None:
        if not self.delays_windows:
            return None
        ordered = sorted(self.delays_windows)
        return ordered[min(len(ordered) - 1, int(0.95 * (len(ordered) - 1) + 0.999))]


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


def matches(incident: Incident, kind: str, dims: dict[str, str], at_s: float, window_s: int):
    if kind not in ANSWERS[incident.kind]:
        return False
    subject = incident.subject()
    if any(dims.get(k) not in (None, v) for k, v in subject.items()):
        return False
    return incident.start_ns / NS <= at_s <= incident.end_ns / NS + 2 * window_s


def score(incidents: list[Incident], triggers: list[Received], window_s: int):
    results = {kind: KindResult() for kind in INCIDENT_KINDS}
    facts = [alert_facts(m) for m in triggers]
    for kind, result in results.items():
        family = ANSWERS[kind]
        mine = [i for i in incidents if i.kind == kind]
        result.incidents = len(mine)
        alerts = [f for f in facts if f[0] in family]
        result.alerts = len(alerts)
        result.true_alerts = sum(
            1 for k, d, t in alerts if any(matches(i, k, d, t, window_s) for i in mine)
        )
        for incident in mine:
            hits = [t for k, d, t in alerts if matches(incident, k, d, t, window_s)]
            if hits:
                result.detected += 1
                result.delays_windows.append((min(hits) - incident.start_ns / NS) / window_s)
    return results


def _fresh_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1)])[name].result(30)


def _drop_topic(bootstrap: str, name: str) -> None:
    AdminClient({"bootstrap.servers": bootstrap}).delete_topics([name], operation_timeout=30)


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
) -> tuple[list[Incident], list[Received], dict]:
    """Simulate, run the flow, and return (incidents, PagerDuty triggers, counters)."""
    end_ns = (int(time.time()) // 60 * 60) * NS
    start_ns = end_ns - int(hours * 3600 * NS)
    rng = random.Random(seed)
    tenants = ["tenant-a", "tenant-b", "tenant-c"]
    incidents = (
        plan_incidents(
            rng,
            start_ns=start_ns,
            end_ns=end_ns - 30 * 60 * NS,
            kinds=incident_kinds,
            per_kind=per_kind,
            tenants=tenants,
        )
        if incident_kinds
        else []
    )
    topic = f"eval_{name}_{int(time.time())}"
    _fresh_topic(bootstrap, topic)
    with psycopg.connect(database_url, autocommit=True) as conn:
        from observatory.schemas import migrations

        migrations.apply(conn, progress=lambda _: None)
        conn.execute("TRUNCATE " + ", ".join(TABLES))

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
    config = {
        "kafka": {"bootstrap_servers": bootstrap, "topics": {"spans": topic}},
        "database": {"url": database_url},
        "pipeline": {"recovery_dir": str(workdir / f"recovery-{name}")},
        "detectors": extra_detectors,
        "alerts": {
            "routes": {
                "slack": {"type": "slack", "url_env": SLACK_ENV},
                "pagerduty": {
                    "type": "pagerduty",
                    "routing_key_env": PAGERDUTY_ENV,
                    "url": f"{receiver.url}/pagerduty",
                },
            },
            "poll_interval_seconds": 0.2,
        },
    }
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, SLACK_ENV: f"{receiver.url}/slack", PAGERDUTY_ENV: "e" * 32}
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "observatory.flows.cli",
            "run",
            "--config",
            str(config_path),
            "--stop-at-end",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
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
    _drop_topic(bootstrap, topic)
    return incidents, receiver.pagerduty_triggers(), counters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="observatory eval", description=__doc__)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("OBSERVATORY_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument(
        "--database-url",
        default="postgresql://observatory:observatory@127.0.0.1:5433/observatory_test",
        help="a database the evaluation may empty (default: the test database)",
    )
    parser.add_argument("--hours", type=float, default=10.0, help="labelled scenario length")
    parser.add_argument("--per-kind", type=int, default=3, help="incidents of each kind")
    parser.add_argument("--quiet-hours", type=float, default=24.0, help="incident-free scenario")
    parser.add_argument("--calls-per-minute", type=float, default=250.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", default="bench/eval.json", help="where to write the results")
    args = parser.parse_args(argv)
    window_s = 60
    detectors = {"cost_spike": {"min_effect": 0.05}}  # the simulated spend is small
    workdir = Path(tempfile.mkdtemp(prefix="observatory-eval-"))
    try:
        incidents, triggers, _ = run_scenario(
            name="labelled",
            hours=args.hours,
            calls_per_minute=args.calls_per_minute,
            incident_kinds=list(INCIDENT_KINDS),
            per_kind=args.per_kind,
            seed=args.seed,
            bootstrap=args.bootstrap,
            database_url=args.database_url,
            workdir=workdir,
            extra_detectors=detectors,
        )
        results = score(incidents, triggers, window_s)
        quiet_alerts: list[Received] = []
        if args.quiet_hours > 0:
            _, quiet_alerts, _ = run_scenario(
                name="quiet",
                hours=args.quiet_hours,
                calls_per_minute=args.calls_per_minute,
                incident_kinds=[],
                per_kind=0,
                seed=args.seed + 1,
                bootstrap=args.bootstrap,
                database_url=args.database_url,
                workdir=workdir,
                extra_detectors=detectors,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(
        f"{'incident kind':<22}{'incidents':>10}{'detected':>10}{'alerts':>8}"
        f"{'precision':>11}{'recall':>8}{'delay p95 (windows)':>21}"
    )
    report = {"window_seconds": window_s, "kinds": {}, "quiet_day_alerts": len(quiet_alerts)}
    for kind, r in results.items():
        p95 = r.delay_p95()
        print(
            f"{kind:<22}{r.incidents:>10}{r.detected:>10}{r.alerts:>8}{r.precision:>11.2f}"
            f"{r.recall:>8.2f}{'-' if p95 is None else f'{p95:.1f}':>21}"
        )
        report["kinds"][kind] = {
            "incidents": r.incidents,
            "detected": r.detected,
            "alerts": r.alerts,
            "precision": r.precision,
            "recall": r.recall,
            "delay_p95_windows": p95,
            "delays_windows": r.delays_windows,
        }
    print(f"\nalerts on the incident-free {args.quiet_hours:g} h: {len(quiet_alerts)}")
    for message in quiet_alerts:
        print(f"  {alert_facts(message)}")
    print(
        "Delay is event time from incident start to the end of the window that raised the "
        "alert (a replay has no wall-clock delay to measure; see `make bench` for that)."
    )
    ok = (
        all(
            r.precision >= 0.9 and r.recall >= 0.9 and (r.delay_p95() or 0) <= 2.0
            for r in results.values()
        )
        and not quiet_alerts
    )
    print(
        "targets (precision ≥ 0.9, recall ≥ 0.9, delay p95 ≤ 2 windows, quiet day silent):",
        "MET" if ok else "NOT MET",
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
