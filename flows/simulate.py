"""``observatory simulate``: realistic multi-tenant GenAI agent traffic into Kafka.

Spans are made with the real OpenTelemetry SDK and encoded by the OTLP
exporter's own encoder, then published the way the Collector's Kafka exporter
does: one record = one ``ExportTraceServiceRequest`` of 1..N spans, in
``otlp_proto`` or ``otlp_json``, key empty. Each LLM call is written in one of
the attribute dialects (OpenTelemetry current/deprecated, OpenLLMetry,
OpenInference, OpenLIT, Langfuse).

The simulator also writes the ground truth: every call it meant, in canonical
form (``calls.csv.gz``), and what it produced (``summary.json``), so tests
can check the pipeline against numbers computed independently.
"""

from __future__ import annotations

import argparse
import base64
import csv
import gzip
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from observatory.schemas.pricing import PriceTable
from observatory.schemas.records import LlmCall

NS = 1_000_000_000
DIALECTS = ("otel", "otel_deprecated", "openllmetry", "openinference", "openlit", "langfuse")

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
TOOLS = ("search_web", "read_file", "run_sql", "call_api", "summarize")
AGENTS = ("support-agent", "research-agent", "coding-agent")


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=5000, help="LLM calls to simulate")
    parser.add_argument("--minutes", type=float, default=30.0, help="event-time span (minutes)")
    parser.add_argument(
        "--end", type=float, default=None, help="event time of the end (epoch s; default now)"
    )
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument(
        "--encoding", choices=["otlp_proto", "otlp_json", "mixed"], default="otlp_proto"
    )
    parser.add_argument(
        "--dialects", default=",".join(DIALECTS), help=f"comma-separated subset of {DIALECTS}"
    )
    parser.add_argument("--max-spans-per-record", type=int, default=20)
    parser.add_argument("--malformed-rate", type=float, default=0.0, help="share of bad records")
    parser.add_argument("--non-genai-rate", type=float, default=0.05, help="extra plain HTTP spans")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--topic", default=None, help="default: kafka.topics.spans")
    parser.add_argument(
        "--ground-truth", default=None, help="directory for calls.csv.gz + summary.json"
    )
    parser.add_argument("--quiet", action="store_true")


class Simulator:
    """Generates calls, spans and Kafka records deterministically from a seed."""

    def __init__(
        self,
        *,
        calls: int,
        start_ns: int,
        end_ns: int,
        tenants: int = 3,
        dialects: Sequence[str] = DIALECTS,
        seed: int = 7,
        non_genai_rate: float = 0.05,
        prices: PriceTable | None = None,
    ):
        self.rng = random.Random(seed)
        self.calls_wanted = calls
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.tenants = [f"tenant-{chr(ord('a') + i)}" for i in range(tenants)]
        self.services = ("chat-api", "agent-worker")
        self.dialects = tuple(dialects)
        self.non_genai_rate = non_genai_rate
        self.prices = prices or PriceTable.bundled()
        self._collector = _Collector()
        self._providers: dict[tuple[str, str], TracerProvider] = {}
        self.truth: list[LlmCall] = []
        self.summary = Summary()

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

    def _event_time(self) -> int:
        # Daily seasonality: accept a uniform time with probability ∝ 1 + 0.5 sin(day phase).
        while True:
            t = self.rng.uniform(self.start_ns, self.end_ns)
            phase = 2 * math.pi * ((t / NS) % 86400) / 86400
            if self.rng.random() < (1 + 0.5 * math.sin(phase)) / 1.5:
                return int(t)

    def generate(self) -> list[ReadableSpan]:
        """Make all spans (sessions of LLM and tool calls); returns them by end time."""
        made = 0
        while made < self.calls_wanted:
            made += self._session()
        spans = sorted(self._collector.spans, key=lambda s: s.end_time)
        self.summary.spans = len(spans)
        self.summary.first_event_ns = spans[0].end_time if spans else 0
        self.summary.last_event_ns = spans[-1].end_time if spans else 0
        return spans

    def _session(self) -> int:
        rng = self.rng
        tenant = rng.choice(self.tenants)
        service = rng.choice(self.services)
        tracer = self._tracer(tenant, service)
        provider, model, latency_ms, input_median = rng.choice(MODELS)
        dialect = rng.choice(self.dialects)
        agent = rng.choice(AGENTS)
        session_id = f"sess-{rng.getrandbits(48):012x}"
        steps = max(1, min(int(rng.expovariate(1 / 3)) + 1, self.calls_wanted))
        t = self._event_time()
        session_start = t
        made = 0
        root = tracer.start_span(
            f"invoke_agent {agent}",
            kind=SpanKind.INTERNAL,
            start_time=t,
            attributes=self._agent_attrs(dialect, agent, session_id),
        )
        for _ in range(steps):
            duration = int(rng.lognormvariate(math.log(latency_ms), 0.5) * 1e6)
            input_tokens = int(rng.lognormvariate(math.log(input_median), 0.6))
            output_tokens = int(rng.lognormvariate(math.log(200), 0.7))
            cached = int(input_tokens * rng.choice((0, 0, 0.3, 0.6)))
            error = rng.random() < 0.02
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
                error_type=("timeout" if dialect in ("otel", "openlit") else "error")
                if error
                else "",
            )
            self.prices.apply(call)
            with_parent = _context_of(root)
            span = tracer.start_span(
                f"chat {model}",
                context=with_parent,
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
            self.truth.append(call)
            self.summary.calls_by_dialect[dialect] = (
                self.summary.calls_by_dialect.get(dialect, 0) + 1
            )
            made += 1
            t = call.end_ns + int(rng.uniform(5, 50) * 1e6)
            if rng.random() < 0.6:
                t = self._tool_span(tracer, root, dialect, tenant, service, agent, session_id, t)
            if rng.random() < self.non_genai_rate:
                http = tracer.start_span(
                    "GET /v1/users",
                    context=with_parent,
                    start_time=t,
                    attributes={"http.request.method": "GET", "url.path": "/v1/users"},
                )
                http.end(end_time=t + int(20e6))
                self.summary.non_genai_spans += 1
        root.end(end_time=t)
        self.truth.append(
            LlmCall(
                end_ns=t,
                duration_ms=(t - session_start) / 1e6,
                tenant=tenant,
                service=service,
                environment="prod",
                operation="invoke_agent",
                agent=agent,
                session_id=session_id,
                trace_id=format(root.get_span_context().trace_id, "032x"),
            )
        )
        return made

    def _tool_span(self, tracer, root, dialect, tenant, service, agent, session_id, t) -> int:
        tool = self.rng.choice(TOOLS)
        duration = int(self.rng.lognormvariate(math.log(120), 0.8) * 1e6)
        span = tracer.start_span(
            f"execute_tool {tool}",
            context=_context_of(root),
            kind=SpanKind.INTERNAL,
            start_time=t,
            attributes=self._tool_attrs(dialect, tool, session_id),
        )
        span.end(end_time=t + duration)
        self.truth.append(
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
            )
        )
        return t + duration + int(self.rng.uniform(1, 10) * 1e6)

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


def _context_of(span):
    from opentelemetry import trace

    return trace.set_span_in_context(span)


# --- records -------------------------------------------------------------------------


def to_otlp_json(request) -> bytes:
    """OTLP/JSON as the spec wants it: camelCase, hex ids, int enums, int64 as strings."""
    data = MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in data.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(data, separators=(",", ":")).encode()


def malformed_record(rng: random.Random, good: bytes) -> bytes:
    kind = rng.choice(("random", "truncated", "json"))
    if kind == "random":
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
    if kind == "truncated" and len(good) > 4:
        return good[: rng.randint(1, len(good) - 1)]
    return b'{"resourceSpans": [ {"resource": '


def make_records(
    spans: list[ReadableSpan],
    rng: random.Random,
    *,
    encoding: str,
    max_spans: int,
    malformed_rate: float,
    summary: Summary,
):
    """Yield (value, headers, span count) records of 1..max_spans spans each."""
    i = 0
    while i < len(spans):
        n = rng.randint(1, max_spans)
        chunk = spans[i : i + n]
        i += n
        request = encode_spans(chunk)
        enc = encoding if encoding != "mixed" else rng.choice(("otlp_proto", "otlp_json"))
        if enc == "otlp_json":
            value, headers = to_otlp_json(request), [("content-type", b"application/json")]
        else:
            value, headers = request.SerializeToString(), []
        summary.records += 1
        yield value, headers, len(chunk)
        if malformed_rate and rng.random() < malformed_rate:
            summary.records += 1
            summary.malformed_records += 1
            yield malformed_record(rng, value), [], 0


def write_ground_truth(directory: Path, calls: list[LlmCall], summary: Summary) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    columns = [
        "end_ns",
        "duration_ms",
        "trace_id",
        "tenant",
        "service",
        "provider",
        "model",
        "operation",
        "agent",
        "tool",
        "session_id",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "reasoning_tokens",
        "cost_usd",
        "ttft_ms",
        "is_error",
    ]
    with gzip.open(directory / "calls.csv.gz", "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for call in calls:
            writer.writerow(
                [
                    ""
                    if getattr(call, c) is None
                    else repr(getattr(call, c))
                    if isinstance(getattr(call, c), float)
                    else getattr(call, c)
                    for c in columns
                ]
            )
    (directory / "summary.json").write_text(json.dumps(asdict(summary), indent=2))


def run_simulation(config, args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from observatory.flows.kafka_io import client_config
    from observatory.flows.pipeline import make_decoder

    end_s = args.end if args.end is not None else time.time()
    dialects = [d.strip() for d in args.dialects.split(",") if d.strip()]
    unknown = sorted(set(dialects) - set(DIALECTS))
    if unknown:
        print(
            f"observatory simulate: unknown dialect(s) {unknown}; choose from {DIALECTS}",
            file=sys.stderr,
        )
        return 2
    topic = args.topic or config.kafka.topics.spans
    prices = make_decoder(config, topic).prices
    sim = Simulator(
        calls=args.calls,
        start_ns=int((end_s - args.minutes * 60) * NS),
        end_ns=int(end_s * NS),
        tenants=args.tenants,
        dialects=dialects,
        seed=args.seed,
        non_genai_rate=args.non_genai_rate,
        prices=prices,
    )
    started = time.monotonic()
    spans = sim.generate()
    sim.summary.genai_spans = len(sim.truth)
    producer = Producer(
        {
            **client_config(config.kafka.bootstrap_servers, config.kafka.client),
            "linger.ms": 20,
            "compression.type": "lz4",
            "message.max.bytes": 10_000_000,
        }
    )
    progress = None if args.quiet else _progress(len(spans))
    for value, headers, n_spans in make_records(
        spans,
        sim.rng,
        encoding=args.encoding,
        max_spans=args.max_spans_per_record,
        malformed_rate=args.malformed_rate,
        summary=sim.summary,
    ):
        while True:
            try:
                producer.produce(topic, value=value, headers=headers)
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: let it drain
        producer.poll(0)
        if progress is not None:
            progress.update(n_spans)
    remaining = producer.flush(60)
    if progress is not None:
        progress.close()
    if remaining:
        print(f"observatory simulate: {remaining} records not delivered", file=sys.stderr)
        return 1
    if args.ground_truth:
        write_ground_truth(Path(args.ground_truth), sim.truth, sim.summary)
    s = sim.summary
    print(
        f"produced {s.records} records ({s.malformed_records} malformed) holding {s.spans} spans "
        f"({len(sim.truth)} GenAI, {s.non_genai_spans} plain) to {topic} "
        f"in {time.monotonic() - started:.1f}s"
    )
    return 0


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="span", desc="simulate", file=sys.stderr)
