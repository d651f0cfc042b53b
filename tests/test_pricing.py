"""Model-name matching, dated prices, overrides and cost arithmetic (schemas/pricing.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from importlib import resources

import pytest
import yaml
from otel_helpers import PRICES, SpanSpec, make_decoder, one_call

from observatory.schemas.pricing import Price, PriceTable, candidate_names, canonical_model
from observatory.schemas.records import LlmCall

M = 1_000_000
NOW = datetime(2025, 11, 24, tzinfo=UTC).timestamp()


def epoch(*ymd_hms: int) -> float:
    return datetime(*ymd_hms, tzinfo=UTC).timestamp()


def shipped_rows() -> list[dict]:
    text = resources.files("observatory.schemas").joinpath("prices.yaml").read_text()
    return yaml.safe_load(text)["models"]


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "candidates"),
    [
        ("gpt-4o-2024-08-06", ["gpt-4o-2024-08-06", "gpt-4o"]),
        (
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            ["claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet"],
        ),
        (
            "meta.llama3-1-70b-instruct-v1:0",
            ["llama3-1-70b-instruct-v1:0", "llama3-1-70b-instruct"],
        ),
        ("models/gemini-1.5-pro-002", ["gemini-1.5-pro-002", "gemini-1.5-pro"]),
        ("openai/gpt-4o-mini", ["gpt-4o-mini"]),
        ("claude-sonnet-4-5-20250929", ["claude-sonnet-4-5-20250929", "claude-sonnet-4-5"]),
        ("gpt-4-0613", ["gpt-4-0613", "gpt-4"]),
        ("claude-3-5-sonnet@20240620", ["claude-3-5-sonnet@20240620", "claude-3-5-sonnet"]),
        ("GPT-4o", ["gpt-4o"]),
        ("  gpt-4o  ", ["gpt-4o"]),
    ],
)
def test_candidate_names(name, candidates):
    assert candidate_names(name) == candidates


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("openai/gpt-4o", "gpt-4o"),
        ("openrouter/openai/gpt-4o", "gpt-4o"),
        ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet-20241022-v2:0"),
        ("bedrock/us.meta.llama3-1-8b-instruct-v1:0", "llama3-1-8b-instruct-v1:0"),
        ("mistralai/Mistral-Large", "mistral-large"),
        ("x-ai/grok-4", "grok-4"),
        ("gpt-4o", "gpt-4o"),
        ("o3", "o3"),
    ],
)
def test_canonical_model_strips_prefixes_only(name, canonical):
    assert canonical_model(name) == canonical


@pytest.mark.parametrize(
    ("name", "model", "provider"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o", "openai"),
        ("gpt-4o", "gpt-4o", "openai"),
        ("chatgpt-4o-latest", "gpt-4o", "openai"),  # alias
        ("openai/gpt-4o-mini", "gpt-4o-mini", "openai"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", "openai"),  # not gpt-4o
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo", "openai"),  # not gpt-4
        ("gpt-4-0613", "gpt-4", "openai"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano", "openai"),
        ("o3-mini-2025-01-31", "o3-mini", "openai"),  # not o3
        ("o3-2025-04-16", "o3", "openai"),
        ("text-embedding-3-small", "text-embedding-3-small", "openai"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", "anthropic"),
        ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet", "anthropic"),
        ("anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku", "anthropic"),
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet", "anthropic"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku", "anthropic"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1", "anthropic"),  # not claude-opus-4
        ("models/gemini-1.5-pro-002", "gemini-1.5-pro", "gcp.gemini"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash", "gcp.gemini"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite", "gcp.gemini"),  # not flash
        ("vertex_ai/gemini-2.5-pro", "gemini-2.5-pro", "gcp.gemini"),
        ("mistral-large-2411", "mistral-large", "mistral_ai"),
        ("mistralai/mistral-small-latest", "mistral-small", "mistral_ai"),
        ("mistral-nemo", "open-mistral-nemo", "mistral_ai"),  # alias
        ("meta.llama3-1-70b-instruct-v1:0", "llama3-1-70b-instruct", "aws.bedrock"),
        ("us.meta.llama3-3-70b-instruct-v1:0", "llama3-3-70b-instruct", "aws.bedrock"),
        ("deepseek/deepseek-chat", "deepseek-chat", "deepseek"),
        ("deepseek-reasoner", "deepseek-reasoner", "deepseek"),
        ("xai/grok-4", "grok-4", "x_ai"),
        ("grok-2-1212", "grok-2", "x_ai"),
        ("grok-3-mini", "grok-3-mini", "x_ai"),  # not grok-3
    ],
)
def test_lookup_matches_prefixed_and_dated_names(name, model, provider):
    price = PRICES.lookup(name, NOW)
    assert price is not None
    assert (price.model, price.provider) == (model, provider)


@pytest.mark.parametrize(
    "name", ["", "no-such-model", "gpt-99", "llama-3-70b", "claude", "acme/gpt-4o-custom", "o5"]
)
def test_unknown_models_have_no_price(name):
    assert PRICES.lookup(name, NOW) is None


@pytest.mark.parametrize("name", ["no-such-model", "gpt-99-2025-01-01", "acme-llm"])
def test_unknown_model_call_stays_unpriced_never_zero(encoding, name):
    call, _ = one_call(
        {
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": name,
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 10,
        },
        encoding,
    )
    assert call.cost_usd is None
    assert call.cost_source == ""
    assert call.provider == "openai"


def test_apply_leaves_unknown_model_alone():
    call = LlmCall(end_ns=int(NOW * 1e9), model="no-such-model", input_tokens=10)
    PRICES.apply(call)
    assert (call.cost_usd, call.cost_source, call.provider) == (None, "", "")


def test_apply_fills_missing_provider_but_keeps_a_given_one():
    call = LlmCall(end_ns=int(NOW * 1e9), model="grok-4", input_tokens=1_000_000)
    PRICES.apply(call)
    assert call.provider == "x_ai"
    assert call.cost_usd == pytest.approx(3.00) and call.cost_source == "computed"
    call = LlmCall(end_ns=int(NOW * 1e9), model="grok-4", provider="openrouter")
    PRICES.apply(call)
    assert call.provider == "openrouter"


def test_apply_keeps_a_reported_cost():
    call = LlmCall(
        end_ns=int(NOW * 1e9),
        model="gpt-4o",
        input_tokens=10**6,
        cost_usd=0.5,
        cost_source="reported",
    )
    PRICES.apply(call)
    assert (call.cost_usd, call.cost_source) == (0.5, "reported")


# --- valid_from --------------------------------------------------------------------------

_BOUNDARY_CASES = [
    # o3: 10/40 from 2025-04-16, 2/8 from 2025-06-10
    ("o3", epoch(2025, 1, 1), 10.00, 40.00),  # before the first row: the first price
    ("o3", epoch(2025, 4, 16) - 1, 10.00, 40.00),
    ("o3", epoch(2025, 4, 16), 10.00, 40.00),
    ("o3", epoch(2025, 6, 9, 23, 59, 59), 10.00, 40.00),
    ("o3", epoch(2025, 6, 10) - 0.001, 10.00, 40.00),
    ("o3", epoch(2025, 6, 10), 2.00, 8.00),
    ("o3", epoch(2026, 1, 1), 2.00, 8.00),
    # deepseek-chat: 2025-02-09, 2025-09-05, 2025-09-29
    ("deepseek-chat", epoch(2025, 2, 9) - 1, 0.27, 1.10),
    ("deepseek-chat", epoch(2025, 2, 9), 0.27, 1.10),
    ("deepseek-chat", epoch(2025, 9, 5) - 1, 0.27, 1.10),
    ("deepseek-chat", epoch(2025, 9, 5), 0.56, 1.68),
    ("deepseek-chat", epoch(2025, 9, 28, 23, 59, 59), 0.56, 1.68),
    ("deepseek-chat", epoch(2025, 9, 29), 0.28, 0.42),
    ("deepseek-chat", epoch(2026, 6, 1), 0.28, 0.42),
    # deepseek-reasoner: 2025-01-20, 2025-09-29
    ("deepseek-reasoner", epoch(2025, 9, 29) - 1, 0.55, 2.19),
    ("deepseek-reasoner", epoch(2025, 9, 29), 0.28, 0.42),
]


@pytest.mark.parametrize(("model", "at", "input_price", "output_price"), _BOUNDARY_CASES)
def test_price_in_force_at_event_time(model, at, input_price, output_price):
    price = PRICES.lookup(model, at)
    assert (price.input, price.output) == (input_price, output_price)


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        # o3, 1000 input (200 cached), 100 output
        (epoch(2025, 6, 9, 12), (800 * 10.00 + 200 * 2.50 + 100 * 40.00) / M),
        (epoch(2025, 6, 10, 12), (800 * 2.00 + 200 * 0.50 + 100 * 8.00) / M),
    ],
)
def test_decoder_prices_a_call_at_its_end_time(encoding, end, expected):
    end_ns = int(end) * 10**9
    call, _ = one_call(
        SpanSpec(
            {
                "gen_ai.request.model": "o3-2025-04-16",
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.cache_read.input_tokens": 200,
                "gen_ai.usage.output_tokens": 100,
            },
            start_ns=end_ns - 10**9,
            end_ns=end_ns,
        ),
        encoding,
    )
    assert call.cost_usd == pytest.approx(expected, rel=1e-12)


# --- overrides -----------------------------------------------------------------------------


@pytest.mark.parametrize("valid_from", ["2025-06-10", date(2025, 6, 10)])
@pytest.mark.parametrize("model", ["o3", "openai/o3"])
def test_override_replaces_same_model_and_valid_from(valid_from, model):
    table = PriceTable.bundled(
        [
            {
                "model": model,
                "provider": "openai",
                "valid_from": valid_from,
                "input": 1.00,
                "output": 4.00,
            }
        ]
    )
    after = table.lookup("o3", epoch(2025, 7, 1))
    assert (after.input, after.output, after.cached_input) == (1.00, 4.00, None)
    before = table.lookup("o3", epoch(2025, 5, 1))  # the other shipped row is kept
    assert (before.input, before.output) == (10.00, 40.00)
    # the shipped table itself is untouched
    assert PRICES.lookup("o3", epoch(2025, 7, 1)).input == 2.00


def test_override_with_new_valid_from_adds_a_row():
    table = PriceTable.bundled(
        [
            {
                "model": "gpt-4o",
                "provider": "openai",
                "valid_from": "2026-01-01",
                "input": 1.0,
                "output": 5.0,
            }
        ]
    )
    assert table.lookup("gpt-4o", epoch(2025, 12, 31, 23, 59, 59)).input == 2.50
    assert table.lookup("gpt-4o", epoch(2026, 1, 1)).input == 1.0
    assert table.lookup("gpt-4o-2024-08-06", epoch(2026, 2, 1)).input == 1.0


def test_override_adds_new_model_with_aliases():
    table = PriceTable.bundled(
        [
            {
                "model": "acme-llm",
                "provider": "acme",
                "valid_from": "2025-01-01",
                "input": 1.5,
                "output": 3.0,
                "cached_input": 0.5,
                "reasoning": 6.0,
                "aliases": ["openrouter/acme-large", "acme-xl"],
            }
        ]
    )
    for name in ("acme-llm", "acme-llm-2025-03-01", "acme-large", "acme-xl", "ACME-XL-latest"):
        price = table.lookup(name, NOW)
        assert price is not None, name
        assert (price.model, price.provider, price.input, price.reasoning) == (
            "acme-llm",
            "acme",
            1.5,
            6.0,
        )
    assert PRICES.lookup("acme-llm", NOW) is None
    call = LlmCall(
        end_ns=int(NOW * 1e9),
        model="acme-xl",
        input_tokens=1000,
        cached_input_tokens=400,
        output_tokens=100,
        reasoning_tokens=40,
    )
    table.apply(call)
    assert call.provider == "acme"
    assert call.cost_usd == pytest.approx((600 * 1.5 + 400 * 0.5 + 60 * 3.0 + 40 * 6.0) / M)


def test_override_used_by_decoder(encoding):
    table = PriceTable.bundled(
        [
            {
                "model": "gpt-4o",
                "provider": "openai",
                "valid_from": "2024-10-01",
                "input": 100.0,
                "output": 0.0,
            }
        ]
    )
    call, _ = one_call(
        {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000},
        encoding,
        decoder=make_decoder(prices=table),
    )
    assert call.cost_usd == pytest.approx(0.1)


def test_empty_table_prices_nothing():
    table = PriceTable([])
    assert table.lookup("gpt-4o", NOW) is None


# --- Price.cost ------------------------------------------------------------------------------

P = Price("m", "p", date(2024, 1, 1), input=2.0, output=10.0, cached_input=0.5, reasoning=20.0)
P_PLAIN = Price("m", "p", date(2024, 1, 1), input=2.0, output=10.0)


@pytest.mark.parametrize(
    ("price", "tokens", "expected"),
    [
        # (input, cached, output, reasoning)
        (P, (0, 0, 0, 0), 0.0),
        (P, (1000, 0, 0, 0), 1000 * 2.0 / M),
        (P, (0, 0, 1000, 0), 1000 * 10.0 / M),
        # input includes cached
        (P, (1000, 400, 100, 0), (600 * 2.0 + 400 * 0.5 + 100 * 10.0) / M),
        (P, (1000, 1000, 0, 0), 1000 * 0.5 / M),
        # more cached than input: input was reported excluding the cache
        (P, (300, 1000, 0, 0), (300 * 2.0 + 1000 * 0.5) / M),
        (P, (0, 500, 0, 0), 500 * 0.5 / M),
        # reasoning is part of output and priced at the reasoning price
        (P, (0, 0, 500, 200), (300 * 10.0 + 200 * 20.0) / M),
        (P, (0, 0, 500, 500), 500 * 20.0 / M),
        # more reasoning than output: capped at output
        (P, (0, 0, 100, 300), 100 * 20.0 / M),
        # no cached / reasoning price: input / output price
        (P_PLAIN, (1000, 400, 500, 200), (600 * 2.0 + 400 * 2.0 + 300 * 10.0 + 200 * 10.0) / M),
        (P, (2000, 500, 1000, 250), (1500 * 2.0 + 500 * 0.5 + 750 * 10.0 + 250 * 20.0) / M),
    ],
)
def test_price_cost_arithmetic(price, tokens, expected):
    input_tokens, cached, output, reasoning = tokens
    call = LlmCall(
        end_ns=0,
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        output_tokens=output,
        reasoning_tokens=reasoning,
    )
    assert price.cost(call) == pytest.approx(expected, rel=1e-12, abs=0)


def test_price_cost_ignores_total_tokens():
    call = LlmCall(end_ns=0, input_tokens=10, output_tokens=10, total_tokens=10**9)
    assert P_PLAIN.cost(call) == pytest.approx((10 * 2.0 + 10 * 10.0) / M)


def test_anthropic_style_cache_reads_through_decoder(encoding):
    """Anthropic reports input tokens excluding cache reads: cached > input."""
    call, _ = one_call(
        {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-haiku-4-5",
            "gen_ai.usage.input_tokens": 200,
            "gen_ai.usage.cache_read.input_tokens": 5000,
            "gen_ai.usage.output_tokens": 100,
        },
        encoding,
    )
    # claude-haiku-4-5: input 1.00, cached 0.10, output 5.00
    assert call.cost_usd == pytest.approx((200 * 1.00 + 5000 * 0.10 + 100 * 5.00) / M, rel=1e-12)


# --- the shipped table --------------------------------------------------------------------

PROVIDERS = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "gcp.gemini": "Google Gemini",
    "mistral_ai": "Mistral",
    "aws.bedrock": "Meta Llama on Bedrock",
    "deepseek": "DeepSeek",
    "x_ai": "xAI",
}


def _free_or_embedding(row: dict) -> bool:
    return "embed" in str(row["model"])


def test_every_named_provider_is_covered():
    rows = shipped_rows()
    for provider, label in PROVIDERS.items():
        chat_rows = [r for r in rows if r["provider"] == provider and not _free_or_embedding(r)]
        assert chat_rows, f"no priced chat model for {label}"
    bedrock = [r["model"] for r in rows if r["provider"] == "aws.bedrock"]
    assert bedrock and all(m.startswith("llama") for m in bedrock)


@pytest.mark.parametrize("row", shipped_rows(), ids=lambda r: f"{r['model']}@{r['valid_from']}")
def test_shipped_row_is_sane(row):
    assert row["provider"] in PROVIDERS
    assert isinstance(row["valid_from"], date)
    assert date(2022, 1, 1) <= row["valid_from"] <= date(2026, 12, 31)
    if _free_or_embedding(row):
        assert row["input"] >= 0 and row["output"] == 0
    else:
        assert row["input"] > 0, "chat models must have a positive input price"
        assert row["output"] > 0
    if row.get("cached_input") is not None:
        assert 0 <= row["cached_input"] <= row["input"]
    assert canonical_model(row["model"]) == row["model"]
    # the row is what a lookup of its own name at its own valid_from returns
    at = datetime(
        row["valid_from"].year, row["valid_from"].month, row["valid_from"].day, tzinfo=UTC
    ).timestamp()
    price = PRICES.lookup(row["model"], at)
    assert (price.model, price.provider, price.input, price.output) == (
        row["model"],
        row["provider"],
        row["input"],
        row["output"],
    )
    for alias in row.get("aliases", []) or []:
        assert PRICES.lookup(alias, at).model == row["model"]


def test_no_duplicate_model_and_valid_from():
    keys = [(r["model"], r["valid_from"]) for r in shipped_rows()]
    assert len(keys) == len(set(keys))
