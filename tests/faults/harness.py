"""The fault suite's own services, flow runs and ground-truth checks.

The suite runs a *second* Kafka and PostgreSQL, started by the project's infra
scripts under their own infra home and ports, because it stops and restarts
them: the shared services on 9092 / 5433 stay untouched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psycopg
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from observatory.flows.groundtruth import KEY
from observatory.flows.receiver import AlertReceiver, Received
from observatory.schemas import migrations

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"

# --- load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """How hard the scenarios push. ``full`` (make test-faults) is the issue's load;
    ``small`` (the default, so also `make test`) runs the same checks in less time."""

    name: str
    steady_calls: int  #: ≈2.2 spans per call
    hostile_calls: int
    database_down_s: float
    broker_down_s: float


SCALES = {
    "full": Scale(
        "full", steady_calls=25_000, hostile_calls=40_000, database_down_s=30, broker_down_s=15
    ),
    "small": Scale(
        "small", steady_calls=10_000, hostile_calls=12_000, database_down_s=10, broker_down_s=5
    ),
}


def scale() -> Scale:
    name = os.environ.get("OBSERVATORY_FAULTS_SCALE", "small")
    if name not in SCALES:
        raise ValueError(f"OBSERVATORY_FAULTS_SCALE must be one of {sorted(SCALES)}, not {name!r}")
    return SCALES[name]


# --- the services ------------------------------------------------------------------------------


@dataclass
class Services:
    """A Kafka + PostgreSQL pair of our own, driven through infra/kafka.sh and
    infra/timescaledb.sh with different knobs (home, ports, password)."""

    home: Path
    kafka_port: int
    controller_port: int
    pg_port: int
    password: str
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.log = self.home / "faults-infra.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def database_url(self) -> str:
        return f"postgresql://observatory:{self.password}@127.0.0.1:{self.pg_port}/observatory_test"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "OBSERVATORY_INFRA_HOME": str(self.home),
            "OBSERVATORY_KAFKA_PORT": str(self.kafka_port),
            "OBSERVATORY_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "OBSERVATORY_PG_PORT": str(self.pg_port),
            "OBSERVATORY_PG_PASSWORD": self.password,
            # The jars the main instance fetched: a second download is not needed.
            "OBSERVATORY_MAVEN_REPO": str(REPO / ".infra" / "m2"),
            # A smaller broker than the shared one: the box also runs that one.
            "OBSERVATORY_KAFKA_HEAP": "-Xms128m -Xmx512m",
            # Topics are made per test; only the dead-letter default is created.
            "OBSERVATORY_KAFKA_TOPICS": "observatory.dlq",
        }

    def _script(self, script: str, command: str) -> None:
        with self.log.open("a") as out:
            out.write(f"\n=== {time.strftime('%T')} {script} {command}\n")
            out.flush()
            result = subprocess.run(
                ["bash", str(INFRA / script), command],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=900,  # a first run installs PostgreSQL / fetches Kafka
            )
        if result.returncode != 0:
            tail = "".join(self.log.read_text().splitlines(keepends=True)[-40:])
            raise RuntimeError(f"infra/{script} {command} failed:\n{tail}")

    def start_kafka(self) -> None:
        self._script("kafka.sh", "start")

    def stop_kafka(self) -> None:
        self._script("kafka.sh", "stop")

    def start_db(self) -> None:
        self._script("timescaledb.sh", "start")

    def stop_db(self) -> None:
        self._script("timescaledb.sh", "stop")


# --- Kafka -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Produced:
    """Where one produced record landed."""

    partition: int
    offset: int


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes, list]],
    *,
    partitions: int = 4,
    max_bytes: int = 8 << 20,
) -> list[Produced]:
    """Produce (value, headers) records round-robin over the partitions; returns where
    each landed, in order.

    Round-robin, not librdkafka's sticky default, so that every partition holds a
    slice of the whole event-time range, as a live topic fed by many producers does.
    (With sticky batches a fast replay can leave one partition holding only the first
    minutes: caught up, it holds the watermark back for idle_partition_seconds of
    wall time, so how much is detected before the end depends on the replay's speed.)"""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "message.max.bytes": max_bytes,
            "enable.idempotence": True,  # the test's own input must not be doubled
        }
    )
    landed: dict[int, Produced] = {}
    errors: list[str] = []

    def reporter(index: int):
        def on_delivery(err, msg):
            if err is None:
                landed[index] = Produced(msg.partition(), msg.offset())
            else:
                errors.append(str(err))

        return on_delivery

    count = 0
    for index, (value, headers) in enumerate(records):
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    headers=headers,
                    partition=index % partitions,
                    on_delivery=reporter(index),
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        count += 1
    assert producer.flush(120) == 0, "records still queued after 120 s"
    assert not errors, f"{len(errors)} records not delivered: {errors[:3]}"
    return [landed[i] for i in range(count)]


def read_topic(bootstrap: str, topic: str, *, idle_s: float = 3.0) -> list:
    """Every message of a topic (all partitions), read until idle for ``idle_s``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"faults-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": 32 << 20,
        }
    )
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = list(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    messages, last = [], time.monotonic()
    while time.monotonic() - last < idle_s:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            messages.append(msg)
            last = time.monotonic()
    consumer.close()
    return messages


# --- the flow ----------------------------------------------------------------------------------


def write_config(path: Path, services: Services, topic: str, dlq: str, **sections) -> Path:
    config = {
        "kafka": {
            "bootstrap_servers": services.bootstrap,
            "topics": {"spans": topic, "dead_letter": dlq},
        },
        "database": {"url": services.database_url},
        "pipeline": {
            "recovery_dir": str(path.parent / f"recovery-{topic}"),
            "snapshot_interval_seconds": 1,
        },
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(config))
    return path


READY_LINE = "observatory: running:"


class Flow:
    """``observatory run --stop-at-end`` as a child process, its output in a file.

    The process is reaped with ``os.wait4``, which reports the peak resident
    memory of that one process (not of every child the test ever had).
    """

    def __init__(self, config: Path, log: Path, *, env: dict[str, str] | None = None):
        self.log = log
        self.started = time.monotonic()
        log.touch()
        self._log_start = log.stat().st_size  # several runs may share one log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "observatory.flows.cli",
                    "run",
                    "--config",
                    str(config),
                    "--stop-at-end",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.pid = self.proc.pid
        self.returncode: int | None = None
        self.peak_rss_mb: float | None = None
        self.elapsed: float | None = None
        #: Seconds from start until the flow said it runs (imports, migrations and
        #: broker checks done), seen by polling its output.
        self.startup: float | None = None

    @property
    def processing(self) -> float | None:
        """Seconds from "running" to exit: the work, without the start-up."""
        if self.elapsed is None or self.startup is None:
            return None
        return self.elapsed - self.startup

    def running(self) -> bool:
        if self.startup is None and READY_LINE in self._own_output():
            self.startup = time.monotonic() - self.started
        return self._reap(os.WNOHANG)

    def _own_output(self) -> str:
        with self.log.open("rb") as handle:
            handle.seek(self._log_start)
            return handle.read().decode(errors="replace")

    def _reap(self, options: int) -> bool:
        if self.returncode is not None:
            return False
        pid, status, usage = os.wait4(self.pid, options)
        if pid == 0:
            return True
        self.returncode = os.waitstatus_to_exitcode(status)
        self.peak_rss_mb = usage.ru_maxrss / 1024  # Linux reports KiB
        self.elapsed = time.monotonic() - self.started
        self.proc.returncode = self.returncode  # so Popen never reaps it again
        return False

    def wait(self, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(
                    f"the flow did not finish within {timeout:.0f}s:\n{self.tail()}"
                )
            time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)
            self._reap(0)

    def rss_mb(self) -> float:
        """Resident memory now (0 once it has exited)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])


def run_flow(config: Path, log: Path, *, timeout: float = 300, env=None) -> Flow:
    flow = Flow(config, log, env=env)
    code = flow.wait(timeout)
    assert code == 0, f"the flow exited with {code}:\n{flow.tail()}"
    return flow


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str, every=0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# --- the database ------------------------------------------------------------------------------


def empty_tables(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrations.empty_data_tables(conn)


def table(database_url: str, name: str) -> pd.DataFrame:
    with psycopg.connect(database_url) as conn:
        # The name is one of ours, never input: composed as an identifier anyway.
        cur = conn.execute(psycopg.sql.SQL("SELECT * FROM {}").format(psycopg.sql.Identifier(name)))
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def row_count(database_url: str, name: str) -> int:
    try:
        with psycopg.connect(database_url, connect_timeout=2) as conn:
            query = psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(name))
            return conn.execute(query).fetchone()[0]
    except psycopg.OperationalError:
        return -1


def start_until_first_rows(config: Path, log: Path, database_url: str, *, before: str):
    """Start the flow and wait for its first ``llm_stats`` rows: a fault mid-run comes after.

    Returns the flow and how many rows had landed.
    """
    flow = Flow(config, log)
    wait_until(
        lambda: row_count(database_url, "llm_stats") > 0 or not flow.running(),
        timeout=180,
        what="the flow's first rows",
    )
    assert flow.running(), f"the flow finished before {before}:\n{flow.tail()}"
    return flow, row_count(database_url, "llm_stats")


# --- ground truth ------------------------------------------------------------------------------


@dataclass
class Check:
    """How the stored rows compare with the ground truth.

    lost: an expected row missing, or holding fewer calls than expected;
    doubled: a row that should not exist, a key stored twice, or more calls than expected;
    wrong: the right count but another value off.
    """

    rows: int = 0
    lost: int = 0
    doubled: int = 0
    wrong: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, other: Check) -> Check:
        self.rows += other.rows
        self.lost += other.lost
        self.doubled += other.doubled
        self.wrong += other.wrong
        self.problems += other.problems
        return self

    @property
    def exact(self) -> bool:
        return not (self.lost or self.doubled or self.wrong)

    def report(self) -> str:
        shown = "\n  ".join(self.problems[:15])
        return (
            f"{self.rows} rows checked: {self.lost} lost, {self.doubled} doubled, "
            f"{self.wrong} wrong\n  {shown}"
        )


SUMS = ("errors", "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")
QUANTILES = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "ttft_p95_ms")


def compare_windows(name: str, expected: pd.DataFrame, actual: pd.DataFrame) -> Check:
    """llm_stats / llm_stats_hourly against pandas' aggregates of the intended calls."""
    check = Check(rows=len(expected))
    actual = actual.copy()
    actual["bucket"] = pd.to_datetime(actual["bucket"], utc=True)
    stored_twice = int(actual.duplicated(KEY).sum())
    if stored_twice:
        check.doubled += stored_twice
        check.problems.append(f"{name}: {stored_twice} keys stored twice")
    _compare_rows(
        check,
        expected,
        actual,
        KEY,
        count="calls",
        where=lambda row: f"{name} {tuple(row[k] for k in KEY)}",
        mismatches=_window_mismatches,
    )
    return check


def _compare_rows(check: Check, expected, actual, key, *, count: str, where, mismatches) -> None:
    """Outer-join expected and stored rows on ``key`` and count what is lost, doubled or wrong.

    A row is lost when missing or holding fewer ``count`` than expected, doubled
    when not expected or holding more, wrong when ``mismatches(row)`` names columns.
    """
    merged = expected.merge(
        actual.drop_duplicates(key), on=key, how="outer", suffixes=("_exp", "_act"), indicator=True
    )
    for _, row in merged.iterrows():
        at = where(row)
        want, got = row[f"{count}_exp"], row[f"{count}_act"]
        if row["_merge"] == "left_only":
            check.lost += 1
            check.problems.append(f"{at}: missing ({want} {count})")
        elif row["_merge"] == "right_only":
            check.doubled += 1
            check.problems.append(f"{at}: not expected ({got} {count})")
        elif got < want:
            check.lost += 1
            check.problems.append(f"{at}: {got} {count} of {want}")
        elif got > want:
            check.doubled += 1
            check.problems.append(f"{at}: {got} {count}, not {want}")
        else:
            bad = mismatches(row)
            if bad:
                check.wrong += 1
                check.problems.append(f"{at}: {', '.join(bad)}")


def _window_mismatches(row) -> list[str]:
    bad = [c for c in (*SUMS, "unpriced_calls") if row[f"{c}_exp"] != row[f"{c}_act"]]
    if abs(row["cost_usd_exp"] - float(row["cost_usd_act"])) > 1e-9:
        bad.append("cost_usd")
    if abs(row["latency_max_ms_exp"] - row["latency_max_ms_act"]) > 1e-6:
        bad.append("latency_max_ms")
    for column in QUANTILES:  # sketches: within 1% (the documented accuracy)
        exp, act = row[f"{column}_exp"], row[f"{column}_act"]
        one_missing = pd.isna(exp) != pd.isna(act)
        if one_missing or (not pd.isna(exp) and abs(exp - act) > 0.01 * max(abs(exp), 1e-9)):
            bad.append(column)
    return bad


def compare_sessions(expected: pd.DataFrame, actual: pd.DataFrame) -> Check:
    """agent_sessions: one row per (tenant, session_id), with the intended counts and sums."""
    check = Check(rows=len(expected))
    key = ["tenant", "session_id"]
    counts = actual.groupby(key).size()
    for (tenant, session), n in counts[counts > 1].items():
        check.doubled += 1
        check.problems.append(f"agent_sessions {tenant}/{session}: {n} rows")
    _compare_rows(
        check,
        expected,
        actual,
        key,
        count="llm_calls",
        where=lambda row: f"agent_sessions {row['tenant']}/{row['session_id']}",
        mismatches=_session_mismatches,
    )
    return check


def _session_mismatches(row) -> list[str]:
    bad = [
        c
        for c in ("tool_calls", "input_tokens", "output_tokens")
        if row[f"{c}_exp"] != row[f"{c}_act"]
    ]
    if abs(row["cost_usd_exp"] - float(row["cost_usd_act"])) > 1e-9:
        bad.append("cost_usd")
    return bad


def compare_counters(expected: dict[str, int], actual: dict[str, int]) -> Check:
    """pipeline_counters totals (every record and span accounted for, once)."""
    check = Check(rows=len(expected))
    for name, value in expected.items():
        got = actual.get(name, 0)
        if got < value:
            check.lost += 1
            check.problems.append(f"pipeline_counters {name}: {got}, expected {value}")
        elif got > value:
            check.doubled += 1
            check.problems.append(f"pipeline_counters {name}: {got}, expected {value}")
    return check


def counters(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT name, sum(value)::bigint FROM pipeline_counters GROUP BY name"
        ).fetchall()
    return dict(rows)


# --- results -----------------------------------------------------------------------------------


@dataclass
class Result:
    """One row of the suite's results table (bench/faults.json)."""

    scenario: str
    spans: int
    records: int
    faults: str
    rows_checked: int = 0
    rows_lost: int = 0
    rows_doubled: int = 0
    rows_wrong: int = 0
    alerts_checked: int | None = None
    alerts_lost: int | None = None
    alerts_duplicated: int | None = None
    seconds: float = 0.0
    notes: dict = field(default_factory=dict)

    def take(self, check: Check) -> None:
        self.rows_checked = check.rows
        self.rows_lost = check.lost
        self.rows_doubled = check.doubled
        self.rows_wrong = check.wrong

    def as_dict(self) -> dict:
        return json.loads(json.dumps(self.__dict__, default=str))


# --- dead letters ------------------------------------------------------------------------------


def headers_of(message) -> dict[str, bytes]:
    return dict(message.headers() or [])


def dead_letter_sources(messages) -> dict[tuple[int, int], list]:
    """Dead letters by the (partition, offset) of the record they came from."""
    by_source: dict[tuple[int, int], list] = {}
    for message in messages:
        headers = headers_of(message)
        if "observatory.source.offset" not in headers:
            continue  # a too-late aggregate, not a copy of an input record
        source = (
            int(headers["observatory.source.partition"]),
            int(headers["observatory.source.offset"]),
        )
        by_source.setdefault(source, []).append(message)
    return by_source


def check_dead_letters(
    messages, landed: list[Produced], bad: Iterable[int], *, exactly_once: bool = True
) -> Check:
    """Each bad record (by index into ``landed``) is in the dead-letter topic, with a
    reason; nothing else is; with ``exactly_once``, none twice."""
    by_source = dead_letter_sources(messages)
    wanted = {(landed[i].partition, landed[i].offset) for i in bad}
    check = Check(rows=len(wanted))
    for source in wanted:
        copies = by_source.get(source, [])
        if not copies:
            check.lost += 1
            check.problems.append(f"dead letter of {source} missing")
        elif exactly_once and len(copies) > 1:
            check.doubled += 1
            check.problems.append(f"dead letter of {source} written {len(copies)} times")
        elif any(not headers_of(m).get("observatory.reason") for m in copies):
            check.wrong += 1
            check.problems.append(f"dead letter of {source} has no reason")
    for source in set(by_source) - wanted:
        check.doubled += 1
        check.problems.append(f"unexpected dead letter from {source}")
    return check


# --- alerts ------------------------------------------------------------------------------------


@dataclass
class AlertRoutes:
    """Slack, PagerDuty and webhook routes pointing at a local receiver; their
    secrets (URL tokens, routing key) come from the environment and a secrets file,
    as in production, and are fresh for every use."""

    config: dict
    env: dict[str, str]
    secrets: tuple[str, ...]


def alert_routes(receiver_url: str, secrets_dir: Path) -> AlertRoutes:
    slack_token = f"slackTOKEN{uuid.uuid4().hex}"
    pd_key = uuid.uuid4().hex
    hook_token = f"hookTOKEN{uuid.uuid4().hex}"
    secrets_file = secrets_dir / "alert-secrets.json"
    secrets_file.write_text(json.dumps({"hook_url": f"{receiver_url}/webhook?token={hook_token}"}))
    # No hourly cap: it counts wall-clock hours, and a replay raises a day's alerts at once.
    common = {"max_per_hour": 0, "timeout_seconds": 2}
    config = {
        "routes": {
            "slack": {"type": "slack", "url_env": "FAULTS_SLACK_URL", **common},
            "pager": {
                "type": "pagerduty",
                "routing_key_env": "FAULTS_PD_KEY",
                "url": f"{receiver_url}/pagerduty/v2/enqueue",
                **common,
            },
            "hook": {
                "type": "webhook",
                "secrets_file": str(secrets_file),
                "secret_key": "hook_url",
                **common,
            },
        },
        "poll_interval_seconds": 0.2,
        "retry_initial_seconds": 0.2,
        "retry_max_seconds": 2,
    }
    env = {
        **os.environ,
        "FAULTS_SLACK_URL": f"{receiver_url}/slack/T0FAULTS/B0FAULTS/{slack_token}",
        "FAULTS_PD_KEY": pd_key,
    }
    return AlertRoutes(config, env, (slack_token, pd_key, hook_token))


ROUTE_OF_PATH = {"/slack": "slack", "/pagerduty": "pager", "/webhook": "hook"}


@dataclass(frozen=True, order=True)
class Notification:
    """One message a route is to get: which incident, which step of it, which state."""

    route: str
    dedup_key: str
    opened_at: str
    sequence: int
    state: str


@dataclass(frozen=True)
class Queued:
    notification: Notification
    payload: dict
    status: str


def outbox(database_url: str) -> list[Queued]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT route, dedup_key, opened_at, sequence, state, payload, status FROM alert_outbox"
        ).fetchall()
    return [
        Queued(Notification(route, key, opened.isoformat(), seq, state), payload, status)
        for route, key, opened, seq, state, payload, status in rows
    ]


def body_key(route: str | None, body: dict) -> tuple[str | None, str]:
    """A message as the receiver sees it: the route and the exact body (PagerDuty's
    routing key is added at send time, so it is left out)."""
    body = {k: v for k, v in body.items() if k != "routing_key"}
    return route, json.dumps(body, sort_keys=True)


def route_of(path: str) -> str | None:
    return next((r for p, r in ROUTE_OF_PATH.items() if path.startswith(p)), None)


def identify(messages, rows: list[Queued]) -> list[Notification | None]:
    """The outbox row each received message delivered (None: no row has its body).

    Matched on the exact body within one run (payload numbers can differ in their
    last bits between runs, so runs are compared by these identities instead).
    Rows with the same body (the resolves of one incident key) are taken in
    order; a copy beyond them is a repeat of the last."""
    waiting: dict[tuple, list[Notification]] = {}
    for row in sorted(rows, key=lambda r: r.notification):
        waiting.setdefault(body_key(row.notification.route, row.payload), []).append(
            row.notification
        )
    last: dict[tuple, Notification] = {}
    out: list[Notification | None] = []
    for message in sorted(messages, key=lambda m: m.at):
        key = body_key(route_of(message.path), message.body)
        queue = waiting.get(key)
        if queue:
            last[key] = queue.pop(0)
        out.append(last.get(key))
    return out


@dataclass
class AlertCheck:
    expected: int = 0
    lost: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.lost or self.duplicated)

    def report(self) -> str:
        shown = "\n  ".join(self.problems[:15])
        return (
            f"{self.expected} notifications expected: {self.lost} lost, "
            f"{self.duplicated} sent twice or not expected\n  {shown}"
        )


def compare_notifications(expected: list, got: list) -> AlertCheck:
    """Every expected notification received once, and nothing else (a message
    matching no outbox row, None, counts as not expected)."""
    want, have = Counter(expected), Counter(got)
    check = AlertCheck(expected=len(expected))
    for key in sorted(want.keys() | have.keys(), key=repr):
        missing, extra = want[key] - have[key], have[key] - want[key]
        if missing > 0:
            check.lost += missing
            check.problems.append(f"never received: {key}")
        if extra > 0:
            check.duplicated += extra
            check.problems.append(f"{extra} x too many: {key}")
    return check


class EchoingReceiver(AlertReceiver):
    """The local alert receiver, except that its first ``failures`` answers are
    500s quoting the request (path and body, so the URL token and routing key) the
    way a careless proxy's error page does: the text must not be stored or logged."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures
        handler = self._server.RequestHandlerClass
        receiver = self
        original = handler.do_POST

        def do_post(request):
            with receiver._lock:
                fail = receiver.failures > 0
                receiver.failures -= fail
            if not fail:
                return original(request)
            raw = request.rfile.read(int(request.headers.get("Content-Length") or 0))
            receiver.messages.append(Received(request.path, json.loads(raw), time.time()))
            body = f"upstream error for {request.path}: {raw.decode()}".encode()
            request.send_response(500)
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)

        handler.do_POST = do_post
