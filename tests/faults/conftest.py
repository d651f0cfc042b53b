"""Fixtures of the fault suite (`make test-faults`).

The session starts its own Kafka and PostgreSQL through infra/ (home
.infra/faults, ports 9192/9193 and 5533, a fresh database password per run),
because the scenarios stop and restart them; the shared services on 9092 and
5433 are never touched. They are stopped again at the end of the session
(OBSERVATORY_FAULTS_KEEP=1 leaves them running for the next session).

Every scenario adds a row to the results table, printed at the end and
written to bench/faults.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

# tests/faults is not a package: make harness.py and workload.py importable.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from harness import REPO, Result, Scale, Services, empty_tables, scale  # noqa: E402
from workload import Workload, simulate  # noqa: E402

from observatory.schemas import migrations  # noqa: E402

RESULTS_FILE = REPO / "bench" / "faults.json"
_results: list[Result] = []


def pytest_collection_modifyitems(items):
    for item in items:
        if "/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)
            # The scenarios need (their own) real services; `make test-unit` skips them.
            if "services" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def services():
    """Our own Kafka + PostgreSQL, up for the whole session."""
    home = Path(os.environ.get("OBSERVATORY_FAULTS_HOME", REPO / ".infra" / "faults"))
    svc = Services(
        home=home,
        kafka_port=int(os.environ.get("OBSERVATORY_FAULTS_KAFKA_PORT", 9192)),
        controller_port=int(os.environ.get("OBSERVATORY_FAULTS_CONTROLLER_PORT", 9193)),
        pg_port=int(os.environ.get("OBSERVATORY_FAULTS_PG_PORT", 5533)),
        password=f"pw-{secrets.token_hex(12)}",
    )
    svc.start_kafka()
    svc.start_db()
    with psycopg.connect(svc.database_url, autocommit=True) as conn:
        migrations.apply(conn, progress=lambda _: None)
    yield svc
    if os.environ.get("OBSERVATORY_FAULTS_KEEP") != "1":
        svc.stop_kafka()
        svc.stop_db()


@pytest.fixture
def database_url(services) -> str:
    """The suite's database, with every Observatory table empty."""
    empty_tables(services.database_url)
    return services.database_url


@pytest.fixture
def new_topic(services):
    """Makes fresh topics (deleted afterwards): ``new_topic(partitions)``."""
    admin = AdminClient({"bootstrap.servers": services.bootstrap})
    made: list[str] = []

    def make(partitions: int = 4, prefix: str = "faults", config: dict | None = None) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})
        admin.create_topics([topic])[name].result(timeout=30)
        made.append(name)
        return name

    yield make
    if made:
        with contextlib.suppress(Exception):  # the broker may be down after a failed scenario
            admin.delete_topics(made, operation_timeout=30)


@pytest.fixture(scope="session")
def load() -> Scale:
    return scale()


@pytest.fixture(scope="session")
def steady_workload(load) -> Workload:
    """200 minutes of event time (≈40k spans at full scale): six dialects, one incident
    of every kind (so detectors raise alerts), 1% malformed records (so dead letters
    are written). Simulated once, replayed into a fresh topic by each scenario."""
    return simulate(
        calls=load.steady_calls, minutes=200, seed=5, incidents=True, malformed_rate=0.01
    )


@pytest.fixture
def record_result():
    """Add a row to the results table: ``record_result(Result(...))``."""
    started = time.monotonic()

    def add(result: Result) -> Result:
        result.seconds = round(time.monotonic() - started, 1)
        _results.append(result)
        return result

    return add


COLUMNS = (
    ("scenario", "scenario", 26),
    ("spans", "spans", 7),
    ("records", "records", 8),
    ("faults", "faults injected", 40),
    ("rows_checked", "rows", 6),
    ("rows_lost", "lost", 5),
    ("rows_doubled", "doubled", 8),
    ("rows_wrong", "wrong", 6),
    ("alerts_checked", "alerts", 7),
    ("alerts_lost", "lost", 5),
    ("alerts_duplicated", "dup", 4),
    ("seconds", "s", 6),
)


def _cell(value, width: int) -> str:
    text = "-" if value is None else str(value)
    return text[:width].ljust(width)


def pytest_terminal_summary(terminalreporter):
    if not _results:
        return
    write = terminalreporter.write_line
    write("")
    write("fault suite results (also in bench/faults.json):")
    write(" ".join(_cell(title, width) for _, title, width in COLUMNS))
    for result in _results:
        row = result.as_dict()
        write(" ".join(_cell(row[key], width) for key, _, width in COLUMNS))


def pytest_sessionfinish(session, exitstatus):
    if not _results:
        return
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(
        json.dumps(
            {
                "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "scenarios": [r.as_dict() for r in _results],
            },
            indent=2,
        )
        + "\n"
    )
