"""``TextTokenCounter``: exact counts, and the sampled estimate a large build uses."""

from __future__ import annotations

import random

import pytest

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.tokens import (
    SAMPLE_EVERY,
    SAMPLE_EXACT_FIRST,
    TextTokenCounter,
    count_text_tokens,
)

WORDS = [
    "the",
    "invoice",
    "shipment",
    "customer",
    "refund",
    "order",
    "delayed",
    "because",
    "warehouse",
    "inventory",
    "was",
    "counted",
]
OTHER = ["naïve", "café", "résumé", "東京", "données", "größe"]


def texts(n: int, seed: int = 1, words=WORDS) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 40))) for _ in range(n)]


def counted(counter: TextTokenCounter, values: list[str], chunk: int = 256) -> list[int]:
    out: list[int] = []
    for start in range(0, len(values), chunk):
        out += counter.count_many(values[start : start + chunk], start)
    return out


def test_exact_mode_counts_every_string_with_tiktoken():
    values = texts(300)
    counter = TextTokenCounter("gpt-4o-mini", "exact")
    assert counted(counter, values) == [count_text_tokens(v, "gpt-4o-mini") for v in values]
    assert (counter.exact_strings, counter.estimated_strings) == (300, 0)


def test_sample_mode_is_exact_for_the_first_records_and_every_sampled_one():
    n = SAMPLE_EXACT_FIRST + 5 * SAMPLE_EVERY + 7
    values = texts(n)
    counter = TextTokenCounter("gpt-4o-mini", "sample")
    got = counted(counter, values)
    exact = [count_text_tokens(v, "gpt-4o-mini") for v in values]
    assert got[:SAMPLE_EXACT_FIRST] == exact[:SAMPLE_EXACT_FIRST]
    sampled = range(SAMPLE_EXACT_FIRST, n, SAMPLE_EVERY)
    assert [got[i] for i in sampled] == [exact[i] for i in sampled]
    assert counter.exact_strings == SAMPLE_EXACT_FIRST + len(sampled)
    assert counter.exact_strings + counter.estimated_strings == n


def test_sampled_total_stays_close_to_the_exact_total_on_mixed_scripts():
    ascii_texts, other_texts = texts(15_000, 2), texts(15_000, 3, WORDS + OTHER)
    values = [v for pair in zip(ascii_texts, other_texts, strict=True) for v in pair]
    counter = TextTokenCounter("gpt-4o-mini", "sample")
    estimate = sum(counted(counter, values))
    exact = sum(count_text_tokens(v, "gpt-4o-mini") for v in values)
    assert counter.estimated_strings > 15_000
    assert abs(estimate - exact) / exact < 0.02


def test_an_unknown_mode_is_refused():
    with pytest.raises(OpenAIBatchInputError, match="token_estimate must be one of"):
        TextTokenCounter("gpt-4o-mini", "guess")  # type: ignore[arg-type]
