"""Build the batch input: request lines from records, split into validated, priced shards with a manifest."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, Context, ObjectStoragePath

from airflow_provider_openai_batch.core.cache.settings import check_mode, max_age_seconds, reads, writes
from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.handoffs import ShardRef
from airflow_provider_openai_batch.core.limits import (
    MAX_BYTES_PER_FILE,
    MAX_EMBEDDING_INPUTS_PER_BATCH,
    MAX_REQUESTS_PER_FILE,
)
from airflow_provider_openai_batch.core.naming import safe_name
from airflow_provider_openai_batch.core.shards import Manifest, Shard, ShardWriter
from airflow_provider_openai_batch.hooks.answer_cache import CacheSpec, answer_store, has_answers, table_of
from airflow_provider_openai_batch.hooks.storage import as_storage_path, atomic_open, opener_under

if TYPE_CHECKING:
    from airflow_provider_openai_batch.core.build.building import CacheHits, JobEstimate
    from airflow_provider_openai_batch.core.build.requests import RequestBuilder, RequestTemplate
    from airflow_provider_openai_batch.core.tokens import TokenEstimate

# Templating, token counting, validation and the sources are imported where the task runs them,
# not at module import: the DAG processor parses every DAG file that uses this operator.

DEFAULT_JOB_ID = "{{ dag.dag_id }}__{{ run_id }}"


class OpenAIBatchBuildOperator(BaseOperator):
    """
    Turn records into batch request files ready to submit: rendered, split, validated and priced.

    Each record becomes one request whose ``custom_id`` is the record's ``key_field`` (stable across
    reruns, so results join back to records). Requests are written as shards within the per-file
    limits under ``{work_dir}/{job_id}/requests/``. The shards are then read back and validated
    (every problem as ``path:line: message``), and the job's tokens and cost are estimated; only
    when all is well, and the estimate is within ``max_cost_usd``, is ``manifest.json`` written.
    A failing build leaves no manifest and returns nothing, so nothing downstream can submit it.

    The return value (XCom) is the list of shards (location, request count, bytes, sha256, token
    and cost estimates, the manifest's location), never the requests, so a submit task maps over it
    with ``submit.expand(shard=build.output)``. A job summary is pushed under the XCom key ``summary``.

    :param records: a list of mappings (e.g. an upstream task's XCom), or the path or URI of a
        ``.jsonl``/``.csv``/``.parquet`` file (local or any ``ObjectStoragePath``), read streamed.
    :param records_format: ``jsonl``, ``csv`` or ``parquet`` when the file's extension does not say.
    :param sql: instead of ``records``, a query whose rows are the records, run through the
        common-sql connection ``sql_conn_id`` and read with a streaming cursor.
    :param sql_conn_id: the SQL connection (postgres, sqlite, mysql, ...).
    :param sql_parameters: parameters for ``sql``, in the driver's style.
    :param key_field: the record field that identifies it; becomes the ``custom_id``.
    :param endpoint: the Batch endpoint, e.g. ``/v1/chat/completions``.
    :param model: one model for the whole job (so one per shard).
    :param messages: chat messages (or Responses ``input`` items) whose strings are Jinja templates
        over the record, e.g. ``[{"role": "user", "content": "{{ text }}"}]``; rendered per record by
        the provider, not by Airflow's own templating.
    :param prompt: the template for single-input endpoints: Responses/embeddings/moderations
        ``input``, completions ``prompt``; a list gives several embedding inputs per request.
    :param body: other body parameters passed through (``max_tokens``, ``temperature``, ...).
    :param response_format: Structured Outputs from a pydantic model class or a JSON Schema dict,
        made strict-valid; chat gets ``response_format``, Responses ``text.format``.
    :param work_dir: where shards and the manifest are written (local path or ``ObjectStoragePath`` URI).
    :param job_id: names the job's folder and tags its batches; defaults to ``<dag_id>__<run_id>``.
    :param max_requests_per_shard: at most 50,000 (the API's limit).
    :param max_inputs_per_shard: embedding jobs keep each shard within this many inputs (at most
        50,000, the API's limit per batch), counting each request's list of inputs.
    :param max_bytes_per_shard: at most 200 MB (the API's limit).
    :param max_tokens_per_shard: at most this many estimated input tokens per shard, to stay
        under your organisation's enqueued-token limit for the model; None for no limit.
    :param token_estimate: ``"sample"`` (default) counts the prompts of the first 10,000 records
        and every 100th after exactly and estimates the rest from their length; ``"exact"``
        counts all (slower: ~10 µs per 40-token prompt). Constant text is always counted exactly.
    :param prices: Batch price overrides (a mapping or a JSON file path) on top of the packaged table.
    :param max_cost_usd: fail before anything is uploaded when the estimated cost (with every
        request writing its full output limit) is above this.
    :param cache: the answer cache: a folder (local path or ``ObjectStoragePath`` URI) of Parquet
        parts, or a table ``{"conn_id": ..., "table": ...}`` (``"conn_id:table"``) on a PostgreSQL or
        SQLite connection; off (None) by default. A request whose answer is there (same endpoint and body,
        whatever the record or DAG) is not written to a shard: the results task delivers the
        cached answer (docs/cache.md).
    :param cache_mode: ``read-write`` (default), ``read-only`` (use answers, never add) or
        ``refresh`` (send everything, add the new answers).
    :param cache_max_age: older answers are not used (a ``timedelta`` or seconds; None: any age).
    :param cache_nondeterministic: also cache jobs whose settings sample (``temperature`` > 0
        without a ``seed``, ``n`` > 1), whose answers would differ from run to run.
    """

    template_fields: Sequence[str] = (
        "records",
        "sql",
        "sql_parameters",
        "work_dir",
        "job_id",
        "model",
        "prices",
        "cache",
    )

    def __init__(
        self,
        *,
        key_field: str,
        endpoint: str,
        model: str,
        work_dir: str,
        records: Iterable[Mapping[str, Any]] | str | ObjectStoragePath | None = None,
        records_format: str | None = None,
        sql: str | None = None,
        sql_conn_id: str | None = None,
        sql_parameters: Mapping[str, Any] | Sequence[Any] | None = None,
        messages: Sequence[Mapping[str, Any]] = (),
        prompt: Any = None,
        body: Mapping[str, Any] | None = None,
        response_format: Any = None,
        job_id: str = DEFAULT_JOB_ID,
        max_requests_per_shard: int = MAX_REQUESTS_PER_FILE,
        max_inputs_per_shard: int = MAX_EMBEDDING_INPUTS_PER_BATCH,
        max_bytes_per_shard: int = MAX_BYTES_PER_FILE,
        max_tokens_per_shard: int | None = None,
        token_estimate: TokenEstimate = "sample",
        prices: Mapping[str, Any] | str | None = None,
        max_cost_usd: float | None = None,
        cache: CacheSpec | None = None,
        cache_mode: str = "read-write",
        cache_max_age: timedelta | float | None = None,
        cache_nondeterministic: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (records is None) == (sql is None):
            raise ValueError("give exactly one source: records= (a list or a file) or sql= with sql_conn_id=")
        if sql is not None and not sql_conn_id:
            raise ValueError("sql= needs sql_conn_id=, the common-sql connection to run it on")
        # Records written in the DAG file are data, not templates: kept out of Airflow's Jinja (a
        # review that says "{{" would be rendered, or fail) and out of the rendered fields. A string
        # (a path, URI or Jinja expression) or an upstream task's output stays templated.
        self.literal_records = records if isinstance(records, list | tuple) else None
        self.records = None if self.literal_records is not None else records
        self.records_format = records_format
        self.sql = sql
        self.sql_conn_id = sql_conn_id
        self.sql_parameters = sql_parameters
        self.key_field = key_field
        self.endpoint = endpoint
        self.model = model
        self.work_dir = work_dir
        self.messages = messages
        self.prompt = prompt
        self.body = dict(body or {})
        # A pydantic model class is turned into its strict schema here, at parse time, so the
        # operator holds plain JSON only.
        self.response_format = _plain_format(response_format)
        self.job_id = job_id
        self.max_requests_per_shard = max_requests_per_shard
        if not 0 < max_inputs_per_shard <= MAX_EMBEDDING_INPUTS_PER_BATCH:
            raise ValueError(f"max_inputs_per_shard must be 1..{MAX_EMBEDDING_INPUTS_PER_BATCH:,}")
        self.max_inputs_per_shard = max_inputs_per_shard
        self.max_bytes_per_shard = max_bytes_per_shard
        self.max_tokens_per_shard = max_tokens_per_shard
        self.token_estimate = token_estimate
        self.prices = prices
        self.max_cost_usd = max_cost_usd
        if cache is not None:
            table_of(cache)  # a malformed table spec fails at parse time
        self.cache = cache
        self.cache_mode = check_mode(cache_mode)
        self.cache_max_age = max_age_seconds(cache_max_age)
        self.cache_nondeterministic = cache_nondeterministic

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_provider_openai_batch.core.memory_pool import choose_returning_pool

        choose_returning_pool()  # before anything loads pyarrow in this task's process

        from airflow_provider_openai_batch.core.build.building import estimate_shards, validate_shards, write_requests
        from airflow_provider_openai_batch.core.build.requests import RequestBuilder
        from airflow_provider_openai_batch.core.costs import PriceTable

        job_id = safe_name(self.job_id)
        job_dir = as_storage_path(self.work_dir) / job_id
        manifest_path = job_dir / "manifest.json"
        manifest_path.unlink(missing_ok=True)  # an older attempt's manifest must not outlive a failure
        template = self._template()
        prices = PriceTable.load(self.prices)
        builder = RequestBuilder(template, self.key_field, token_estimate=self.token_estimate)
        writer = ShardWriter(
            opener_under(job_dir / "requests"),
            job_id,
            max_requests=self._max_requests(template),
            max_bytes=self.max_bytes_per_shard,
            max_tokens=self.max_tokens_per_shard,
        )
        if self.max_tokens_per_shard is not None and builder.output_tokens is None:
            raise OpenAIBatchInputError(f"max_tokens_per_shard needs a token estimate: {builder.token_note}")
        cache = self._cache_use(template)
        hits = None
        hits_path = job_dir / "cache" / "hits.parquet"
        hits_path.unlink(missing_ok=True)
        if cache is not None and reads(self.cache_mode) and has_answers(cache):  # an empty cache: one pass
            shards, hits = self._write_with_cache(builder, writer, cache, hits_path)
        else:
            shards = write_requests(self._records(), builder, writer)
        if not shards and not (hits and hits.requests):
            raise OpenAIBatchInputError("no records to build: the job would be an empty batch")
        self.log.info(
            "Wrote %d requests in %d shard(s) under %s; validating them", _total(shards), len(shards), job_dir
        )
        validate_shards(shards, _open_for_reading).raise_for_errors()
        shards, estimate = estimate_shards(shards, builder, prices)
        self.log.info("Estimate: %s", estimate.describe())
        if hits is not None:
            self.log.info(
                "Answer cache: %d request(s) answered from %s, not sent (they cost $%.4f when bought)",
                hits.requests,
                self.cache,
                hits.saved_usd,
            )
        self._check_budget(estimate)
        manifest = Manifest(
            job_id=job_id,
            endpoint=self.endpoint,
            model=self.model,
            key_field=self.key_field,
            shards=tuple(shards),
            extra={
                "expect_json": _expects_json(template),
                "estimate": _with_cache(estimate.to_dict(), hits),
                "prices_as_of": prices.as_of,
                "cache": self._cache_extra(cache, hits, hits_path),
            },
        )
        manifest_path.write_bytes(manifest.to_json())
        self.log.info(
            "Built job %s: %d requests in %d shard(s); manifest %s",
            job_id,
            manifest.requests,
            len(shards),
            manifest_path,
        )
        context["ti"].xcom_push(key="summary", value=self._summary(job_id, manifest_path, manifest))
        if not shards:  # every answer came from the cache: one empty shard carries the job to results
            self.log.info("Every request was answered from the cache: nothing to submit")
            return [self._shard_ref(_empty_shard(), job_id, manifest_path, manifest)]
        return [self._shard_ref(shard, job_id, manifest_path, manifest) for shard in shards]

    # -- the answer cache ---------------------------------------------------------------------

    def _cache_use(self, template: RequestTemplate) -> Any:
        """The cache's parts, unless it is off or this job's answers vary from run to run (logged)."""
        from airflow_provider_openai_batch.core.cache.keys import nondeterministic

        if not self.cache:
            return None
        why = nondeterministic(template.endpoint, template.body_tree())
        if why is not None and not self.cache_nondeterministic:
            self.log.warning(
                "Answer cache not used for this job: %s, so a cached answer would stand in for a different "
                "one; pass cache_nondeterministic=True to cache it anyway",
                why,
            )
            return None
        if why is not None:
            self.log.info("Answer cache used although %s: cache_nondeterministic=True", why)
        return answer_store(self.cache)

    def _write_with_cache(
        self, builder: RequestBuilder, writer: ShardWriter, cache: Any, hits_path: Any
    ) -> tuple[list[Shard], CacheHits]:
        from airflow_provider_openai_batch.core.build.building import write_requests_cached
        from airflow_provider_openai_batch.core.cache.lookup import CacheLookup, hits_writer

        builder.answer_keys = True
        lookup = CacheLookup(cache, max_age=self.cache_max_age)
        with atomic_open(hits_path) as handle, hits_writer(handle) as out:
            return write_requests_cached(self._records(), builder, writer, lookup, out.write_table)

    def _cache_extra(self, cache: Any, hits: CacheHits | None, hits_path: Any) -> dict[str, Any]:
        """What the results task needs: where cached answers are, and whether to add the new ones."""
        if cache is None:
            return {"uri": None, "hits": 0}
        return {
            "uri": dict(self.cache) if isinstance(self.cache, Mapping) else self.cache,
            "mode": self.cache_mode,
            "store": writes(self.cache_mode),
            "hits": hits.requests if hits else 0,
            "hits_path": str(hits_path) if hits else None,
            "saved_usd": round(hits.saved_usd, 6) if hits else 0.0,
        }

    # -- steps ------------------------------------------------------------------------------

    def _template(self) -> RequestTemplate:
        from airflow_provider_openai_batch.core.build.requests import Message, RequestTemplate

        return RequestTemplate(
            endpoint=self.endpoint,
            model=self.model,
            messages=tuple(m if isinstance(m, Message) else dict(m) for m in self.messages),
            prompt=self.prompt,
            body=self.body,
            response_format=self.response_format,
        )

    def _max_requests(self, template: RequestTemplate) -> int:
        inputs = template.inputs_per_request()
        if inputs > 1:  # the embedding-input limit binds before the request limit
            return min(self.max_requests_per_shard, self.max_inputs_per_shard // inputs)
        return self.max_requests_per_shard

    def _records(self) -> Iterator[Mapping[str, Any]]:
        from airflow_provider_openai_batch.operators.sources import file_records, sql_records

        if self.sql is not None:
            assert self.sql_conn_id is not None
            return sql_records(self.sql_conn_id, self.sql, self.sql_parameters)
        if self.literal_records is not None:
            return iter(self.literal_records)
        if isinstance(self.records, str | ObjectStoragePath):
            return file_records(self.records, self.records_format)
        if self.records is None or isinstance(self.records, Mapping):
            raise OpenAIBatchInputError("records must be a list of mappings or a file path/URI")
        return iter(self.records)

    def _check_budget(self, estimate: JobEstimate) -> None:
        from airflow_provider_openai_batch.core.costs import check_budget

        if self.max_cost_usd is None:
            return
        if estimate.total is None or not estimate.priced:
            raise OpenAIBatchInputError(
                f"max_cost_usd={self.max_cost_usd} is set but the cost cannot be estimated: {estimate.note}"
            )
        check_budget(estimate.total, self.max_cost_usd)

    def _summary(self, job_id: str, manifest_path: Any, manifest: Manifest) -> dict[str, Any]:
        return {
            "job_id": job_id,
            "manifest": str(manifest_path),
            "requests": manifest.requests,
            "shards": len(manifest.shards),
            "endpoint": self.endpoint,
            "model": self.model,
            "estimate": manifest.extra["estimate"],
            "cached": manifest.extra["cache"]["hits"],
            "saved_usd": manifest.extra["cache"].get("saved_usd", 0.0),
        }

    def _shard_ref(self, shard: Shard, job_id: str, manifest_path: Any, manifest: Manifest) -> dict[str, Any]:
        ref = ShardRef(
            **shard.to_dict(),
            job_id=job_id,
            endpoint=self.endpoint,
            model=self.model,
            manifest=str(manifest_path),
            expect_json=manifest.extra["expect_json"],
        )
        return ref.to_json()


def _with_cache(estimate: dict[str, Any], hits: CacheHits | None) -> dict[str, Any]:
    """The estimate (of the requests sent) and what the cache answered instead, and what that had cost."""
    if hits is None:
        return estimate
    return {**estimate, "cached_requests": hits.requests, "cached_cost_usd": round(hits.saved_usd, 6)}


def _empty_shard() -> Shard:
    return Shard(index=0, path="", requests=0, bytes=0, sha256="", first_custom_id="", last_custom_id="")


def _open_for_reading(path: str) -> Any:
    return as_storage_path(path).open("rb")


def _total(shards: Sequence[Shard]) -> int:
    return sum(shard.requests for shard in shards)


def _plain_format(response_format: Any) -> Any:
    if response_format is None or isinstance(response_format, Mapping):
        return response_format
    from airflow_provider_openai_batch.core.validate.structured import json_schema_format

    found = json_schema_format(response_format)
    return {"type": "json_schema", "json_schema": found}


def _expects_json(template: RequestTemplate) -> bool:
    body = template.body_tree()
    fmt = body.get("response_format") or (body.get("text") or {}).get("format") or {}
    return isinstance(fmt, Mapping) and fmt.get("type") in ("json_schema", "json_object")
