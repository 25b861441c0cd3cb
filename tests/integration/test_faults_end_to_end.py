"""The quickstart with no task retries through a hostile network, and a key stored with a newline.

One upload's reply is lost after the file was stored, one batch create's reply is lost after the
batch exists, two status reads are reset and the first results download is cut off halfway. The
provider alone (no Airflow retry) must end with one batch per shard, one row per record, and the
key in no file or line of output of the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from openai import OpenAI

from airflow_provider_openai_batch.emulator import EmulatorServer, EmulatorSettings
from tests.conftest import _HOME
from tests.integration.dag_loading import load_example_dag

KEY = "sk-e2e-faults-NEVER-LOG-THIS-6f3a9c"
FEEDBACK = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "customer_feedback.jsonl"
FAULTS = {"reset_after_upload": 1, "reset_after_create": 1, "reset_status_reads": 2, "cut_downloads": 1}


@pytest.fixture(scope="module")
def hostile_emulator() -> Iterator[EmulatorServer]:
    settings = EmulatorSettings(validating_seconds=0, in_progress_seconds=0.2, finalizing_seconds=0, api_key=KEY)
    with EmulatorServer(settings) as server:
        yield server


def test_the_quickstart_without_task_retries_keeps_every_promise_through_faults(
    airflow_db, hostile_emulator, tmp_path, capfd
):
    # The output of one 100-request shard is ~40 KB: the first download stops in its middle.
    hostile_emulator.update_settings(**FAULTS, cut_download_after_bytes=20_000)
    conn = {
        "conn_type": "openai_batch",
        "host": hostile_emulator.base_url,
        "password": KEY + "\n",
        # Resets carry no retry-after: keep the policy's attempts, shorten its waits for the test.
        "extra": {"call_retries": {"base_delay": 0.05, "max_delay": 0.2}},
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps(conn))
        patch.setenv("OPENAI_BATCH_WORK_DIR", str(tmp_path))
        patch.setenv("OPENAI_BATCH_POLL_INTERVAL", "0.1")
        patch.delenv("OPENAI_BATCH_RESULTS_CONN_ID", raising=False)
        dag = load_example_dag("openai_batch_quickstart")
        for task in dag.tasks:
            task.retries = 0
        dag_run = dag.test()
    out, err = capfd.readouterr()

    assert dag_run.state == "success"
    left = {name: getattr(hostile_emulator.settings, name) for name in FAULTS}
    assert left == dict.fromkeys(FAULTS, 0), "every fault happened"

    client = OpenAI(base_url=hostile_emulator.base_url, api_key=KEY)
    keys = [(b.metadata or {}).get("idempotency_key") for b in client.batches.list(limit=100)]
    assert len(keys) == 2 and len(set(keys)) == 2, "one batch per shard"

    (results,) = tmp_path.glob("results/*/results.parquet")
    rows = pq.read_table(results, columns=["custom_id", "status"]).to_pylist()
    expected = {json.loads(line)["feedback_id"] for line in FEEDBACK.read_text().splitlines()}
    assert sorted(r["custom_id"] for r in rows) == sorted(expected), "one row per record"
    assert {r["status"] for r in rows} == {"succeeded"}

    needle = KEY.encode()
    leaks = [p for root in (tmp_path, _HOME) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]
    assert leaks == []
    # Airflow 3.0's task runner logs its own requests to the supervisor at debug level under
    # dag.test(), the secret it asks to have masked included (``msg=MaskSecret(value=...)``); that
    # line is Airflow's, not the provider's (fixed in later Airflow releases).
    printed = [line for line in (out + err).splitlines() if "msg=MaskSecret(" not in line]
    assert not [line for line in printed if KEY in line]
    assert "retry 1 of" in out + err  # the provider said what it was doing
