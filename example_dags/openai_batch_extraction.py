"""
Structured extraction: pull the parties, amount, currency and date out of contract clauses with
Structured Outputs (a strict json_schema), and load them into a warehouse table.

build_requests       -> one chat request per clause; ``response_format=ContractTerms`` becomes a
                        strict json_schema (every field required, no extra keys) before anything is sent
submit_batch         -> one mapped task per shard, waiting on the triggerer
collect_results      -> one row per clause, the parsed JSON checked; written to Parquet and to the
                        warehouse's results table (rows of this job replaced in one transaction)
load_contract_terms  -> the parsed answers as typed columns in ``contract_terms``, idempotently

The warehouse is any common-sql connection (Postgres, Snowflake, BigQuery, SQLite, …) named by
OPENAI_BATCH_WAREHOUSE_CONN_ID; ``make demo`` uses an embedded SQLite file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import BaseHook
from airflow.sdk import DAG, ObjectStoragePath, task
from pydantic import BaseModel, Field

from airflow_provider_openai_batch.operators.build import OpenAIBatchBuildOperator
from airflow_provider_openai_batch.operators.results import OpenAIBatchResultsOperator
from airflow_provider_openai_batch.operators.submit import OpenAIBatchSubmitOperator

CLAUSES = os.environ.get(
    "OPENAI_BATCH_EXTRACTION_INPUT", str(Path(__file__).parent / "data" / "contract_clauses.jsonl")
)
WORK_DIR = os.environ.get("OPENAI_BATCH_WORK_DIR", "/tmp/openai-batch")
POLL_INTERVAL = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))
WAREHOUSE_CONN_ID = os.environ.get("OPENAI_BATCH_WAREHOUSE_CONN_ID", "openai_batch_warehouse")
TERMS_TABLE = "contract_terms"
TERMS_COLUMNS = ("job_id", "clause_id", "party_a", "party_b", "amount", "currency", "effective_date")


class ContractTerms(BaseModel):
    """What to extract from one clause; the provider turns it into a strict JSON Schema."""

    party_a: str = Field(description="The paying party (the client)")
    party_b: str = Field(description="The party paid (the provider or vendor)")
    amount: float = Field(description="The total or annual amount, as a number without separators")
    currency: str = Field(description="ISO 4217 code, e.g. USD")
    date: str = Field(description="The effective or signature date, as YYYY-MM-DD")


def read_rows(destination: str) -> Iterator[Mapping[str, Any]]:
    """The collected rows, from Parquet (``parsed`` is JSON text there) or JSONL."""
    path = ObjectStoragePath(destination if "://" in destination else f"file://{destination}")
    with path.open("rb") as handle:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            columns = ["custom_id", "status", "parsed"]
            for batch in pq.ParquetFile(handle).iter_batches(columns=columns):
                for row in batch.to_pylist():
                    yield {**row, "parsed": json.loads(row["parsed"]) if row["parsed"] else None}
        else:
            yield from map(json.loads, handle)


with DAG(
    dag_id="openai_batch_extraction",
    description="Contract clauses -> parties, amount, currency, date (Structured Outputs) -> warehouse table",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["openai-batch", "example"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
) as dag:
    # [START howto_build_structured_output]
    build = OpenAIBatchBuildOperator(
        task_id="build_requests",
        records=CLAUSES,
        key_field="clause_id",
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Extract the contract terms from the clause."},
            {"role": "user", "content": "Contract {{ contract }}: {{ text }}"},
        ],
        response_format=ContractTerms,
        body={"temperature": 0, "max_completion_tokens": 200},
        work_dir=f"{WORK_DIR}/requests",
        max_cost_usd=5.0,  # the budget guard: fail before upload if the estimate is above $5
    )
    # [END howto_build_structured_output]

    submit = OpenAIBatchSubmitOperator.partial(task_id="submit_batch", poll_interval=POLL_INTERVAL).expand(
        shard=build.output
    )

    # [START howto_results_to_sql]
    collect = OpenAIBatchResultsOperator(
        task_id="collect_results",
        batches=submit.output,
        destination=f"{WORK_DIR}/results",
        sql_conn_id=WAREHOUSE_CONN_ID,
        table="contract_clause_results",
        poll_interval=POLL_INTERVAL,
    )
    # [END howto_results_to_sql]

    @task
    def load_contract_terms(summary: Mapping[str, Any]) -> dict[str, Any]:
        """Typed columns from the parsed answers; a rerun replaces this job's rows."""
        hook = BaseHook.get_connection(WAREHOUSE_CONN_ID).get_hook()
        job_id = summary["job_id"]
        rows = [
            (job_id, row["custom_id"], p["party_a"], p["party_b"], p["amount"], p["currency"], p["date"])
            for row in read_rows(summary["destination"])
            if row["status"] == "succeeded" and (p := row["parsed"])
        ]
        hook.run(
            f"CREATE TABLE IF NOT EXISTS {TERMS_TABLE} (job_id TEXT, clause_id TEXT, party_a TEXT, party_b TEXT, "
            "amount DOUBLE PRECISION, currency TEXT, effective_date TEXT, PRIMARY KEY (job_id, clause_id))"
        )
        hook.run(f"DELETE FROM {TERMS_TABLE} WHERE job_id = {hook.placeholder}", parameters=(job_id,))
        hook.insert_rows(TERMS_TABLE, rows, target_fields=TERMS_COLUMNS)
        return {"table": TERMS_TABLE, "rows": len(rows), "skipped": summary["requests"] - len(rows)}

    load_contract_terms(collect.output)
