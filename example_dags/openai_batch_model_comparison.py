"""
Model comparison: send the same labelled prompts to several models at Batch prices, then compare
accuracy against the labels and cost per model — the article's "which model is good enough?".

build_requests   -> mapped over the models: one job of requests per model (same prompts, same keys)
all_shards       -> the shards of every model in one list
submit_batch     -> one mapped task per shard: every model's batch runs at the same time
batches_by_model -> the submitted batches grouped back into one list per model
collect_results  -> mapped over the models: one result table per model
compare_models   -> accuracy (answer == label, by custom_id) and cost per model: a table in the log,
                    a CSV report under {WORK_DIR}/reports/, a small XCom, and (when a Slack webhook
                    connection is configured) a message through the Slack provider's notifier

Against the emulator every model gives the same deterministic answers (it does not model quality),
so accuracy ties there and only the costs differ; against OpenAI the table is the real comparison.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, ObjectStoragePath, task

from airflow_provider_openai_batch.core.naming import safe_name
from airflow_provider_openai_batch.operators.build import OpenAIBatchBuildOperator
from airflow_provider_openai_batch.operators.results import OpenAIBatchResultsOperator
from airflow_provider_openai_batch.operators.submit import OpenAIBatchSubmitOperator

LABELLED = os.environ.get(
    "OPENAI_BATCH_COMPARISON_INPUT", str(Path(__file__).parent / "data" / "customer_feedback.jsonl")
)
MODELS = [
    m.strip() for m in os.environ.get("OPENAI_BATCH_COMPARISON_MODELS", "gpt-4o-mini,gpt-4.1-mini,gpt-4o").split(",")
]
WORK_DIR = os.environ.get("OPENAI_BATCH_WORK_DIR", "/tmp/openai-batch")
POLL_INTERVAL = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))
# A Slack incoming-webhook connection (conn type "slackwebhook"); unset: no notification.
NOTIFY_CONN_ID = os.environ.get("OPENAI_BATCH_SLACK_CONN_ID") or None

log = logging.getLogger(__name__)
LABELS = ("positive", "negative", "neutral")
SYSTEM_PROMPT = f"Classify the sentiment of the customer feedback. Answer with exactly one of: {', '.join(LABELS)}."


def completion_notifier() -> list[Any]:
    """The Slack notification of the comparison table, when a webhook connection is configured."""
    if NOTIFY_CONN_ID is None:
        return []
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    return [
        SlackWebhookNotifier(
            slack_webhook_conn_id=NOTIFY_CONN_ID,
            text="{{ ti.xcom_pull(task_ids='compare_models')['message'] }}",
        )
    ]


def read_rows(destination: str) -> Iterator[Mapping[str, Any]]:
    """The result rows the collect task wrote, whether Parquet (the default) or JSONL."""
    path = ObjectStoragePath(destination if "://" in destination else f"file://{destination}")
    with path.open("rb") as handle:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(handle).iter_batches(columns=["custom_id", "status", "content"]):
                yield from batch.to_pylist()
        else:
            for line in handle:
                yield json.loads(line)


def read_labels(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8") as handle:
        return {row["feedback_id"]: row["label"] for row in map(json.loads, handle)}


def score(summary: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """One model's line of the table: accuracy over every labelled request, and what it cost."""
    correct = answered = 0
    for row in read_rows(summary["destination"]):
        if row["status"] != "succeeded":
            continue
        answered += 1
        correct += (row.get("content") or "").strip().strip(".").lower() == labels.get(row["custom_id"])
    return {
        "model": summary["job_id"].split("__", 1)[0],
        "requests": summary["requests"],
        "answered": answered,
        "accuracy": correct / summary["requests"] if summary["requests"] else 0.0,
        "cost_usd": summary["cost_usd"],
        "input_tokens": summary["input_tokens"],
        "output_tokens": summary["output_tokens"],
    }


def write_report(lines: Sequence[Mapping[str, Any]], where: str) -> str:
    """The comparison as CSV next to the results, for a spreadsheet or a BI tool."""
    path = ObjectStoragePath(where if "://" in where else f"file://{where}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(lines[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(lines)
    return str(path)


def table(lines: Sequence[Mapping[str, Any]]) -> str:
    header = f"{'model':<16} {'accuracy':>9} {'answered':>9} {'cost_usd':>11} {'usd_per_1k':>11}"
    body = [
        f"{line['model']:<16} {line['accuracy']:>9.1%} {line['answered']:>4}/{line['requests']:<4} "
        f"{line['cost_usd']:>11.6f} {1000 * line['cost_usd'] / max(line['requests'], 1):>11.6f}"
        for line in lines
    ]
    return "\n".join([header, *body])


with DAG(
    dag_id="openai_batch_model_comparison",
    description="The same labelled prompts to several models: accuracy and cost per model",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["openai-batch", "example"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
) as dag:
    build = OpenAIBatchBuildOperator.partial(
        task_id="build_requests",
        records=LABELLED,
        key_field="feedback_id",  # the same custom_ids in every model's job: answers join to labels
        endpoint="/v1/chat/completions",
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "{{ text }}"},
        ],
        body={"max_tokens": 3, "temperature": 0},
        work_dir=f"{WORK_DIR}/requests",
    ).expand_kwargs(
        # The model leads the job id: ids with characters a path cannot hold get a hash at the end.
        [{"model": model, "job_id": f"{model}__{{{{ dag.dag_id }}}}__{{{{ run_id }}}}"} for model in MODELS]
    )

    @task
    def all_shards(per_model: Sequence[Sequence[Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
        return [shard for shards in per_model for shard in shards]

    submit = OpenAIBatchSubmitOperator.partial(
        task_id="submit_batch",
        poll_interval=POLL_INTERVAL,
    ).expand(shard=all_shards(build.output))

    @task
    def batches_by_model(submitted: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
        jobs: dict[str, list[Mapping[str, Any]]] = {}
        for item in submitted:
            jobs.setdefault(item["shard"]["job_id"], []).append(item)
        return list(jobs.values())

    collect = OpenAIBatchResultsOperator.partial(
        task_id="collect_results",
        destination=f"{WORK_DIR}/results",
    ).expand(batches=batches_by_model(submit.output))

    @task(on_success_callback=completion_notifier())
    def compare_models(summaries: Sequence[Mapping[str, Any]], run_id: str | None = None) -> dict[str, Any]:
        labels = read_labels(LABELLED)
        lines = sorted((score(s, labels) for s in summaries), key=lambda line: (-line["accuracy"], line["cost_usd"]))
        text = table(lines)
        log.info("Model comparison over %d labelled prompts:\n%s", len(labels), text)
        report = write_report(lines, f"{WORK_DIR}/reports/{safe_name(run_id or 'manual')}/model_comparison.csv")
        message = f"OpenAI Batch model comparison ({len(labels)} labelled prompts)\n{text}"
        return {"models": lines, "report": report, "message": message}

    compare_models(collect.output)
