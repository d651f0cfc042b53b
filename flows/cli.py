"""The ``observatory`` command line.

    observatory run --config FILE [--workers N] [--stop-at-end]
    observatory migrate --config FILE
    observatory config check FILE
    observatory infra up|down|status
    observatory simulate --config FILE [...]
    observatory summary --config FILE

Errors a user can fix (bad config, Kafka or the database unreachable) end
with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from observatory.flows.config import Config, ConfigError, effective_config_yaml, load_config
from observatory.sinks.alerts import AlertConfigError

log = logging.getLogger("observatory")

EXIT_USAGE = 2


class UserError(Exception):
    """An error with a one-line explanation for the user."""


# --- helpers ---------------------------------------------------------------------------


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def _connect_database(config: Config):
    import psycopg

    from observatory.flows.config import redact_url

    try:
        return psycopg.connect(
            config.database.url,
            connect_timeout=int(config.database.connect_timeout_seconds),
            autocommit=True,
        )
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot reach the database at {redact_url(config.database.url)}: {reason}"
        ) from None


def _migrate(config: Config, quiet: bool = False) -> None:
    from observatory.schemas import migrations

    with _connect_database(config) as conn:
        applied = migrations.apply(conn, progress=(lambda _: None) if quiet else print)
    if not quiet:
        print(f"database is up to date ({len(applied)} migration(s) applied)")


def _check_kafka(config: Config) -> None:
    from observatory.flows.kafka_io import KafkaUnavailable, check_topics, client_config

    kafka = config.kafka
    try:
        check_topics(
            client_config(kafka.bootstrap_servers, kafka.client),
            [kafka.topics.spans, *([kafka.topics.metrics] if kafka.topics.metrics else [])],
            kafka.connect_timeout_seconds,
        )
    except KafkaUnavailable as exc:
        raise UserError(str(exc)) from None


def infra_dir() -> Path:
    """The repository's infra/ scripts (present in a source checkout)."""
    import observatory.flows as flows

    path = Path(flows.__file__).resolve().parents[1] / "infra"
    if not (path / "up.sh").exists():
        raise UserError(f"infra scripts not found at {path}: run from a source checkout")
    return path


# --- commands ------------------------------------------------------------------------------


def _ensure_recovery_store(db_dir: Path, partitions: int, init_db_dir) -> None:
    """Create the recovery store all at once, or not at all.

    Built in a scratch directory and renamed into place: a flow killed while
    creating it must not leave some partitions, which Bytewax cannot resume.
    """
    if any(db_dir.glob("part-*.sqlite3")):
        return
    if db_dir.exists() and any(db_dir.iterdir()):
        raise UserError(f"recovery_dir {db_dir} holds other files; point it at an empty directory")
    scratch = db_dir.parent / f".{db_dir.name}.creating-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        init_db_dir(scratch, partitions)
        if db_dir.exists():
            db_dir.rmdir()  # empty, checked above
        scratch.rename(db_dir)
    except OSError:
        # Another process of the same flow created it first: use theirs.
        if not any(db_dir.glob("part-*.sqlite3")):
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def cmd_run(args: argparse.Namespace) -> int:
    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.run import cli_main

    config = _config(args)
    _check_kafka(config)
    _migrate(config, quiet=True)
    pipeline = config.pipeline
    recovery = None
    if pipeline.recovery_dir and not args.no_recovery:
        db_dir = Path(pipeline.recovery_dir)
        _ensure_recovery_store(db_dir, pipeline.recovery_partitions, init_db_dir)
        recovery = RecoveryConfig(db_dir)
    addresses = args.addresses.split(";") if args.addresses else None
    flow = _build_flow(config, args.stop_at_end)
    dispatcher = _start_dispatcher(config) if (args.process_id == 0 or not addresses) else None
    retention = None
    if pipeline.retention_days and (args.process_id == 0 or not addresses):
        from observatory.sinks.timescale import RetentionJob

        retention = RetentionJob(config.database.url, pipeline.retention_days).start()
    log.info(
        "running: topic %s → %s, %s worker(s) per process%s%s",
        config.kafka.topics.spans,
        "TimescaleDB",
        args.workers,
        f", process {args.process_id} of {len(addresses)}" if addresses else "",
        ", until the end offsets present at start" if args.stop_at_end else "",
    )
    cli_main(
        flow,
        workers_per_process=args.workers,
        process_id=args.process_id if addresses else None,
        addresses=addresses,
        epoch_interval=timedelta(seconds=pipeline.snapshot_interval_seconds),
        recovery_config=recovery,
    )
    if retention is not None:
        retention.stop()
    if dispatcher is not None:
        dispatcher.finish()
    log.info("flow finished")
    return 0


class _Dispatcher:
    """The alert dispatcher's background thread, with a last pass at the end."""

    def __init__(self, dispatcher):
        import threading

        self.dispatcher = dispatcher
        self.stop = threading.Event()
        self.thread = dispatcher.start(self.stop)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(10)
        # So that a --stop-at-end run also delivers what its last windows raised.
        self.dispatcher.run_once()
        self.dispatcher.close()


def _start_dispatcher(config: Config) -> _Dispatcher | None:
    from observatory.sinks.alerts import AlertDispatcher

    if not config.alerts.routes:
        return None
    return _Dispatcher(AlertDispatcher.from_config(config.database.url, config.alerts))


def _build_flow(config: Config, stop_at_end: bool):
    from observatory.flows.kafka_io import KafkaUnavailable
    from observatory.flows.pipeline import build_flow

    try:
        return build_flow(config, stop_at_end=stop_at_end)
    except KafkaUnavailable as exc:
        raise UserError(str(exc)) from None


def cmd_retention(args: argparse.Namespace) -> int:
    from observatory.sinks.timescale import drop_old_chunks

    config = _config(args)
    days = args.older_than_days or config.pipeline.retention_days
    if not days:
        raise UserError("no horizon: pass --older-than-days or set pipeline.retention_days")
    with _connect_database(config) as conn:
        dropped = drop_old_chunks(conn, days)
    for table, n in dropped.items():
        print(f"{table}: dropped {n} chunk(s) older than {days} days")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    _migrate(_config(args))
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    print(f"# {args.file}: valid. Effective configuration (secrets hidden):")
    print(effective_config_yaml(config), end="")
    return 0


def cmd_infra(args: argparse.Namespace) -> int:
    script = infra_dir() / f"{args.action}.sh"
    return subprocess.call(["bash", str(script)])


def cmd_simulate(args: argparse.Namespace) -> int:
    from observatory.flows.simulate import run_simulation

    return run_simulation(_config(args), args)


def cmd_detect(args: argparse.Namespace) -> int:
    from observatory.flows import replay

    config = _config(args)
    with _connect_database(config) as conn:
        return replay.main(config, args, conn)


def cmd_summary(args: argparse.Namespace) -> int:
    from observatory.flows.summary import print_summary

    config = _config(args)
    with _connect_database(config) as conn:
        print_summary(conn, limit=args.limit)
    return 0


# --- parser --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="observatory", description="Real-time analytics for LLM and agent telemetry."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            "-c",
            default=os.environ.get("OBSERVATORY_CONFIG"),
            help="YAML config file (default: $OBSERVATORY_CONFIG, else built-in defaults)",
        )

    run = sub.add_parser("run", help="run the main flow")
    with_config(run)
    run.add_argument("--workers", "-w", type=int, default=1, help="worker threads per process")
    run.add_argument("--process-id", "-i", type=int, default=0, help="this process's index")
    run.add_argument(
        "--addresses", "-a", help='all processes\' host:port, ";"-separated (multi-process)'
    )
    run.add_argument(
        "--stop-at-end",
        action="store_true",
        help="read up to the end offsets present at start, flush every window, exit 0",
    )
    run.add_argument("--no-recovery", action="store_true", help="ignore pipeline.recovery_dir")
    run.set_defaults(func=cmd_run)

    migrate = sub.add_parser("migrate", help="apply pending SQL migrations")
    with_config(migrate)
    migrate.set_defaults(func=cmd_migrate)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a file and print the effective config")
    check.add_argument("file")
    check.set_defaults(func=cmd_config_check)

    infra = sub.add_parser("infra", help="install/start/stop the local Kafka and TimescaleDB")
    infra.add_argument("action", choices=["up", "down", "status"])
    infra.set_defaults(func=cmd_infra)

    simulate = sub.add_parser("simulate", help="produce realistic GenAI traffic to Kafka")
    with_config(simulate)
    from observatory.flows.simulate import add_arguments

    add_arguments(simulate)
    simulate.set_defaults(func=cmd_simulate)

    detect = sub.add_parser(
        "detect", help="replay stored aggregates through a detector config (offline tuning)"
    )
    with_config(detect)
    detect.add_argument("--from", dest="start", required=True, help="ISO time, or 7d/12h/30m ago")
    detect.add_argument("--to", dest="end", default="0m", help="ISO time, or 1h ago (default now)")
    detect.set_defaults(func=cmd_detect)

    retention = sub.add_parser("retention", help="drop TimescaleDB chunks past the horizon now")
    with_config(retention)
    retention.add_argument("--older-than-days", type=int, default=None)
    retention.set_defaults(func=cmd_retention)

    summary = sub.add_parser("summary", help="print what landed in TimescaleDB")
    with_config(summary)
    summary.add_argument("--limit", type=int, default=15)
    summary.set_defaults(func=cmd_summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (ConfigError, UserError, AlertConfigError) as exc:
        for line in str(exc).splitlines():
            print(f"observatory: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("observatory: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
