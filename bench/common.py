"""Shared pieces of the benchmark harness: services, processes, peak RSS, machine facts.

Every measured row runs in its own process, started and reaped here, so that
its peak RSS is its own: we poll ``VmHWM`` in ``/proc/<pid>/status`` while it
runs and take ``ru_maxrss`` from ``wait4`` when it ends (the larger wins).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = os.environ.get("OBSERVATORY_BENCH_KAFKA", "127.0.0.1:9092")
#: Benchmark tables live in this database (never the demo's ``observatory``), each
#: run in its own schema, so concurrent test runs that TRUNCATE ``public`` are unaffected.
DATABASE_URL = os.environ.get(
    "OBSERVATORY_BENCH_DATABASE_URL",
    "postgresql://observatory:observatory@127.0.0.1:5433/observatory_test",
)
MIB = 1024 * 1024


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- database -------------------------------------------------------------------------


def schema_url(schema: str, base: str = DATABASE_URL) -> str:
    """A libpq URL whose sessions see ``schema`` first, then ``public`` (TimescaleDB)."""
    options = quote(f"-csearch_path={schema},public", safe="")
    return f"{base}{'&' if '?' in base else '?'}options={options}"


def create_schema(schema: str) -> str:
    import psycopg

    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema_url(schema)


def drop_schemas(schemas: Sequence[str]) -> None:
    import psycopg

    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def migrate(url: str) -> None:
    import psycopg

    from observatory.schemas import migrations

    with psycopg.connect(url, autocommit=True) as conn:
        migrations.apply(conn, progress=lambda _: None)


# --- Kafka ----------------------------------------------------------------------------


def admin():
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": BOOTSTRAP})


def create_topic(name: str, partitions: int) -> None:
    from confluent_kafka.admin import NewTopic

    client = admin()  # must outlive the futures
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)], operation_timeout=60
    )
    futures[name].result(timeout=120)


def delete_topics(names: Sequence[str]) -> list[str]:
    """Delete topics (quietly skipping missing ones); returns the ones deleted."""
    names = [n for n in names if n]
    if not names:
        return []
    client = admin()
    existing = set(client.list_topics(timeout=15).topics)
    names = [n for n in names if n in existing]
    if not names:
        return []
    deleted = []
    for name, future in client.delete_topics(names, operation_timeout=30).items():
        try:
            future.result(timeout=30)
            deleted.append(name)
        except Exception as exc:  # report, do not fail the whole benchmark at cleanup
            log(f"could not delete topic {name}: {exc}")
    return deleted


def topics_containing(text: str) -> list[str]:
    return sorted(t for t in admin().list_topics(timeout=15).topics if text in t)


def end_offsets(topic: str) -> dict[int, int]:
    """High watermark of each partition."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "bench-offsets-unused"})
    try:
        meta = consumer.list_topics(topic, timeout=15).topics[topic]
        out = {}
        for p in sorted(meta.partitions):
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            out[p] = high
        return out
    finally:
        consumer.close()


# --- processes ------------------------------------------------------------------------


def _vm_kib(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


@dataclass
class ProcResult:
    label: str
    cmd: list[str]
    returncode: int
    started: float  #: time.monotonic() at spawn
    ended: float  #: time.monotonic() when reaped
    peak_rss_kib: int
    log_path: Path

    @property
    def elapsed(self) -> float:
        return self.ended - self.started

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_kib / 1024

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class _Running:
    label: str
    cmd: list[str]
    proc: subprocess.Popen
    started: float
    log_path: Path
    peak_kib: int = 0
    result: ProcResult | None = field(default=None)


def run_processes(
    commands: Sequence[tuple[str, list[str]]],
    *,
    log_dir: Path,
    timeout_s: float,
    env: dict[str, str] | None = None,
    on_tick: Callable[[float, list[tuple[str, int, int]]], None] | None = None,
    on_spawn: Callable[[str, int], None] | None = None,
    tick_s: float = 5.0,
    poll_s: float = 0.2,
) -> list[ProcResult]:
    """Start every (label, argv) at once, sample peak RSS, reap each; kill all on timeout.

    ``on_tick(elapsed, [(label, pid, peak_rss_kib)])`` is called every ``tick_s`` for
    progress lines; ``on_spawn(label, pid)`` right after each start (e.g. to attach a
    profiler).
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    running: list[_Running] = []
    t0 = time.monotonic()
    for label, cmd in commands:
        log_path = log_dir / f"{label}.log"
        handle = open(log_path, "w")  # noqa: SIM115 - handed to the child
        # A session of its own: on timeout we end the child *and* whatever it started
        # (by its process group id), never anything else.
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=full_env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        handle.close()
        running.append(_Running(label, list(cmd), proc, time.monotonic(), log_path))
        if on_spawn is not None:
            on_spawn(label, proc.pid)
    next_tick = t0 + tick_s
    try:
        while any(r.result is None for r in running):
            now = time.monotonic()
            for r in running:
                if r.result is not None:
                    continue
                r.peak_kib = max(r.peak_kib, _vm_kib(r.proc.pid, "VmHWM"))
                pid, status, usage = os.wait4(r.proc.pid, os.WNOHANG)
                if pid == 0:
                    continue
                ended = time.monotonic()
                code = os.waitstatus_to_exitcode(status)
                # Anything it left behind in its own process group goes with it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(r.proc.pid, signal.SIGKILL)
                r.proc.returncode = code  # reaped here, not by Popen
                r.result = ProcResult(
                    r.label,
                    r.cmd,
                    code,
                    r.started,
                    ended,
                    max(r.peak_kib, int(usage.ru_maxrss)),
                    r.log_path,
                )
            if now - t0 > timeout_s:
                raise TimeoutError(
                    f"{', '.join(r.label for r in running if r.result is None)} "
                    f"still running after {timeout_s:.0f}s"
                )
            if on_tick is not None and now >= next_tick:
                next_tick = now + tick_s
                on_tick(
                    now - t0,
                    [(r.label, r.proc.pid, r.peak_kib) for r in running if r.result is None],
                )
            time.sleep(poll_s)
    except BaseException:
        for r in running:
            if r.result is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(r.proc.pid, signal.SIGKILL)  # the group this child leads
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(r.proc.pid, 0)
        raise
    return [r.result for r in running if r.result is not None]


def current_rss_kib(pid: int | None = None) -> int:
    return _vm_kib(pid or os.getpid(), "VmRSS")


def peak_rss_kib(pid: int | None = None) -> int:
    return _vm_kib(pid or os.getpid(), "VmHWM")


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# --- the machine and the versions -----------------------------------------------------


def machine() -> dict:
    info: dict = {
        "cores": os.cpu_count(),
        "cpu_model": "",
        "ram_gib": None,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    if hasattr(os, "sched_getaffinity"):
        info["cpus_allowed"] = len(os.sched_getaffinity(0))
    return info


def kafka_version() -> str:
    home = Path(os.environ.get("OBSERVATORY_INFRA_HOME", REPO / ".infra"))
    for jar in sorted((home / "kafka" / "libs").glob("kafka-clients-*.jar")):
        match = re.match(r"kafka-clients-(.+)\.jar$", jar.name)
        if match:
            return match[1]
    for jar in sorted((home / "kafka" / "libs").glob("kafka_*-*.jar")):
        match = re.match(r"kafka_[0-9.]+-(.+)\.jar$", jar.name)
        if match:
            return match[1]
    return "unknown"


def versions() -> dict:
    import importlib.metadata as md

    import psycopg

    out: dict = {"kafka": kafka_version()}
    try:
        with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=10) as conn:
            out["postgresql"] = conn.execute("SHOW server_version").fetchone()[0].split()[0]
            row = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()
            out["timescaledb"] = row[0] if row else "not installed"
    except psycopg.Error as exc:
        out["postgresql"] = f"unreachable ({exc})"
    for dist in ("bytewax", "quixstreams", "confluent-kafka", "protobuf", "psycopg", "pandas"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    try:
        import confluent_kafka
        from google.protobuf.internal import api_implementation

        out["librdkafka"] = confluent_kafka.libversion()[0]
        out["protobuf_backend"] = api_implementation.Type()
    except Exception:
        pass
    return out


def code_state() -> dict:
    """The commit measured and whether the work tree differed from it."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if len(line) > 3]
    return {"commit": git("rev-parse", "HEAD").strip(), "uncommitted_paths": changed}


_SOURCE_DIRS = ("flows", "operators", "schemas", "sinks", "detectors")
_SOURCE_SUFFIXES = (".py", ".so", ".sql", ".yaml")


def code_fingerprint() -> str:
    """A short hash of the project's source files as they are now (edits included).

    Stored with every measured row, so a run during which someone edited the
    pipeline says so instead of comparing different code.
    """
    import hashlib

    digest = hashlib.sha1()
    for top in _SOURCE_DIRS:
        for path in sorted((REPO / top).rglob("*")):
            if (
                path.suffix in _SOURCE_SUFFIXES
                and path.is_file()
                and "__pycache__" not in path.parts
                and "target" not in path.parts
            ):
                digest.update(str(path.relative_to(REPO)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
