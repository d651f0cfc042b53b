"""``observatory summary``: what landed in TimescaleDB, as a person reads it."""

from __future__ import annotations

import psycopg

_QUERIES = (
    (
        "Latest per-minute rows (llm_stats)",
        """SELECT bucket, tenant, service, provider, model, operation, tool, calls, errors,
                  input_tokens, output_tokens, round(cost_usd::numeric, 4) AS cost_usd,
                  round(latency_p95_ms::numeric, 1) AS p95_ms
             FROM llm_stats ORDER BY bucket DESC, calls DESC LIMIT %(limit)s""",
    ),
    (
        "Spend by tenant and model (all time)",
        """SELECT tenant, model, sum(calls) AS calls,
                  round(sum(cost_usd)::numeric, 4) AS cost_usd, sum(unpriced_calls) AS unpriced
             FROM llm_stats WHERE model <> ''
            GROUP BY tenant, model ORDER BY cost_usd DESC LIMIT %(limit)s""",
    ),
    (
        "Tool calls and errors by service and tool (all time)",
        """SELECT service, tool, sum(calls) AS calls, sum(errors) AS errors,
                  round(sum(errors)::numeric / nullif(sum(calls), 0), 3) AS error_rate
             FROM llm_stats WHERE operation = 'execute_tool'
            GROUP BY service, tool ORDER BY error_rate DESC NULLS LAST LIMIT %(limit)s""",
    ),
    (
        "Pipeline counters",
        """SELECT name, sum(value) AS value FROM pipeline_counters GROUP BY name ORDER BY name""",
    ),
)


def _table(columns: list[str], rows: list[tuple]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [
        max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)
    ]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def print_summary(conn: psycopg.Connection, *, limit: int = 15) -> int:
    """Print the summary tables; returns the number of llm_stats rows."""
    total = conn.execute("SELECT count(*) FROM llm_stats").fetchone()[0]
    print(f"llm_stats holds {total} rows")
    for title, query in _QUERIES:
        cur = conn.execute(query, {"limit": limit})
        columns = [d.name for d in cur.description]
        print(f"\n== {title}\n{_table(columns, cur.fetchall())}")
    return total
