"""Collect finished batches: reconcile by custom_id, retry what is worth retrying, deliver the rows."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, Context, ObjectStoragePath

from airflow_provider_openai_batch.core.cache.settings import check_mode, writes
from airflow_provider_openai_batch.core.collect.processes import AUTO, check_processes, resolve_processes
from airflow_provider_openai_batch.core.collect.retries import RetryPolicy, RetryShardWriter
from airflow_provider_openai_batch.core.handoffs import CollectionState, ShardRef, Submitted
from airflow_provider_openai_batch.core.limits import TERMINAL_STATUSES
from airflow_provider_openai_batch.core.naming import safe_name
from airflow_provider_openai_batch.exceptions import (
    BatchLostError,
    DeliveryError,
    OpenAIBatchError,
    OpenAIBatchInputError,
    ReconcileError,
)
from airflow_provider_openai_batch.hooks.answer_cache import CacheSpec, answer_store, entry_writer, table_of
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.hooks.storage import (
    as_storage_path,
    atomic_open,
    iter_lines,
    lineage_dataset,
    opener_under,
)
from airflow_provider_openai_batch.operators.batch_lifecycle import (
    BatchWaiting,
    batch_metadata,
    submit_shard,
    wait_deadline,
)
from airflow_provider_openai_batch.triggers.events import batch_ref, check_event
from airflow_provider_openai_batch.version_compat import log_fallbacks

if TYPE_CHECKING:
    from airflow_provider_openai_batch.core.collect.attempt import AttemptReport, ShardRun
    from airflow_provider_openai_batch.core.collect.retries import RetryShard
    from airflow_provider_openai_batch.sinks.base import ResultSink

# Reconciliation, Arrow, Parquet, the price table and the sinks are imported where the task runs
# them, not at module import: the DAG processor parses every DAG file that uses this operator.

STATE_XCOM_KEY = "collection_state"


class OpenAIBatchResultsOperator(BatchWaiting, BaseOperator):
    """
    Turn finished batches into exactly one result row per request, delivered idempotently.

    Output and error lines are joined to each shard's requests by ``custom_id`` (never by
    position). Retriable failures — 429, 5xx, timeouts, requests an expired batch never ran, and
    with ``retry_cancelled`` those of a cancelled batch — go into a retry shard that is submitted
    again (waiting on the triggerer, no worker slot held) up to ``max_attempts``; each row says
    which attempt answered it. Other 4xx are never retried.

    Each attempt's final rows are staged as Parquet under ``{work_dir}/{job_id}/collect/``; when
    no retry is left the stages go to every destination: one object per job on object storage
    (Parquet, or JSONL on request, with ``summary.json`` beside it) and/or a SQL table where the
    job's rows are replaced in one transaction. The XCom is a summary — counts by status, tokens,
    cost, attempts and where the rows went — and so is the extra of the ``outlets`` asset events.

    :param batches: the submit tasks' return values (``submit.output`` of a mapped submit).
    :param destination: a directory (local path or ``ObjectStoragePath`` URI, e.g.
        ``s3://aws_default@bucket/results``) for ``{job_id}/results.parquet``.
    :param format: ``parquet`` (default) or ``jsonl`` for ``destination``.
    :param sql_conn_id: a common-sql connection (Postgres, SQLite, …) to load the rows into ``table``.
    :param table: the table (or ``schema.table``), created when missing.
    :param table_schema: the table's schema, if not in ``table``.
    :param sinks: further destinations (any :class:`~airflow_provider_openai_batch.sinks.ResultSink`).
    :param conn_id: the OpenAI connection the batches were created with.
    :param prices: price overrides (a mapping or a JSON file path) on top of the packaged table.
    :param max_attempts: attempts per request, the first batch included (1: no retries).
    :param retry_cancelled: also retry requests a cancelled batch never ran.
    :param work_dir: where stages and retry shards go; defaults to the job's build folder.
    :param poll_interval: seconds between status reads of a retry batch.
    :param wait_timeout: how long to wait for each attempt's retry batches; they are then cancelled.
    :param max_consecutive_errors: transient API errors in a row tolerated while waiting.
    :param reconcile_processes: worker processes that reconcile side by side (1: in the task's
        own process). ``"auto"`` (default): the cores this task's process may run on, at most 8
        and one per 20,000 requests. Reconciling is CPU-bound: workers take whole shards, and a
        job of fewer shards than workers has each shard's result lines split into ranges. Each
        shard's request and result files are then first copied to local temporary disk (a few
        shards at a time), which the workers read.
    :param cache: the answer cache to add this job's new succeeded answers to; by default the
        build's (``cache=`` of the build task). Rows the build found there are delivered either way.
    :param cache_mode: ``read-only`` adds nothing; by default the build's mode.
    """

    template_fields: Sequence[str] = (
        "batches",
        "destination",
        "table",
        "table_schema",
        "prices",
        "work_dir",
        "cache",
    )

    def __init__(
        self,
        *,
        batches: Iterable[Mapping[str, Any]],
        destination: str | None = None,
        format: str = "parquet",
        sql_conn_id: str | None = None,
        table: str | None = None,
        table_schema: str | None = None,
        sinks: Sequence[ResultSink] = (),
        conn_id: str = OpenAIBatchHook.default_conn_name,
        prices: Mapping[str, Any] | str | None = None,
        max_attempts: int = 3,
        retry_cancelled: bool = False,
        work_dir: str | None = None,
        poll_interval: float = 60.0,
        wait_timeout: timedelta | None = timedelta(hours=48),
        reconcile_processes: int | str = AUTO,
        max_consecutive_errors: int = 5,
        cache: CacheSpec | None = None,
        cache_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not (destination or sql_conn_id or sinks):
            raise ValueError("nowhere to write the results: give destination, sql_conn_id and table, or sinks")
        if sql_conn_id and not table:
            raise ValueError("sql_conn_id needs a table to write the results to")
        self.batches = batches
        self.destination = destination
        self.format = format
        self.sql_conn_id = sql_conn_id
        self.table = table
        self.table_schema = table_schema
        self.sinks = tuple(sinks)
        self.conn_id = conn_id
        self.prices = prices
        self.policy = RetryPolicy(max_attempts, retry_cancelled)
        self.work_dir = work_dir
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout
        self.max_consecutive_errors = max_consecutive_errors
        self.reconcile_processes = check_processes(reconcile_processes)
        if cache is not None:
            table_of(cache)  # a malformed table spec fails at parse time
        self.cache = cache
        self.cache_mode = None if cache_mode is None else check_mode(cache_mode)

    # -- entry points -----------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_openai_batch.core.memory_pool import choose_returning_pool

        choose_returning_pool()  # before anything loads pyarrow in this task's process

        from airflow_provider_openai_batch.core.collect.results import ReconcileCounts
        from airflow_provider_openai_batch.core.memory_pool import pool_that_returns_memory

        log_fallbacks(self.log)
        submitted = sorted(map(Submitted.from_json, _each(self.batches)), key=lambda item: item.shard.index)
        if not submitted:
            raise OpenAIBatchInputError("no batches to collect: the upstream submit tasks returned nothing")
        first = submitted[0].shard
        sent = [item for item in submitted if item.shard.requests]  # none: the cache answered everything
        state = CollectionState(
            job_id=safe_name(first.job_id),
            work_dir=self.work_dir or str(as_storage_path(str(first.manifest)).parent),
            requests=sum(item.shard.requests for item in sent),
            items=sent,
            batch_ids=[item.batch.id for item in sent],
            anomalies=ReconcileCounts().to_dict(),
        )
        with pool_that_returns_memory():
            self._stage_cached(state, _cache_of(first.manifest))
            return self._collect(context, state)

    def resume(self, context: Context, event: dict[str, Any] | None = None, state: dict[str, Any] | None = None):
        """Back from the trigger with one retry batch ended: wait for the others, then collect."""
        from airflow_provider_openai_batch.core.memory_pool import choose_returning_pool, pool_that_returns_memory

        choose_returning_pool()

        read = check_event(event)
        if state is None:  # Airflow 3.0's dag.test() resumes without the deferral's kwargs
            ti = context["ti"]
            state = ti.xcom_pull(task_ids=ti.task_id, key=STATE_XCOM_KEY, map_indexes=ti.map_index)
        if state is None:
            raise BatchLostError(
                "resumed without the collection state; clear the task to start over", batch_id=read.batch_id
            )
        collection = CollectionState.from_json(state)
        if read.status == "timeout":
            self.timed_out(read.batch_id, read.batch_status)
        if read.status == "error":
            raise BatchLostError(f"Lost track of retry batch {read.batch_id}: {read.message}", batch_id=read.batch_id)
        for item in collection.items:
            if item.batch.id == read.batch_id:
                item.batch = read.ended()
        with pool_that_returns_memory():
            return self._wait(context, collection)

    # -- steps ------------------------------------------------------------------------------

    def _collect(self, context: Context, state: CollectionState) -> dict[str, Any]:
        """Reconcile the current attempt's batches; submit a retry attempt or deliver."""
        from airflow_provider_openai_batch.core.collect.attempt import collect_attempt, reconcile_pool
        from airflow_provider_openai_batch.core.collect.result_table import batch_writer
        from airflow_provider_openai_batch.core.costs import PriceTable

        hook = OpenAIBatchHook(conn_id=self.conn_id)
        attempt = state.attempt
        job_dir = as_storage_path(state.work_dir)
        retries = None
        if attempt < self.policy.max_attempts:
            name = f"{state.job_id}-attempt-{attempt + 1}"
            retries = RetryShardWriter(opener_under(job_dir / "retries" / f"attempt-{attempt + 1}"), name, attempt + 1)
        rows = sum(item.shard.requests for item in state.items)
        processes = resolve_processes(self.reconcile_processes, len(state.items), rows)
        entries = self._cache_entries(state)
        # The pool first: its workers are forked before the stage writer's thread exists.
        with (
            reconcile_pool(processes) as pool,
            tempfile.TemporaryDirectory(prefix="openai-batch-collect-") as local,
            atomic_open(_stage(job_dir, attempt)) as handle,
            batch_writer(handle) as staged,
        ):
            writer, remember = _remembering(staged, entries, state)
            if pool is None and processes > 1:
                self.log.warning(
                    "reconcile_processes=%s (%d): this task's process may not start worker processes (it is "
                    "daemonic); reconciling in it instead",
                    self.reconcile_processes,
                    processes,
                )
            make_run = self._run if pool is None else partial(self._local_run, local=Path(local))
            report = collect_attempt(
                (remember(make_run(hook, state.job_id, item, attempt)) for item in state.items),
                attempt,
                writer,
                policy=self.policy,
                retries=retries,
                prices=PriceTable.load(self.prices),
                pool=pool,
                shards=len(state.items),
            )
        self._note(state, report)
        if entries is not None:
            added, part = entries.added, entries.commit()
            if part is not None:
                self.log.info("Answer cache: %d new answer(s) added to %s as %s", added, entries.parts.location, part)
        retry_shards = retries.close() if retries is not None else []
        if not retry_shards:
            return self._deliver(context, state)
        state.attempt = attempt + 1
        state.retried[str(attempt + 1)] = report.retried
        state.items = [self._submit_retry(hook, context, state, shard) for shard in retry_shards]
        state.deadline = wait_deadline(self.wait_timeout)
        state.batch_ids += [item.batch.id for item in state.items]
        return self._wait(context, state)

    def _stage_cached(self, state: CollectionState, cache: Mapping[str, Any]) -> None:
        """The rows of the requests the build found in the answer cache, staged as attempt 0."""
        if not cache.get("hits"):
            return
        from airflow_provider_openai_batch.core.collect.cached import cached_rows
        from airflow_provider_openai_batch.core.collect.result_table import batch_writer

        hits_path = as_storage_path(cache["hits_path"])
        with (
            hits_path.open("rb") as source,
            atomic_open(_stage(as_storage_path(state.work_dir), 0)) as handle,
            batch_writer(handle) as writer,
        ):
            import pyarrow.parquet as pq

            for batch in cached_rows(pq.ParquetFile(source).iter_batches(), state.job_id):
                writer.write_batch(batch)
        state.requests += cache["hits"]
        state.staged["0"] = cache["hits"]
        self.log.info("Answer cache: %d row(s) delivered from the cache, not sent", cache["hits"])

    def _cache_entries(self, state: CollectionState) -> Any:
        """Where this attempt's new answers go (an ``EntryWriter``), or None when nothing is to be added."""
        if not state.items:
            return None
        cache = _cache_of(state.items[0].shard.manifest)
        uri = self.cache or cache.get("uri")
        mode = self.cache_mode or cache.get("mode") or "read-write"
        if not uri or not writes(mode) or (not self.cache and not cache.get("store")):
            return None
        return entry_writer(answer_store(uri))

    def _run(self, hook: OpenAIBatchHook, job_id: str, item: Submitted, attempt: int) -> ShardRun:
        """A run that streams the shard from storage and the batch's files from the API."""
        from airflow_provider_openai_batch.core.collect.attempt import ShardRun
        from airflow_provider_openai_batch.core.collect.results import BatchOutcome

        shard, batch = item.shard, item.batch
        outcome = BatchOutcome(
            job_id=job_id,
            shard=shard.index,
            batch_id=batch.id,
            status=batch.status,
            attempt=attempt,
            expect_json=shard.expect_json,
            created_at=batch.created_at,
            ended_at=batch.completed_at,
            error_code=batch.first_error.get("code"),
            error_message=batch.first_error.get("message"),
        )
        return ShardRun(
            outcome=outcome,
            requests=lambda: iter_lines(shard.path),
            results=lambda: [hook.iter_file_lines(fid) for fid in batch.file_ids],
            origins=shard.origins,
        )

    def _local_run(self, hook: OpenAIBatchHook, job_id: str, item: Submitted, attempt: int, *, local: Path) -> ShardRun:
        """A run over local copies of the shard and the batch's files, which a worker process can open."""
        from airflow_provider_openai_batch.core.collect.attempt import FileLines, FileLineSets

        run = self._run(hook, job_id, item, attempt)
        folder = local / f"{run.outcome.shard:05d}-{run.outcome.batch_id}"
        folder.mkdir()
        requests = folder / "requests.jsonl"
        with as_storage_path(item.shard.path).open("rb") as source, requests.open("wb") as copy:
            shutil.copyfileobj(source, copy, 1 << 20)
        results = tuple(str(folder / f"{fid}.jsonl") for fid in item.batch.file_ids)
        for fid, path in zip(item.batch.file_ids, results, strict=True):
            hook.download_file(fid, path)
        return replace(
            run,
            requests=FileLines(str(requests)),
            results=FileLineSets(results),
            done=partial(shutil.rmtree, folder, ignore_errors=True),
        )

    def _note(self, state: CollectionState, report: AttemptReport) -> None:
        from airflow_provider_openai_batch.core.collect.results import ReconcileCounts

        state.staged[str(report.attempt)] = report.staged_rows
        anomalies = ReconcileCounts.from_dict(state.anomalies)
        anomalies.merge(report.counts)
        state.anomalies = anomalies.to_dict()
        for found in report.anomalies:
            self.log.warning(
                "Batch %s output had %s; they were counted and not written", found.batch_id, found.describe()
            )
        self.log.info(
            "Attempt %d: %d final row(s) staged, %d request(s) to retry",
            report.attempt,
            report.staged_rows,
            report.retried,
        )

    def _submit_retry(
        self, hook: OpenAIBatchHook, context: Context, state: CollectionState, retry: RetryShard
    ) -> Submitted:
        template = state.items[0].shard
        shard = ShardRef.from_json(
            {
                **retry.to_dict(),
                "job_id": state.job_id,
                "endpoint": template.endpoint,
                "model": template.model,
                "manifest": template.manifest,
                "expect_json": template.expect_json,
            }
        )
        batch = submit_shard(hook, shard, batch_metadata(context, shard), log=self.log)
        self.log.info(
            "Attempt %d: %d request(s) resubmitted as batch %s", retry.attempt, retry.shard.requests, batch.id
        )
        return Submitted(shard=shard, batch=batch_ref(batch))

    def _wait(self, context: Context, state: CollectionState) -> dict[str, Any]:
        """Defer on the first retry batch still running; collect the attempt once all have ended."""
        hook = OpenAIBatchHook(conn_id=self.conn_id)
        for item in state.items:
            if item.batch.status in TERMINAL_STATUSES:
                continue
            item.batch = batch_ref(hook.get_batch(item.batch.id))
            if item.batch.status not in TERMINAL_STATUSES:
                if state.deadline is not None and time.time() >= state.deadline:
                    self.timed_out(item.batch.id, item.batch.status)
                # Ids, counts and paths only: kept in XCom too, for a resume that lost its kwargs.
                value = state.to_json()
                context["ti"].xcom_push(key=STATE_XCOM_KEY, value=value)
                self.defer_on_batch(
                    context, item.batch.id, state.deadline, "resume", {"state": value}, item.batch.created_at
                )
        return self._collect(context, state)

    def _deliver(self, context: Context, state: CollectionState) -> dict[str, Any]:
        from airflow_provider_openai_batch.core.collect.result_table import TableCounts
        from airflow_provider_openai_batch.core.collect.results import ReconcileCounts

        job_id, attempts = state.job_id, state.attempt
        staged = sum(state.staged.values())
        if staged != state.requests:
            raise ReconcileError(
                f"job {job_id}: {staged} result rows for {state.requests} requests over {attempts} attempt(s); "
                "nothing was delivered"
            )
        job_dir = as_storage_path(state.work_dir)
        first = 0 if "0" in state.staged else 1  # attempt 0: the answers the cache gave
        stages = [_stage(job_dir, attempt) for attempt in range(first, attempts + 1)]
        sinks = self._sinks()
        counts = TableCounts()
        delivered = []
        for position, sink in enumerate(sinks):
            batches = _read_stages(stages, sink.read_rows)
            with _delivering(sink, job_id):
                delivered.append(sink.write(job_id, counts.counted(batches) if position == 0 else batches))
        summary = {
            "job_id": job_id,
            **counts.to_dict(),
            **{k: state.anomalies[k] for k in ReconcileCounts.ANOMALIES},
            "attempts": attempts,
            "cached": state.staged.get("0", 0),
            "retried": state.retried,
            "batches": state.batch_ids,
            "destination": _where(delivered[0]),
            "destinations": delivered,
        }
        for sink in sinks:
            with _delivering(sink, job_id):
                sink.write_summary(job_id, summary)
        self._emit_asset_events(context, summary)
        self._lineage_outputs = [sink.lineage(job_id) for sink in sinks]
        self.log.info("Delivered %d result rows of job %s: %s", counts.rows, job_id, _counts_line(summary))
        return summary

    def _sinks(self) -> list[ResultSink]:
        from airflow_provider_openai_batch.sinks.object_storage import ObjectStorageSink
        from airflow_provider_openai_batch.sinks.sql import SqlSink

        sinks = list(self.sinks)
        if self.destination:
            sinks.insert(0, ObjectStorageSink(self.destination, self.format))
        if self.sql_conn_id:
            sinks.append(SqlSink(self.sql_conn_id, str(self.table), self.table_schema))
        return sinks

    def _emit_asset_events(self, context: Context, summary: dict[str, Any]) -> None:
        """Every outlet asset's event carries the summary, so downstream DAGs see counts and location."""
        outlet_events = context.get("outlet_events")
        if outlet_events is None:
            return
        for outlet in self.outlets or ():
            outlet_events[outlet].extra = summary

    def timeout_message(self, batch_id: str | None, batch_status: str | None) -> str:
        return (
            f"Timed out waiting for retry batch {batch_id or '(unknown)'} (wait_timeout={self.wait_timeout}); it was "
            f"still {batch_status or 'running'} and has been cancelled. Retrying the task collects it as cancelled."
        )

    # -- OpenLineage ------------------------------------------------------------------------

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Inputs: the job's shard files; outputs: the objects and tables the rows went to."""
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        outputs = getattr(self, "_lineage_outputs", [])
        paths = [Submitted.from_json(item).shard.path for item in _each(self.batches or ())]
        inputs = [lineage_dataset(path) for path in paths if path]  # "": the cache answered the whole job
        return OperatorLineage(
            inputs=[Dataset(namespace=ns, name=name) for ns, name in inputs],
            outputs=[Dataset(namespace=ns, name=name) for ns, name in outputs],
        )


def _cache_of(manifest: str | None) -> dict[str, Any]:
    """The manifest's answer-cache section (empty for a job built without a cache)."""
    if not manifest:
        return {}
    import msgspec

    try:
        data = msgspec.json.decode(as_storage_path(manifest).read_bytes())
    except FileNotFoundError:  # shards handed over without their job's manifest: no cache either
        return {}
    return dict((data.get("extra") or {}).get("cache") or {})


def _remembering(stage: Any, entries: Any, state: CollectionState) -> tuple[Any, Any]:
    """The stage writer, and a wrapper for runs; with ``entries``, both also feed the answer cache."""
    if entries is None:
        return stage, lambda run: run
    from airflow_provider_openai_batch.core.collect.cached import AnswerTee

    tee = AnswerTee(stage, entries, state.items[0].shard.endpoint)

    def remember(run: ShardRun) -> ShardRun:
        then = run.done

        def done() -> None:
            tee.run_done(run.requests())
            if then is not None:
                then()

        return replace(run, done=done)

    return tee, remember


def _each(values: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The mapped submit tasks' returns, read by index.

    Iterating Airflow's lazy XCom sequence asks for the item past the last one, and its client logs
    that answer as ``[error] XCom not found ... offset=N`` on every run; the length and each index
    ask for nothing that is not there.
    """
    if isinstance(values, Sequence):
        return [values[index] for index in range(len(values))]
    return list(values)


def _stage(job_dir: ObjectStoragePath, attempt: int) -> ObjectStoragePath:
    return job_dir / "collect" / f"attempt-{attempt}.parquet"


def _read_stages(stages: Sequence[ObjectStoragePath], rows: int) -> Iterator[Any]:
    from airflow_provider_openai_batch.core.collect.result_table import read_parquet

    for stage in stages:
        with stage.open("rb") as handle:
            yield from read_parquet(handle, rows)


@contextmanager
def _delivering(sink: ResultSink, job_id: str) -> Iterator[None]:
    """A sink's failure, whatever its library raised, as one kind that names the destination."""
    try:
        yield
    except OpenAIBatchError:
        raise
    except Exception as err:
        where = _destination(sink, job_id)
        raise DeliveryError(
            f"Delivering the rows of job {job_id} to {where} failed: {type(err).__name__}: {err}",
            path=where,
            job_id=job_id,
        ) from err


def _destination(sink: ResultSink, job_id: str) -> str:
    """Where a sink writes, as a user would name it; no connection is read (it may be what failed)."""
    from airflow_provider_openai_batch.sinks.object_storage import ObjectStorageSink
    from airflow_provider_openai_batch.sinks.sql import SqlSink

    if isinstance(sink, ObjectStorageSink):
        return str(sink.location(job_id))
    if isinstance(sink, SqlSink):
        return f"{sink.conn_id}:{'.'.join(filter(None, (sink.schema, sink.table)))}"
    return type(sink).__name__


def _where(delivered: Mapping[str, Any]) -> str:
    return str(delivered.get("uri") or f"{delivered.get('conn_id')}:{delivered.get('table')}")


def _counts_line(summary: Mapping[str, Any]) -> str:
    keys = ("requests", "succeeded", "failed", "invalid_output", "expired", "cancelled", "missing", "cost_usd")
    return " ".join(f"{k}={summary[k]}" for k in keys)
