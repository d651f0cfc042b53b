"""Check two ``llm_stats``-shaped tables against each other.

Same keys (bucket, tenant, service, provider, model, operation, tool) on both sides;
calls, errors, token sums and unpriced calls equal; cost within 1e-9 (absolute);
p95 latency within 1% (ours is a sketch with ≤1% relative error, the peer's
exact, both at rank floor(0.95·(n−1))). p50/p99 are checked the same way and the
max within 1e-6, and reported, but only the required fields decide ``ok``.
"""

from __future__ import annotations

import pandas as pd

KEY = ["bucket", "tenant", "service", "provider", "model", "operation", "tool"]
EXACT = [
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "unpriced_calls",
]


def load(url: str, table: str, window_seconds: int = 60) -> pd.DataFrame:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(f"SELECT * FROM {table} WHERE window_seconds = %s", (window_seconds,))
        frame = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    return frame


def compare(ours: pd.DataFrame, theirs: pd.DataFrame) -> dict:
    merged = ours.merge(theirs, on=KEY, how="outer", suffixes=("_ours", "_peer"), indicator=True)
    only_ours = int((merged["_merge"] == "left_only").sum())
    only_peer = int((merged["_merge"] == "right_only").sum())
    both = merged[merged["_merge"] == "both"]
    mismatches: dict[str, int] = {}
    for column in EXACT:
        bad = int((both[f"{column}_ours"] != both[f"{column}_peer"]).sum())
        if bad:
            mismatches[column] = bad
    cost_diff = (both["cost_usd_ours"] - both["cost_usd_peer"]).abs()
    cost_bad = int((cost_diff > 1e-9).sum())
    if cost_bad:
        mismatches["cost_usd"] = cost_bad
    quantiles = {}
    for column in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "ttft_p95_ms"):
        a, b = both[f"{column}_ours"].astype(float), both[f"{column}_peer"].astype(float)
        null_mismatch = int((a.isna() != b.isna()).sum())
        present = a.notna() & b.notna()
        rel = (a[present] - b[present]).abs() / b[present].abs().clip(lower=1e-9)
        quantiles[column] = {
            "worst_rel_error": float(rel.max()) if len(rel) else 0.0,
            "over_1pct": int((rel > 0.01).sum()) + null_mismatch,
        }
    max_diff = (both["latency_max_ms_ours"] - both["latency_max_ms_peer"]).abs()
    p95_bad = quantiles["latency_p95_ms"]["over_1pct"]
    ok = only_ours == 0 and only_peer == 0 and not mismatches and p95_bad == 0 and len(both) > 0
    return {
        "ok": bool(ok),
        "rows_ours": len(ours),
        "rows_peer": len(theirs),
        "rows_matched": len(both),
        "only_ours": only_ours,
        "only_peer": only_peer,
        "mismatched_rows_by_column": mismatches,
        "worst_cost_abs_diff": float(cost_diff.max()) if len(cost_diff) else 0.0,
        "quantiles": quantiles,
        "latency_max_worst_abs_diff_ms": float(max_diff.max()) if len(max_diff) else 0.0,
        "calls_ours": int(ours["calls"].sum()) if len(ours) else 0,
        "calls_peer": int(theirs["calls"].sum()) if len(theirs) else 0,
    }


def summary(result: dict) -> str:
    if result["ok"]:
        return (
            f"equal: {result['rows_matched']:,} rows, {result['calls_ours']:,} calls; "
            f"worst p95 error {result['quantiles']['latency_p95_ms']['worst_rel_error']:.2%}, "
            f"worst cost diff {result['worst_cost_abs_diff']:.1e}"
        )
    parts = []
    if result["only_ours"] or result["only_peer"]:
        parts.append(f"{result['only_ours']} rows only ours, {result['only_peer']} only peer")
    if result["mismatched_rows_by_column"]:
        parts.append(
            "mismatched "
            + ", ".join(f"{k}: {v}" for k, v in result["mismatched_rows_by_column"].items())
        )
    p95 = result["quantiles"]["latency_p95_ms"]
    if p95["over_1pct"]:
        parts.append(f"p95 over 1% in {p95['over_1pct']} rows")
    if not result["rows_matched"]:
        parts.append("no rows matched")
    return "DIFFERENT: " + "; ".join(parts)
