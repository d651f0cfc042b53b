"""The Kafka broker stopped in the middle of a run and started again.

The source's consumers and the dead-letter producer reconnect on their own;
reading resumes at the offset each partition had reached, so nothing is
skipped and nothing read twice.
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

PARTITIONS = 4
#: What the source's consumers (librdkafka, or our warnings) print when the broker goes away.
BROKER_GONE = re.compile(
    r"rdkafka#consumer-\d+.*(?:Connection refused|Disconnected)|Kafka \S+-\d+: "
)
#: A small prefetch per partition, as with a topic far larger than memory: the
#: consumers must still be fetching when the broker goes, instead of holding the
#: whole (small) test topic already. Consumer settings; other clients ignore them.
SMALL_PREFETCH = {"queued.max.messages.kbytes": 256, "max.partition.fetch.bytes": 65536}


def test_broker_restart_mid_run_then_exact_tables(
    services, database_url, new_topic, steady_workload, load, tmp_path, record_result
):
    work = steady_workload
    down_s = load.broker_down_s
    topic, dlq = new_topic(PARTITIONS), new_topic(1)
    landed = produce(services.bootstrap, topic, work.records)
    config = write_config(
        tmp_path / "flow.yaml", services, topic, dlq, kafka={"client": SMALL_PREFETCH}
    )

    flow, rows_before = start_until_first_rows(
        config, tmp_path / "flow.log", database_url, before="the broker stopped"
    )

    services.stop_kafka()
    stopped_at = time.monotonic()
    while time.monotonic() - stopped_at < down_s:
        assert flow.running(), f"the flow exited while the broker was down:\n{flow.tail()}"
        time.sleep(0.5)
    services.start_kafka()

    assert flow.wait(timeout=300) == 0, flow.tail()
    log = flow.text()
    complaints = BROKER_GONE.findall(log)
    end_offset_warnings = log.count("cannot read the end offset")
    tables = check_tables(database_url, work)
    dead = check_dead_letters(read_topic(services.bootstrap, dlq), landed, work.malformed)

    result = record_result(
        Result(
            scenario="broker restart",
            spans=work.spans,
            records=len(work.records),
            faults=f"Kafka stopped {down_s:.0f}s mid-run, restarted",
            notes={
                "rows_before_stop": rows_before,
                "broker_errors_logged": len(complaints),
                "end_offset_warnings": end_offset_warnings,
                "peak_rss_mb": round(flow.peak_rss_mb or 0, 1),
                "dead_letters_checked": dead.rows,
            },
        )
    )
    result.take(tables)
    assert complaints, "the flow never noticed the broker was gone"
    assert 0 < rows_before < len(work.minute), "the restart did not fall mid-run"
    assert tables.exact, tables.report()
    assert dead.exact, dead.report()
    # Said once per partition and outage, not once per poll (it was 1,300 lines in 25 s).
    assert end_offset_warnings <= 4 * PARTITIONS, f"{end_offset_warnings} end-offset warnings"
