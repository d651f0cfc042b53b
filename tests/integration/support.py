"""Helpers for the integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from confluent_kafka import Producer

BOOTSTRAP = os.environ.get("OBSERVATORY_TEST_KAFKA", "127.0.0.1:9092")
DATABASE_URL = os.environ.get(
    "OBSERVATORY_TEST_DATABASE_URL",
    "postgresql://observatory:observatory@127.0.0.1:5433/observatory_test",
)


def produce(topic: str, records, *, partition_of=None) -> int:
    """Publish (value, headers) pairs; returns how many were delivered."""
    producer = Producer(
        {"bootstrap.servers": BOOTSTRAP, "linger.ms": 5, "message.max.bytes": 10_000_000}
    )
    delivered = []

    def on_delivery(err, _msg):
        if err is None:
            delivered.append(1)

    for i, (value, headers) in enumerate(records):
        kwargs = {}
        if partition_of is not None:
            kwargs["partition"] = partition_of(i)
        producer.produce(topic, value=value, headers=headers, on_delivery=on_delivery, **kwargs)
        producer.poll(0)
    assert producer.flush(60) == 0
    return len(delivered)


def write_config(tmp_path: Path, topic: str, dlq: str, database_url: str, **sections) -> Path:
    config = {
        "kafka": {"bootstrap_servers": BOOTSTRAP, "topics": {"spans": topic, "dead_letter": dlq}},
        "database": {"url": database_url},
        "pipeline": {"recovery_dir": str(tmp_path / "recovery"), "snapshot_interval_seconds": 1},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path = tmp_path / "observatory.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_flow(config: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "observatory.flows.cli",
            "run",
            "--config",
            str(config),
            "--stop-at-end",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    result.elapsed = time.monotonic() - started  # type: ignore[attr-defined]
    return result
