"""The plugin as Airflow loads it: registered, mounted on the api-server app, behind Airflow's own auth."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from airflow_provider_openai_batch.get_provider_info import get_provider_info
from airflow_provider_openai_batch.plugins.openai_batches import URL_PREFIX, OpenAIBatchesPlugin
from airflow_provider_openai_batch.version_compat import AIRFLOW_V_3_1_PLUS


def test_provider_info_names_the_plugin_class():
    (entry,) = get_provider_info()["plugins"]
    module, _, name = entry["plugin-class"].rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name) is OpenAIBatchesPlugin


def test_plugin_declares_the_app_and_both_views():
    (app,) = OpenAIBatchesPlugin.fastapi_apps
    assert app["url_prefix"] == URL_PREFIX == "/openai-batches"
    views = {view["destination"]: view for view in OpenAIBatchesPlugin.external_views}
    assert views["nav"]["href"] == "/openai-batches/" and views["nav"]["name"] == "OpenAI Batches"
    ti_href = views["task_instance"]["href"]
    assert ti_href.startswith("/openai-batches/task-instance?")
    for placeholder in ("{DAG_ID}", "{RUN_ID}", "{TASK_ID}", "{MAP_INDEX}"):
        assert placeholder in ti_href
    assert len({view["url_route"] for view in views.values()}) == 2


@pytest.fixture(scope="module")
def airflow_api(airflow_db, connections, seeded):
    """Airflow's own api-server app, with real (not all-admins) authentication, reading batches_fast."""
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
        patch.setenv("AIRFLOW__OPENAI_BATCH__UI_CONN_IDS", "batches_fast")
        app = create_app()
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
        with TestClient(app) as client:
            yield client, token


def test_the_api_server_mounts_the_page_behind_airflow_authentication(airflow_api, seeded):
    client, token = airflow_api
    anonymous = client.get(f"{URL_PREFIX}/api/batches")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "not_authorized"

    signed_in = client.get(f"{URL_PREFIX}/api/batches", headers={"Authorization": f"Bearer {token}"})
    assert signed_in.status_code == 200
    assert seeded.ids["a0"] in {row["batch_id"] for row in signed_in.json()["batches"]}

    client.cookies.set("_token", token)  # how the UI's iframe authenticates
    try:
        page = client.get(f"{URL_PREFIX}/", params={"dag_id": "dag_a"})
    finally:
        client.cookies.clear()
    assert page.status_code == 200 and seeded.ids["a1"] in page.text


@pytest.mark.skipif(
    not AIRFLOW_V_3_1_PLUS, reason="Airflow 3.0 has no external_views: the page is served but not in the menu"
)
def test_the_api_server_lists_the_plugin_and_its_views(airflow_api):
    client, token = airflow_api
    response = client.get("/api/v2/plugins", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    (plugin,) = [p for p in response.json()["plugins"] if p["name"] == "openai_batch"]
    assert [view["name"] for view in plugin["external_views"]] == ["OpenAI Batches", "OpenAI batches"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == URL_PREFIX
