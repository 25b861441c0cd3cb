"""Batch API cost estimates and the budget guard run before a batch is submitted.

Prices live in ``data/batch_prices.json`` (USD per 1M tokens, Batch tier, with an ``as_of``
date); users override or extend them with ``PriceTable.load(overrides)``. A model with no price
is an error, never a zero: the budget guard must not pass a batch it cannot price.
Imports nothing from Airflow.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.tokens import RequestTokens, count_request_tokens

TOKENS_PER_PRICE_UNIT: Final = 1_000_000
MIXED_MODELS: Final = "mixed"
# A dated snapshot of a listed model: gpt-4o-mini-2024-07-18, gpt-4-0613.
_SNAPSHOT_SUFFIX: Final = re.compile(r"(?P<base>.+)-(?:\d{4}-\d{2}-\d{2}|\d{4})")
_PRICE_FIELDS: Final = frozenset({"input", "cached_input", "output"})

# USD for (input, cached, output) tokens; the cached tokens are part of the input tokens.
UsageCost = Callable[[int, int, int], float]


class UnknownModelPriceError(OpenAIBatchInputError):
    """No price is known for a model, so its cost cannot be estimated."""


class BudgetExceededError(OpenAIBatchInputError):
    """The estimated cost of a batch is above the configured limit."""


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per 1M tokens at the Batch tier; ``cached_input`` None means billed as input."""

    input: float
    output: float
    cached_input: float | None = None

    def usage_cost(self) -> UsageCost:
        """
        The cost of usage at this price: the one place the formula is written.

        A function with the rates bound, because reconciliation prices every row with it.
        """
        input_rate, output_rate = self.input, self.output
        cached_rate = self.input if self.cached_input is None else self.cached_input
        unit = TOKENS_PER_PRICE_UNIT

        def cost(input_tokens: int, cached_tokens: int, output_tokens: int) -> float:
            return (
                (input_tokens - cached_tokens) * input_rate + cached_tokens * cached_rate + output_tokens * output_rate
            ) / unit

        return cost


@dataclass(frozen=True, slots=True)
class Estimate:
    """Estimated size and cost of a set of requests.

    ``max_output_tokens`` and so ``cost_usd`` are ceilings: every request is assumed to write
    its full output limit. ``uncapped_requests`` counts requests that set no limit, for which the
    model's own maximum was assumed.
    """

    requests: int
    input_tokens: int
    max_output_tokens: int
    cost_usd: float
    model: str
    uncapped_requests: int = 0

    def __add__(self, other: Estimate) -> Estimate:
        if not isinstance(other, Estimate):
            return NotImplemented
        return Estimate(
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            max_output_tokens=self.max_output_tokens + other.max_output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            model=_combined_model(self, other),
            uncapped_requests=self.uncapped_requests + other.uncapped_requests,
        )

    @classmethod
    def empty(cls, model: str = MIXED_MODELS) -> Estimate:
        return cls(requests=0, input_tokens=0, max_output_tokens=0, cost_usd=0.0, model=model)

    def describe(self) -> str:
        return (
            f"{self.requests:,} requests to {self.model}, {self.input_tokens:,} input tokens, "
            f"up to {self.max_output_tokens:,} output tokens, {usd(self.cost_usd)}"
        )


def usd(value: float) -> str:
    """Dollars with four decimals, or as many more as it takes to show two significant digits."""
    if value == 0 or abs(value) >= 0.0001:
        return f"${value:,.4f}"
    decimals = min(12, 1 - math.floor(math.log10(abs(value))))
    return f"${value:,.{decimals}f}"


def _unpickle_prices(prices: dict[str, ModelPrice], as_of: str, source: str) -> PriceTable:
    return PriceTable(MappingProxyType(prices), as_of, source)


def _combined_model(a: Estimate, b: Estimate) -> str:
    if a.requests == 0:
        return b.model
    if b.requests == 0 or a.model == b.model:
        return a.model
    return MIXED_MODELS


@dataclass(frozen=True)
class PriceTable:
    """Model prices with dated-snapshot resolution; build it with ``PriceTable.load``."""

    prices: Mapping[str, ModelPrice]
    as_of: str = "unknown"
    source: str = ""

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | str | os.PathLike[str] | None = None) -> PriceTable:
        """The packaged table, with ``overrides`` (a mapping or a JSON file path) on top.

        Overrides take the packaged file's shape, ``{"models": {name: price}}``, or just
        ``{name: price}``; a price is ``{"input": x, "output": y, "cached_input": z}`` in USD per
        1M tokens at the Batch tier (``cached_input`` optional). Each replaces the whole entry.
        """
        document = _packaged_document()
        prices = _parse_models(document["models"], origin="the packaged batch_prices.json")
        as_of, source = str(document.get("as_of", "unknown")), str(document.get("source", ""))
        if overrides is not None:
            origin = "the price overrides"
            if isinstance(overrides, str | os.PathLike):
                origin = str(overrides)
                overrides = _read_json(Path(overrides))
            models = overrides.get("models", overrides)
            if not isinstance(models, Mapping):
                raise OpenAIBatchInputError(f"'models' in {origin} must map model names to prices.")
            prices.update(_parse_models(models, origin=origin))
            source = f"{source} Overridden by {origin}.".strip()
        return cls(prices=MappingProxyType(prices), as_of=as_of, source=source)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as a plain dict (a read-only mapping does not pickle), for reconciliation workers."""
        return _unpickle_prices, (dict(self.prices), self.as_of, self.source)

    def resolve(self, model: str) -> str:
        """The table key priced for ``model``: itself, or the base of a dated snapshot."""
        if model in self.prices:
            return model
        snapshot = _SNAPSHOT_SUFFIX.fullmatch(model)
        if snapshot and snapshot["base"] in self.prices:
            return snapshot["base"]
        raise UnknownModelPriceError(
            f"No Batch price for model {model!r} (prices as of {self.as_of}). Give it in a JSON file "
            f'{{"{model}": {{"input": ..., "output": ..., "cached_input": ...}}}} (USD per 1M tokens at the '
            "Batch tier): --prices FILE on the command line, prices=FILE (or that mapping) on the operators."
        )

    def price(self, model: str) -> ModelPrice:
        return self.prices[self.resolve(model)]

    def cost(self, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        """USD for the given usage; ``cached_tokens`` are the part of ``input_tokens`` read from cache."""
        if not 0 <= cached_tokens <= input_tokens:
            raise OpenAIBatchInputError(
                f"cached_tokens ({cached_tokens}) must be between 0 and input_tokens ({input_tokens})."
            )
        return self.price(model).usage_cost()(input_tokens, cached_tokens, output_tokens)


def estimate_cost(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    *,
    prices: PriceTable | None = None,
) -> float:
    """USD at Batch prices (the packaged table unless ``prices`` is given)."""
    table = prices if prices is not None else _default_table()
    return table.cost(model, input_tokens, output_tokens, cached_tokens)


def check_budget(estimate: Estimate, max_cost_usd: float | None) -> None:
    """Raise ``BudgetExceededError`` when the estimate is above ``max_cost_usd`` (None: no limit)."""
    if max_cost_usd is None:
        return
    if not (isinstance(max_cost_usd, int | float) and math.isfinite(max_cost_usd) and max_cost_usd >= 0):
        raise OpenAIBatchInputError(f"max_cost_usd must be a non-negative number, got {max_cost_usd!r}.")
    if estimate.cost_usd <= max_cost_usd:
        return
    message = (
        f"Estimated batch cost {usd(estimate.cost_usd)} exceeds max_cost_usd={usd(max_cost_usd)}: "
        f"{estimate.requests:,} requests to {estimate.model}, {estimate.input_tokens:,} input tokens, "
        f"up to {estimate.max_output_tokens:,} output tokens."
    )
    if estimate.uncapped_requests:
        message += (
            f" {estimate.uncapped_requests:,} requests set no output limit, so the model's maximum was "
            "assumed; set max_completion_tokens (chat) or max_output_tokens (responses) to tighten it."
        )
    raise BudgetExceededError(message + " Raise max_cost_usd or send fewer requests.")


class CostEstimator:
    """Accumulates token and cost estimates over a stream of ``(url, body)`` request lines.

    Totals are kept per model and per input file, so one pass over the JSONL serves both the
    budget guard (``total()``) and a per-file report. Prices default to the packaged table.
    """

    def __init__(self, prices: PriceTable | None = None) -> None:
        self.prices = prices if prices is not None else _default_table()
        self._by_model: dict[str, Estimate] = {}
        self._by_file: dict[str, Estimate] = {}

    def add(self, url: str, body: Mapping[str, Any], file: str | None = None) -> Estimate:
        """Count one request; returns its own estimate."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise OpenAIBatchInputError(
                f"Request to {url} has no 'model'{f' in {file}' if file else ''}; cannot price it."
            )
        tokens = count_request_tokens(url, body)
        one = self._estimate(model, tokens)
        self._by_model[model] = self._by_model.get(model, Estimate.empty(model)) + one
        if file is not None:
            self._by_file[file] = self._by_file.get(file, Estimate.empty(model)) + one
        return one

    def add_all(self, requests: Iterable[tuple[str, Mapping[str, Any]]], file: str | None = None) -> Estimate:
        """Count a stream of requests (consumed lazily); returns their combined estimate."""
        total = Estimate.empty()
        for url, body in requests:
            total += self.add(url, body, file)
        return total

    def per_model(self) -> dict[str, Estimate]:
        return dict(self._by_model)

    def per_file(self) -> dict[str, Estimate]:
        return dict(self._by_file)

    def total(self) -> Estimate:
        total = Estimate.empty()
        for estimate in self._by_model.values():
            total += estimate
        return total

    def _estimate(self, model: str, tokens: RequestTokens) -> Estimate:
        return Estimate(
            requests=1,
            input_tokens=tokens.input_tokens,
            max_output_tokens=tokens.max_output_tokens,
            cost_usd=self.prices.cost(model, tokens.input_tokens, tokens.max_output_tokens),
            model=model,
            uncapped_requests=int(tokens.output_limit_assumed),
        )


def _parse_models(models: Mapping[str, Any], origin: str) -> dict[str, ModelPrice]:
    return {str(name): _parse_price(name, raw, origin) for name, raw in models.items()}


def _parse_price(model: str, raw: Any, origin: str) -> ModelPrice:
    if isinstance(raw, ModelPrice):
        return raw
    where = f"price of {model!r} in {origin}"
    if not isinstance(raw, Mapping):
        raise OpenAIBatchInputError(f"The {where} must be an object with 'input' and 'output'.")
    unknown = set(raw) - _PRICE_FIELDS
    if unknown:
        raise OpenAIBatchInputError(f"The {where} has unknown fields {sorted(unknown)}; use {sorted(_PRICE_FIELDS)}.")
    cached_input = _rate(raw, "cached_input", where)
    return ModelPrice(
        input=_required(_rate(raw, "input", where), "input", where),
        output=_required(_rate(raw, "output", where), "output", where),
        cached_input=cached_input,
    )


def _rate(raw: Mapping[str, Any], key: str, where: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise OpenAIBatchInputError(
            f"The {where} has {key}={value!r}; expected a non-negative number of USD per 1M tokens."
        )
    return float(value)


def _required(value: float | None, key: str, where: str) -> float:
    if value is None:
        raise OpenAIBatchInputError(f"The {where} is missing {key!r} (USD per 1M tokens).")
    return value


def _read_json(path: Path) -> Mapping[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise OpenAIBatchInputError(f"Cannot read price overrides from {path}: {exc}", path=str(path)) from exc
    if not isinstance(document, Mapping):
        raise OpenAIBatchInputError(f"Price overrides in {path} must be a JSON object.", path=str(path))
    return document


@functools.cache
def _packaged_document() -> Mapping[str, Any]:
    resource = resources.files("airflow_provider_openai_batch").joinpath("data", "batch_prices.json")
    return MappingProxyType(json.loads(resource.read_text(encoding="utf-8")))


@functools.cache
def _default_table() -> PriceTable:
    return PriceTable.load()
