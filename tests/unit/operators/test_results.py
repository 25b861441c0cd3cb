"""The results operator against the emulator: retries across attempts on the triggerer, delivery, summaries."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.providers.common.compat.sdk import Asset, TaskDeferred

from airflow_provider_openai_batch.core.collect import attempt as attempt_module
from airflow_provider_openai_batch.core.collect import processes as processes_module
from airflow_provider_openai_batch.core.handoffs import CollectionState, ShardRef, Submitted
from airflow_provider_openai_batch.core.memory_pool import CHOICE_VARIABLE, returning_pool
from airflow_provider_openai_batch.core.shards import ShardWriter
from airflow_provider_openai_batch.exceptions import BatchTimeoutError
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.operators.batch_lifecycle import submit_shard
from airflow_provider_openai_batch.operators.results import OpenAIBatchResultsOperator
from airflow_provider_openai_batch.sinks.base import ResultSink
from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger
from airflow_provider_openai_batch.triggers.events import batch_ref
from tests.conftest import TEST_API_KEY
from tests.unit.core.collect.test_retries import opener
from tests.unit.operators.fakes import RecordingTI


class OutletEvents(dict):
    """``context["outlet_events"]``: an accessor per asset (by URI: Airflow 3.0's Asset is unhashable)."""

    def __getitem__(self, asset: Any) -> Any:
        return super().__getitem__(getattr(asset, "uri", asset))

    def __missing__(self, uri: Any) -> Any:
        self[uri] = accessor = type("Accessor", (), {"extra": None})()
        return accessor


def request(custom_id: str) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"feedback {custom_id}"}]}
    return msgspec.json.encode({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def shard_refs(tmp_path: Path, shard_sizes: list[int]) -> list[ShardRef]:
    """Shards as the build task returns them."""
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    job_dir = tmp_path / "work" / job_id
    (job_dir / "requests").mkdir(parents=True)
    writer = ShardWriter(opener(job_dir / "requests"), job_id, max_requests=max(shard_sizes))
    ids = [f"r{i:03d}" for i in range(sum(shard_sizes))]
    for custom_id in ids:
        writer.write(custom_id, request(custom_id) + b"\n")
    writer.close()
    common = {"job_id": job_id, "endpoint": "/v1/chat/completions", "model": "gpt-4o-mini", "expect_json": False}
    return [ShardRef(**shard.to_dict(), **common, manifest=str(job_dir / "manifest.json")) for shard in writer.shards]


def submitted_job(tmp_path: Path, shard_sizes: list[int]) -> list[dict[str, Any]]:
    """Build shards, submit each through the emulator and wait: what mapped submit tasks return."""
    hook = OpenAIBatchHook()
    items = []
    for ref in shard_refs(tmp_path, shard_sizes):
        batch = submit_shard(hook, ref, {"test": "results"})
        while batch.status not in ("completed", "expired", "cancelled", "failed"):
            time.sleep(0.05)
            batch = hook.get_batch(batch.id)
        items.append(Submitted(shard=ref, batch=batch_ref(batch)).to_json())
    return items


def collect(items, destination, **kwargs) -> OpenAIBatchResultsOperator:
    return OpenAIBatchResultsOperator(
        task_id="collect", batches=items, destination=str(destination), poll_interval=0.05, **kwargs
    )


def run_to_completion(op: OpenAIBatchResultsOperator, context: dict) -> tuple[dict, list[OpenAIBatchTrigger]]:
    """execute() as a worker does, then for every deferral run the real trigger in its own event loop and resume."""
    triggers = []
    try:
        return op.execute(context), triggers
    except TaskDeferred as deferred:
        pending = deferred
    while True:
        trigger = pending.trigger
        triggers.append(trigger)
        event = asyncio.run(_first_event(trigger))
        try:
            return getattr(op, pending.method_name)(context, event=event.payload, **(pending.kwargs or {})), triggers
        except TaskDeferred as deferred:
            pending = deferred


async def _first_event(trigger: OpenAIBatchTrigger) -> Any:
    return await trigger.run().__anext__()


def read_rows(destination: Path) -> dict[str, dict]:
    (path,) = destination.glob("*/results.parquet")
    return {row["custom_id"]: row for row in pq.read_table(path).to_pylist()}


@pytest.fixture
def emulator_knobs(emulator):
    yield emulator.update_settings
    emulator.update_settings(expire_after_requests=None, request_failure_rate=0.0, seed=0, in_progress_seconds=0.05)


def test_expired_requests_are_retried_until_answered_and_rows_say_which_attempt(openai_conn, emulator_knobs, tmp_path):
    emulator_knobs(expire_after_requests=4)
    items = submitted_job(tmp_path, [6, 4])
    emulator_knobs(in_progress_seconds=0.3)  # the retry batch is still running when first looked at
    op = collect(items, tmp_path / "results", max_attempts=3)
    summary, triggers = run_to_completion(op, {"ti": RecordingTI(task_id="collect")})
    rows = read_rows(tmp_path / "results")
    assert len(rows) == 10 and {r["status"] for r in rows.values()} == {"succeeded"}
    by_attempt = {a: sorted(k for k, r in rows.items() if r["attempt"] == a) for a in (1, 2, 3)}
    assert [len(v) for v in by_attempt.values()] == [8, 2, 0]  # 2 of shard 0 expired, answered at attempt 2
    assert {rows[k]["shard"] for k in by_attempt[2]} == {0}
    assert len({rows[k]["batch_id"] for k in by_attempt[2]}) == 1
    assert len(triggers) == 1 and isinstance(triggers[0], OpenAIBatchTrigger)
    assert triggers[0].batch_id == summary["batches"][2]
    assert (summary["attempts"], summary["retried"], summary["succeeded"]) == (2, {"2": 2}, 10)
    assert len(summary["batches"]) == 3


def test_requests_still_failing_at_max_attempts_keep_their_last_failure(openai_conn, emulator_knobs, tmp_path):
    emulator_knobs(expire_after_requests=4)
    items = submitted_job(tmp_path, [10])
    summary, _ = run_to_completion(collect(items, tmp_path / "results", max_attempts=2), {"ti": RecordingTI()})
    rows = read_rows(tmp_path / "results")
    assert sorted((r["status"], r["attempt"]) for r in rows.values()).count(("expired", 2)) == 2
    assert (summary["succeeded"], summary["expired"], summary["requests"]) == (8, 2, 10)


def test_4xx_is_never_retried_and_5xx_is_retried_up_to_max_attempts(openai_conn, emulator_knobs, tmp_path):
    emulator_knobs(request_failure_rate=0.5, seed=3)
    items = submitted_job(tmp_path, [12])
    summary, _ = run_to_completion(collect(items, tmp_path / "results", max_attempts=3), {"ti": RecordingTI()})
    rows = read_rows(tmp_path / "results").values()
    attempts = {(r["http_status"], r["attempt"]) for r in rows}
    assert {a for status, a in attempts if status == 400} == {1}
    assert {a for status, a in attempts if status == 500} == {3}  # the emulator fails the same ids again
    assert {a for status, a in attempts if status == 200} == {1}
    assert {status for status, _ in attempts} == {200, 400, 500}


def test_rerunning_the_task_reattaches_to_its_retry_batches_and_rewrites_the_same_rows(
    openai_conn, emulator_knobs, tmp_path
):
    emulator_knobs(expire_after_requests=4)
    items = submitted_job(tmp_path, [6])
    first, _ = run_to_completion(collect(items, tmp_path / "results", max_attempts=2), {"ti": RecordingTI()})
    second, triggers = run_to_completion(collect(items, tmp_path / "results", max_attempts=2), {"ti": RecordingTI()})
    assert first["batches"] == second["batches"] and triggers == []
    assert len(read_rows(tmp_path / "results")) == 6


def test_worker_processes_deliver_the_rows_the_task_process_does(openai_conn, emulator_knobs, tmp_path, monkeypatch):
    emulator_knobs(expire_after_requests=4, request_failure_rate=0.3, seed=5)
    items = submitted_job(tmp_path, [5, 5, 5])
    local_runs = []
    original = OpenAIBatchResultsOperator._local_run
    monkeypatch.setattr(
        OpenAIBatchResultsOperator,
        "_local_run",
        lambda self, *args, **kwargs: local_runs.append(args[2].batch.id) or original(self, *args, **kwargs),
    )
    runs = {}
    for processes in (1, 3):
        op = collect(items, tmp_path / f"results-{processes}", max_attempts=2, reconcile_processes=processes)
        summary, _ = run_to_completion(op, {"ti": RecordingTI()})
        rows = read_rows(tmp_path / f"results-{processes}")
        for row in rows.values():
            del row["collected_at"]
        runs[processes] = summary, rows

    (serial_summary, serial_rows), (parallel_summary, parallel_rows) = runs[1], runs[3]
    assert parallel_rows == serial_rows and len(serial_rows) == 15
    assert {r["status"] for r in serial_rows.values()} >= {"succeeded", "failed"}
    assert {k: v for k, v in parallel_summary.items() if k not in ("destination", "destinations")} == {
        k: v for k, v in serial_summary.items() if k not in ("destination", "destinations")
    }
    # the three shards' batches went through local copies for the workers; the serial run streamed them, and so
    # did the parallel run for its one retry batch (one batch needs no workers)
    assert len(parallel_summary["batches"]) == 4
    assert local_runs == parallel_summary["batches"][:3]


def test_reconcile_processes_must_be_auto_or_a_positive_whole_number():
    with pytest.raises(ValueError, match="reconcile_processes"):
        OpenAIBatchResultsOperator(task_id="collect", batches=[], destination="/tmp/x", reconcile_processes=0)


def test_reconcile_processes_is_auto_by_default():
    assert OpenAIBatchResultsOperator(task_id="collect", batches=[], destination="/tmp/x").reconcile_processes == "auto"


def large_job_on_two_cores(monkeypatch) -> None:
    """ "auto" as for a large job on a two-core worker, with ranges small enough for the test's files."""
    monkeypatch.setattr(processes_module, "MIN_ROWS_PER_PROCESS", 1)
    monkeypatch.setattr(attempt_module, "MIN_RANGE_BYTES", 256)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})


def test_auto_splits_a_one_shard_job_into_line_ranges_and_delivers_the_rows_of_one_process(
    openai_conn, emulator_knobs, tmp_path, monkeypatch
):
    emulator_knobs(request_failure_rate=0.3, seed=7)
    items = submitted_job(tmp_path, [40])
    large_job_on_two_cores(monkeypatch)
    split = []
    original = attempt_module._ranges
    monkeypatch.setattr(attempt_module, "_ranges", lambda *args: split.append(r := original(*args)) or r)
    runs = {}
    for setting in (1, "auto"):
        summary, _ = run_to_completion(
            collect(items, tmp_path / f"results-{setting}", max_attempts=1, reconcile_processes=setting),
            {"ti": RecordingTI()},
        )
        table = pq.read_table(tmp_path / f"results-{setting}" / summary["job_id"] / "results.parquet")
        runs[setting] = summary, table.drop_columns(["collected_at"])
    assert [len(ranges) for ranges in split] == [2]  # "auto" took two workers for the one shard's two ranges
    (serial_summary, serial_rows), (auto_summary, auto_rows) = runs[1], runs["auto"]
    assert auto_rows.equals(serial_rows) and auto_rows.num_rows == 40
    assert {r for r in serial_rows.column("status").to_pylist()} >= {"succeeded", "failed"}
    assert auto_summary["cost_usd"] == pytest.approx(serial_summary["cost_usd"])
    assert {k: v for k, v in auto_summary.items() if k not in ("destination", "destinations", "cost_usd")} == {
        k: v for k, v in serial_summary.items() if k not in ("destination", "destinations", "cost_usd")
    }


def test_auto_in_a_process_that_may_not_fork_warns_and_reconciles_in_it(
    openai_conn, emulator_knobs, tmp_path, monkeypatch, capsys, caplog
):
    items = submitted_job(tmp_path, [6])
    large_job_on_two_cores(monkeypatch)
    monkeypatch.setitem(multiprocessing.current_process()._config, "daemon", True)
    pools = []
    monkeypatch.setattr(attempt_module, "_in_processes", lambda *args: pools.append(args) or iter(()))
    with caplog.at_level(logging.WARNING):
        summary, _ = run_to_completion(collect(items, tmp_path / "results", max_attempts=1), {"ti": RecordingTI()})
    logged = capsys.readouterr().out + caplog.text  # Airflow's task logger writes to stdout
    assert "reconcile_processes=auto (2): this task's process may not start worker processes" in logged
    assert pools == [] and summary["succeeded"] + summary["failed"] == 6


def test_summary_goes_to_xcom_the_asset_event_and_summary_json_without_results_or_secrets(
    openai_conn, tmp_path, monkeypatch
):
    monkeypatch.setenv("AIRFLOW_CONN_RESULTS_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "r.db")}))
    items = submitted_job(tmp_path, [3, 2])
    asset = Asset("s3://warehouse/feedback_sentiment")
    op = collect(items, tmp_path / "results", sql_conn_id="results_db", table="sentiment", outlets=[asset])
    context = {"ti": RecordingTI(), "outlet_events": OutletEvents()}
    summary, _ = run_to_completion(op, context)
    assert context["outlet_events"][asset].extra == summary
    assert (summary["requests"], summary["succeeded"], summary["attempts"]) == (5, 5, 1)
    assert summary["input_tokens"] > 0 and summary["cost_usd"] > 0
    assert [d["kind"] for d in summary["destinations"]] == ["object_storage", "sql"]
    assert summary["destinations"][1] == {"kind": "sql", "conn_id": "results_db", "table": "sentiment", "rows": 5}
    encoded = json.dumps(summary)
    assert len(encoded) < 4096 and "feedback r0" not in encoded and TEST_API_KEY not in encoded
    (written,) = (tmp_path / "results").glob("*/summary.json")
    assert json.loads(written.read_text()) == summary


def test_openlineage_inputs_are_the_shard_files_and_outputs_the_object_and_table(openai_conn, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_RESULTS_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "r.db")}))
    items = submitted_job(tmp_path, [2])
    op = collect(items, tmp_path / "results", sql_conn_id="results_db", table="main.sentiment")
    summary, _ = run_to_completion(op, {"ti": RecordingTI()})
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", items[0]["shard"]["path"])]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        ("file", str(tmp_path / "results" / summary["job_id"] / "results.parquet")),
        (f"sqlite://{tmp_path / 'r.db'}", "main.sentiment"),
    ]


def test_a_retry_batch_wait_timeout_cancels_it_and_says_so(openai_conn, emulator_knobs, tmp_path):
    emulator_knobs(in_progress_seconds=30)
    hook = OpenAIBatchHook()
    batch = submit_shard(hook, shard_refs(tmp_path, [2])[0], {"test": "timeout"})
    op = collect([], tmp_path, max_attempts=2)
    event = {"status": "timeout", "batch_id": batch.id, "deadline": 0, "batch_status": "in_progress"}
    state = CollectionState(job_id="job", work_dir=str(tmp_path), requests=2, items=[], attempt=2)
    with pytest.raises(BatchTimeoutError, match=r"Timed out waiting for retry batch .* collects it as cancelled"):
        op.resume({"ti": RecordingTI()}, event=event, state=state.to_json())
    assert hook.get_batch(batch.id).status in ("cancelling", "cancelled")


def test_nowhere_to_write_is_refused_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match="nowhere to write"):
        OpenAIBatchResultsOperator(task_id="collect", batches=[])
    with pytest.raises(ValueError, match="needs a table"):
        OpenAIBatchResultsOperator(task_id="collect", batches=[], sql_conn_id="db")


class RecordingSink(ResultSink):
    """A sink that asks for small batches and notes what it was given and which Arrow pool was active."""

    read_rows = 2

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.pools: set[str] = set()

    def write(self, job_id: str, batches: Any) -> dict[str, Any]:
        for batch in batches:
            self.sizes.append(batch.num_rows)
            self.pools.add(pa.default_memory_pool().backend_name)
        return {"kind": "recording", "rows": sum(self.sizes)}

    def lineage(self, job_id: str) -> tuple[str, str]:
        return "memory", job_id


def test_each_sink_is_given_batches_of_its_own_size_from_a_pool_that_returns_memory(openai_conn, tmp_path, monkeypatch):
    monkeypatch.delenv(CHOICE_VARIABLE, raising=False)
    before = pa.default_memory_pool().backend_name
    sink = RecordingSink()
    op = collect(submitted_job(tmp_path, [3, 2]), tmp_path / "results", sinks=[sink])
    summary, _ = run_to_completion(op, {"ti": RecordingTI()})
    assert summary["destinations"][1] == {"kind": "recording", "rows": 5}
    assert sink.sizes == [2, 1, 2]  # at most its own size, a staged row group (3 rows, then 2) at a time
    assert sink.pools == {returning_pool().backend_name}
    assert pa.default_memory_pool().backend_name == before  # put back when the task is done
    assert read_rows(tmp_path / "results").keys() == {f"r{i:03d}" for i in range(5)}  # the file sink: all rows
