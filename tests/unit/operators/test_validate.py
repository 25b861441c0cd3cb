"""Users' own JSONL: validated, fingerprinted and estimated, then submitted by the submit operator as is."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from airflow_provider_openai_batch.core.costs import BudgetExceededError
from airflow_provider_openai_batch.core.validate.validation import BatchInputError
from airflow_provider_openai_batch.operators.submit import OpenAIBatchSubmitOperator
from airflow_provider_openai_batch.operators.validate import OpenAIBatchValidateOperator
from tests.unit.operators.fakes import context


def line(custom_id: str, **body) -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"text {custom_id}"}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def write(tmp_path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("".join(f"{text}\n" for text in lines))
    return str(path)


def validate(paths, **kwargs):
    op = OpenAIBatchValidateOperator(task_id="validate", paths=paths, job_id="own", **kwargs)
    ctx = context()
    return op.execute(ctx), ctx["ti"].pushed


def test_valid_files_become_shards_the_submit_operator_takes(tmp_path, openai_conn):
    first = write(tmp_path, "a.jsonl", [line("a1", max_completion_tokens=5), line("a2", max_completion_tokens=5)])
    second = write(tmp_path, "b.jsonl", [line("b1", max_completion_tokens=5)])
    shards, pushed = validate([first, second])
    assert [(s["index"], s["path"], s["requests"]) for s in shards] == [(0, first, 2), (1, second, 1)]
    assert shards[0]["sha256"] == hashlib.sha256(Path(first).read_bytes()).hexdigest()
    assert shards[0]["first_custom_id"] == "a1" and shards[0]["last_custom_id"] == "a2"
    assert shards[0]["endpoint"] == "/v1/chat/completions" and shards[0]["model"] == "gpt-4o-mini"
    assert shards[0]["max_output_tokens"] == 10 and shards[0]["input_tokens"] > 0
    assert pushed["summary"]["requests"] == 3
    assert pushed["summary"]["estimate"]["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in shards), abs=1e-6)
    result = OpenAIBatchSubmitOperator(task_id="submit", shard=shards[1], deferrable=False, poll_interval=0.05).execute(
        context()
    )
    assert result["batch"]["status"] == "completed"


def test_problems_fail_the_task_with_path_line_messages(tmp_path):
    first = write(tmp_path, "a.jsonl", [line("x")])
    second = write(tmp_path, "b.jsonl", [line("x"), line("y", stream=True)])
    with pytest.raises(BatchInputError) as failure:
        validate([first, second])
    assert str(failure.value).splitlines()[1:] == [
        f"{second}:1: duplicate custom_id 'x'; custom_ids must be unique across the job",
        f"{second}:2: body.stream is true; a batch cannot stream (remove it)",
    ]


def test_over_budget_fails_before_upload(tmp_path):
    path = write(tmp_path, "a.jsonl", [line("a", max_completion_tokens=1000)])
    with pytest.raises(BudgetExceededError, match=r"1 requests to gpt-4o-mini, \d+ input tokens, up to 1,000 output"):
        validate(path, max_cost_usd=0.0)


def test_without_an_estimate_the_shards_carry_none(tmp_path):
    (shard,), _ = validate(write(tmp_path, "a.jsonl", [line("a")]), estimate=False)
    assert shard["input_tokens"] is None and shard["cost_usd"] is None and shard["manifest"] is None
