"""Benchmark: reconciling results and loading them, against the floors they cannot beat.

1. Reconcile 1.2M results (output + error files in the emulator's line format, shuffled, 24 shards
   of 50,000) and write them as Parquet, against a bare ``orjson.loads`` loop (``msgspec`` when
   orjson is not installed) over the same files. Target: at most 1.5x.
2. Peak RSS of (1) with 6, 12 and 24 shards, each in a fresh process. Target: flat.
3. Load the 1.2M rows into PostgreSQL through ``SqlSink`` (delete + COPY in one transaction),
   against a plain ``COPY`` of the same rows as CSV into an identical empty table. Target: at most 1.5x.

Run: ``.venv/bin/python benchmarks/bench_results.py [--requests 1200000] [--skip-postgres]``.
Data is generated once under ``$TMPDIR/openai-batch-bench-results``. Times are the best of
``--repeat`` runs, wall clock and CPU; on a shared machine CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_provider_openai_batch.core.collect.attempt import (  # noqa: E402
    FileLines,
    FileLineSets,
    ShardRun,
    collect_attempt,
    reconcile_pool,
)
from airflow_provider_openai_batch.core.collect.result_table import batch_writer, read_parquet  # noqa: E402
from airflow_provider_openai_batch.core.collect.results import BatchOutcome  # noqa: E402
from airflow_provider_openai_batch.core.costs import PriceTable  # noqa: E402
from airflow_provider_openai_batch.core.memory_pool import pool_that_returns_memory  # noqa: E402
from airflow_provider_openai_batch.emulator.answers import answer  # noqa: E402

SHARD = 50_000
DATA = Path(tempfile.gettempdir()) / "openai-batch-bench-results"
POSTGRES_URL = os.environ.get("OPENAI_BATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
ERROR_SHARE = 0.02  # requests answered 429/500, written to the error file


def loads_function() -> tuple[str, Callable[[bytes], Any]]:
    try:
        import orjson

        return "orjson.loads", orjson.loads
    except ImportError:
        return "msgspec.json.decode", msgspec.json.Decoder().decode


# -- data -----------------------------------------------------------------------------------------


def generate(requests: int) -> list[dict[str, Path]]:
    """Shards of request/output/error files; the bodies are the emulator's own answers."""
    folder = DATA / str(requests)
    shards = (requests + SHARD - 1) // SHARD
    files = [
        {kind: folder / f"shard-{i:03d}-{kind}.jsonl" for kind in ("requests", "output", "errors")}
        for i in range(shards)
    ]
    if all(f["errors"].exists() for f in files):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    texts = [
        f"The delivery was {word} and the support team {verb}."
        for word in ("late", "fast", "fine")
        for verb in ("helped", "ignored me", "was kind")
    ]
    for index, names in enumerate(files):
        size = min(SHARD, requests - index * SHARD)
        ids = [f"fb-{index:03d}-{n:06d}" for n in range(size)]
        with names["requests"].open("wb") as out:
            for custom_id in ids:
                body = {
                    "model": "gpt-4o-mini",
                    "messages": [
                        {"role": "system", "content": "Classify the sentiment."},
                        {"role": "user", "content": rng.choice(texts)},
                    ],
                    "max_tokens": 5,
                }
                out.write(
                    msgspec.json.encode(
                        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
                    )
                    + b"\n"
                )
        order = ids[:]
        rng.shuffle(order)
        with names["output"].open("wb") as output, names["errors"].open("wb") as errors:
            for n, custom_id in enumerate(order):
                key = f"{index:03d}{n:021d}"
                if rng.random() < ERROR_SHARE:
                    status = rng.choice((429, 500))
                    body = {
                        "error": {
                            "message": "Rate limit reached" if status == 429 else "Server error",
                            "type": "requests",
                            "param": None,
                            "code": None,
                        }
                    }
                    target = errors
                else:
                    status = 200
                    reply = answer(
                        "/v1/chat/completions",
                        {
                            "model": "gpt-4o-mini",
                            "messages": [{"role": "user", "content": rng.choice(texts)}],
                            "max_tokens": 5,
                        },
                        key,
                        1_767_225_600,
                    )
                    body = reply.body
                    target = output
                line = {
                    "id": f"batch_req_{key}",
                    "custom_id": custom_id,
                    "response": {"status_code": status, "request_id": f"req_{key}", "body": body},
                    "error": None,
                }
                target.write(msgspec.json.encode(line) + b"\n")
    return files


# -- measurements ---------------------------------------------------------------------------------


def interleaved(functions: dict[str, Callable[[], Any]], repeat: int) -> dict[str, tuple[float, float, Any]]:
    """Best wall and CPU seconds of each function over ``repeat`` rounds, run in turn so load hits all alike."""
    best: dict[str, list[Any]] = {name: [float("inf"), float("inf"), None] for name in functions}
    for _ in range(repeat):
        for name, function in functions.items():
            wall, cpu = time.perf_counter(), time.process_time()
            result = function()
            entry = best[name]
            entry[0] = min(entry[0], time.perf_counter() - wall)
            entry[1] = min(entry[1], time.process_time() - cpu)
            entry[2] = result
    return {name: (w, c, r) for name, (w, c, r) in best.items()}


def file_lines(path: Path) -> Iterator[bytes]:
    """A plain Python file iteration, for the bare loop."""
    with path.open("rb") as handle:
        yield from handle


def bare_loop(files: list[dict[str, Path]]) -> int:
    _, loads = loads_function()
    lines = 0
    for names in files:
        for kind in ("output", "errors"):
            for line in file_lines(names[kind]):
                loads(line)
                lines += 1
    return lines


def reconcile_to_parquet(files: list[dict[str, Path]], target: Path, processes: int = 1) -> int:
    prices = PriceTable.load()

    def run(index: int, names: dict[str, Path]) -> ShardRun:
        outcome = BatchOutcome("bench", index, f"batch_{index}", "completed", created_at=1_767_225_000)
        return ShardRun(
            outcome,
            requests=FileLines(str(names["requests"])),
            results=FileLineSets((str(names["output"]), str(names["errors"]))),
        )

    runs = (run(i, f) for i, f in enumerate(files))
    with (  # as the results operator does
        pool_that_returns_memory(),
        reconcile_pool(processes) as pool,
        target.open("wb") as handle,
        batch_writer(handle) as writer,
    ):
        report = collect_attempt(runs, 1, writer, prices=prices, pool=pool)
    return report.staged_rows


def peak_rss_of(requests: int, shards: int, processes: int = 1) -> tuple[float, float]:
    """
    Peak RSS (MB) of a fresh process reconciling the first ``shards`` shards to Parquet, and of its
    largest worker process. (Run before the big timing runs: Linux carries a parent's peak over
    to the child it forks and execs, so a fat parent would mask the figure.)
    """
    code = (
        "import resource, sys, tempfile, pathlib\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import benchmarks.bench_results as b\n"
        f"files = b.generate({requests})[:{shards}]\n"
        "target = pathlib.Path(tempfile.mkdtemp()) / 'rows.parquet'\n"
        f"b.reconcile_to_parquet(files, target, {processes})\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,"
        " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    main, worker = done.stdout.strip().splitlines()[-1].split()
    return float(main), float(worker)


def same_rows(a: Path, b: Path) -> bool:
    """Whether two results files hold the same rows in the same order (``collected_at`` aside), streamed."""
    with a.open("rb") as first, b.open("rb") as second:
        pairs = zip(read_parquet(first, SHARD), read_parquet(second, SHARD), strict=True)
        return all(x.drop_columns(["collected_at"]).equals(y.drop_columns(["collected_at"])) for x, y in pairs)


# -- PostgreSQL -----------------------------------------------------------------------------------


def postgres_load(parquet: Path, repeat: int) -> dict[str, float] | None:
    import psycopg

    from airflow_provider_openai_batch.sinks.sql import SqlSink, _postgres_csv
    from airflow_provider_openai_batch.sinks.sql_table import ResultsTable

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as err:
        print(f"PostgreSQL not reachable at {POSTGRES_URL}: {err}; skipping the load benchmark")
        return None
    os.environ["AIRFLOW_CONN_BENCH_RESULTS_PG"] = POSTGRES_URL
    table = ResultsTable("bench_results_sink")
    plain = ResultsTable("bench_results_plain")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
        for t in (table, plain):
            db.execute(f"DROP TABLE IF EXISTS {t.qualified}")
            db.execute(t.create_sql())
    with parquet.open("rb") as handle:
        csv = b"".join(_postgres_csv(batch) for batch in read_parquet(handle))

    def empty(target: ResultsTable) -> None:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
            db.execute(f"TRUNCATE {target.qualified}")
            db.execute(f"VACUUM ANALYZE {target.qualified}")

    def plain_copy() -> None:
        with psycopg.connect(POSTGRES_URL) as db, db.cursor() as cursor, cursor.copy(plain.copy_sql()) as copy:
            stream = io.BytesIO(csv)
            while chunk := stream.read(1 << 20):
                copy.write(chunk)

    def sink_load() -> None:
        sink = SqlSink("bench_results_pg", table.table)
        with pool_that_returns_memory(), parquet.open("rb") as handle:  # as the results operator
            sink.write("bench", read_parquet(handle, sink.read_rows))

    best = {"copy": [float("inf")] * 2, "sink": [float("inf")] * 2}
    for _ in range(repeat):  # each load into an empty table: the first delivery of a job
        for name, load, target in (("copy", plain_copy, plain), ("sink", sink_load, table)):
            empty(target)
            wall, cpu = time.perf_counter(), time.process_time()
            load()
            best[name] = [min(best[name][0], time.perf_counter() - wall), min(best[name][1], time.process_time() - cpu)]
    (copy_wall, copy_cpu), (sink_wall, sink_cpu) = best["copy"], best["sink"]
    rerun = time.perf_counter()
    sink_load()  # a rerun of the job: its 1.2M rows are replaced in one transaction
    rerun_wall = time.perf_counter() - rerun
    with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
        rows = db.execute(f"SELECT count(*) FROM {table.qualified}").fetchone()[0]
        for t in (table, plain):
            db.execute(f"DROP TABLE IF EXISTS {t.qualified}")
    return {
        "rows": rows,
        "copy_wall": copy_wall,
        "sink_wall": sink_wall,
        "ratio_wall": sink_wall / copy_wall,
        "copy_cpu": copy_cpu,
        "sink_cpu": sink_cpu,
        "rerun_replace_wall": rerun_wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="worker processes for (1b)")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--load-only", type=Path, help="only the PostgreSQL load, of this results Parquet file")
    args = parser.parse_args()
    if args.load_only:
        load = postgres_load(args.load_only, args.repeat) or {}
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in load.items()}))
        return 0

    started = time.perf_counter()
    files = generate(args.requests)
    print(f"data: {len(files)} shards, {args.requests:,} results under {DATA} ({time.perf_counter() - started:.0f} s)")
    if not args.skip_rss:
        counts = sorted({max(1, len(files) // 4), max(1, len(files) // 2), len(files)})
        rss = {shards: round(peak_rss_of(args.requests, shards)[0], 1) for shards in counts}
        print(json.dumps({"peak_rss_mb_by_shards": rss}))
        rss = {shards: [round(mb, 1) for mb in peak_rss_of(args.requests, shards, args.processes)] for shards in counts}
        print(json.dumps({f"peak_rss_mb_by_shards_{args.processes}_processes_main_and_worker": rss}))
    name, _ = loads_function()
    target = Path(tempfile.mkdtemp()) / "rows.parquet"
    parallel = Path(tempfile.mkdtemp()) / "rows.parquet"
    runs = interleaved(
        {
            "bare": lambda: bare_loop(files),
            "ours": lambda: reconcile_to_parquet(files, target),
            "parallel": lambda: reconcile_to_parquet(files, parallel, args.processes),
        },
        args.repeat,
    )
    (base_wall, base_cpu, lines), (ours_wall, ours_cpu, rows) = runs["bare"], runs["ours"]
    par_wall, _, par_rows = runs["parallel"]
    assert rows == par_rows == lines == args.requests, (rows, par_rows, lines)
    assert same_rows(parallel, target), "parallel and serial runs must write the same rows"
    figures: dict[str, Any] = {
        "results": rows,
        "baseline": name,
        "bare_loop_s": round(base_wall, 2),
        "bare_loop_cpu_s": round(base_cpu, 2),
        "reconcile_parquet_s": round(ours_wall, 2),
        "reconcile_parquet_cpu_s": round(ours_cpu, 2),
        "ratio_wall": round(ours_wall / base_wall, 2),
        "ratio_cpu": round(ours_cpu / base_cpu, 2),
        "parquet_mb": round(target.stat().st_size / 1e6, 1),
        "processes": args.processes,
        "reconcile_parquet_parallel_s": round(par_wall, 2),
        "ratio_wall_parallel": round(par_wall / base_wall, 2),
    }
    print(json.dumps(figures))
    if not args.skip_postgres:
        load = postgres_load(target, args.repeat)
        if load is not None:
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in load.items()}))
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
