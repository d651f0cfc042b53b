"""The benchmark: one workload, every row, on this machine; a table and ``bench/results.json``.

    python -m bench.run [--spans N] [--skip ROWS] [--keep] [--profile]

Rows (``--skip`` takes a comma-separated subset of these names):

* ``ceiling``: raw confluent-kafka consumption + protobuf parse of the whole topic,
  one process (:mod:`bench.ceiling`).
* ``observatory-1p`` / ``observatory-2p``: ``observatory run --stop-at-end`` over
  the topic, one process, then two (``-a`` with two free ports, ``-i 0/1``), each
  on a fresh recovery directory and a fresh set of tables. spans/s = the
  topic's spans / wall time from spawn to the exit of the last process
  (interpreter start, migrations, snapshots and the final flush included).
  Kafka lag at the end = Σ end offsets − the ``records`` the flow counted
  (``pipeline_counters``, kept in the same recovery snapshots as the offsets),
  cross-checked with the offsets stored in the Bytewax recovery store.
  Peak RSS per process: max of polled ``VmHWM`` and ``wait4``'s ``ru_maxrss``.
* ``peer``: the same aggregation in Quix Streams (:mod:`bench.peer`), checked
  equal to ours; it runs after our rows because it appends closing markers to
  the topic. spans/s = spans / (wall time − its idle-stop timeout).
* ``decode``: ``python -m bench.decode --json`` if that module exists.
* ``memory``: the stateful step's RSS with 10k series and 50k sessions (:mod:`bench.memory`).
* ``latency``: ``python -m bench.latency --json`` if that module exists.

Isolation: topics ``bench_spans_<run>`` / ``bench_dlq_<run>`` (deleted at the end,
with the peer's ``repartition__``/``changelog__`` topics); tables in schemas
``bench_<run>_*`` of the ``observatory_test`` database (dropped at the end), so
neither the demo database nor the test suite's tables are touched.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench import common
from bench.common import BOOTSTRAP, REPO, log

ROWS = (
    "ceiling",
    "observatory-1p",
    "observatory-2p",
    "peer",
    "decode",
    "memory",
    "latency",
)
TARGETS = {
    "end_to_end_spans_per_s": 100_000,
    "vs_peer": 2.0,
    "vs_ceiling": 0.25,
    "memory_rss_mib": 1024,
    # Event-to-alert p95 at 10k spans/s: one window (60 s) + 10 s.
    "latency_p95_ms": 70_000,
}
FLOW_BUDGET_S = 180  # each flow run should take at most ~3 minutes
NS = 1_000_000_000


# --- helpers ----------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def write_flow_config(
    path: Path, *, topic: str, dlq: str, url: str, recovery: Path, extra: dict | None = None
) -> Path:
    config = {
        "kafka": {"bootstrap_servers": BOOTSTRAP, "topics": {"spans": topic, "dead_letter": dlq}},
        "database": {"url": url},
        # Everything else stays at the shipped defaults (16 shards, 10 s snapshots, …)
        # unless --flow-config says otherwise.
        "pipeline": {"recovery_dir": str(recovery)},
    }
    path.write_text(yaml.safe_dump(_merge(config, extra or {})))
    return path


def counters(url: str) -> dict[str, int]:
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT name, sum(value)::bigint FROM pipeline_counters GROUP BY name"
            ).fetchall()
    except psycopg.Error:
        return {}
    return {name: int(value) for name, value in rows}


def recovery_offsets(recovery: Path, step_suffix: str = "read_otlp_records") -> dict[str, int]:
    """The newest snapshotted offset of each input partition in a Bytewax recovery store.

    Bytewax 0.21 keeps ``snaps(step_id, state_key, snap_epoch, ser_change)`` in each
    ``part-*.sqlite3``; ``ser_change`` is the pickled resume state (our source's next
    offset), NULL when the state was discarded.
    """
    import pickle

    latest: dict[str, tuple[int, int]] = {}
    for part in sorted(recovery.glob("part-*.sqlite3")):
        with sqlite3.connect(f"file:{part}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT step_id, state_key, snap_epoch, ser_change FROM snaps"
            ).fetchall()
        for step_id, key, epoch, blob in rows:
            if not step_id.endswith(step_suffix) or blob is None:
                continue
            try:
                offset = pickle.loads(blob)
            except Exception:
                continue
            if isinstance(offset, int) and (key not in latest or epoch > latest[key][0]):
                latest[key] = (epoch, offset)
    return {key: offset for key, (_, offset) in latest.items()}


def group_lag(group: str, topic: str, ends: dict[int, int]) -> int | None:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in ends], timeout=15)
    except Exception:
        return None
    finally:
        consumer.close()
    lag = 0
    for tp in committed:
        offset = tp.offset if tp.offset >= 0 else 0
        lag += max(ends[tp.partition] - offset, 0)
    return lag


def fmt_rate(value: float | None) -> str:
    return f"{value:,.0f}" if value else "–"


# --- the rows -----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.run_id = time.strftime("%Y%m%d%H%M%S") + f"_{os.getpid() % 10000}"
        self.work = Path(tempfile.mkdtemp(prefix=f"observatory-bench-{self.run_id}-"))
        self.topic = f"bench_spans_{self.run_id}"
        self.dlq = f"bench_dlq_{self.run_id}"
        self.peer_group = f"bench_peer_{self.run_id}"
        self.schemas: list[str] = []
        self.topics: list[str] = []
        self.results: dict = {
            "run_id": self.run_id,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": common.machine(),
            "versions": common.versions(),
            "code": common.code_state(),
            "rows": {},
            "flow_config_overrides": args.flow_config,
        }
        self.workload = None
        self.profiles: dict[str, Path] = {}

    def skipped(self, row: str) -> bool:
        return row in self.args.skip

    # --- workload ------------------------------------------------------------------------

    def produce(self) -> None:
        from bench.workload import produce_workload

        self.topics += [self.topic, self.dlq]  # cleaned up even if creation half-fails
        common.create_topic(self.topic, self.args.partitions)
        common.create_topic(self.dlq, 1)
        log(
            f"producing {self.args.spans:,} spans into {self.topic} "
            f"({self.args.partitions} partitions)"
        )
        self.workload = produce_workload(
            self.topic,
            spans=self.args.spans,
            partitions=self.args.partitions,
            seed=self.args.seed,
            spans_per_event_minute=self.args.event_rate,
        )
        w = self.workload
        log(
            f"workload: {w.spans:,} spans in {w.records:,} records "
            f"({w.bytes / common.MIB:,.0f} MiB, {w.spans / w.records:.1f} spans/record), "
            f"{(w.last_event_ns - w.first_event_ns) / 60 / NS:.0f} min of event time, "
            f"produced in {w.produce_seconds:.0f}s"
        )
        self.results["workload"] = w.as_dict()

    # --- ceiling -------------------------------------------------------------------------

    def ceiling(self) -> None:
        out = self.work / "ceiling.json"
        log("ceiling: raw consume + protobuf parse, 1 process")
        [proc] = common.run_processes(
            [
                (
                    "ceiling",
                    common.python_module(
                        "bench.ceiling", "--topic", self.topic, "--json", str(out)
                    ),
                )
            ],
            log_dir=self.work,
            timeout_s=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ceiling failed:\n{proc.tail()}")
        data = common.read_json(out)
        row = {
            "spans": data["spans"],
            "spans_per_s": data["spans_per_s"],
            "seconds": data["seconds"],
            "wall_seconds": proc.elapsed,
            "peak_rss_mib": proc.peak_rss_mib,
            "note": "1 consumer, all partitions; rate from consumer creation to last record",
        }
        self.results["rows"]["ceiling"] = row
        log(
            f"ceiling: {row['spans_per_s']:,.0f} spans/s ({data['spans']:,} spans in "
            f"{data['seconds']:.1f}s), peak RSS {row['peak_rss_mib']:.0f} MiB"
        )

    # --- observatory ---------------------------------------------------------------------

    def observatory(self, processes: int) -> None:
        from bytewax.recovery import init_db_dir

        label = f"observatory-{processes}p"
        schema = f"bench_{self.run_id}_obs{processes}"
        url = common.create_schema(schema)
        self.schemas.append(schema)
        recovery = self.work / f"recovery-{processes}p"
        recovery.mkdir()
        init_db_dir(recovery, 8)  # the default recovery_partitions, created once up front
        config = write_flow_config(
            self.work / f"{label}.yaml",
            topic=self.topic,
            dlq=self.dlq,
            url=url,
            recovery=recovery,
            extra=self.args.flow_config,
        )
        base = common.python_module(
            "observatory.flows.cli", "run", "--config", str(config), "--stop-at-end"
        )
        if processes == 1:
            commands = [(label, base)]
        else:
            addresses = ";".join(f"127.0.0.1:{p}" for p in free_ports(processes))
            commands = [
                (f"{label}-{i}", [*base, "-a", addresses, "-i", str(i)]) for i in range(processes)
            ]
        total = self.workload.spans if self.workload else 0
        samples: list[tuple[float, int]] = []

        def tick(elapsed: float, alive: list[tuple[str, int, int]]) -> None:
            spans = counters(url).get("spans", 0)
            samples.append((elapsed, spans))
            rss = ", ".join(f"{common.current_rss_kib(pid) / 1024:.0f}" for _, pid, _ in alive)
            log(f"  {label}: {elapsed:5.0f}s  {spans:,} / {total:,} spans  RSS {rss or '–'} MiB")

        log(
            f"{label}: observatory run --stop-at-end, {processes} process(es), "
            f"fresh tables ({schema})"
        )
        procs = common.run_processes(
            commands,
            log_dir=self.work,
            timeout_s=self.args.flow_timeout,
            on_tick=tick,
            tick_s=self.args.tick,
            on_spawn=self._maybe_profile,
        )
        failed = [p for p in procs if p.returncode != 0]
        if failed:
            raise RuntimeError(
                f"{label}: {failed[0].label} exited {failed[0].returncode}:\n{failed[0].tail()}"
            )
        wall = max(p.ended for p in procs) - min(p.started for p in procs)
        final = counters(url)
        ends = self.workload.end_offsets if self.workload else common.end_offsets(self.topic)
        end_total = sum(ends.values())
        offsets = recovery_offsets(recovery)
        recovery_lag = (
            sum(max(end - offsets.get(f"{self.topic}-{p}", 0), 0) for p, end in ends.items())
            if offsets
            else None
        )
        spans = final.get("spans", 0)
        # Steady-state rate between the first and the last progress sample with data.
        steady = None
        moving = [(t, s) for t, s in samples if 0 < s < spans]
        if len(moving) >= 2 and moving[-1][0] > moving[0][0]:
            steady = (moving[-1][1] - moving[0][1]) / (moving[-1][0] - moving[0][0])
        row = {
            "processes": processes,
            "spans": spans,
            "spans_expected": total,
            "spans_per_s": spans / wall if wall else None,
            "steady_spans_per_s": steady,
            "wall_seconds": wall,
            "peak_rss_mib": [p.peak_rss_mib for p in procs],
            "peak_rss_mib_total": sum(p.peak_rss_mib for p in procs),
            "kafka_lag_records": end_total - final.get("records", 0),
            "kafka_lag_records_from_recovery_store": recovery_lag,
            "counters": final,
            "schema": schema,
            "within_budget": wall <= FLOW_BUDGET_S,
        }
        self.results["rows"][label] = row
        log(
            f"{label}: {row['spans_per_s']:,.0f} spans/s end to end ({spans:,} spans in "
            f"{wall:.1f}s; steady {fmt_rate(steady)}), peak RSS "
            f"{' + '.join(f'{m:.0f}' for m in row['peak_rss_mib'])} MiB, "
            f"lag {row['kafka_lag_records']} records (recovery store: {recovery_lag})"
        )
        if spans != total:
            log(f"  WARNING: the flow counted {spans:,} spans, the topic holds {total:,}")
        if wall > FLOW_BUDGET_S:
            log(f"  WARNING: {label} took {wall:.0f}s (> {FLOW_BUDGET_S}s): use a smaller --spans")

    def _maybe_profile(self, label: str, pid: int) -> None:
        if not self.args.profile:
            return
        from bench import profiling

        out = self.work / f"{label}.pyspy.txt"
        if profiling.attach(pid, out) is not None:
            self.profiles[label] = out
        else:
            log("  (--profile: py-spy is not installed; no profile)")

    def compare_parallel(self) -> None:
        """Our 1-process and 2-process tables must be identical (sketches included)."""
        from bench.compare import compare, load, summary

        if (
            "observatory-1p" not in self.results["rows"]
            or "observatory-2p" not in self.results["rows"]
        ):
            return
        a = load(common.schema_url(self.results["rows"]["observatory-1p"]["schema"]), "llm_stats")
        b = load(common.schema_url(self.results["rows"]["observatory-2p"]["schema"]), "llm_stats")
        result = compare(a, b)
        self.results["rows"]["observatory-2p"]["equal_to_1p"] = result
        log(f"observatory 2p vs 1p tables: {summary(result)}")

    # --- peer ----------------------------------------------------------------------------

    def peer(self) -> None:
        from bench import peer as peer_module
        from bench.compare import compare, load, summary

        schema = f"bench_{self.run_id}_peer"
        url = common.create_schema(schema)
        self.schemas.append(schema)
        common.migrate(url)  # llm_stats exists there, for (LIKE llm_stats)
        peer_module.create_table(url)
        ends = common.end_offsets(self.topic)
        marker_ns = self.workload.last_event_ns + 15 * 60 * NS
        out = self.work / "peer.json"
        idle = 60.0
        cmd = common.python_module(
            "bench.peer", "--topic", self.topic, "--bootstrap", BOOTSTRAP, "--database-url", url,
            "--group", self.peer_group, "--end-offsets", json.dumps(ends),
            "--marker-ns", str(marker_ns), "--idle-timeout-s", str(idle), "--json", str(out),
            "--closing-strategy", self.args.peer_closing, "--grace-s", str(self.args.peer_grace),
        )  # fmt: skip
        total = self.workload.spans

        def tick(elapsed: float, alive: list[tuple[str, int, int]]) -> None:
            rss = ", ".join(f"{common.current_rss_kib(pid) / 1024:.0f}" for _, pid, _ in alive)
            lag = group_lag(self.peer_group, self.topic, ends)
            done = sum(ends.values()) - lag if lag is not None else 0
            text = f"input {done:,} / {sum(ends.values()):,} records"
            for name in common.topics_containing(self.peer_group):
                if name.startswith("repartition__"):
                    r_ends = common.end_offsets(name)
                    r_lag = group_lag(self.peer_group, name, r_ends)
                    if r_lag is not None:
                        r_total = sum(r_ends.values())
                        text += f", repartitioned {r_total - r_lag:,} / {r_total:,} calls"
            log(f"  peer: {elapsed:5.0f}s  committed: {text}  RSS {rss or '–'} MiB")

        log(
            f"peer: Quix Streams {self.results['versions'].get('quixstreams')}, fresh group and "
            f"state, closing strategy {self.args.peer_closing!r} ({schema})"
        )
        [proc] = common.run_processes(
            [("peer", cmd)],
            log_dir=self.work,
            timeout_s=self.args.peer_timeout,
            on_tick=tick,
            tick_s=self.args.tick,
            on_spawn=self._maybe_profile,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"peer exited {proc.returncode}:\n{proc.tail()}")
        data = common.read_json(out)
        by_markers = data["stopped_by"] == "markers"
        elapsed = proc.elapsed if by_markers else proc.elapsed - idle
        ends_after = common.end_offsets(self.topic)  # includes the closing markers
        lag = group_lag(self.peer_group, self.topic, ends_after)
        row = {
            "spans": data["spans"],
            "spans_expected": total,
            "spans_per_s": data["spans"] / elapsed if elapsed > 0 else None,
            "wall_seconds": proc.elapsed,
            "seconds": elapsed,
            "peak_rss_mib": proc.peak_rss_mib,
            "kafka_lag_records": lag,
            "schema": schema,
            "note": "rate = spans / wall time"
            + ("" if by_markers else f" − {idle:.0f}s idle-stop timeout (markers never all seen)"),
            **{k: v for k, v in data.items() if k not in ("spans",)},
        }
        ours_label = next(
            (r for r in ("observatory-1p", "observatory-2p") if r in self.results["rows"]
             and self.results["rows"][r].get("schema")), None
        )  # fmt: skip
        if ours_label:
            ours = load(common.schema_url(self.results["rows"][ours_label]["schema"]), "llm_stats")
            theirs = load(url, "peer_llm_stats")
            check = compare(ours, theirs)
            check["against"] = ours_label
            row["check"] = check
            row["check_summary"] = summary(check)
        else:
            row["check_summary"] = "not checked: no observatory row ran"
        self.results["rows"]["peer"] = row
        log(
            f"peer: {row['spans_per_s']:,.0f} spans/s ({data['spans']:,} spans in {elapsed:.1f}s, "
            f"stopped by {data['stopped_by']}), peak RSS {proc.peak_rss_mib:.0f} MiB, lag {lag}, "
            f"late dropped {data['late_dropped']}, windows re-emitted {data['windows_reemitted']}, "
            f"max event-time skew between input partitions {data['max_partition_skew_s']:.0f}s"
        )
        log(f"peer check: {row['check_summary']}")
        if data["spans"] != total:
            log(f"  WARNING: the peer decoded {data['spans']:,} spans, the topic holds {total:,}")

    # --- optional modules ------------------------------------------------------------------

    def optional_module(self, row: str, module: str, reason_missing: str, timeout: float) -> None:
        if importlib.util.find_spec(module) is None:
            self.results["rows"][row] = {
                "measured": False,
                "note": f"not measured: {reason_missing}",
            }
            log(f"{row}: not measured: {reason_missing}")
            return
        out = self.work / f"{row}.json"
        log(f"{row}: python -m {module} --json")
        try:
            [proc] = common.run_processes(
                [(row, common.python_module(module, "--json", str(out)))],
                log_dir=self.work,
                timeout_s=timeout,
            )
        except TimeoutError as exc:
            self.results["rows"][row] = {"measured": False, "note": f"not measured: {exc}"}
            log(f"{row}: {exc}")
            return
        if proc.returncode != 0 or not out.exists():
            note = f"not measured: {module} exited {proc.returncode}"
            self.results["rows"][row] = {"measured": False, "note": note, "log": proc.tail(20)}
            log(f"{row}: {note}\n{proc.tail(20)}")
            return
        data = common.read_json(out)
        self.results["rows"][row] = {
            "measured": True,
            **data,
            "wall_seconds": proc.elapsed,
            "peak_rss_mib": proc.peak_rss_mib,
        }
        log(f"{row}: {json.dumps(data)}")

    def memory(self) -> None:
        out = self.work / "memory.json"
        log(
            f"memory: shard state for {self.args.series:,} series + "
            f"{self.args.sessions:,} sessions (16 shards)"
        )
        [proc] = common.run_processes(
            [
                (
                    "memory",
                    common.python_module(
                        "bench.memory",
                        "--series",
                        str(self.args.series),
                        "--sessions",
                        str(self.args.sessions),
                        "--json",
                        str(out),
                    ),
                )
            ],
            log_dir=self.work,
            timeout_s=900,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"memory failed:\n{proc.tail()}")
        data = common.read_json(out)
        data["peak_rss_mib_process"] = proc.peak_rss_mib
        self.results["rows"]["memory"] = data
        log(
            f"memory: RSS {data['rss_mib']:.0f} MiB ({data['state_rss_mib']:.0f} MiB of state "
            f"over a "
            f"{data['baseline_rss_mib']:.0f} MiB interpreter), snapshot "
            f"{data['snapshot_mib']:.1f} MiB pickled in {data['snapshot_seconds']:.2f}s"
        )

    # --- the whole run -----------------------------------------------------------------------

    def run(self) -> dict:
        started = time.monotonic()
        uses_topic = {"ceiling", "observatory-1p", "observatory-2p", "peer"} - set(self.args.skip)
        try:
            if uses_topic:
                self.produce()
            steps = [
                ("ceiling", self.ceiling),
                ("observatory-1p", lambda: self.observatory(1)),
                ("observatory-2p", lambda: self.observatory(2)),
                ("peer", self.peer),  # last reader of the topic: it appends closing markers
                (
                    "decode",
                    lambda: self.optional_module(
                        "decode", "bench.decode", "bench/decode.py is not present", 900
                    ),
                ),
                ("memory", self.memory),
                (
                    "latency",
                    lambda: self.optional_module(
                        "latency",
                        "bench.latency",
                        "event-to-alert latency needs the detectors wired into the flow; "
                        "bench/latency.py is not present",
                        self.args.latency_timeout,
                    ),
                ),
            ]
            for name, step in steps:
                if self.skipped(name):
                    self.results["rows"].setdefault(name, {"measured": False, "note": "skipped"})
                    continue
                fingerprint = common.code_fingerprint()
                try:
                    step()
                    self.results["rows"].setdefault(name, {})["code_fingerprint"] = fingerprint
                except Exception as exc:
                    log(f"{name}: FAILED: {exc}")
                    self.results["rows"][name] = {
                        "measured": False,
                        "note": f"failed: {exc}"[:2000],
                    }
                if name == "observatory-2p":
                    try:
                        self.compare_parallel()
                    except Exception as exc:
                        log(f"observatory 2p vs 1p comparison failed: {exc}")
        finally:
            self.cleanup()
        self.results["total_seconds"] = time.monotonic() - started
        self.results["targets"] = self.targets()
        for label, raw in self.profiles.items():
            if raw.exists() and raw.stat().st_size:
                from bench import profiling

                summary = profiling.summarize(raw)
                self.results.setdefault("profiles", {})[label] = summary
                print(profiling.format_summary(label, summary))
        return self.results

    def cleanup(self) -> None:
        if self.args.keep:
            log(f"--keep: left topics {self.topics}, schemas {self.schemas}, files in {self.work}")
            return
        try:
            internal = common.topics_containing(self.peer_group)
            deleted = common.delete_topics([*self.topics, *internal])
            if deleted:
                log(f"deleted topics: {', '.join(deleted)}")
        except Exception as exc:
            log(f"cleanup of topics failed: {exc}")
        try:
            common.drop_schemas(self.schemas)
        except Exception as exc:
            log(f"cleanup of schemas failed: {exc}")
        if self.profiles:
            keep = Path(self.args.profile_dir)
            keep.mkdir(parents=True, exist_ok=True)
            for label, raw in self.profiles.items():
                if raw.exists():
                    shutil.copy(raw, keep / raw.name)
                    self.profiles[label] = keep / raw.name
            log(f"py-spy profiles (collapsed stacks) in {keep}")
        shutil.rmtree(self.work, ignore_errors=True)

    # --- targets and the table ------------------------------------------------------------------

    def targets(self) -> dict:
        rows = self.results["rows"]
        ours = [
            (label, rows[label]["spans_per_s"])
            for label in ("observatory-1p", "observatory-2p")
            if rows.get(label, {}).get("spans_per_s")
        ]
        best_label, best = max(ours, key=lambda x: x[1]) if ours else (None, None)
        peer = rows.get("peer", {}).get("spans_per_s")
        ceiling = rows.get("ceiling", {}).get("spans_per_s")
        memory = rows.get("memory", {}).get("rss_mib")
        out = {"best_observatory_row": best_label}

        def target(name, value, goal, passed, text):
            out[name] = {
                "value": value,
                "target": goal,
                "pass": None if value is None else bool(passed),
                "text": text,
            }

        target(
            "end_to_end_spans_per_s",
            best,
            TARGETS["end_to_end_spans_per_s"],
            best is not None and best >= TARGETS["end_to_end_spans_per_s"],
            "≥ 100,000 spans/s end to end",
        )
        ratio = best / peer if best and peer else None
        target(
            "vs_peer",
            ratio,
            TARGETS["vs_peer"],
            ratio is not None and ratio >= 2,
            "≥ 2× the Quix peer",
        )
        share = best / ceiling if best and ceiling else None
        target(
            "vs_ceiling",
            share,
            TARGETS["vs_ceiling"],
            share is not None and share >= 0.25,
            "≥ 25% of the ceiling",
        )
        target(
            "memory_rss_mib",
            memory,
            TARGETS["memory_rss_mib"],
            memory is not None and memory <= 1024,
            "RSS ≤ 1 GiB at 10k series + 50k sessions",
        )
        latency = rows.get("latency", {})
        p95 = latency.get("p95_ms") if latency.get("measured") else None
        all_alerted = latency.get("detected") == latency.get("loops")
        target(
            "latency_p95_ms",
            p95,
            TARGETS["latency_p95_ms"],
            p95 is not None and p95 <= TARGETS["latency_p95_ms"] and all_alerted,
            "event-to-alert p95 ≤ window + 10 s (10k/s)",
        )
        check = rows.get("peer", {}).get("check")
        out["peer_results_equal"] = None if check is None else check["ok"]
        return out


def render(results: dict) -> str:
    m, v, rows = results["machine"], results["versions"], results["rows"]
    lines = []
    lines.append("")
    lines.append("Observatory benchmark")
    lines.append(
        f"machine: {m['cores']} cores ({m['cpu_model']}), {m['ram_gib']} GiB RAM, "
        f"Linux {m['kernel']}, Python {m['python']}"
    )
    lines.append(
        f"versions: Kafka {v.get('kafka')}, PostgreSQL {v.get('postgresql')} + TimescaleDB "
        f"{v.get('timescaledb')}, bytewax {v.get('bytewax')}, quixstreams {v.get('quixstreams')}, "
        f"confluent-kafka {v.get('confluent-kafka')} (librdkafka {v.get('librdkafka')}), "
        f"protobuf {v.get('protobuf')} ({v.get('protobuf_backend')})"
    )
    w = results.get("workload")
    if w:
        lines.append(
            f"workload: {w['spans']:,} spans in {w['records']:,} otlp_proto records "
            f"({w['spans'] / max(w['records'], 1):.1f} spans/record, "
            f"{w['bytes'] / common.MIB:,.0f} MiB), {w['partitions']} partitions, "
            f"{(w['last_event_ns'] - w['first_event_ns']) / 60e9:.0f} min of event time"
        )
    lines.append("")
    header = f"{'row':<16} {'spans/s':>10} {'seconds':>8} {'peak RSS MiB':>14} {'lag':>5}  notes"
    lines.append(header)
    lines.append("-" * len(header))

    def line(name, rate, seconds, rss, lag, note):
        lines.append(f"{name:<16} {rate:>10} {seconds:>8} {rss:>14} {lag:>5}  {note}")

    for name in ROWS:
        row = rows.get(name, {})
        if row.get("measured") is False and name not in ("decode", "latency"):
            line(name, "–", "–", "–", "–", row.get("note", ""))
            continue
        if name == "ceiling":
            line(
                name,
                fmt_rate(row["spans_per_s"]),
                f"{row['seconds']:.1f}",
                f"{row['peak_rss_mib']:.0f}",
                "–",
                "raw consume + ParseFromString, 1 process",
            )
        elif name.startswith("observatory"):
            rss = " + ".join(f"{x:.0f}" for x in row["peak_rss_mib"])
            note = f"steady {fmt_rate(row.get('steady_spans_per_s'))}/s"
            if row.get("equal_to_1p") is not None:
                note += (
                    "; tables equal to 1p"
                    if row["equal_to_1p"]["ok"]
                    else "; tables DIFFER from 1p"
                )
            if row["spans"] != row["spans_expected"]:
                note += f"; counted {row['spans']:,} of {row['spans_expected']:,} spans"
            line(name, fmt_rate(row["spans_per_s"]), f"{row['wall_seconds']:.1f}", rss,
                 str(row["kafka_lag_records"]), note)  # fmt: skip
        elif name == "peer":
            note = f"check: {row['check_summary']}"
            if row.get("late_dropped"):
                note += (
                    f"; {row['late_dropped']:,} calls dropped as late (input partitions "
                    f"up to {row['max_partition_skew_s']:.0f}s apart in event time, grace "
                    f"{row['grace_s']:.0f}s)"
                )
            if row.get("windows_reemitted"):
                note += f"; {row['windows_reemitted']:,} windows emitted twice"
            line(name, fmt_rate(row["spans_per_s"]), f"{row['seconds']:.1f}",
                 f"{row['peak_rss_mib']:.0f}", str(row["kafka_lag_records"]), note)  # fmt: skip
        elif name == "decode":
            if row.get("measured"):
                line(
                    name,
                    fmt_rate(row.get("native_spans_per_s")),
                    "–",
                    f"{row['peak_rss_mib']:.0f}",
                    "–",
                    f"native; python {fmt_rate(row.get('python_spans_per_s'))} spans/s "
                    f"({row.get('spans', 0):,} spans)",
                )
            else:
                line(name, "–", "–", "–", "–", row.get("note", ""))
        elif name == "memory":
            line(name, "–", f"{row['build_seconds']:.0f}", f"{row['rss_mib']:.0f}", "–",
                 f"{row['series']:,} series + {row['sessions']:,} sessions: state "
                 f"{row['state_rss_mib']:.0f} MiB; snapshot {row['snapshot_mib']:.1f} MiB "
                 f"pickled in {row['snapshot_seconds']:.2f}s")  # fmt: skip
        elif name == "latency":
            if row.get("measured"):

                def ms(key, row=row):
                    value = row.get(key)
                    return f"{value:,.0f} ms" if isinstance(value, int | float) else "–"

                note = (
                    f"event-to-alert p50 {ms('p50_ms')}, p95 {ms('p95_ms')}; after the "
                    f"window closed p95 {ms('from_window_end_p95_ms')}; "
                    f"{row.get('spans_per_s_produced', 0):,} spans/s produced"
                )
                if "detected" in row and "loops" in row:
                    note += f" ({row['detected']} of {row['loops']} incidents alerted)"
                if any(
                    isinstance(row.get(k), int | float) and row[k] < 0 for k in ("p50_ms", "p95_ms")
                ):
                    note += "; NEGATIVE: check bench/latency.py"
                line(name, "–", f"{row.get('wall_seconds', 0):.0f}",
                     f"{row.get('peak_rss_mib', 0):.0f}", "–", note)  # fmt: skip
            else:
                line(name, "–", "–", "–", "–", row.get("note", ""))
    prints = {
        name: rows[name]["code_fingerprint"]
        for name in ("ceiling", "observatory-1p", "observatory-2p", "peer", "decode", "memory")
        if rows.get(name, {}).get("code_fingerprint")
    }
    if len(set(prints.values())) > 1:
        lines.append(
            "WARNING: the project's source changed during the run; rows measured different code: "
            + ", ".join(f"{name} {fp}" for name, fp in prints.items())
        )
    lines.append("")
    targets = results.get("targets", {})
    lines.append(f"targets (best observatory row: {targets.get('best_observatory_row')}):")
    for key in (
        "end_to_end_spans_per_s", "vs_peer", "vs_ceiling", "memory_rss_mib", "latency_p95_ms"
    ):  # fmt: skip
        t = targets.get(key)
        if not t:
            continue
        value = t["value"]
        if value is None:
            shown = "not measured"
        elif key == "end_to_end_spans_per_s":
            shown = f"{value:,.0f} spans/s"
        elif key == "vs_peer":
            shown = f"{value:.2f}×"
        elif key == "vs_ceiling":
            shown = f"{value:.1%}"
        elif key == "latency_p95_ms":
            shown = f"{value / 1000:.1f} s"
        else:
            shown = f"{value:.0f} MiB"
        verdict = {True: "PASS", False: "FAIL", None: "–"}[t["pass"]]
        lines.append(f"  {verdict:<4}  {t['text']:<42} {shown}")
    equal = targets.get("peer_results_equal")
    lines.append(
        "  "
        + {True: "PASS", False: "FAIL", None: "–   "}[equal]
        + "  peer results equal to ours (keys, counts, sums; cost 1e-9; p95 1%)"
    )
    lines.append(f"total time: {results.get('total_seconds', 0):.0f}s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans in the workload topic")
    parser.add_argument(
        "--skip", default="", help=f"comma-separated rows to skip: {', '.join(ROWS)}"
    )
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--event-rate",
        type=int,
        default=50_000,
        help="spans per minute of event time in the workload (1M spans = 20 minutes)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--series", type=int, default=10_000, help="memory row: active series")
    parser.add_argument("--sessions", type=int, default=50_000, help="memory row: live sessions")
    parser.add_argument("--flow-timeout", type=float, default=600, help="kill a flow run after (s)")
    parser.add_argument("--peer-timeout", type=float, default=1200, help="kill the peer after (s)")
    parser.add_argument(
        "--peer-closing",
        choices=["key", "partition"],
        default="key",
        help="the peer's Quix window closing strategy (see bench/peer.py)",
    )
    parser.add_argument(
        "--peer-grace",
        type=float,
        default=300,
        help="the peer's window grace period in seconds (ours: allowed_lateness_seconds = 300)",
    )
    parser.add_argument(
        "--latency-timeout", type=float, default=1200, help="kill bench.latency after (s)"
    )
    parser.add_argument("--tick", type=float, default=5.0, help="seconds between progress lines")
    parser.add_argument("--keep", action="store_true", help="keep topics, schemas and logs")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="attach py-spy (if installed) to the flow and peer processes; summary in the output",
    )
    parser.add_argument(
        "--profile-dir",
        default=str(Path(tempfile.gettempdir()) / "observatory-bench-profiles"),
        help="where --profile leaves the collapsed stacks",
    )
    parser.add_argument(
        "--flow-config",
        default="{}",
        help='YAML/JSON merged into the flows\' config, e.g. "{kafka: {batch_size: 200}}"',
    )
    parser.add_argument("--json", default=str(REPO / "bench" / "results.json"))
    args = parser.parse_args(argv)
    args.flow_config = yaml.safe_load(args.flow_config) or {}
    if not isinstance(args.flow_config, dict):
        parser.error("--flow-config must be a mapping")
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if "observatory" in args.skip:
        args.skip |= {"observatory-1p", "observatory-2p"}
    unknown = args.skip - set(ROWS) - {"observatory"}
    if unknown:
        parser.error(f"unknown rows in --skip: {', '.join(sorted(unknown))}; choose from {ROWS}")
    bench = Bench(args)
    m, v = bench.results["machine"], bench.results["versions"]
    log(
        f"run {bench.run_id}: {m['cores']} cores ({m['cpu_model']}), {m['ram_gib']} GiB; "
        f"Kafka {v['kafka']} at {BOOTSTRAP}, PostgreSQL {v.get('postgresql')} + TimescaleDB "
        f"{v.get('timescaledb')}"
    )
    results = bench.run()
    Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print(render(results))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
