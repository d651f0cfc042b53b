"""Expected aggregates computed independently with pandas, for tests and benchmarks.

Input is the simulator's list of the calls it meant (or its ``calls.csv.gz``);
nothing here uses the pipeline's windowing, sketches or sessions code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from observatory.schemas.records import LlmCall

KEY = ["bucket", "tenant", "service", "provider", "model", "operation", "tool"]
#: The documented rule for the ``tool`` key: the tool name of ``execute_tool``
#: calls, cut to 128 characters; '' for every other operation.
TOOL_OPERATION = "execute_tool"
MAX_TOOL_CHARS = 128


def calls_frame(calls: Sequence[LlmCall] | Path | str) -> pd.DataFrame:
    if isinstance(calls, str | Path):
        frame = pd.read_csv(
            calls, keep_default_na=False, na_values={"cost_usd": [""], "ttft_ms": [""]}
        )
        for column in ("tenant", "service", "provider", "model", "operation", "session_id", "tool"):
            frame[column] = frame[column].astype(str)
        frame["is_error"] = frame["is_error"].astype(str) == "True"
        return frame
    return pd.DataFrame(
        {
            "end_ns": [c.end_ns for c in calls],
            "duration_ms": [c.duration_ms for c in calls],
            "tenant": [c.tenant for c in calls],
            "service": [c.service for c in calls],
            "provider": [c.provider for c in calls],
            "model": [c.model for c in calls],
            "operation": [c.operation for c in calls],
            "session_id": [c.session_id for c in calls],
            "trace_id": [c.trace_id for c in calls],
            "tool": [c.tool for c in calls],
            "input_tokens": [c.input_tokens for c in calls],
            "output_tokens": [c.output_tokens for c in calls],
            "cached_input_tokens": [c.cached_input_tokens for c in calls],
            "reasoning_tokens": [c.reasoning_tokens for c in calls],
            "cost_usd": [c.cost_usd for c in calls],
            "ttft_ms": [c.ttft_ms for c in calls],
            "is_error": [c.is_error for c in calls],
        }
    )


def window_stats(frame: pd.DataFrame, window_s: int = 60) -> pd.DataFrame:
    """The expected ``llm_stats`` rows (quantiles at rank floor(q*(n-1)), as documented)."""
    frame = frame.copy()
    window_ns = window_s * 1_000_000_000
    # The key's tool (on the copy: the caller's frame keeps every call's tool name).
    frame["tool"] = (
        frame["tool"].str.slice(0, MAX_TOOL_CHARS).where(frame["operation"] == TOOL_OPERATION, "")
    )
    frame["bucket"] = pd.to_datetime(frame["end_ns"] - frame["end_ns"] % window_ns, utc=True)
    frame["errors"] = frame["is_error"].astype(int)
    frame["unpriced_calls"] = frame["cost_usd"].isna().astype(int)
    frame["cost_usd"] = frame["cost_usd"].fillna(0.0)
    frame["ttft_ms"] = frame["ttft_ms"].astype(float)  # None (no call reported it) → NaN
    grouped = frame.groupby(KEY, sort=True)
    out = grouped.agg(
        calls=("duration_ms", "size"),
        errors=("errors", "sum"),
        input_tokens=("input_tokens", "sum"),
        output_tokens=("output_tokens", "sum"),
        cached_input_tokens=("cached_input_tokens", "sum"),
        reasoning_tokens=("reasoning_tokens", "sum"),
        cost_usd=("cost_usd", "sum"),
        unpriced_calls=("unpriced_calls", "sum"),
        latency_max_ms=("duration_ms", "max"),
    )
    for name, q in (("latency_p50_ms", 0.5), ("latency_p95_ms", 0.95), ("latency_p99_ms", 0.99)):
        out[name] = grouped["duration_ms"].quantile(q, interpolation="lower")
    out["ttft_p95_ms"] = grouped["ttft_ms"].quantile(0.95, interpolation="lower")
    return out.reset_index()


def session_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """Expected per-session counts and sums (sessions keyed by tenant + session id)."""
    frame = frame[frame["session_id"] != ""].copy()
    llm = frame["operation"].isin(["chat", "text_completion", "embeddings"])
    frame["llm_calls"] = llm.astype(int)
    frame["tool_calls"] = (frame["operation"] == "execute_tool").astype(int)
    frame["in_llm"] = frame["input_tokens"].where(llm, 0)
    frame["out_llm"] = frame["output_tokens"].where(llm, 0)
    frame["cost_llm"] = frame["cost_usd"].fillna(0.0).where(llm, 0.0)
    return (
        frame.groupby(["tenant", "session_id"])
        .agg(
            llm_calls=("llm_calls", "sum"),
            tool_calls=("tool_calls", "sum"),
            input_tokens=("in_llm", "sum"),
            output_tokens=("out_llm", "sum"),
            cost_usd=("cost_llm", "sum"),
        )
        .reset_index()
    )
