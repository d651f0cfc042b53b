"""Dated price table and model-name matching.

A call's cost is computed from the price in force at its event time. A cost
the span itself reported wins; a model without a price gets ``None`` (an
"unpriced" call), never a silent zero.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any

import yaml

from observatory.schemas.records import LlmCall

#: Prefixes that routers, gateways and clouds put in front of a model name.
_PREFIX = re.compile(
    r"^(?:(?:openai|anthropic|google|gemini|vertex_ai|vertexai|mistral|mistralai|mistral_ai|meta|"
    r"meta-llama|deepseek|deepseek-ai|xai|x-ai|x_ai|bedrock|azure|openrouter|models|"
    r"us|eu|apac|global)[./:])+"
)
#: Snapshot and version suffixes, stripped one at a time from the end.
_SUFFIXES = (
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),  # gpt-4o-2024-08-06
    re.compile(r"[-@]\d{8}$"),  # claude-3-5-sonnet-20241022, vertex "@20241022"
    re.compile(r"-v\d+(?::\d+)?$"),  # bedrock "-v1:0", "-v2"
    re.compile(r":\d+$"),  # bedrock ":0"
    re.compile(r"-\d{4}$"),  # gpt-4-0613, gpt-3.5-turbo-0125
    re.compile(r"-(?:latest|preview|exp|\d{3})$"),  # gemini "-001", "-latest"
)


def canonical_model(name: str) -> str:
    """Lower-case a model name and strip provider prefixes (not suffixes).

    >>> canonical_model("us.anthropic.claude-3-5-sonnet-20241022-v2:0")
    'claude-3-5-sonnet-20241022-v2:0'
    >>> canonical_model("openai/gpt-4o")
    'gpt-4o'
    """
    return _PREFIX.sub("", name.strip().lower())


def candidate_names(name: str) -> list[str]:
    """The names tried in order: the canonical name, then each suffix stripped.

    >>> candidate_names("gpt-4o-2024-08-06")
    ['gpt-4o-2024-08-06', 'gpt-4o']
    """
    current = canonical_model(name)
    names = [current]
    stripped = True
    while stripped:
        stripped = False
        for pattern in _SUFFIXES:
            shorter = pattern.sub("", current)
            if shorter != current and shorter:
                current = shorter
                names.append(current)
                stripped = True
                break
    return names


@dataclass(slots=True, frozen=True)
class Price:
    """USD per 1M tokens for one model from ``valid_from`` on."""

    model: str
    provider: str
    valid_from: date
    input: float
    output: float
    cached_input: float | None = None
    reasoning: float | None = None

    def cost(self, call: LlmCall) -> float:
        """Cost of one call in USD.

        Input tokens include cached ones and output tokens include reasoning
        ones (OpenTelemetry GenAI conventions), so each part is priced once.

        >>> p = Price("m", "p", date(2024, 1, 1), input=2.0, output=10.0, cached_input=1.0)
        >>> round(p.cost(LlmCall(end_ns=0, input_tokens=1000, cached_input_tokens=400,
        ...                        output_tokens=100)), 9)
        0.0026
        """
        cached = call.cached_input_tokens
        # Some instrumentations (Anthropic's own usage numbers) report input
        # tokens *excluding* cache reads; more cached than input tokens says so.
        uncached = call.input_tokens - cached if cached <= call.input_tokens else call.input_tokens
        reasoning = min(call.reasoning_tokens, call.output_tokens)
        plain_output = call.output_tokens - reasoning
        cached_price = self.input if self.cached_input is None else self.cached_input
        reasoning_price = self.output if self.reasoning is None else self.reasoning
        return (
            uncached * self.input
            + cached * cached_price
            + plain_output * self.output
            + reasoning * reasoning_price
        ) / 1_000_000


@dataclass(slots=True)
class _History:
    """All prices of one model, sorted by ``valid_from``."""

    starts: list[float] = field(default_factory=list)  # epoch seconds
    prices: list[Price] = field(default_factory=list)

    def add(self, price: Price) -> None:
        start = datetime(
            price.valid_from.year, price.valid_from.month, price.valid_from.day, tzinfo=UTC
        ).timestamp()
        at = bisect.bisect_right(self.starts, start)
        self.starts.insert(at, start)
        self.prices.insert(at, price)

    def at(self, epoch_s: float) -> Price | None:
        at = bisect.bisect_right(self.starts, epoch_s) - 1
        # A call from before the first known price takes the first price:
        # the model existed, we just do not know an older list price.
        return self.prices[max(at, 0)] if self.prices else None


def _price_from_row(row: Mapping[str, Any]) -> Price:
    valid_from = row.get("valid_from", "1970-01-01")
    if isinstance(valid_from, str):
        valid_from = date.fromisoformat(valid_from)
    return Price(
        model=canonical_model(str(row["model"])),
        provider=str(row.get("provider", "")),
        valid_from=valid_from,
        input=float(row["input"]),
        output=float(row.get("output", 0.0)),
        cached_input=None if row.get("cached_input") is None else float(row["cached_input"]),
        reasoning=None if row.get("reasoning") is None else float(row["reasoning"]),
    )


class PriceTable:
    """Look up the price of a model at an event time.

    >>> table = PriceTable.bundled()
    >>> table.lookup("gpt-4o-2024-08-06", 1.75e9).model
    'gpt-4o'
    >>> table.lookup("no-such-model", 1.75e9) is None
    True
    """

    def __init__(self, rows: Iterable[Mapping[str, Any]]):
        self._histories: dict[str, _History] = {}
        for row in rows:
            price = _price_from_row(row)
            names = [price.model, *(canonical_model(a) for a in row.get("aliases", []) or [])]
            for name in names:
                self._histories.setdefault(name, _History()).add(price)
        self._resolved: dict[str, _History | None] = {}

    @classmethod
    def bundled(cls, overrides: Iterable[Mapping[str, Any]] = ()) -> PriceTable:
        """The shipped table plus user overrides (an override of the same model
        and ``valid_from`` replaces the shipped row)."""
        text = resources.files("observatory.schemas").joinpath("prices.yaml").read_text()
        rows = list(yaml.safe_load(text)["models"])
        overrides = list(overrides)
        replaced = {
            (canonical_model(str(o["model"])), str(o.get("valid_from", "1970-01-01")))
            for o in overrides
        }
        kept = [
            r
            for r in rows
            if (canonical_model(str(r["model"])), str(r.get("valid_from"))) not in replaced
        ]
        return cls(kept + overrides)

    def _history(self, model: str) -> _History | None:
        try:
            return self._resolved[model]
        except KeyError:
            pass
        found = None
        for name in candidate_names(model):
            found = self._histories.get(name)
            if found is not None:
                break
        if len(self._resolved) < 100_000:  # bounded memo: model names are few
            self._resolved[model] = found
        return found

    def lookup(self, model: str, epoch_s: float) -> Price | None:
        if not model:
            return None
        history = self._history(model)
        return history.at(epoch_s) if history is not None else None

    def apply(self, call: LlmCall) -> None:
        """Fill in ``cost_usd`` (unless the span reported one) and a missing provider."""
        price = self.lookup(call.model, call.end_ns / 1e9)
        if price is None:
            return
        if not call.provider:
            call.provider = price.provider
        if call.cost_usd is None:
            call.cost_usd = price.cost(call)
            call.cost_source = "computed"
