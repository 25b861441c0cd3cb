"""Collecting attempts: every request ends with exactly one final row, in the attempt that answered it."""

from __future__ import annotations

import multiprocessing
import tempfile
from functools import partial
from pathlib import Path

import pyarrow as pa
import pytest

from airflow_provider_openai_batch.core.collect.attempt import (
    FileLines,
    FileLineSets,
    ShardRun,
    collect_attempt,
    reconcile_pool,
)
from airflow_provider_openai_batch.core.collect.results import BatchOutcome, ReconcileError
from airflow_provider_openai_batch.core.collect.retries import RetryPolicy, RetryShardWriter
from tests.unit.core.collect.test_results import chat_line
from tests.unit.core.collect.test_retries import opener, request


class Stage:
    """Collects what an attempt stages."""

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)

    def rows(self) -> dict[str, dict]:
        return {r["custom_id"]: r for r in pa.Table.from_batches(self.batches).to_pylist()} if self.batches else {}


def run(shard: int, ids: list[str], lines: list[bytes], status="completed", attempt=1, path=None, origins=None):
    def requests():
        return Path(path).read_bytes().splitlines(keepends=True) if path else [request(i) for i in ids]

    outcome = BatchOutcome("job", shard, f"batch-{attempt}-{shard}", status, attempt=attempt)
    return ShardRun(outcome, requests, lambda: [lines], origins)


def test_retriable_failures_go_to_the_next_attempt_and_each_request_ends_once(tmp_path):
    policy = RetryPolicy(max_attempts=2)
    stage1 = Stage()
    retries = RetryShardWriter(opener(tmp_path), "job-attempt-2", 2)
    runs = [
        run(
            0, ["a", "b", "c", "d"], [chat_line("a"), chat_line("b", status=500), chat_line("c", status=400)], "expired"
        ),
        run(1, ["e", "f"], [chat_line("e", status=429), chat_line("f")]),
    ]
    first = collect_attempt(runs, 1, stage1, policy=policy, retries=retries)
    (retry,) = retries.close()
    assert (first.staged_rows, first.retried) == (3, 3)
    assert set(stage1.rows()) == {"a", "c", "f"}
    assert retry.origins == ((0, 2), (1, 1))

    stage2 = Stage()
    second_run = run(
        7, [], [chat_line("b"), chat_line("d", status=500), chat_line("e")], attempt=2, path=retry.shard.path
    )
    second_run = ShardRun(second_run.outcome, second_run.requests, second_run.results, retry.origins)
    second = collect_attempt([second_run], 2, stage2, policy=policy, retries=None)
    assert (second.staged_rows, second.retried) == (3, 0)

    final = {**stage1.rows(), **stage2.rows()}
    assert len(final) == len(stage1.rows()) + len(stage2.rows()) == 6
    summary = {k: (r["status"], r["attempt"], r["shard"], r["http_status"]) for k, r in sorted(final.items())}
    assert summary == {
        "a": ("succeeded", 1, 0, 200),
        "b": ("succeeded", 2, 0, 200),
        "c": ("failed", 1, 0, 400),
        "d": ("failed", 2, 0, 500),
        "e": ("succeeded", 2, 1, 200),
        "f": ("succeeded", 1, 1, 200),
    }


def test_anomalies_are_reported_per_batch(tmp_path):
    stage = Stage()
    lines = [chat_line("a"), chat_line("a"), chat_line("ghost"), b"{broken"]
    report = collect_attempt([run(0, ["a"], lines)], 1, stage)
    assert report.anomalies == [
        {"batch_id": "batch-1-0", "duplicate_lines": 1, "unknown_custom_ids": 1, "unparseable_lines": 1}
    ]
    assert report.staged_rows == 1


def test_without_a_retry_writer_every_row_is_final(tmp_path):
    stage = Stage()
    report = collect_attempt([run(0, ["a"], [chat_line("a", status=500)])], 1, stage, policy=RetryPolicy(3))
    assert (report.staged_rows, report.retried, stage.rows()["a"]["status"]) == (1, 0, "failed")


def file_run(root: Path, shard: int, ids: list[str], lines: list[bytes], status: str = "completed", done=None):
    """A run over real local files, as a worker process opens them."""
    requests, output = root / f"requests-{shard}.jsonl", root / f"output-{shard}.jsonl"
    requests.write_bytes(b"".join(request(i) for i in ids))
    output.write_bytes(b"\n".join(lines) + b"\n")
    outcome = BatchOutcome("job", shard, f"batch-1-{shard}", status)
    return ShardRun(outcome, FileLines(str(requests)), FileLineSets((str(output),)), done=done)


def shard_runs(root: Path, done: list[int]) -> list[ShardRun]:
    """Five shards mixing answers, retriable and final failures, anomalies and an expired batch."""
    runs = []
    for shard in range(5):
        ids = [f"s{shard}-{n:03d}" for n in range(150)]
        lines = [chat_line(i, content=f"answer {i}") for i in ids[:100]]
        lines += [chat_line(i, status=500) for i in ids[100:110]] + [chat_line(i, status=400) for i in ids[110:120]]
        lines += [chat_line(ids[0]), chat_line(f"ghost-{shard}"), b"{broken"]
        runs.append(
            file_run(root, shard, ids, lines, "expired" if shard == 3 else "completed", partial(done.append, shard))
        )
    return runs


def test_worker_processes_stage_the_same_rows_in_the_same_order_as_one_process(tmp_path):
    results = {}
    for processes in (1, 2):
        root = tmp_path / str(processes)
        root.mkdir()
        done: list[int] = []
        stage = Stage()
        retries = RetryShardWriter(opener(root), "job-attempt-2", 2)
        with reconcile_pool(processes) as pool:
            assert (pool is None) == (processes == 1)
            report = collect_attempt(
                shard_runs(root, done), 1, stage, policy=RetryPolicy(2), retries=retries, pool=pool
            )
        (retry,) = retries.close()
        table = pa.Table.from_batches(stage.batches).drop_columns(["collected_at"])
        results[processes] = (table, report, retry.origins, Path(retry.shard.path).read_bytes(), done)

    (serial, serial_report, *serial_rest), (parallel, parallel_report, *parallel_rest) = results[1], results[2]
    assert parallel.equals(serial)
    assert parallel_rest == serial_rest
    assert parallel_report == serial_report
    # 500s and the expired shard's 30 unanswered requests are retried; 400s and the rest are final
    assert serial_report.retried == 5 * 10 + 30
    assert serial_report.staged_rows == 5 * 150 - serial_report.retried
    assert [a["batch_id"] for a in serial_report.anomalies] == [f"batch-1-{shard}" for shard in range(5)]
    assert serial_rest[2] == [0, 1, 2, 3, 4]  # each run's ``done``, in order, in this process


def test_a_failing_shard_in_a_worker_fails_the_attempt_and_leaves_no_spool(tmp_path):
    spools = tmp_path / "spools"
    spools.mkdir()
    stage = Stage()
    runs = [file_run(tmp_path, 0, ["a", "b"], [chat_line("a")]), file_run(tmp_path, 1, ["c", "c"], [chat_line("c")])]
    with pytest.MonkeyPatch.context() as patch, reconcile_pool(2) as pool:
        patch.setattr(tempfile, "tempdir", str(spools))
        with pytest.raises(ReconcileError, match="appears twice"):
            collect_attempt(runs, 1, stage, pool=pool)
    assert list(spools.iterdir()) == []


def test_a_daemonic_process_reconciles_in_itself_instead_of_starting_workers(monkeypatch):
    monkeypatch.setitem(multiprocessing.current_process()._config, "daemon", True)
    with reconcile_pool(4) as pool:
        assert pool is None
