"""`make demo`: run an example DAG through Airflow against the local emulator, then summarise it.

``make demo DAG=<dag_id>`` runs any DAG of example_dags/; the last line totals every job of the run.

Everything lives under ``.demo/`` (Airflow home, logs, work files) and is recreated on each run.
The demo uses a throwaway API key and, at the end, checks that no log or file of the run holds it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / ".demo"
BIN = Path(sys.executable).parent
RESULTS_DB = DEMO / "work" / "results.db"
SENSOR_DAG = "openai_batch_sensor"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the emulator did not answer at {url} within {timeout:.0f} s")


def airflow_env(api_key: str, base_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(DEMO / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(DEMO / "logs"),
            "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
                {"conn_type": "openai_batch", "host": base_url, "password": api_key}
            ),
            "OPENAI_BATCH_WORK_DIR": str(DEMO / "work"),
            "OPENAI_BATCH_POLL_INTERVAL": "1",
            # The results also go to a SQLite table: the embedded default when there is no warehouse.
            "OPENAI_BATCH_RESULTS_CONN_ID": "openai_batch_results",
            "AIRFLOW_CONN_OPENAI_BATCH_RESULTS": json.dumps({"conn_type": "sqlite", "host": str(RESULTS_DB)}),
            # DAG=openai_batch_extraction loads into the same SQLite file; DAG=openai_batch_embeddings
            # writes its Parquet locally (set an s3:// URI to use S3).
            "OPENAI_BATCH_WAREHOUSE_CONN_ID": "openai_batch_results",
            "OPENAI_BATCH_EMBEDDINGS_DESTINATION": str(DEMO / "work" / "embeddings"),
        }
    )
    return env


def run_logged(cmd: list[str], env: dict[str, str], log: Path) -> int:
    with log.open("ab") as out:
        return subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False).returncode


TOTALS = ("requests", "succeeded", "failed", "expired", "input_tokens", "output_tokens", "cost_usd")


def print_summary(dag_id: str) -> dict:
    """Print each job of the run (a DAG may run several, e.g. one per model); return their totals."""
    summaries = [json.loads(path.read_text()) for path in sorted((DEMO / "work").rglob("summary.json"))]
    if not summaries:
        raise SystemExit(f"no results summary was written; see {DEMO / 'logs'}")
    for summary in summaries:
        print_job(dag_id, summary, rows=5 if len(summaries) == 1 else 3)
    for report in sorted((DEMO / "work" / "reports").rglob("*.csv")):
        print_report(report)
    print(f"  logs:     {DEMO / 'logs'}")
    return {key: sum(s[key] for s in summaries) for key in TOTALS}


def print_job(dag_id: str, summary: dict, rows: int) -> None:
    results = Path(summary["destination"].removeprefix("file://"))
    print(f"\nDAG {dag_id}: {summary['requests']} requests in {len(summary['batches'])} batch(es)")
    print(f"  job:      {summary['job_id']}  (cost ${summary['cost_usd']:.6f})")
    estimate = _estimate(summary["job_id"])
    if estimate and estimate.get("input_tokens") is not None:
        print(
            f"  estimate: {estimate['input_tokens']:,} input tokens (reported: {summary['input_tokens']:,}), "
            f"up to {estimate['max_output_tokens']:,} output tokens (reported: {summary['output_tokens']:,})"
        )
    print(f"  results:  {results}")
    for row in _first_rows(results, rows):
        text = (row.get("content") or row.get("error_message") or _vector(row.get("embedding")))[:40]
        print(f"  {row['custom_id']:<10} {row['status']:<10} {text}")
    for where in summary.get("destinations", [])[1:]:
        print(f"  also in:  table {where.get('table')} ({where.get('rows')} rows) of {RESULTS_DB}")


def _estimate(job_id: str) -> dict | None:
    """The build's estimate of a job, from its manifest (None if it has none)."""
    manifest = DEMO / "work" / "requests" / job_id / "manifest.json"
    if not manifest.exists():
        return None
    estimate: dict | None = json.loads(manifest.read_text()).get("extra", {}).get("estimate")
    return estimate


def print_report(path: Path) -> None:
    """A CSV report a DAG wrote (the model comparison's table), aligned."""
    import csv

    with path.open() as handle:
        rows = list(csv.reader(handle))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"\n  report:   {path}")
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _vector(values: list | None) -> str:
    return f"[{', '.join(f'{v:.3f}' for v in values[:3])}, ...] ({len(values)} dims)" if values else ""


def _first_rows(path: Path, count: int) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).read_row_group(0).slice(0, count).to_pylist()
    rows = []
    with path.open() as handle:
        for line in handle:
            rows.append(json.loads(line))
            if len(rows) == count:
                break
    return rows


def submit_sample_batch(base_url: str, api_key: str) -> str:
    """Twenty feedback rows as a batch, created with the plain ``openai`` client."""
    from openai import OpenAI

    feedback = ROOT / "example_dags" / "data" / "customer_feedback.jsonl"
    rows = [json.loads(line) for line in feedback.read_text().splitlines()[:20]]
    lines = [
        json.dumps(
            {
                "custom_id": row["feedback_id"],
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [
                        {"role": "user", "content": f"Sentiment (positive, negative or neutral): {row['text']}"}
                    ],
                    "max_tokens": 3,
                },
            }
        )
        for row in rows
    ]
    client = OpenAI(base_url=base_url, api_key=api_key)
    uploaded = client.files.create(file=("sample.jsonl", "\n".join(lines).encode() + b"\n"), purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h").id


def print_landed(api_key: str) -> int:
    landed = sorted((DEMO / "work" / "landed").rglob("*.jsonl"))
    if not landed:
        raise SystemExit(f"the sensor landed no files; see {DEMO / 'logs'}")
    print(f"\nDAG {SENSOR_DAG}: landed {len(landed)} file(s)")
    for path in landed:
        print(f"  {path}  ({sum(1 for _ in path.open('rb'))} lines)")
    leaks = key_leaks(api_key)
    print(f"  API key in logs or files: {'FOUND in ' + ', '.join(map(str, leaks)) if leaks else 'none'}")
    return 1 if leaks else 0


def key_leaks(api_key: str) -> list[Path]:
    needle = api_key.encode()
    return [p for p in DEMO.rglob("*") if p.is_file() and needle in p.read_bytes()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dag", default="openai_batch_quickstart")
    args = parser.parse_args()

    shutil.rmtree(DEMO, ignore_errors=True)
    (DEMO / "logs").mkdir(parents=True)
    log = DEMO / "logs" / "demo.log"
    api_key = f"sk-demo-{secrets.token_hex(16)}"
    port = int(os.environ.get("OPENAI_BATCH_EMULATOR_PORT") or free_port())
    base_url = f"http://127.0.0.1:{port}/v1"
    env = airflow_env(api_key, base_url)

    print(f"Preparing Airflow in {DEMO / 'airflow'} ...")
    if run_logged([str(BIN / "airflow"), "db", "migrate"], env, log) != 0:
        raise SystemExit(f"airflow db migrate failed; see {log}")

    emulator_env = {**env, "OPENAI_BATCH_EMULATOR_API_KEY": api_key}
    print(f"Starting the OpenAI Batch API emulator on {base_url} ...")
    with (DEMO / "logs" / "emulator.log").open("wb") as emulator_log:
        emulator = subprocess.Popen(
            [str(BIN / "openai-batch"), "emulator", "--host", "127.0.0.1", "--port", str(port)],
            env=emulator_env,
            stdout=emulator_log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/_emulator/health")
        command = [str(BIN / "airflow"), "dags", "test", args.dag]
        if args.dag == SENSOR_DAG:  # it waits for a batch made elsewhere: make one, as a notebook would
            batch_id = submit_sample_batch(base_url, api_key)
            print(f"Submitted batch {batch_id} outside Airflow for the sensor to wait for ...")
            command += ["-c", json.dumps({"batch_id": batch_id})]
        print(f"Running DAG {args.dag} with `airflow dags test` ...")
        code = run_logged(command, env, log)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    if code != 0:
        print(f"The DAG run failed; its log: {log}", file=sys.stderr)
        return code

    if args.dag == SENSOR_DAG:
        return print_landed(api_key)
    summary = print_summary(args.dag)
    leaks = key_leaks(api_key)
    print(f"  API key in logs or files: {'FOUND in ' + ', '.join(map(str, leaks)) if leaks else 'none'}")
    print(
        f"requests={summary['requests']} succeeded={summary['succeeded']} failed={summary['failed']} "
        f"expired={summary['expired']} input_tokens={summary['input_tokens']} "
        f"output_tokens={summary['output_tokens']} cost_usd={summary['cost_usd']:.6f}"
    )
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
