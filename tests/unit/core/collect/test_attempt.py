"""Collecting attempts: every request ends with exactly one final row, in the attempt that answered it."""

from __future__ import annotations

import multiprocessing
import tempfile
from functools import partial
from pathlib import Path

import pyarrow as pa
import pytest

from airflow_provider_openai_batch.core.collect import attempt
from airflow_provider_openai_batch.core.collect.attempt import (
    BatchAnomalies,
    FileLines,
    FileLineSets,
    FileRanges,
    ShardRun,
    collect_attempt,
    reconcile_pool,
)
from airflow_provider_openai_batch.core.collect.results import BatchOutcome, ReconcileError
from airflow_provider_openai_batch.core.collect.retries import RetryPolicy, RetryShardWriter
from airflow_provider_openai_batch.core.line_blocks import file_lines, line_ranges
from tests.unit.core.collect.test_results import chat_line, error_line
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
        BatchAnomalies("batch-1-0", duplicate_lines=1, unknown_custom_ids=1, unparseable_lines=1)
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
    assert [a.batch_id for a in serial_report.anomalies] == [f"batch-1-{shard}" for shard in range(5)]
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


def one_big_shard(root: Path, status: str = "expired") -> ShardRun:
    """One shard whose answers are spread over an output and an error file, anomalies across the whole length."""
    ids = [f"id-{n:04d}" for n in range(1200)]
    (root / "requests.jsonl").write_bytes(b"".join(request(i) for i in ids))
    output = [chat_line(i, content=f"answer {i}" * (n % 5)) for n, i in enumerate(ids[:900])]
    output[100:110] = [chat_line(i, status=500) for i in ids[100:110]]  # retriable
    output[400:405] = [chat_line(i, status=400) for i in ids[400:405]]  # final
    output[850:] = [chat_line(i) for i in ids[:10]] + output[850:]  # late repeats of early answers
    output[600:600] = [chat_line("ghost"), b"{broken", chat_line(ids[500])]  # a repeat near where it was answered
    errors = [error_line(i, "request_timeout") for i in ids[900:1000]]  # the last 200 never answered
    (root / "output.jsonl").write_bytes(b"\n".join(output) + b"\n")
    (root / "errors.jsonl").write_bytes(b"\n".join(errors))  # no final newline
    outcome = BatchOutcome("job", 0, "batch-1-0", status)
    paths = (str(root / "output.jsonl"), str(root / "errors.jsonl"))
    return ShardRun(outcome, FileLines(str(root / "requests.jsonl")), FileLineSets(paths))


@pytest.mark.parametrize("processes", [2, 3])
def test_a_shard_split_into_line_ranges_stages_the_rows_of_a_serial_run_in_its_order(tmp_path, monkeypatch, processes):
    split_ranges = []
    original = attempt._ranges
    monkeypatch.setattr(attempt, "_ranges", lambda *args: split_ranges.append(r := original(*args)) or r)
    results = {}
    for mode in ("serial", "split"):
        root = tmp_path / mode
        root.mkdir()
        stage = Stage()
        retries = RetryShardWriter(opener(root), "job-attempt-2", 2)
        with reconcile_pool(1 if mode == "serial" else processes) as pool:
            report = collect_attempt(
                [one_big_shard(root)], 1, stage, policy=RetryPolicy(2), retries=retries, pool=pool, min_range_bytes=1024
            )  # the test's files are ~300 kB
        (retry,) = retries.close()
        table = pa.Table.from_batches(stage.batches)
        collected = set(table.column("collected_at").to_pylist())
        results[mode] = (table.drop_columns(["collected_at"]), report, Path(retry.shard.path).read_bytes(), collected)

    assert len(split_ranges) == 1 and len(split_ranges[0]) == processes  # the one shard was split
    serial, split = results["serial"], results["split"]
    assert split[0].equals(serial[0])
    assert split[2] == serial[2]  # the same retry shard, byte for byte
    assert len(split[3]) == 1  # one collected_at for the shard's rows, whichever range they came from
    serial_report, split_report = serial[1], split[1]
    assert split_report.counts.cost_usd == pytest.approx(serial_report.counts.cost_usd)
    split_report.counts.cost_usd = serial_report.counts.cost_usd  # summed in another order
    assert split_report == serial_report
    assert serial_report.anomalies == [
        BatchAnomalies("batch-1-0", duplicate_lines=11, unknown_custom_ids=1, unparseable_lines=1)
    ]
    # 500s, timeouts and the expired batch's unanswered requests are retried; the rest is final
    assert (serial_report.retried, serial_report.staged_rows) == (10 + 100 + 200, 1200 - 310)


@pytest.mark.parametrize("parts", [1, 2, 3, 7, 50])
def test_line_ranges_give_every_line_once_in_order(tmp_path, parts):
    first, second, empty = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    first.write_bytes(b"".join(b"line-%d-" % n + b"x" * (n % 13) + b"\n" for n in range(40)))
    second.write_bytes(b"\n".join(b"more-%d" % n for n in range(9)))  # its last line has no ending
    empty.write_bytes(b"")
    paths = (str(first), str(empty), str(second))
    ranges = line_ranges(paths, parts)
    assert 1 <= len(ranges) <= parts
    lines = [line for run in ranges for lines in FileRanges(run)() for line in lines]
    expected = [line for path in paths for line in file_lines(path)]
    assert lines == expected and len(lines) == 49
