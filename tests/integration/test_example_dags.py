"""The example DAGs end to end through ``dag.test()`` against the emulator (deferral runs inline)."""

from __future__ import annotations

import csv
import json
import math
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from airflow_provider_openai_batch.core.costs import PriceTable
from tests.conftest import TEST_API_KEY
from tests.integration.dag_loading import EXAMPLE_DAGS, load_example_dag

FEEDBACK = EXAMPLE_DAGS / "data" / "customer_feedback.jsonl"
MODELS = ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4o")


class WebhookReceiver:
    """A loopback HTTP server standing in for Slack: records the JSON posted to it, answers ``ok``."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"path": self.path, "json": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def read_results(destination: str) -> list[dict]:
    path = Path(destination.removeprefix("file://"))
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines()]


def xcom(dag_run, task_id: str, key: str = "return_value", map_index: int = -1):
    ti = dag_run.get_task_instance(task_id, map_index=map_index)
    return ti.xcom_pull(task_ids=task_id, key=key, map_indexes=map_index)


# -- openai_batch_model_comparison ---------------------------------------------------------


@pytest.fixture(scope="module")
def slack() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def comparison_run(airflow_db, openai_conn, slack, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("comparison")
    webhook = {"conn_type": "slackwebhook", "password": f"{slack.url}/services/T000/B000/XXXX"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_BATCH_WORK_DIR", str(work_dir))
        patch.setenv("OPENAI_BATCH_POLL_INTERVAL", "0.1")
        patch.setenv("OPENAI_BATCH_SLACK_CONN_ID", "slack_results")
        patch.setenv("AIRFLOW_CONN_SLACK_RESULTS", json.dumps(webhook))
        return load_example_dag("openai_batch_model_comparison").test()


def test_model_comparison_scores_every_model_on_the_same_prompts(comparison_run):
    assert comparison_run.state == "success"
    labels = {row["feedback_id"]: row["label"] for row in map(json.loads, FEEDBACK.read_text().splitlines())}
    report = xcom(comparison_run, "compare_models")
    lines = {line["model"]: line for line in report["models"]}
    assert set(lines) == set(MODELS)

    summaries = [xcom(comparison_run, "collect_results", map_index=i) for i in range(len(MODELS))]
    prices = PriceTable.load()
    for summary in summaries:
        rows = read_results(summary["destination"])
        model = {row["model"] for row in rows}.pop()
        assert model in summary["job_id"] and {row["custom_id"] for row in rows} == set(labels)
        right = sum(row["content"] == labels[row["custom_id"]] for row in rows if row["status"] == "succeeded")
        line = lines[summary["job_id"].split("__", 1)[0]]
        assert line["accuracy"] == pytest.approx(right / len(labels))
        assert line["requests"] == line["answered"] == len(labels)
        expected_cost = prices.cost(model, summary["input_tokens"], summary["output_tokens"])
        assert line["cost_usd"] > 0
        assert line["cost_usd"] == pytest.approx(expected_cost, rel=1e-3)

    # The emulator answers alike whatever the model, so only the price separates them.
    assert len({line["accuracy"] for line in lines.values()}) == 1
    assert lines["gpt-4o-mini"]["cost_usd"] < lines["gpt-4.1-mini"]["cost_usd"] < lines["gpt-4o"]["cost_usd"]
    assert [line["model"] for line in report["models"]] == ["gpt-4o-mini", "gpt-4.1-mini", "gpt-4o"]


def test_model_comparison_writes_the_table_as_csv(comparison_run):
    report = xcom(comparison_run, "compare_models")
    path = Path(report["report"].removeprefix("file://"))
    assert path.name == "model_comparison.csv" and comparison_run.run_id.split("__")[0] in str(path)
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["model"] for row in rows] == [line["model"] for line in report["models"]]
    assert [float(row["cost_usd"]) for row in rows] == [line["cost_usd"] for line in report["models"]]


def test_model_comparison_runs_one_batch_per_model_at_once(comparison_run):
    submitted = [xcom(comparison_run, "submit_batch", map_index=i) for i in range(len(MODELS))]
    assert sorted(item["shard"]["model"] for item in submitted) == sorted(MODELS)
    assert len({item["batch"]["id"] for item in submitted}) == len(MODELS)
    assert all(item["batch"]["status"] == "completed" for item in submitted)


def test_model_comparison_posts_the_table_through_the_slack_notifier(comparison_run, slack):
    (post,) = slack.posts
    assert post["path"] == "/services/T000/B000/XXXX"
    text = post["json"]["text"]
    assert text == xcom(comparison_run, "compare_models")["message"]
    assert "accuracy" in text and all(model in text for model in MODELS)


def test_model_comparison_xcoms_stay_small_and_hold_no_secret(comparison_run):
    report = xcom(comparison_run, "compare_models")
    for value in (report, xcom(comparison_run, "all_shards"), xcom(comparison_run, "batches_by_model")):
        encoded = json.dumps(value)
        assert len(encoded) < 8192
        assert TEST_API_KEY not in encoded


# -- openai_batch_extraction ---------------------------------------------------------------

CLAUSES = EXAMPLE_DAGS / "data" / "contract_clauses.jsonl"
TERMS = ("party_a", "party_b", "amount", "currency", "date")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("warehouse") / "warehouse.db"


@pytest.fixture(scope="module")
def extraction_run(airflow_db, openai_conn, warehouse, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("extraction")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_BATCH_WORK_DIR", str(work_dir))
        patch.setenv("OPENAI_BATCH_POLL_INTERVAL", "0.1")
        patch.setenv("OPENAI_BATCH_WAREHOUSE_CONN_ID", "extraction_warehouse")
        patch.setenv("AIRFLOW_CONN_EXTRACTION_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(warehouse)}))
        return load_example_dag("openai_batch_extraction").test()


def test_extraction_asks_for_a_strict_json_schema(extraction_run):
    (shard,) = xcom(extraction_run, "build_requests")
    first = json.loads(Path(shard["path"].removeprefix("file://")).read_text().splitlines()[0])
    fmt = first["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["additionalProperties"] is False
    assert sorted(schema["required"]) == sorted(TERMS) == sorted(schema["properties"])


def test_extraction_loads_every_clause_into_the_warehouse(extraction_run, warehouse):
    assert extraction_run.state == "success"
    clause_ids = {json.loads(line)["clause_id"] for line in CLAUSES.read_text().splitlines()}
    with sqlite3.connect(warehouse) as db:
        results = db.execute("SELECT custom_id, status, parsed FROM contract_clause_results").fetchall()
        terms = db.execute(f"SELECT clause_id, {', '.join(TERMS[:-1])}, effective_date FROM contract_terms").fetchall()
    assert {row[0] for row in results} == clause_ids and {row[1] for row in results} == {"succeeded"}
    assert all(set(json.loads(row[2])) == set(TERMS) for row in results)
    assert {row[0] for row in terms} == clause_ids
    assert all(isinstance(row[3], float) and all(isinstance(v, str) for v in (*row[1:3], *row[4:])) for row in terms)
    assert xcom(extraction_run, "load_contract_terms") == {"table": "contract_terms", "rows": 40, "skipped": 0}


# -- openai_batch_embeddings ---------------------------------------------------------------

ARTICLES = EXAMPLE_DAGS / "data" / "help_articles.jsonl"


@pytest.fixture(scope="module")
def embeddings_run(airflow_db, openai_conn, s3_bucket, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("embeddings")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_BATCH_WORK_DIR", str(work_dir))
        patch.setenv("OPENAI_BATCH_POLL_INTERVAL", "0.1")
        patch.setenv("OPENAI_BATCH_EMBEDDINGS_DESTINATION", f"{s3_bucket}/embeddings")
        return load_example_dag("openai_batch_embeddings").test()


def test_embeddings_land_as_parquet_on_s3(embeddings_run, s3_bucket):
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    assert embeddings_run.state == "success"
    summary = xcom(embeddings_run, "collect_results")
    path = ObjectStoragePath(summary["destination"])
    assert str(path).startswith(f"{s3_bucket}/embeddings/") and path.name == "results.parquet"
    with path.open("rb") as handle:
        table = pq.read_table(handle, columns=["custom_id", "status", "model", "embedding"])
    doc_ids = {json.loads(line)["doc_id"] for line in ARTICLES.read_text().splitlines()}
    assert set(table.column("custom_id").to_pylist()) == doc_ids and table.num_rows == len(doc_ids)
    assert set(table.column("status").to_pylist()) == {"succeeded"}
    assert str(table.schema.field("embedding").type) == "list<element: float>"
    vectors = table.column("embedding").to_pylist()
    assert {len(v) for v in vectors} == {256}
    assert all(abs(math.fsum(x * x for x in v) - 1) < 1e-3 for v in vectors)  # the emulator's unit vectors
    assert summary["cost_usd"] > 0 and summary["output_tokens"] == 0
