"""``make demo``: simulated traffic through the real pipeline, then what landed.

Run by ``make demo`` after the services are up; every step prints what it
does. Re-running it adds a new slice of traffic and resumes the flow from its
recovery store, so it is quick the second time too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from observatory.flows.config import load_config

OUT = Path("demo-out")


def _step(text: str) -> None:
    print(f"\n\033[1m▶ {text}\033[0m", flush=True)


def _run(args: list[str]) -> None:
    started = time.monotonic()
    result = subprocess.run(args, check=False)
    if result.returncode != 0:
        print(f"demo: step failed (exit {result.returncode}): {' '.join(args)}", file=sys.stderr)
        sys.exit(result.returncode)
    print(f"  done in {time.monotonic() - started:.1f}s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="observatory-demo")
    parser.add_argument("--config", default="observatory.yaml")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--minutes", type=float, default=120.0)
    args = parser.parse_args(argv)
    load_config(args.config)  # fail early, with the field named, on a bad file
    exe = [sys.executable, "-m", "observatory.flows.cli"]
    OUT.mkdir(exist_ok=True)

    _step("Applying database migrations")
    _run([*exe, "migrate", "--config", args.config])

    _step(
        f"Simulating {args.calls:,} LLM calls of multi-tenant agent traffic over "
        f"{args.minutes:.0f} minutes of event time (six attribute dialects, both OTLP "
        "encodings, 1% malformed records) into Kafka"
    )
    _run(
        [
            *exe,
            "simulate",
            "--config",
            args.config,
            "--calls",
            str(args.calls),
            "--minutes",
            str(args.minutes),
            "--encoding",
            "mixed",
            "--malformed-rate",
            "0.01",
            "--seed",
            str(int(time.time()) % 100_000),
            "--ground-truth",
            str(OUT / "truth"),
        ]
    )

    _step("Running the Bytewax flow until it has read everything present at start")
    _run([*exe, "run", "--config", args.config, "--stop-at-end"])

    _step("What landed in TimescaleDB")
    _run([*exe, "summary", "--config", args.config, "--limit", "10"])
    print(
        "\nQuery it yourself:\n"
        "  psql postgresql://observatory:observatory@127.0.0.1:5433/observatory \\\n"
        "       -c 'SELECT * FROM spend_by_tenant_model_daily ORDER BY cost_usd DESC LIMIT 10'\n"
        "Stop the services with: make infra-down"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
