"""The batches page and its JSON API through FastAPI's TestClient, reading real emulators over HTTP."""

from __future__ import annotations

import re

import pytest
from fastapi import HTTPException
from markupsafe import escape
from openai import OpenAI

from airflow_provider_openai_batch.core.costs import PriceTable
from tests.unit.plugins.conftest import XSS_DAG, XSS_RUN, AllowDags, RecordedAirflow, make_client

FAST, SLOW, DEAD = "batches_fast", "batches_slow", "batches_dead"


@pytest.fixture(scope="module")
def client(connections, seeded):
    return make_client([FAST, SLOW])


def rows_by_id(client, **params) -> dict[str, dict]:
    response = client.get("/api/batches", params=params)
    assert response.status_code == 200, response.text
    return {row["batch_id"]: row for row in response.json()["batches"]}


def section(page: str, dag_id: str, run_id: str) -> str:
    """The HTML of one run's section of the page."""
    start = page.index(f'data-dag-id="{dag_id}" data-run-id="{run_id}"')
    end = page.find("<section", start)
    return page[start : end if end != -1 else len(page)]


def test_page_groups_airflow_batches_by_dag_run(client, seeded):
    response = client.get("/")
    assert response.status_code == 200
    page = response.text
    run_1 = section(page, "dag_a", "run_1")
    assert seeded.ids["a0"] in run_1 and seeded.ids["a1"] in run_1
    assert seeded.ids["b"] not in run_1
    assert seeded.ids["b"] in section(page, "dag_b", "run_9")
    assert seeded.ids["slow"] in section(page, "dag_c", "run_2")
    assert seeded.untagged not in page  # not created through Airflow


def test_rows_carry_progress_tokens_and_the_cost_of_the_reported_usage(client, seeded, fast_emulator):
    batch = OpenAI(base_url=fast_emulator.base_url, api_key="sk-x").batches.retrieve(seeded.ids["a0"])
    row = rows_by_id(client)[seeded.ids["a0"]]

    assert (row["status"], row["total"], row["completed"], row["failed"]) == ("completed", 4, 4, 0)
    usage = batch.usage
    assert (row["input_tokens"], row["output_tokens"]) == (usage.input_tokens, usage.output_tokens) != (0, 0)
    expected = PriceTable.load().cost("gpt-4o-mini", batch.usage.input_tokens, batch.usage.output_tokens)
    assert row["actual_cost_usd"] == pytest.approx(expected)
    assert row["created"].endswith("UTC") and row["finished"] is not None
    assert (row["dag_id"], row["run_id"], row["task_id"], row["map_index"]) == ("dag_a", "run_1", "submit", 0)
    assert row["dashboard_url"] is None  # an emulator is not OpenAI: no dashboard page to link to


def test_a_running_batch_shows_no_finish_time_and_a_partial_bar(client, seeded):
    row = rows_by_id(client)[seeded.ids["slow"]]
    assert row["status"] in ("validating", "in_progress") and row["finished"] is None
    page = client.get("/", params={"dag_id": "dag_c"}).text
    assert re.search(r'class="badge running">(validating|in_progress)<', page)
    assert "0 completed, 0 failed of 5" in page or "0 completed, 0 failed of 0" in page


def test_a_running_batch_shows_tokens_and_cost_as_unknown_not_zero(client, seeded):
    row = rows_by_id(client)[seeded.ids["slow"]]
    assert (row["input_tokens"], row["output_tokens"], row["actual_cost_usd"]) == (None, None, None)
    page = client.get("/", params={"dag_id": "dag_c"}).text
    cells = re.findall(r'<td class="num">([^<]*)</td>', page)
    tokens, _estimate, cost = cells[:3]  # of the one batch of dag_c
    assert (tokens, cost) == ("— / —", "—"), cells
    assert "$0.000000" not in page and "0 / 0" not in page


def test_the_counts_say_what_they_count(client, seeded):
    page = client.get("/", params={"dag_id": "dag_c"}).text
    assert re.search(r"\d+ completed · \d+ failed · \d+ in all", page)


def test_progress_bar_widths_follow_the_counts(client, seeded):
    page = client.get("/", params={"dag_id": "dag_a"}).text
    row = page[page.index(f'data-batch-id="{seeded.ids["a1"]}"') :]
    assert 'aria-label="3 completed, 0 failed of 3"' in row
    assert 'class="completed" style="width: 100.00%"' in row
    assert 'class="failed" style="width: 0.00%"' in row


def test_rows_link_to_the_task_instance_in_the_airflow_ui(client, seeded):
    page = client.get("/", params={"dag_id": "dag_a"}).text
    assert 'href="/dags/dag_a/runs/run_1/tasks/submit/mapped/1" target="_top"' in page
    unmapped = client.get("/", params={"dag_id": "dag_b"}).text
    assert 'href="/dags/dag_b/runs/run_9/tasks/submit" target="_top"' in unmapped


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"dag_id": "dag_a"}, {"a0", "a1"}),
        ({"status": "completed", "dag_id": "dag_c"}, set()),
        ({"status": "in_progress"}, {"slow"}),
        ({"conn_id": SLOW}, {"slow"}),
        ({"dag_id": "dag_a", "task_id": "submit", "map_index": "1"}, {"a1"}),
    ],
)
def test_filters_select_the_batches(client, seeded, params, expected):
    found = set(rows_by_id(client, **params))
    tagged = {seeded.ids[name] for name in expected}
    assert found == tagged


def test_status_filter_on_the_page_keeps_the_choice_selected(client):
    page = client.get("/", params={"status": "in_progress"}).text
    assert '<option value="in_progress" selected>' in page
    assert 'data-dag-id="dag_a"' not in page


@pytest.mark.parametrize(
    ("params", "param", "allowed"),
    [
        ({"status": "done"}, "status", True),
        ({"conn_id": "someone_elses_key"}, "conn_id", True),
        ({"days": "0"}, "days", False),
        ({"limit": "many"}, "limit", False),
        ({"map_index": "x"}, "map_index", False),
    ],
)
def test_bad_parameters_answer_json_errors_naming_them(client, params, param, allowed):
    for path in ("/", "/api/batches"):
        response = client.get(path, params=params)
        assert response.status_code == 400
        body = response.json()
        assert (body["error"], body["param"], body["value"]) == ("invalid_parameter", param, params[param])
        assert param in body["message"]
        assert ("allowed" in body) is allowed
    assert "in_progress" in client.get("/", params={"status": "done"}).json()["allowed"]


def test_user_values_are_escaped(client, seeded):
    page = client.get("/", params={"dag_id": XSS_DAG}).text
    assert seeded.ids["xss"] in page
    assert XSS_DAG not in page and XSS_RUN not in page
    assert str(escape(XSS_DAG)) in page and str(escape(XSS_RUN)) in page
    assert "<script>" not in page and "<img" not in page
    link = re.search(r'href="(/dags/[^"]+)"', page)
    assert link is not None and "<" not in link.group(1) and "%3Cscript%3E" in link.group(1)


def test_dags_the_viewer_may_not_read_are_hidden(connections, seeded):
    client = make_client([FAST, SLOW], access=AllowDags({"dag_a"}))
    rows = rows_by_id(client)
    assert set(rows) == {seeded.ids["a0"], seeded.ids["a1"]}
    assert client.get("/api/batches").json()["dag_ids"] == ["dag_a"]
    page = client.get("/").text
    assert "dag_b" not in page and "dag_c" not in page


def test_a_request_without_identity_gets_a_json_401(connections):
    class NoIdentity:
        async def dag_filter(self, request):
            raise HTTPException(401, "Not authenticated")

    client = make_client([FAST], access=NoIdentity())  # type: ignore[arg-type]
    response = client.get("/api/batches")
    assert response.status_code == 401
    assert response.json() == {"error": "not_authorized", "message": "Not authenticated", "path": "/api/batches"}


def test_an_unreachable_connection_is_reported_and_the_others_still_listed(connections, seeded):
    client = make_client([DEAD, FAST])
    body = client.get("/api/batches").json()
    assert seeded.ids["a0"] in {row["batch_id"] for row in body["batches"]}
    (error,) = body["errors"]
    assert error["conn_id"] == DEAD and "APIConnectionError" in error["message"]
    assert "sk-plugin-test" not in str(body)
    page = client.get("/").text
    assert 'role="alert">Could not read the batches of connection <code>batches_dead</code>' in page


def test_viewers_who_may_not_read_connections_see_no_connection_ids_or_errors(connections, seeded):
    viewer = make_client([DEAD, FAST], access=AllowDags(connections=False))
    body = viewer.get("/api/batches").json()
    assert seeded.ids["a0"] in {row["batch_id"] for row in body["batches"]}
    assert {row["conn_id"] for row in body["batches"]} == {""}
    assert body["query"]["conn_ids"] == []
    (error,) = body["errors"]
    assert error["conn_id"] == "" and "APIConnectionError" not in error["message"]
    page = viewer.get("/").text
    assert DEAD not in page and FAST not in page and "APIConnectionError" not in page
    assert "Some batches could not be read" in page

    admin = make_client([DEAD, FAST], access=AllowDags(connections=True)).get("/").text
    assert DEAD in admin and FAST in admin and "APIConnectionError" in admin


def test_an_undefined_connection_is_reported_not_fatal(connections, seeded):
    body = make_client(["no_such_conn", FAST]).get("/api/batches").json()
    assert [e["conn_id"] for e in body["errors"]] == ["no_such_conn"]
    assert "isn't defined" in body["errors"][0]["message"]
    assert body["batches"]


def test_limit_cuts_the_listing_and_says_so(client):
    body = client.get("/api/batches", params={"limit": "2"}).json()
    assert len(body["batches"]) == 2 and body["truncated"] is True
    assert "Only the newest batches are shown" in client.get("/", params={"limit": "2"}).text


def test_estimates_recorded_by_airflow_fill_the_estimated_cost(connections, seeded):
    records = RecordedAirflow(estimates={("job", "1"): 0.0123})
    client = make_client([FAST], records=records)
    rows = rows_by_id(client, dag_id="dag_a")
    assert rows[seeded.ids["a1"]]["estimated_cost_usd"] == 0.0123
    assert rows[seeded.ids["a0"]]["estimated_cost_usd"] is None
    assert {("dag_a", "run_1")} in records.runs_asked
    page = client.get("/", params={"dag_id": "dag_a"}).text
    assert "estimated $0.0123" in page


def test_task_instance_view_shows_that_task_instances_batches(client, seeded):
    params = {"dag_id": "dag_a", "run_id": "run_1", "task_id": "submit", "map_index": "1"}
    page = client.get("/task-instance", params=params)
    assert page.status_code == 200
    assert seeded.ids["a1"] in page.text and seeded.ids["a0"] not in page.text
    assert 'href="/dags/dag_a/runs/run_1/tasks/submit/mapped/1" target="_top"' in page.text
    body = client.get("/api/task-instance", params=params).json()
    assert body["task_instance"] == {"dag_id": "dag_a", "run_id": "run_1", "task_id": "submit", "map_index": 1}
    assert [row["batch_id"] for row in body["batches"]] == [seeded.ids["a1"]]


def test_task_instance_view_adds_the_batch_id_airflow_recorded(connections, seeded):
    ti = ("dag_z", "run_z", "submit", -1)
    client = make_client([DEAD, FAST], records=RecordedAirflow(batch_ids={ti: [seeded.untagged]}))
    params = dict(zip(("dag_id", "run_id", "task_id", "map_index"), map(str, ti), strict=True))
    body = client.get("/api/task-instance", params=params).json()
    (row,) = body["batches"]
    assert (row["batch_id"], row["conn_id"], row["dag_id"], row["task_id"]) == (seeded.untagged, FAST, *ti[::2])
    assert {e["conn_id"] for e in body["errors"]} == {DEAD}


def test_task_instance_view_requires_its_parameters_and_read_access(connections):
    client = make_client([FAST], access=AllowDags({"dag_a"}))
    missing = client.get("/task-instance", params={"dag_id": "dag_a", "run_id": "r"})
    assert missing.status_code == 400 and missing.json()["param"] == "task_id"
    params = {"dag_id": "dag_b", "run_id": "run_9", "task_id": "submit"}
    forbidden = client.get("/task-instance", params=params)
    assert forbidden.status_code == 403 and "dag_b" in forbidden.json()["message"]


def test_the_connection_list_is_read_per_request(connections, seeded):
    from airflow_provider_openai_batch.plugins.app import create_app

    chosen = [FAST]
    app = create_app(records=RecordedAirflow(), access=AllowDags(), conn_ids=lambda: list(chosen))  # type: ignore[arg-type]
    from fastapi.testclient import TestClient

    client = TestClient(app)
    assert seeded.ids["slow"] not in {r["batch_id"] for r in client.get("/api/batches").json()["batches"]}
    chosen.append(SLOW)
    assert seeded.ids["slow"] in {r["batch_id"] for r in client.get("/api/batches").json()["batches"]}


def test_configured_connections_come_from_the_airflow_config(monkeypatch):
    from airflow_provider_openai_batch.plugins.app import configured_conn_ids

    monkeypatch.delenv("AIRFLOW__OPENAI_BATCH__UI_CONN_IDS", raising=False)
    assert configured_conn_ids() == ["openai_default"]
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__UI_CONN_IDS", " openai_default, azure_batches ,")
    assert configured_conn_ids() == ["openai_default", "azure_batches"]


def test_shard_estimates_are_read_from_the_build_steps_shard_list():
    from airflow_provider_openai_batch.plugins.airflow_records import estimates_from_shards

    shards = [
        {"job_id": "j", "index": 0, "requests": 10, "cost_usd": 0.25},
        {"job_id": "j", "index": 1, "requests": 10, "cost_usd": None},
        {"job_id": "j", "index": 2, "estimate": {"cost_usd": 1}},
        {"index": 3, "cost_usd": 9.0},
        "not a shard",
    ]
    assert estimates_from_shards(shards) == {("j", "0"): 0.25, ("j", "2"): 1.0}
    assert estimates_from_shards({"job_id": "j"}) == {}


def test_links_into_the_airflow_ui_keep_its_sub_path(connections, seeded):
    client = make_client([FAST, SLOW], root_path="/airflow")  # Airflow served under /airflow
    page = client.get("/airflow/openai-batches/", params={"dag_id": "dag_a"}).text
    assert 'href="/airflow/dags/dag_a/runs/run_1/tasks/submit/mapped/1" target="_top"' in page
    params = {"dag_id": "dag_a", "run_id": "run_1", "task_id": "submit", "map_index": "1"}
    ti_page = client.get("/airflow/openai-batches/task-instance", params=params).text
    assert 'href="/airflow/dags/dag_a/runs/run_1/tasks/submit/mapped/1" target="_top"' in ti_page
