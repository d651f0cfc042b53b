"""A model of multi-tenant LLM-agent traffic, with labelled incidents.

Sessions start as a Poisson process whose rate follows a daily cycle (±50%);
each session is an ``invoke_agent`` span with LLM calls and tool calls under
it, made with the real OpenTelemetry SDK in one of six attribute dialects.
Incidents change the traffic of one subject for a while: a cost spike (more
calls), a runaway agent loop (one session repeating the same tool call fast),
a latency degradation (a model's latency ×k), an error surge (a service and
model failing often), a tool error surge (one tool of one service failing
often) and a token blow-up (input tokens per call growing). Tool calls fail
at a small base rate too, drawn from their own random stream so that the
rest of the traffic of a seed does not depend on it.

:meth:`Simulator.stream` yields spans in end-time order with bounded memory,
so the same model serves a 24-hour replay and a paced live run.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from observatory.schemas.pricing import PriceTable
from observatory.schemas.records import LlmCall

NS = 1_000_000_000
MINUTE_NS = 60 * NS
DIALECTS = ("otel", "otel_deprecated", "openllmetry", "openinference", "openlit", "langfuse")
INCIDENT_KINDS = (
    "cost_spike",
    "runaway_loop",
    "latency_degradation",
    "error_surge",
    "tool_error_surge",
    "token_blowup",
)

#: (provider as gen_ai.provider.name, model, latency median ms, input tokens median)
MODELS = (
    ("openai", "gpt-4o-2024-08-06", 900.0, 1200),
    ("openai", "gpt-4o-mini", 500.0, 800),
    ("anthropic", "claude-sonnet-4-5-20250929", 1400.0, 1500),
    ("anthropic", "claude-haiku-4-5", 600.0, 900),
    ("gcp.gemini", "gemini-2.5-flash", 700.0, 1000),
    ("mistral_ai", "mistral-small", 650.0, 700),
    ("deepseek", "deepseek-chat", 1100.0, 900),
    ("x_ai", "grok-3-mini", 800.0, 600),
)
SERVICES = ("chat-api", "agent-worker")
EXPENSIVE = ("gpt-4o-2024-08-06", "claude-sonnet-4-5-20250929")
TOOLS = ("search_web", "read_file", "run_sql", "call_api", "summarize")
AGENTS = ("support-agent", "research-agent", "coding-agent")
BASE_ERROR_RATE = 0.02
TOOL_BASE_ERROR_RATE = 0.02
#: Spread (sigma of the log) of a call's input tokens around its model's median.
INPUT_TOKENS_SIGMA = 0.5
#: Mean LLM calls per session (steps = 1 + Exp(mean 3), capped).
_MEAN_STEPS = 3.5


@dataclass(frozen=True, slots=True)
class Incident:
    """One injected incident and its subject (the dimensions it affects)."""

    kind: str
    start_ns: int
    end_ns: int
    factor: float
    tenant: str = ""
    service: str = ""
    provider: str = ""
    model: str = ""
    agent: str = ""
    tool: str = ""

    def active(self, t_ns: int) -> bool:
        return self.start_ns <= t_ns < self.end_ns

    def subject(self) -> dict[str, str]:
        fields = ("tenant", "service", "provider", "model", "agent", "tool")
        return {name: getattr(self, name) for name in fields if getattr(self, name)}

    def as_dict(self) -> dict:
        return asdict(self)


class _Collector(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass
class Summary:
    records: int = 0
    spans: int = 0
    genai_spans: int = 0
    non_genai_spans: int = 0
    malformed_records: int = 0
    calls_by_dialect: dict[str, int] = field(default_factory=dict)
    first_event_ns: int = 0
    last_event_ns: int = 0


def seasonal_factor(t_ns: int) -> float:
    """Daily cycle of traffic, between 0.5 and 1.5 of the mean."""
    return 1.0 + 0.5 * math.sin(2 * math.pi * ((t_ns / NS) % 86400) / 86400)


def plan_incidents(
    rng: random.Random,
    *,
    start_ns: int,
    end_ns: int,
    kinds: Sequence[str] = INCIDENT_KINDS,
    per_kind: int = 1,
    tenants: Sequence[str],
    duration_ns: int = 10 * MINUTE_NS,
    quiet_head_ns: int = 60 * MINUTE_NS,
) -> list[Incident]:
    """Spread ``per_kind`` incidents of each kind over the range, never overlapping.

    The first ``quiet_head_ns`` stay incident-free so that detectors can warm up.
    """
    slots = len(kinds) * per_kind
    usable = end_ns - start_ns - quiet_head_ns
    if slots == 0 or usable < slots * (duration_ns + 10 * MINUTE_NS):
        raise ValueError("the time range is too short for that many incidents")
    gap = usable // slots
    order = [kind for _ in range(per_kind) for kind in kinds]
    incidents = []
    for i, kind in enumerate(order):
        start = start_ns + quiet_head_ns + i * gap + rng.randrange(0, max(gap - duration_ns, 1))
        start -= start % MINUTE_NS
        provider, model, _, _ = rng.choice(MODELS)
        tenant, service = rng.choice(tenants), rng.choice(SERVICES)
        end = start + duration_ns
        if kind == "cost_spike":
            # A spike worth paging about: on an expensive model.
            provider, model, _, _ = rng.choice([m for m in MODELS if m[1] in EXPENSIVE])
            incidents.append(Incident(kind, start, end, 10.0, tenant, service, provider, model))
        elif kind == "runaway_loop":
            incidents.append(
                Incident(kind, start, end, 30.0, tenant, service, agent=rng.choice(AGENTS))
            )
        elif kind == "latency_degradation":
            incidents.append(Incident(kind, start, end, 4.0, provider=provider, model=model))
        elif kind == "error_surge":
            incidents.append(
                Incident(kind, start, end, 0.4, service=service, model=model, provider=provider)
            )
        elif kind == "tool_error_surge":
            # One tool of one service failing (its backend down), on every tenant.
            tool = rng.choice(TOOLS)
            incidents.append(Incident(kind, start, end, 0.4, service=service, tool=tool))
        elif kind == "token_blowup":
            incidents.append(Incident(kind, start, end, 6.0, tenant, service, provider, model))
        else:
            raise ValueError(f"unknown incident kind {kind!r}")
    return incidents


class Simulator:
    """Generates sessions, spans and the ground truth deterministically from a seed.

    Either give ``calls`` (about that many LLM calls over the range) or
    ``calls_per_minute`` (the mean rate; the daily cycle moves it ±50%).
    """

    def __init__(
        self,
        *,
        start_ns: int,
        end_ns: int,
        calls: int | None = None,
        calls_per_minute: float | None = None,
        tenants: int = 3,
        dialects: Sequence[str] = DIALECTS,
        seed: int = 7,
        non_genai_rate: float = 0.05,
        incidents: Sequence[Incident] = (),
        prices: PriceTable | None = None,
        keep_truth: bool = True,
    ):
        if (calls is None) == (calls_per_minute is None):
            raise ValueError("give exactly one of calls or calls_per_minute")
        minutes = max((end_ns - start_ns) / MINUTE_NS, 1e-9)
        self.calls_per_minute = calls_per_minute if calls_per_minute else calls / minutes
        self.rng = random.Random(seed)
        #: Tool failures have their own stream: the rest of a seed's traffic stays the same.
        self.tool_error_rng = random.Random(f"{seed}:tool-errors")
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.tenants = [f"tenant-{chr(ord('a') + i)}" for i in range(tenants)]
        self.dialects = tuple(dialects)
        self.non_genai_rate = non_genai_rate
        self.incidents = list(incidents)
        self.prices = prices or PriceTable.bundled()
        self.keep_truth = keep_truth
        self._collector = _Collector()
        self._providers: dict[tuple[str, str], TracerProvider] = {}
        self.truth: list[LlmCall] = []
        self.summary = Summary()
        self._dialect_seq = 0

    # --- the stream ------------------------------------------------------------------

    def generate(self) -> list[ReadableSpan]:
        """All spans of the range, by end time."""
        return list(self.stream())

    def stream(self) -> Iterator[ReadableSpan]:
        """Spans in end-time order; memory holds only sessions still running."""
        sessions_per_ns = self.calls_per_minute / _MEAN_STEPS / MINUTE_NS
        peak = sessions_per_ns * 1.5
        rng = self.rng
        pending: list[tuple[int, int, ReadableSpan]] = []
        seq = 0
        spike_keys = len(self.tenants) * len(SERVICES) * len(MODELS)
        started_loops: set[int] = set()
        t = self.start_ns

        def start_loop(index: int, incident: Incident) -> None:
            started_loops.add(index)
            self._runaway_session(incident)

        def collect() -> None:
            nonlocal seq
            for span in self._collector.spans:
                seq += 1
                heapq.heappush(pending, (span.end_time, seq, span))
            self._collector.spans.clear()

        while True:
            t += int(rng.expovariate(peak)) + 1 if peak > 0 else self.end_ns
            if t >= self.end_ns:
                # Sparse traffic may never tick inside a loop: start those now.
                for index, incident in enumerate(self.incidents):
                    if (
                        incident.kind == "runaway_loop"
                        and index not in started_loops
                        and incident.start_ns < self.end_ns
                    ):
                        start_loop(index, incident)
                collect()
                break
            if rng.random() * 1.5 < seasonal_factor(t):
                self._session(t)
            for index, incident in enumerate(self.incidents):
                if not incident.active(t):
                    continue
                if (
                    incident.kind == "cost_spike"
                    and rng.random() < (incident.factor - 1) / spike_keys
                ):
                    # Extra sessions of one subject: its spend ×factor, per call unchanged.
                    self._session(t, subject=incident)
                elif incident.kind == "runaway_loop" and index not in started_loops:
                    start_loop(index, incident)
            collect()
            # No session starting after t can end a span before t: release those.
            while pending and pending[0][0] <= t:
                yield self._release(heapq.heappop(pending)[2])
        while pending:
            yield self._release(heapq.heappop(pending)[2])

    def _release(self, span: ReadableSpan) -> ReadableSpan:
        summary = self.summary
        summary.spans += 1
        if not summary.first_event_ns:
            summary.first_event_ns = span.end_time
        summary.last_event_ns = span.end_time
        return span

    # --- sessions --------------------------------------------------------------------

    def _tracer(self, tenant: str, service: str):
        key = (tenant, service)
        if key not in self._providers:
            provider = TracerProvider(
                resource=Resource.create(
                    {
                        "service.name": service,
                        "tenant.id": tenant,
                        "deployment.environment.name": "prod",
                    }
                )
            )
            provider.add_span_processor(SimpleSpanProcessor(self._collector))
            self._providers[key] = provider
        return self._providers[key].get_tracer("observatory.simulator", "0.1.0")

    def _active(self, kind: str, t: int, **match: str) -> Incident | None:
        for incident in self.incidents:
            if (
                incident.kind == kind
                and incident.active(t)
                and all(getattr(incident, k) in ("", v) for k, v in match.items())
            ):
                return incident
        return None

    def _record_truth(self, call: LlmCall, dialect: str | None = None) -> None:
        self.summary.genai_spans += 1
        if dialect:
            counts = self.summary.calls_by_dialect
            counts[dialect] = counts.get(dialect, 0) + 1
        if self.keep_truth:
            self.truth.append(call)

    def _session(self, t: int, subject: Incident | None = None) -> None:
        rng = self.rng
        if subject is not None:
            tenant, service = subject.tenant, subject.service
            model_row = next(m for m in MODELS if m[1] == subject.model)
        else:
            tenant, service = rng.choice(self.tenants), rng.choice(SERVICES)
            model_row = rng.choice(MODELS)
        tracer = self._tracer(tenant, service)
        dialect = rng.choice(self.dialects)
        agent = rng.choice(AGENTS)
        session_id = f"sess-{rng.getrandbits(48):012x}"
        steps = max(1, min(int(rng.expovariate(1 / 3)) + 1, 12))
        session_start = t
        root = tracer.start_span(
            f"invoke_agent {agent}",
            kind=SpanKind.INTERNAL,
            start_time=t,
            attributes=self._agent_attrs(dialect, agent, session_id),
        )
        context = trace.set_span_in_context(root)
        for _ in range(steps):
            t = self._llm_span(
                tracer, context, dialect, tenant, service, agent, session_id, model_row, t
            )
            if rng.random() < 0.6:
                t = self._tool_span(
                    tracer,
                    context,
                    dialect,
                    tenant,
                    service,
                    agent,
                    session_id,
                    t,
                    rng.choice(TOOLS),
                    f"q{rng.randrange(10**6)}",
                )
            if rng.random() < self.non_genai_rate:
                http = tracer.start_span(
                    "GET /v1/users",
                    context=context,
                    start_time=t,
                    attributes={"http.request.method": "GET", "url.path": "/v1/users"},
                )
                http.end(end_time=t + int(20e6))
                self.summary.non_genai_spans += 1
        self._end_root(root, dialect, tenant, service, agent, session_id, session_start, t)

    def _runaway_session(self, incident: Incident) -> None:
        """One session repeating the same tool call, about ``factor`` times a minute."""
        rng = self.rng
        tracer = self._tracer(incident.tenant, incident.service)
        dialect = "otel"
        session_id = f"loop-{rng.getrandbits(48):012x}"
        model_row = MODELS[1]
        t = incident.start_ns
        root = tracer.start_span(
            f"invoke_agent {incident.agent}",
            kind=SpanKind.INTERNAL,
            start_time=t,
            attributes=self._agent_attrs(dialect, incident.agent, session_id),
        )
        context = trace.set_span_in_context(root)
        step_ns = int(MINUTE_NS / incident.factor)
        while t < incident.end_ns:
            started = t
            t = self._llm_span(
                tracer,
                context,
                dialect,
                incident.tenant,
                incident.service,
                incident.agent,
                session_id,
                model_row,
                t,
                latency_scale=0.3,
            )
            t = self._tool_span(
                tracer,
                context,
                dialect,
                incident.tenant,
                incident.service,
                incident.agent,
                session_id,
                t,
                "search_web",
                "same query",
            )
            t = max(t, started + step_ns)
        self._end_root(
            root,
            dialect,
            incident.tenant,
            incident.service,
            incident.agent,
            session_id,
            incident.start_ns,
            t,
        )

    def _end_root(self, root, dialect, tenant, service, agent, session_id, start, t) -> None:
        root.end(end_time=t)
        self._record_truth(
            LlmCall(
                end_ns=t,
                duration_ms=(t - start) / 1e6,
                tenant=tenant,
                service=service,
                environment="prod",
                operation="invoke_agent",
                agent=agent,
                session_id=session_id,
                trace_id=format(root.get_span_context().trace_id, "032x"),
            )
        )

    def _llm_span(
        self,
        tracer,
        context,
        dialect,
        tenant,
        service,
        agent,
        session_id,
        model_row,
        t,
        latency_scale: float = 1.0,
    ) -> int:
        rng = self.rng
        provider, model, latency_ms, input_median = model_row
        slow = self._active("latency_degradation", t, model=model)
        latency = latency_ms * latency_scale * (slow.factor if slow else 1.0)
        duration = int(rng.lognormvariate(math.log(latency), 0.35) * 1e6)
        input_tokens = int(rng.lognormvariate(math.log(input_median), INPUT_TOKENS_SIGMA))
        blowup = self._active("token_blowup", t, tenant=tenant, service=service, model=model)
        if blowup:
            progress = (t - blowup.start_ns) / (blowup.end_ns - blowup.start_ns)
            input_tokens = int(input_tokens * (1 + (blowup.factor - 1) * (0.5 + progress)))
        output_tokens = int(rng.lognormvariate(math.log(200), 0.6))
        cached = int(input_tokens * rng.choice((0, 0, 0.3, 0.6)))
        surge = self._active("error_surge", t, service=service, model=model)
        error = rng.random() < (surge.factor if surge else BASE_ERROR_RATE)
        call = LlmCall(
            end_ns=t + duration,
            duration_ms=duration / 1e6,
            tenant=tenant,
            service=service,
            environment="prod",
            provider=provider,
            model=model,
            operation="chat",
            agent=agent,
            session_id=session_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached,
            ttft_ms=round(duration / 1e6 * 0.3, 3) if dialect == "otel" else None,
            is_error=error,
            error_type=("timeout" if dialect in ("otel", "openlit") else "error") if error else "",
        )
        self.prices.apply(call)
        span = tracer.start_span(
            f"chat {model}",
            context=context,
            kind=SpanKind.CLIENT,
            start_time=t,
            attributes=self._llm_attrs(dialect, call),
        )
        if error:
            span.set_status(Status(StatusCode.ERROR, "timeout"))
            if dialect in ("otel", "openlit"):
                span.set_attribute("error.type", "timeout")
        span.end(end_time=call.end_ns)
        call.trace_id = format(span.get_span_context().trace_id, "032x")
        call.span_id = format(span.get_span_context().span_id, "016x")
        self._record_truth(call, dialect)
        return call.end_ns + int(rng.uniform(5, 50) * 1e6)

    def _tool_span(
        self, tracer, context, dialect, tenant, service, agent, session_id, t, tool, args
    ) -> int:
        duration = int(self.rng.lognormvariate(math.log(120), 0.8) * 1e6)
        error = self._tool_fails(t, service, tool)
        attrs = self._tool_attrs(dialect, tool, session_id)
        attrs["gen_ai.tool.call.arguments"] = args
        if error and dialect in ("otel", "openlit"):
            attrs["error.type"] = "tool_error"
        span = tracer.start_span(
            f"execute_tool {tool}",
            context=context,
            kind=SpanKind.INTERNAL,
            start_time=t,
            attributes=attrs,
        )
        if error:
            span.set_status(Status(StatusCode.ERROR, "tool failed"))
        span.end(end_time=t + duration)
        self._record_truth(
            LlmCall(
                end_ns=t + duration,
                duration_ms=duration / 1e6,
                tenant=tenant,
                service=service,
                environment="prod",
                operation="execute_tool",
                agent=agent,
                tool=tool,
                session_id=session_id,
                trace_id=format(span.get_span_context().trace_id, "032x"),
                is_error=error,
                error_type=attrs.get("error.type", "error") if error else "",
            )
        )
        return t + duration + int(self.rng.uniform(1, 10) * 1e6)

    def _tool_fails(self, t: int, service: str, tool: str) -> bool:
        surge = self._active("tool_error_surge", t, service=service, tool=tool)
        return self.tool_error_rng.random() < (surge.factor if surge else TOOL_BASE_ERROR_RATE)

    # --- attribute dialects -------------------------------------------------------------

    @staticmethod
    def _agent_attrs(dialect: str, agent: str, session_id: str) -> dict:
        if dialect == "openinference":
            return {
                "openinference.span.kind": "AGENT",
                "agent.name": agent,
                "session.id": session_id,
            }
        if dialect == "openllmetry":
            return {
                "traceloop.span.kind": "agent",
                "traceloop.entity.name": agent,
                "traceloop.association.properties.session_id": session_id,
            }
        if dialect == "langfuse":
            return {
                "langfuse.observation.type": "agent",
                "gen_ai.agent.name": agent,
                "langfuse.session.id": session_id,
            }
        if dialect == "openlit":
            return {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": agent,
                "gen_ai.agent.session_id": session_id,
            }
        return {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "gen_ai.conversation.id": session_id,
        }

    @staticmethod
    def _tool_attrs(dialect: str, tool: str, session_id: str) -> dict:
        if dialect == "openinference":
            return {"openinference.span.kind": "TOOL", "tool.name": tool, "session.id": session_id}
        if dialect == "openllmetry":
            return {
                "traceloop.span.kind": "tool",
                "traceloop.entity.name": tool,
                "traceloop.association.properties.session_id": session_id,
            }
        if dialect == "langfuse":
            return {
                "langfuse.observation.type": "tool",
                "gen_ai.tool.name": tool,
                "langfuse.session.id": session_id,
            }
        if dialect == "openlit":
            return {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool,
                "gen_ai.agent.session_id": session_id,
            }
        return {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.conversation.id": session_id,
        }

    @staticmethod
    def _llm_attrs(dialect: str, call: LlmCall) -> dict:
        legacy_provider = {"x_ai": "xai"}.get(call.provider, call.provider)
        if dialect == "otel":
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": call.provider,
                "gen_ai.request.model": call.model,
                "gen_ai.response.model": call.model,
                "gen_ai.usage.input_tokens": call.input_tokens,
                "gen_ai.usage.output_tokens": call.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": call.cached_input_tokens,
                "gen_ai.conversation.id": call.session_id,
                "gen_ai.agent.name": call.agent,
                "gen_ai.response.finish_reasons": ["stop"],
            }
            if call.ttft_ms is not None:
                attrs["gen_ai.response.time_to_first_chunk"] = call.ttft_ms / 1000.0
            return attrs
        if dialect == "otel_deprecated":
            return {
                "gen_ai.system": legacy_provider,
                "gen_ai.request.model": call.model,
                "gen_ai.usage.prompt_tokens": call.input_tokens,
                "gen_ai.usage.completion_tokens": call.output_tokens,
                "gen_ai.usage.cache_read_input_tokens": call.cached_input_tokens,
                "gen_ai.conversation.id": call.session_id,
            }
        if dialect == "openllmetry":
            return {
                "gen_ai.system": legacy_provider,
                "llm.request.type": "chat",
                "gen_ai.request.model": call.model,
                "gen_ai.response.model": call.model,
                "gen_ai.usage.prompt_tokens": call.input_tokens,
                "gen_ai.usage.completion_tokens": call.output_tokens,
                "llm.usage.total_tokens": call.input_tokens + call.output_tokens,
                "gen_ai.usage.cache_read_input_tokens": call.cached_input_tokens,
                "traceloop.association.properties.session_id": call.session_id,
            }
        if dialect == "openinference":
            attrs = {
                "openinference.span.kind": "LLM",
                "llm.model_name": call.model,
                "llm.provider": {
                    "gcp.gemini": "google",
                    "mistral_ai": "mistralai",
                    "x_ai": "xai",
                }.get(call.provider, call.provider),
                "llm.token_count.prompt": call.input_tokens,
                "llm.token_count.completion": call.output_tokens,
                "llm.token_count.total": call.input_tokens + call.output_tokens,
                "llm.token_count.prompt_details.cache_read": call.cached_input_tokens,
                "session.id": call.session_id,
            }
            if call.cost_usd is not None:
                attrs["llm.cost.total"] = call.cost_usd
            return attrs
        if dialect == "openlit":
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.system": legacy_provider,
                "gen_ai.request.model": call.model,
                "gen_ai.usage.input_tokens": call.input_tokens,
                "gen_ai.usage.output_tokens": call.output_tokens,
                "gen_ai.usage.total_tokens": call.input_tokens + call.output_tokens,
                "gen_ai.usage.prompt_tokens_details.cached_tokens": call.cached_input_tokens,
                "gen_ai.agent.session_id": call.session_id,
            }
            if call.cost_usd is not None:
                attrs["gen_ai.usage.cost"] = call.cost_usd
            return attrs
        # langfuse: usage and cost as JSON objects, provider implied by the model
        usage = {
            "input": call.input_tokens,
            "output": call.output_tokens,
            "total": call.input_tokens + call.output_tokens,
            "cache_read_input_tokens": call.cached_input_tokens,
        }
        attrs = {
            "langfuse.observation.type": "generation",
            "langfuse.observation.model.name": call.model,
            "langfuse.observation.usage_details": json.dumps(usage),
            "langfuse.session.id": call.session_id,
        }
        if call.cost_usd is not None:
            attrs["langfuse.observation.cost_details"] = json.dumps({"total": call.cost_usd})
        return attrs
