"""Window statistics of LLM calls: accumulate, merge, and turn into rows.

The decode step pre-aggregates a whole batch of calls into one
:class:`StatsAcc` per (key, window) before anything crosses a worker
boundary, so per-span work in the dataflow stays at a few attribute updates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from observatory.operators.sketch import QuantileSketch
from observatory.schemas.records import LlmCall

#: (tenant, service, provider, model, operation, tool)
StatsKey = tuple[str, str, str, str, str, str]
#: (StatsKey, window start in ns)
WindowKey = tuple[StatsKey, int]

_MAX_EXEMPLARS = 3
#: The operation whose calls are keyed by their tool name too.
TOOL_OPERATION = "execute_tool"
#: Longest tool name kept in the key, in characters (longer names are cut).
#: Tool names come from applications: the cut bounds the key's size (and so the
#: unique index entry in TimescaleDB) whatever a span carries. Model APIs limit
#: tool (function) names to 64 or 128 characters, so real names are never cut.
MAX_TOOL_KEY_CHARS = 128


def tool_key(call: LlmCall) -> str:
    """The ``tool`` dimension of a call: its tool name for ``execute_tool``, else ''.

    >>> tool_key(LlmCall(end_ns=0, operation="execute_tool", tool="search_web"))
    'search_web'
    >>> tool_key(LlmCall(end_ns=0, operation="chat", tool="search_web"))
    ''
    >>> len(tool_key(LlmCall(end_ns=0, operation="execute_tool", tool="x" * 500)))
    128
    """
    if call.operation != TOOL_OPERATION:
        return ""
    return call.tool[:MAX_TOOL_KEY_CHARS]


def stats_key(call: LlmCall) -> StatsKey:
    return (
        call.tenant,
        call.service,
        call.provider,
        call.model,
        call.operation,
        tool_key(call),
    )


class StatsAcc:
    """Counts, sums and latency sketches of the calls of one key in one window.

    >>> acc = StatsAcc()
    >>> acc.add(LlmCall(end_ns=0, duration_ms=120.0, input_tokens=10, cost_usd=0.5))
    >>> acc.add(LlmCall(end_ns=0, duration_ms=80.0, is_error=True))
    >>> acc.calls, acc.errors, acc.input_tokens, acc.cost_usd, acc.unpriced_calls
    (2, 1, 10, 0.5, 1)
    """

    __slots__ = (
        "cached_input_tokens",
        "calls",
        "cost_usd",
        "errors",
        "exemplars",
        "input_tokens",
        "latency",
        "latency_max_ms",
        "output_tokens",
        "reasoning_tokens",
        "ttft",
        "unpriced_calls",
    )

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_input_tokens = 0
        self.reasoning_tokens = 0
        self.cost_usd = 0.0
        self.unpriced_calls = 0
        self.latency = QuantileSketch()
        self.latency_max_ms = 0.0
        self.ttft: QuantileSketch | None = None
        #: (duration_ms, trace_id) of the slowest calls, for alerts to link to.
        self.exemplars: list[tuple[float, str]] = []

    def __getstate__(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state):
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)

    def add(self, call: LlmCall) -> None:
        self.calls += 1
        if call.is_error:
            self.errors += 1
        self.input_tokens += call.input_tokens
        self.output_tokens += call.output_tokens
        self.cached_input_tokens += call.cached_input_tokens
        self.reasoning_tokens += call.reasoning_tokens
        if call.cost_usd is None:
            self.unpriced_calls += 1
        else:
            self.cost_usd += call.cost_usd
        duration = call.duration_ms
        self.latency.add(duration)
        if duration > self.latency_max_ms:
            self.latency_max_ms = duration
        if call.ttft_ms is not None:
            if self.ttft is None:
                self.ttft = QuantileSketch()
            self.ttft.add(call.ttft_ms)
        if call.trace_id:
            self._offer_exemplar(duration, call.trace_id)

    def _offer_exemplar(self, duration: float, trace_id: str) -> None:
        exemplars = self.exemplars
        if len(exemplars) < _MAX_EXEMPLARS:
            exemplars.append((duration, trace_id))
            exemplars.sort(reverse=True)
        elif (duration, trace_id) > exemplars[-1]:
            exemplars[-1] = (duration, trace_id)
            exemplars.sort(reverse=True)

    def merge(self, other: StatsAcc) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_input_tokens += other.cached_input_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.cost_usd += other.cost_usd
        self.unpriced_calls += other.unpriced_calls
        self.latency.merge(other.latency)
        self.latency_max_ms = max(self.latency_max_ms, other.latency_max_ms)
        if other.ttft is not None:
            if self.ttft is None:
                self.ttft = other.ttft.copy()
            else:
                self.ttft.merge(other.ttft)
        for duration, trace_id in other.exemplars:
            self._offer_exemplar(duration, trace_id)

    def copy(self) -> StatsAcc:
        clone = StatsAcc()
        clone.merge(self)
        return clone


class PartialTally:
    """Counts and sums of one key over part of a window: what an early check scores.

    No sketches (percentiles are judged on closed windows only), so tallying
    a partial costs a few additions.

    >>> acc = StatsAcc()
    >>> acc.add(LlmCall(end_ns=0, duration_ms=90.0, input_tokens=7, cost_usd=0.25,
    ...                 is_error=True, trace_id="t1"))
    >>> tally = PartialTally()
    >>> tally.add(acc); tally.add(acc)
    >>> tally.calls, tally.errors, tally.input_tokens, tally.cost_usd, tally.exemplars
    (2, 2, 14, 0.5, [(90.0, 't1'), (90.0, 't1')])
    """

    __slots__ = ("calls", "cost_usd", "errors", "exemplars", "input_tokens")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.input_tokens = 0
        self.cost_usd = 0.0
        self.exemplars: list[tuple[float, str]] = []

    def add(self, acc: StatsAcc | PartialTally) -> None:
        self.calls += acc.calls
        self.errors += acc.errors
        self.input_tokens += acc.input_tokens
        self.cost_usd += acc.cost_usd
        if acc.exemplars:
            self.exemplars = sorted(self.exemplars + acc.exemplars, reverse=True)[:_MAX_EXEMPLARS]


def preaggregate(calls: Iterable[LlmCall], window_ns: int) -> dict[WindowKey, StatsAcc]:
    """Group calls by (key, tumbling window start) in one pass.

    >>> calls = [LlmCall(end_ns=n * 30_000_000_000, model="m") for n in range(4)]
    >>> parts = preaggregate(calls, 60_000_000_000)
    >>> sorted((start, acc.calls) for (_, start), acc in parts.items())
    [(0, 2), (60000000000, 2)]
    """
    groups: dict[WindowKey, StatsAcc] = {}
    for call in calls:
        window_key = (stats_key(call), call.end_ns - call.end_ns % window_ns)
        acc = groups.get(window_key)
        if acc is None:
            acc = groups[window_key] = StatsAcc()
        acc.add(call)
    return groups


@dataclass(slots=True, frozen=True)
class StatsRow:
    """One row of ``llm_stats`` (or ``llm_stats_hourly``)."""

    bucket: datetime
    window_seconds: int
    tenant: str
    service: str
    provider: str
    model: str
    operation: str
    tool: str  #: the tool name of ``execute_tool`` rows, '' for every other operation
    calls: int
    errors: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    cost_usd: float
    unpriced_calls: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float
    ttft_p95_ms: float | None
    exemplar_trace_ids: tuple[str, ...]
    hourly: bool = False  #: a row of ``llm_stats_hourly`` rather than ``llm_stats``

    @classmethod
    def from_acc(
        cls, key: StatsKey, start_ns: int, window_s: int, acc: StatsAcc, *, hourly: bool = False
    ) -> StatsRow:
        tenant, service, provider, model, operation, tool = key
        p50, p95, p99 = acc.latency.quantiles([0.50, 0.95, 0.99])
        return cls(
            bucket=datetime.fromtimestamp(start_ns // 1_000_000_000, tz=UTC),
            window_seconds=window_s,
            tenant=tenant,
            service=service,
            provider=provider,
            model=model,
            operation=operation,
            tool=tool,
            calls=acc.calls,
            errors=acc.errors,
            input_tokens=acc.input_tokens,
            output_tokens=acc.output_tokens,
            cached_input_tokens=acc.cached_input_tokens,
            reasoning_tokens=acc.reasoning_tokens,
            cost_usd=acc.cost_usd,
            unpriced_calls=acc.unpriced_calls,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            latency_p99_ms=p99,
            latency_max_ms=acc.latency_max_ms,
            ttft_p95_ms=acc.ttft.quantile(0.95) if acc.ttft is not None else None,
            exemplar_trace_ids=tuple(trace_id for _, trace_id in acc.exemplars),
            hourly=hourly,
        )
