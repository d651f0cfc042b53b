"""Simulated traffic for the fault scenarios, with the tables it must produce.

The simulator (flows/traffic.py) records every call it meant; pandas turns
those into the expected rows (flows/groundtruth.py), independently of the
pipeline's windowing, sketches and sessions code.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import pandas as pd
from harness import Check, compare_counters, compare_sessions, compare_windows, counters, table

from observatory.flows.groundtruth import calls_frame, session_stats, window_stats
from observatory.flows.simulate import make_records
from observatory.flows.traffic import INCIDENT_KINDS, NS, Incident, Simulator, plan_incidents


@dataclass
class Workload:
    records: list[tuple[bytes, list]]
    spans: int
    calls: int
    non_genai_spans: int
    malformed: list[int]  #: indexes (in ``records``) of the malformed records
    incidents: list[Incident]
    minute: pd.DataFrame
    hourly: pd.DataFrame
    sessions: pd.DataFrame
    #: Bad records added to the simulator's (hostile input). Each is one dead letter,
    #: of the whole record or of the one span it holds, so the span total is not
    #: known exactly; the accounting identity still is.
    added_bad: int = 0

    @property
    def expected_counters(self) -> dict[str, int]:
        """The pipeline's accounting: each record and span counted once, nothing late."""
        expected = {
            "records": len(self.records),
            "spans_normalized": self.calls,
            "spans_skipped_non_genai": self.non_genai_spans,
            "dead_letters": len(self.malformed) + self.added_bad,
            "late_calls_dead_lettered": 0,
            "spans_unaccounted": 0,
        }
        if not self.added_bad:
            expected["spans"] = self.spans
            expected["spans_dead_lettered"] = 0
        return expected


def accounting(raw: dict[str, int]) -> dict[str, int]:
    """pipeline_counters totals, plus the two derived figures the checks use."""
    out = dict(raw)
    out["dead_letters"] = raw.get("records_dead_lettered", 0) + raw.get("spans_dead_lettered", 0)
    out["spans_unaccounted"] = raw.get("spans", 0) - (
        raw.get("spans_normalized", 0)
        + raw.get("spans_skipped_non_genai", 0)
        + raw.get("spans_dead_lettered", 0)
    )
    return out


def simulate(
    *,
    calls: int,
    minutes: float,
    seed: int,
    incidents: bool = False,
    malformed_rate: float = 0.0,
    max_spans: int = 50,
) -> Workload:
    """Traffic ending at the last midnight UTC, as Collector-style records: recent
    enough for any skew limit used here, and the same time of day (so the same
    daily traffic cycle, the same alerts) in every run of a seed."""
    end_ns = int(time.time()) // 86400 * 86400 * NS
    start_ns = end_ns - int(minutes * 60 * NS)
    planned = []
    if incidents:
        planned = plan_incidents(
            random.Random(seed),
            start_ns=start_ns,
            end_ns=end_ns - 20 * 60 * NS,
            kinds=INCIDENT_KINDS,
            per_kind=1,
            tenants=["tenant-a", "tenant-b", "tenant-c"],
        )
    sim = Simulator(calls=calls, start_ns=start_ns, end_ns=end_ns, seed=seed, incidents=planned)
    produced = list(
        make_records(
            sim.generate(),
            random.Random(seed),
            encoding="otlp_proto",
            max_spans=max_spans,
            malformed_rate=malformed_rate,
            summary=sim.summary,
        )
    )
    return from_truth(
        records=[(value, headers) for value, headers, _ in produced],
        malformed=[i for i, (_, _, n) in enumerate(produced) if n == 0],
        sim=sim,
    )


def from_truth(*, records, malformed, sim: Simulator, extra_calls=()) -> Workload:
    truth = calls_frame([*sim.truth, *extra_calls])
    return Workload(
        records=records,
        spans=sim.summary.spans,
        calls=len(truth),
        non_genai_spans=sim.summary.non_genai_spans,
        malformed=malformed,
        incidents=list(sim.incidents),
        minute=window_stats(truth),
        hourly=window_stats(truth, window_s=3600),
        sessions=session_stats(truth),
    )


def check_tables(database_url: str, workload: Workload) -> Check:
    """Every table the flow writes against the ground truth; nothing is asserted here."""
    check = Check()
    check.add(compare_windows("llm_stats", workload.minute, table(database_url, "llm_stats")))
    check.add(
        compare_windows(
            "llm_stats_hourly", workload.hourly, table(database_url, "llm_stats_hourly")
        )
    )
    check.add(compare_sessions(workload.sessions, table(database_url, "agent_sessions")))
    check.add(compare_counters(workload.expected_counters, accounting(counters(database_url))))
    return check
