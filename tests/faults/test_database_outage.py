"""PostgreSQL stopped for 30 s (full scale; 10 s small) in the middle of a run, then started again.

The sink retries the same batch forever (database.max_retry_seconds = 0) and
blocks its worker meanwhile, so nothing new is read: the backlog stays in
Kafka, memory stays flat, and after the restart the flow catches up to
exactly the tables the ground truth gives.
"""

from __future__ import annotations

import re
import time

from harness import (
    Result,
    check_dead_letters,
    produce,
    read_topic,
    start_until_first_rows,
    write_config,
)
from workload import check_tables

#: Resident memory the flow may gain while the database is down. It holds one
#: batch per worker and librdkafka's bounded prefetch; it must not buffer the backlog.
MAX_GROWTH_MB = 64.0
MAX_PEAK_MB = 1024.0
RETRY_LINE = re.compile(r"writing \d+ rows to \w+ failed \(")


def test_database_down_mid_run_then_exact_tables(
    services, database_url, new_topic, steady_workload, load, tmp_path, record_result
):
    work = steady_workload
    outage_s = load.database_down_s
    topic, dlq = new_topic(), new_topic(1)
    landed = produce(services.bootstrap, topic, work.records)
    config = write_config(tmp_path / "flow.yaml", services, topic, dlq)

    flow, rows_before = start_until_first_rows(
        config, tmp_path / "flow.log", database_url, before="the outage"
    )

    services.stop_db()
    down_at = time.monotonic()
    rss_at_stop = flow.rss_mb()
    rss_during = [rss_at_stop]
    while time.monotonic() - down_at < outage_s:
        assert flow.running(), f"the flow exited while the database was down:\n{flow.tail()}"
        rss_during.append(flow.rss_mb())
        time.sleep(0.5)
    services.start_db()
    back_at = time.monotonic()

    assert flow.wait(timeout=300) == 0, flow.tail()
    catch_up_s = time.monotonic() - back_at
    retries = RETRY_LINE.findall(flow.text())
    tables = check_tables(database_url, work)
    dead = check_dead_letters(read_topic(services.bootstrap, dlq), landed, work.malformed)
    growth = max(rss_during) - rss_at_stop

    result = record_result(
        Result(
            scenario="database outage",
            spans=work.spans,
            records=len(work.records),
            faults=f"PostgreSQL stopped {outage_s:.0f}s mid-run",
            notes={
                "rows_before_outage": rows_before,
                "seconds_from_database_back_to_done": round(catch_up_s, 1),
                "write_retries_logged": len(retries),
                "rss_at_stop_mb": round(rss_at_stop, 1),
                "rss_growth_during_outage_mb": round(growth, 1),
                "peak_rss_mb": round(flow.peak_rss_mb or 0, 1),
                "dead_letters_checked": dead.rows,
            },
        )
    )
    result.take(tables)
    assert retries, "the flow never saw the outage (no write was retried)"
    assert 0 < rows_before < len(work.minute), "the outage did not fall mid-run"
    assert tables.exact, tables.report()
    assert dead.exact, dead.report()
    assert growth <= MAX_GROWTH_MB, f"memory grew {growth:.0f} MB while the database was down"
    assert (flow.peak_rss_mb or 0) <= MAX_PEAK_MB
