from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from airflow_provider_openai_batch.core.costs import (
    MIXED_MODELS,
    BudgetExceededError,
    CostEstimator,
    Estimate,
    ModelPrice,
    PriceTable,
    UnknownModelPriceError,
    check_budget,
    estimate_cost,
)
from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.tokens import count_request_tokens

CHAT = "/v1/chat/completions"
REQUIRED_MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "o3",
    "o4-mini",
    "o3-mini",
    "gpt-4-turbo",
    "gpt-3.5-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "omni-moderation-latest",
]


def _chat(model: str, text: str = "hello world", limit: int | None = 100) -> dict:
    body: dict = {"model": model, "messages": [{"role": "user", "content": text}]}
    if limit is not None:
        body["max_completion_tokens"] = limit
    return body


def test_packaged_table_is_dated_and_covers_common_models() -> None:
    table = PriceTable.load()

    assert table.as_of[:2] == "20"
    assert "50%" in table.source
    for model in REQUIRED_MODELS:
        assert table.price(model).output >= 0
    assert table.price("omni-moderation-latest") == ModelPrice(input=0.0, output=0.0)


def test_estimate_cost_at_batch_prices() -> None:
    # gpt-4o-mini Batch: $0.075 in, $0.30 out per 1M tokens.
    assert estimate_cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.375)
    assert estimate_cost("text-embedding-3-small", 2_000_000, 0) == pytest.approx(0.02)


def test_cached_tokens_are_part_of_input_at_the_cached_rate() -> None:
    # gpt-4o Batch: $1.25 input, $0.625 cached input.
    assert estimate_cost("gpt-4o", 1_000_000, 0, cached_tokens=400_000) == pytest.approx(0.75 + 0.25)
    # No cached price published: cached tokens cost the input price.
    assert estimate_cost("gpt-4-turbo", 1_000_000, 0, cached_tokens=1_000_000) == pytest.approx(5.0)
    with pytest.raises(OpenAIBatchInputError, match="cached_tokens"):
        estimate_cost("gpt-4o", 10, 0, cached_tokens=11)


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-4-0613", "gpt-4"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("o3-mini-2025-01-31", "o3-mini"),
        # A snapshot with its own price is listed and wins over its base.
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("gpt-4o", "gpt-4o"),
    ],
)
def test_dated_snapshots_resolve_to_their_base(model: str, key: str) -> None:
    assert PriceTable.load().resolve(model) == key


@pytest.mark.parametrize("model", ["gpt-5-pro", "o3-pro", "gpt-4o-audio-preview", "ft:gpt-4o-mini:acme::x1"])
def test_other_variants_are_not_priced_as_their_family(model: str) -> None:
    # gpt-5-pro costs 12x gpt-5: a plain prefix match would under-estimate it silently.
    with pytest.raises(UnknownModelPriceError, match=model.replace(".", r"\.")):
        PriceTable.load().resolve(model)


def test_unknown_model_error_names_model_and_fix() -> None:
    with pytest.raises(UnknownModelPriceError) as raised:
        estimate_cost("my-new-model", 10, 10)

    message = str(raised.value)
    assert "'my-new-model'" in message
    assert "--prices FILE" in message and "prices=FILE" in message
    assert isinstance(raised.value, OpenAIBatchInputError)


def test_overrides_from_mapping_replace_and_extend() -> None:
    table = PriceTable.load(
        {
            "gpt-4o": {"input": 1.0, "output": 2.0},
            "my-new-model": ModelPrice(input=3.0, output=4.0, cached_input=0.5),
        }
    )

    assert table.price("gpt-4o-2024-08-06") == ModelPrice(input=1.0, output=2.0)
    assert table.cost("my-new-model", 1_000_000, 1_000_000) == pytest.approx(7.0)
    assert table.price("gpt-4o-mini") == PriceTable.load().price("gpt-4o-mini")


def test_overrides_from_json_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"as_of": "2030-01-01", "models": {"my-model": {"input": 1, "output": 1}}}))

    table = PriceTable.load(path)

    assert table.price("my-model-2030-01-01") == ModelPrice(input=1.0, output=1.0)
    assert str(path) in table.source
    assert PriceTable.load(str(path)).price("my-model").input == 1.0


@pytest.mark.parametrize(
    ("price", "match"),
    [
        ({"input": 1.0}, "missing 'output'"),
        ({"input": -1, "output": 1}, "input=-1"),
        ({"input": "1", "output": 1}, "input='1'"),
        ({"input": 1, "output": 1, "imput": 1}, "unknown fields"),
        (5, "must be an object"),
    ],
)
def test_bad_overrides_are_rejected_with_the_model_named(price: object, match: str) -> None:
    with pytest.raises(OpenAIBatchInputError, match=match) as raised:
        PriceTable.load({"my-model": price})
    assert "'my-model'" in str(raised.value)


def test_unreadable_override_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text("{not json")

    with pytest.raises(OpenAIBatchInputError, match="Cannot read price overrides"):
        PriceTable.load(path)


def test_estimate_addition() -> None:
    a = Estimate(requests=2, input_tokens=10, max_output_tokens=20, cost_usd=0.5, model="gpt-4o")
    b = Estimate(requests=1, input_tokens=5, max_output_tokens=5, cost_usd=0.25, model="gpt-4o", uncapped_requests=1)
    c = Estimate(requests=1, input_tokens=1, max_output_tokens=1, cost_usd=0.0, model="gpt-4o-mini")

    assert a + b == Estimate(3, 15, 25, 0.75, "gpt-4o", uncapped_requests=1)
    assert (a + c).model == MIXED_MODELS
    assert Estimate.empty() + a == a


def test_budget_within_limit_passes() -> None:
    estimate = Estimate(requests=10, input_tokens=1_000, max_output_tokens=1_000, cost_usd=1.0, model="gpt-4o")

    check_budget(estimate, 1.0)
    check_budget(estimate, None)


def test_budget_exceeded_names_estimate_and_limit() -> None:
    estimate = Estimate(
        requests=1_200_000,
        input_tokens=360_000_000,
        max_output_tokens=19_660_800_000,
        cost_usd=5925.24,
        model="gpt-4o-mini",
        uncapped_requests=1_200_000,
    )

    with pytest.raises(BudgetExceededError) as raised:
        check_budget(estimate, 100)

    message = str(raised.value)
    for part in ("$5,925.2400", "max_cost_usd=$100.0000", "1,200,000 requests", "360,000,000 input", "gpt-4o-mini"):
        assert part in message
    assert "max_completion_tokens" in message
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, OpenAIBatchInputError)


@pytest.mark.parametrize("limit", [-1, math.nan, "10"])
def test_budget_limit_must_be_a_number(limit: object) -> None:
    with pytest.raises(OpenAIBatchInputError, match="max_cost_usd"):
        check_budget(Estimate.empty(), limit)  # type: ignore[arg-type]


def test_estimator_totals_per_model_and_per_file() -> None:
    estimator = CostEstimator()
    file_a = [(CHAT, _chat("gpt-4o-mini")) for _ in range(3)]
    file_b = [
        (CHAT, _chat("gpt-4o", limit=None)),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}),
    ]

    sum_a = estimator.add_all(iter(file_a), file="a.jsonl")
    estimator.add_all(file_b, file="b.jsonl")

    one = count_request_tokens(CHAT, _chat("gpt-4o-mini"))
    per_model = estimator.per_model()
    assert per_model["gpt-4o-mini"] == sum_a
    assert sum_a.requests == 3
    assert sum_a.input_tokens == 3 * one.input_tokens
    assert sum_a.max_output_tokens == 300
    assert sum_a.cost_usd == pytest.approx(3 * estimate_cost("gpt-4o-mini", one.input_tokens, 100))
    assert per_model["gpt-4o"].max_output_tokens == 16_384
    assert per_model["gpt-4o"].uncapped_requests == 1

    per_file = estimator.per_file()
    assert per_file["a.jsonl"] == sum_a
    assert per_file["b.jsonl"].requests == 2
    assert per_file["b.jsonl"].model == MIXED_MODELS

    total = estimator.total()
    assert total.requests == 5
    assert total.cost_usd == pytest.approx(sum(e.cost_usd for e in per_model.values()))
    assert total.cost_usd == pytest.approx(per_file["a.jsonl"].cost_usd + per_file["b.jsonl"].cost_usd)
    assert total.model == MIXED_MODELS


def test_estimator_refuses_unpriced_or_modelless_requests() -> None:
    estimator = CostEstimator(PriceTable.load())

    with pytest.raises(UnknownModelPriceError, match="gpt-99"):
        estimator.add(CHAT, _chat("gpt-99"))
    with pytest.raises(OpenAIBatchInputError, match=r"no 'model' in f\.jsonl"):
        estimator.add(CHAT, {"messages": []}, file="f.jsonl")


def test_budget_guard_end_to_end() -> None:
    estimator = CostEstimator(PriceTable.load({"pricey": {"input": 1_000_000, "output": 0}}))
    estimator.add(CHAT, _chat("pricey", "hello world"))

    with pytest.raises(BudgetExceededError, match="1 requests to pricey"):
        check_budget(estimator.total(), 0.5)
