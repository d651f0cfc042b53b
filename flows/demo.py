"""``make demo``: a few hours of simulated agent traffic with incidents, end to end.

1. starts Kafka and TimescaleDB (``infra/up.sh``; cached after the first time);
2. applies the migrations and starts a local alert receiver that prints every
   Slack / PagerDuty message it gets;
3. simulates hours of multi-tenant LLM-agent traffic (six attribute dialects,
   both OTLP encodings, 1% malformed records) with one incident of each kind,
   into a fresh Kafka topic;
4. runs the Bytewax flow on it (progress from the pipeline's own counters);
5. prints what landed — spend, latency, runaway sessions, alerts with their
   time-to-alert — and saves a plot of spend and p95 latency per model with
   the incidents shaded and the alerts marked.

It stops the services at the end if it started them (``--keep-services``,
or ``make demo KEEP=1``, leaves them up).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import yaml
from confluent_kafka.admin import AdminClient, NewTopic

from observatory.flows.config import load_config, redact_url
from observatory.flows.evaluate import alert_facts, matches
from observatory.flows.receiver import AlertReceiver, Received, describe
from observatory.flows.simulate import publish
from observatory.flows.traffic import INCIDENT_KINDS, NS, Simulator, plan_incidents

OUT = Path("demo-out")
REPO = Path(__file__).resolve().parents[1]
SLACK_ENV = "OBSERVATORY_DEMO_SLACK_URL"
PAGERDUTY_ENV = "OBSERVATORY_DEMO_PAGERDUTY_KEY"


def step(text: str) -> None:
    print(f"\n\033[1m▶ {text}\033[0m", flush=True)


def note(text: str) -> None:
    print(f"  {text}", flush=True)


def infra(action: str) -> None:
    result = subprocess.run(["bash", str(REPO / "infra" / f"{action}.sh")], check=False)
    if result.returncode != 0:
        sys.exit(f"demo: infra/{action}.sh failed (exit {result.returncode})")


def services_running() -> bool:
    return (
        subprocess.run(
            ["bash", str(REPO / "infra" / "status.sh")], capture_output=True, check=False
        ).returncode
        == 0
    )


def simulate(bootstrap: str, topic: str, hours: float, rate: float, seed: int):
    end_ns = (int(time.time()) // 60 * 60) * NS
    start_ns = end_ns - int(hours * 3600 * NS)
    incidents = plan_incidents(
        random.Random(seed),
        start_ns=start_ns,
        end_ns=end_ns - 30 * 60 * NS,
        kinds=INCIDENT_KINDS,
        per_kind=1,
        tenants=["tenant-a", "tenant-b", "tenant-c"],
        quiet_head_ns=min(60 * 60 * NS, int(hours * 3600 * NS) // 4),
    )
    sim = Simulator(
        start_ns=start_ns,
        end_ns=end_ns,
        calls_per_minute=rate,
        incidents=incidents,
        seed=seed,
        keep_truth=False,
    )
    last = time.monotonic()

    def progress(_spans: int) -> None:
        nonlocal last
        if time.monotonic() - last > 2:
            last = time.monotonic()
            done = (sim.summary.last_event_ns - start_ns) / (end_ns - start_ns)
            note(f"simulated {sim.summary.spans:,} spans ({min(done, 1):.0%} of the event time)")

    publish(
        sim.stream(),
        topic,
        {"bootstrap.servers": bootstrap},
        summary=sim.summary,
        seed=seed,
        encoding="mixed",
        max_spans=30,
        malformed_rate=0.01,
        on_record=progress,
    )
    return sim, incidents


def run_flow(config_path: Path, database_url: str, env: dict) -> None:
    proc = subprocess.Popen(
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
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
    reader.start()
    with psycopg.connect(database_url, autocommit=True) as conn:
        while proc.poll() is None:
            time.sleep(2)
            row = conn.execute(
                "SELECT coalesce(sum(value) FILTER (WHERE name = 'spans'), 0),"
                " coalesce(sum(value) FILTER (WHERE name = 'spans_normalized'), 0)"
                " FROM pipeline_counters"
            ).fetchone()
            note(f"flow: {int(row[0]):,} spans read, {int(row[1]):,} LLM/agent spans normalized")
    reader.join(5)
    if proc.returncode != 0:
        sys.exit("demo: the flow failed:\n" + "".join(stderr)[-3000:])


def print_table(conn, title: str, query: str, params=()) -> None:
    cur = conn.execute(query, params)
    columns = [d.name for d in cur.description]
    rows = [["" if v is None else str(v) for v in row] for row in cur.fetchall()]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    print(f"\n  {title}")
    print("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    if not rows:
        print("  (none)")


def summarize(conn, since: datetime, incidents, triggers: list[Received]) -> None:
    print_table(
        conn,
        "Top spend by tenant and model",
        """
        SELECT tenant, model, sum(calls) AS calls, round(sum(cost_usd)::numeric, 2) AS usd
          FROM llm_stats WHERE bucket >= %s AND model <> ''
         GROUP BY 1, 2 ORDER BY sum(cost_usd) DESC LIMIT 8""",
        (since,),
    )
    print_table(
        conn,
        "p95 latency per model (worst hour)",
        """
        SELECT provider, model, round(max(latency_p95_ms)::numeric) AS worst_hour_p95_ms,
               round(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_p95_ms)::numeric)
                 AS typical_hour_p95_ms
          FROM llm_stats_hourly WHERE bucket >= %s AND model <> ''
         GROUP BY 1, 2 ORDER BY 3 DESC""",
        (since - (since - since.replace(minute=0)),),
    )
    print_table(
        conn,
        "Tool error rates per service and tool (worst minute and overall)",
        """
        SELECT service, tool, sum(calls) AS calls, sum(errors) AS errors,
               round(sum(errors)::numeric / nullif(sum(calls), 0), 3) AS error_rate,
               round(max(errors::numeric / nullif(calls, 0)), 2) AS worst_minute
          FROM (SELECT bucket, service, tool, sum(calls) AS calls, sum(errors) AS errors
                  FROM llm_stats WHERE bucket >= %s AND operation = 'execute_tool'
                 GROUP BY 1, 2, 3) AS per_minute
         GROUP BY 1, 2 ORDER BY 6 DESC NULLS LAST LIMIT 6""",
        (since,),
    )
    print_table(
        conn,
        "Sessions flagged as runaway loops",
        """
        SELECT tenant, agent, session_id, tool_calls, longest_tool_run, longest_run_tool,
               round(cost_usd::numeric, 3) AS usd, first_seen::time(0), last_seen::time(0)
          FROM agent_sessions
         WHERE started_at >= %s AND session_id IN (
               SELECT session_id FROM anomalies WHERE kind = 'runaway_loop')
         ORDER BY longest_tool_run DESC""",
        (since,),
    )
    print("\n  Incidents and the alerts they raised (event time)")
    for incident in incidents:
        start = incident.start_ns / NS
        hits = [alert_facts(m) for m in triggers]
        hits = [(k, d, t) for k, d, t in hits if matches(incident, k, d, t, 60)]
        began = datetime.fromtimestamp(start, tz=UTC).strftime("%H:%M")
        subject = ", ".join(f"{k}={v}" for k, v in incident.subject().items())
        if hits:
            first = min(t for _, _, t in hits)
            print(
                f"  {incident.kind:<20} at {began}  {subject}\n"
                f"      → {hits[0][0]} alert after {(first - start) / 60:.0f} min"
            )
        else:
            print(f"  {incident.kind:<20} at {began}  {subject}\n      → not detected")
    unmatched = [
        f
        for f in (alert_facts(m) for m in triggers)
        if not any(matches(i, f[0], f[1], f[2], 60) for i in incidents)
    ]
    print(f"  alerts not matching any incident: {len(unmatched)}")


def plot(conn, since: datetime, incidents, triggers: list[Received], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame(
        conn.execute(
            """SELECT bucket, model, sum(cost_usd) AS usd,
                      sum(latency_p95_ms * calls) / nullif(sum(calls), 0) AS p95
                 FROM llm_stats WHERE bucket >= %s AND model <> '' GROUP BY 1, 2 ORDER BY 1""",
            (since,),
        ).fetchall(),
        columns=["bucket", "model", "usd", "p95"],
    )
    fig, (spend, latency) = plt.subplots(2, 1, figsize=(14, 9), sharex=True)
    for model, rows in frame.groupby("model"):
        spend.plot(
            rows["bucket"], rows["usd"].rolling(3, min_periods=1).mean(), label=model, linewidth=1
        )
        latency.plot(
            rows["bucket"], rows["p95"].rolling(3, min_periods=1).mean(), label=model, linewidth=1
        )
    colors = dict(
        zip(
            INCIDENT_KINDS,
            ["#f4a261", "#e76f51", "#2a9d8f", "#e9c46a", "#b5838d", "#8ab17d"],
            strict=True,
        )
    )
    for incident in incidents:
        for axis in (spend, latency):
            axis.axvspan(
                datetime.fromtimestamp(incident.start_ns / NS, tz=UTC),
                datetime.fromtimestamp(incident.end_ns / NS, tz=UTC),
                color=colors[incident.kind],
                alpha=0.25,
            )
        spend.text(
            datetime.fromtimestamp(incident.start_ns / NS, tz=UTC),
            0.98,
            incident.kind,
            transform=spend.get_xaxis_transform(),
            fontsize=8,
            rotation=90,
            va="top",
        )
    for kind, _dims, at in (alert_facts(m) for m in triggers):
        when = datetime.fromtimestamp(at, tz=UTC)
        for axis in (spend, latency):
            axis.axvline(when, color="red", linestyle="--", linewidth=0.8)
        latency.text(
            when,
            0.98,
            f"alert: {kind}",
            transform=latency.get_xaxis_transform(),
            fontsize=7,
            color="red",
            rotation=90,
            va="top",
        )
    spend.set_ylabel("spend per minute (USD)")
    latency.set_ylabel("p95 latency (ms)")
    spend.set_title(
        "Observatory demo: spend and p95 latency per model; incidents shaded, alerts dashed red"
    )
    spend.legend(fontsize=7, ncol=4, loc="upper left")
    latency.set_xlabel("event time (UTC)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="observatory-demo")
    parser.add_argument("--config", default="observatory.yaml")
    parser.add_argument("--hours", type=float, default=4.0, help="event time to simulate")
    parser.add_argument("--calls-per-minute", type=float, default=250.0)
    parser.add_argument(
        "--keep-services", action="store_true", default=bool(os.environ.get("KEEP"))
    )
    args = parser.parse_args(argv)
    config = load_config(args.config)  # fail early, naming the field, on a bad file
    bootstrap = config.kafka.bootstrap_servers
    OUT.mkdir(exist_ok=True)
    started_services = not services_running()

    step("Starting Kafka and TimescaleDB (cached after the first run)")
    infra("up")
    try:
        return _demo(args, config, bootstrap)
    finally:
        if started_services and not args.keep_services:
            step("Stopping the services this demo started (make demo KEEP=1 keeps them)")
            infra("down")


def _demo(args, config, bootstrap: str) -> int:
    database_url = config.database.url
    step(f"Applying migrations to {redact_url(database_url)}")
    subprocess.run(
        [sys.executable, "-m", "observatory.flows.cli", "migrate", "--config", args.config],
        check=True,
    )

    step("Starting a local alert receiver standing in for Slack and PagerDuty")
    receiver = AlertReceiver(on_message=lambda m: print(f"  📨 {describe(m)}", flush=True))
    receiver.start()
    note(f"listening on {receiver.url}")

    topic = f"demo_{int(time.time())}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(30)
    step(
        f"Simulating {args.hours:g} h of multi-tenant agent traffic with one incident of each "
        f"kind into Kafka topic {topic}"
    )
    sim, incidents = simulate(
        bootstrap, topic, args.hours, args.calls_per_minute, seed=int(time.time()) % 10_000
    )
    s = sim.summary
    note(f"{s.records:,} records ({s.malformed_records} malformed) holding {s.spans:,} spans")
    for incident in incidents:
        when = datetime.fromtimestamp(incident.start_ns / NS, tz=UTC).strftime("%H:%M")
        note(
            f"incident: {incident.kind} at {when} UTC on "
            + ", ".join(f"{k}={v}" for k, v in incident.subject().items())
        )

    step("Running the Bytewax flow until it has read everything (alerts print as they arrive)")
    demo_config = config.model_dump(mode="json")
    demo_config["kafka"]["topics"]["spans"] = topic
    demo_config["pipeline"]["recovery_dir"] = str(OUT / f"recovery-{topic}")
    demo_config["detectors"]["cost_spike"]["min_effect"] = 0.05  # demo traffic is small
    demo_config["alerts"]["routes"] = {
        "slack": {"type": "slack", "url_env": SLACK_ENV},
        "pagerduty": {
            "type": "pagerduty",
            "routing_key_env": PAGERDUTY_ENV,
            "url": f"{receiver.url}/pagerduty",
        },
    }
    demo_config["alerts"]["poll_interval_seconds"] = 0.5
    config_path = OUT / "demo.yaml"
    config_path.write_text(yaml.safe_dump(demo_config))
    env = {**os.environ, SLACK_ENV: f"{receiver.url}/slack", PAGERDUTY_ENV: "d" * 32}
    started = time.monotonic()
    run_flow(config_path, database_url, env)
    note(f"done in {time.monotonic() - started:.0f}s")
    time.sleep(1)
    receiver.stop()

    step("What landed in TimescaleDB")
    since = datetime.fromtimestamp(sim.start_ns / NS, tz=UTC)
    triggers = receiver.pagerduty_triggers()
    with psycopg.connect(database_url, autocommit=True) as conn:
        summarize(conn, since, incidents, triggers)
        png = OUT / "demo.png"
        plot(conn, since, incidents, triggers, png)
    admin.delete_topics([topic])[topic].result(30)
    step(f"Plot saved: {png.resolve()}")
    print(
        "\nQuery it yourself:\n"
        f"  psql {redact_url(database_url)}\n"
        "  SELECT * FROM spend_by_tenant_model_daily ORDER BY cost_usd DESC LIMIT 10;\n"
        "  SELECT kind, detected_at, summary FROM anomalies ORDER BY detected_at;"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
