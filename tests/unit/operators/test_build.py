from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from airflow_provider_openai_batch.core.costs import BudgetExceededError
from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.naming import safe_name
from airflow_provider_openai_batch.core.validate.validation import BatchInputError
from airflow_provider_openai_batch.operators.build import OpenAIBatchBuildOperator
from tests.unit.core.shard_files import read_manifest
from tests.unit.operators.fakes import context

MESSAGES = [{"role": "user", "content": "Sentiment of: {{ text }}"}]


def local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def build(tmp_path, records, **kwargs):
    kwargs.setdefault("model", "gpt-4o-mini")
    op = OpenAIBatchBuildOperator(
        task_id="build",
        records=records,
        key_field="id",
        endpoint="/v1/chat/completions",
        messages=MESSAGES,
        work_dir=str(tmp_path),
        job_id="job/../1",
        **kwargs,
    )
    ctx = context()
    return op.execute(ctx), ctx["ti"].pushed


def test_build_writes_shards_and_manifest_and_returns_mappable_shard_list(tmp_path):
    records = [{"id": f"r{i}", "text": f"text {i}"} for i in range(5)]
    shards, pushed = build(tmp_path, records, max_requests_per_shard=2)
    assert [s["requests"] for s in shards] == [2, 2, 1]
    assert pushed["summary"]["requests"] == 5
    job_id = pushed["summary"]["job_id"]
    assert job_id == safe_name("job/../1") and job_id.startswith("job_.._1-")  # never out of work_dir
    for shard in shards:
        data = local(shard["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert shard["path"].startswith(f"file://{tmp_path}/{job_id}/requests/")
    manifest = read_manifest(local(shards[0]["manifest"]).read_bytes())
    assert manifest.requests == 5
    assert [s.sha256 for s in manifest.shards] == [s["sha256"] for s in shards]


def test_records_written_in_the_dag_are_data_not_templates(tmp_path):
    records = [{"id": "r1", "text": "the {{ ds }} placeholder in my template broke"}]
    op = OpenAIBatchBuildOperator(
        task_id="build", records=records, key_field="id", endpoint="/v1/chat/completions",
        model="gpt-4o-mini", messages=MESSAGES, work_dir=str(tmp_path), job_id="job",
    )  # fmt: skip
    ctx = context()
    op.render_template_fields({**ctx, "ds": "2026-01-01"})
    (shard,) = op.execute(ctx)
    line = json.loads(local(shard["path"]).read_bytes())
    assert line["body"]["messages"][0]["content"] == "Sentiment of: the {{ ds }} placeholder in my template broke"


def test_build_reads_a_jsonl_file_of_records(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps({"id": i, "text": "t"}) for i in range(3)) + "\n")
    shards, _ = build(tmp_path, str(source))
    assert shards[0]["requests"] == 3


def test_build_reads_a_csv_file_of_records(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,text\na,hello\nb,world\n")
    shards, _ = build(tmp_path, str(source))
    first = json.loads(local(shards[0]["path"]).read_text().splitlines()[0])
    assert first["custom_id"] == "a"
    assert first["body"]["messages"][0]["content"] == "Sentiment of: hello"


def test_bad_record_fails_before_anything_is_written_to_the_api(tmp_path):
    with pytest.raises(OpenAIBatchInputError, match="record #2 has no key field 'id'"):
        build(tmp_path, [{"id": 1, "text": "a"}, {"text": "b"}])


def test_no_records_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no records"):
        build(tmp_path, [])


# --- sources ---------------------------------------------------------------------------------


def test_build_reads_a_parquet_file_of_records(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["a", "b", "c"]}), source)
    shards, _ = build(tmp_path, str(source))
    lines = [json.loads(line) for line in local(shards[0]["path"]).read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == ["1", "2", "3"]
    assert lines[2]["body"]["messages"][0]["content"] == "Sentiment of: c"


def test_build_reads_records_from_a_sql_query(tmp_path, monkeypatch):
    import sqlite3

    database = tmp_path / "records.db"
    with sqlite3.connect(database) as connection:
        connection.execute("create table feedback (id integer, text text)")
        connection.executemany("insert into feedback values (?, ?)", [(i, f"text {i}") for i in range(300)])
    monkeypatch.setenv("AIRFLOW_CONN_RECORDS_DB", json.dumps({"conn_type": "sqlite", "host": str(database)}))
    shards, pushed = build(
        tmp_path, None, sql="select id, text from feedback where id >= ?", sql_conn_id="records_db", sql_parameters=[10]
    )
    assert pushed["summary"]["requests"] == 290
    first = json.loads(local(shards[0]["path"]).read_text().splitlines()[0])
    assert first["custom_id"] == "10" and first["body"]["messages"][0]["content"] == "Sentiment of: text 10"


def test_exactly_one_source_is_required(tmp_path):
    with pytest.raises(ValueError, match="exactly one source"):
        build(tmp_path, None)
    with pytest.raises(ValueError, match="needs sql_conn_id"):
        build(tmp_path, None, sql="select 1")


def test_a_missing_records_file_is_an_input_error(tmp_path):
    with pytest.raises(OpenAIBatchInputError, match="does not exist"):
        build(tmp_path, str(tmp_path / "nope.jsonl"))


# --- validation, estimate, budget: all before anything is uploaded ------------------------------


def manifest_of(tmp_path) -> Path:
    return tmp_path / safe_name("job/../1") / "manifest.json"


def test_an_invalid_body_fails_the_task_with_a_path_line_message_and_no_manifest(tmp_path):
    build(tmp_path, [{"id": 1, "text": "a"}])
    assert manifest_of(tmp_path).exists()  # an earlier, good attempt
    records = [{"id": i, "text": "a"} for i in range(3)]
    with pytest.raises(BatchInputError) as failure:
        build(tmp_path, records, body={"max_token": 3, "temperature": 0}, max_requests_per_shard=2)
    message = str(failure.value)
    job_id = safe_name("job/../1")
    shard = f"file://{tmp_path}/{job_id}/requests/{job_id}-shard-00000.jsonl"
    # the same parameter is on every line: the first one is enough to fail, before the rest is written
    assert message.splitlines()[1:] == [
        f"{shard}:1: invalid body for /v1/chat/completions: unknown key `max_token` at body"
    ]
    assert "1 problem in batch input" in message and "nothing was uploaded" in message
    assert not manifest_of(tmp_path).exists()


def test_a_non_strict_schema_in_the_body_fails_validation(tmp_path):
    schema = {"type": "object", "properties": {"label": {"type": "string"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": schema}}
    with pytest.raises(BatchInputError, match=r"shard-00000\.jsonl:1: body\.response_format\.json_schema\.schema"):
        build(tmp_path, [{"id": 1, "text": "a"}], body={"response_format": response_format})


def test_response_format_from_a_pydantic_model_is_made_strict(tmp_path):
    from pydantic import BaseModel

    class Label(BaseModel):
        label: str
        confidence: float | None = None

    shards, pushed = build(tmp_path, [{"id": 1, "text": "a"}], response_format=Label)
    body = json.loads(local(shards[0]["path"]).read_text())["body"]
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["label", "confidence"] and schema["additionalProperties"] is False
    assert shards[0]["expect_json"] is True


def test_the_estimate_is_in_the_shards_the_manifest_and_the_summary(tmp_path):
    records = [{"id": i, "text": "great product, fast delivery"} for i in range(5)]
    shards, pushed = build(tmp_path, records, body={"max_completion_tokens": 10}, max_requests_per_shard=3)
    estimate = pushed["summary"]["estimate"]
    assert estimate["method"] == "sample" and estimate["estimated_strings"] == 0  # small jobs are exact
    assert estimate["max_output_tokens"] == 50
    assert [s["max_output_tokens"] for s in shards] == [30, 20]
    assert sum(s["input_tokens"] for s in shards) == estimate["input_tokens"] > 5 * 10
    assert sum(s["cost_usd"] for s in shards) == pytest.approx(estimate["cost_usd"], abs=1e-6)
    manifest = read_manifest(local(shards[0]["manifest"]).read_bytes())
    assert manifest.extra["estimate"] == estimate
    assert [s.cost_usd for s in manifest.shards] == [s["cost_usd"] for s in shards]


def test_prices_can_be_overridden(tmp_path):
    prices = {"gpt-4o-mini": {"input": 1_000_000.0, "output": 0.0}}
    _, pushed = build(tmp_path, [{"id": 1, "text": "a"}], prices=prices)
    estimate = pushed["summary"]["estimate"]
    assert estimate["cost_usd"] == pytest.approx(estimate["input_tokens"])


def test_over_budget_fails_before_upload_printing_the_estimate_and_leaves_no_manifest(tmp_path):
    records = [{"id": i, "text": "a"} for i in range(4)]
    with pytest.raises(
        BudgetExceededError, match=r"exceeds max_cost_usd=\$0\.0000: 4 requests to gpt-4o-mini, \d+ input"
    ):
        build(tmp_path, records, body={"max_completion_tokens": 100}, max_cost_usd=0.0)
    assert not manifest_of(tmp_path).exists()


def test_a_budget_needs_a_price(tmp_path):
    with pytest.raises(OpenAIBatchInputError, match="cannot be estimated: No Batch price for model 'my-model'"):
        build(tmp_path, [{"id": 1, "text": "a"}], model="my-model", max_cost_usd=1.0)


def test_unpriced_model_builds_with_unknown_cost(tmp_path):
    shards, pushed = build(tmp_path, [{"id": 1, "text": "a"}], model="my-model")
    assert shards[0]["cost_usd"] is None and pushed["summary"]["estimate"]["cost_usd"] is None
    assert shards[0]["input_tokens"] > 0


def test_shards_split_by_estimated_tokens(tmp_path):
    records = [{"id": i, "text": "word " * 20} for i in range(6)]
    shards, _ = build(tmp_path, records, max_tokens_per_shard=70)
    assert all(s["input_tokens"] <= 70 for s in shards)
    assert sum(s["requests"] for s in shards) == 6 and len(shards) == 3


def test_embedding_shards_stay_within_the_input_limit(tmp_path):
    op = OpenAIBatchBuildOperator(
        task_id="embed",
        records=[{"id": i, "title": f"t{i}", "text": f"x{i}"} for i in range(7)],
        key_field="id",
        endpoint="/v1/embeddings",
        model="text-embedding-3-small",
        prompt=["{{ title }}", "{{ text }}"],
        work_dir=str(tmp_path),
        job_id="embed",
        max_inputs_per_shard=6,
    )
    shards = op.execute(context())
    assert [s["requests"] for s in shards] == [3, 3, 1]
    assert all(s["max_output_tokens"] == 0 for s in shards)


def test_build_reads_a_folder_of_parts_in_name_order(tmp_path):
    import gzip

    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "part-1.jsonl.gz").write_bytes(gzip.compress(b'{"id": "c", "text": "3"}\n'))
    (folder / "part-0.jsonl").write_text('{"id": "a", "text": "1"}\n{"id": "b", "text": "2"}\n')
    (folder / "_SUCCESS").write_text("")
    shards, _ = build(tmp_path, str(folder))
    lines = [json.loads(line) for line in local(shards[0]["path"]).read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == ["a", "b", "c"]


def test_a_symlink_planted_at_a_shard_path_is_replaced_not_written_through(tmp_path):
    job_id = safe_name("job/../1")
    requests_dir = tmp_path / job_id / "requests"
    requests_dir.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    planted = requests_dir / f"{job_id}-shard-00000.jsonl"
    planted.symlink_to(victim)

    shards, _ = build(tmp_path, [{"id": "r1", "text": "a"}])

    assert victim.read_text() == "keep me"
    assert not planted.is_symlink()
    assert local(shards[0]["path"]).read_bytes().count(b"\n") == 1
    assert [p.name for p in requests_dir.iterdir() if p.name.endswith(".partial")] == []


def test_shard_files_get_the_mode_a_plain_open_would_give_them(tmp_path):
    shards, _ = build(tmp_path, [{"id": "r1", "text": "a"}])
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert local(shards[0]["path"]).stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
