"""The "OpenAI Batches" page in headless Chromium, inside Airflow's own UI, after a real quickstart run.

Real components on loopback (tests/integration/airflow_cluster.py: api-server, scheduler,
dag-processor, triggerer) run the quickstart DAG against the emulator; Playwright then drives
Debian's Chromium (``scripts/install_chromium.sh``; never a downloaded browser) through the UI.
Screenshots are kept in ``test-artifacts/``. Without Chromium or Playwright the test skips
saying why, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from airflow_provider_openai_batch.version_compat import AIRFLOW_V_3_1_PLUS
from tests.integration.airflow_cluster import AirflowCluster, EmulatorProcess

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path(os.environ.get("OPENAI_BATCH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DAG_ID = "openai_batch_quickstart"
SUBMIT = "sentiment.submit_batch"  # the quickstart's mapped submit, in its task group
TIMEOUT_MS = 60_000
# The page inside Airflow's UI (menu entry, task-instance tab) comes from external_views: 3.1 and later.
needs_external_views = pytest.mark.skipif(
    not AIRFLOW_V_3_1_PLUS, reason="Airflow 3.0 has no external_views: the page is served but not in the UI"
)

# Starting four Airflow components and running the DAG takes a minute or two on 2 busy cores.
pytestmark = pytest.mark.timeout(600)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser test cannot run under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing; `make test` installs it as root (scripts/install_chromium.sh)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        _unavailable(f"the playwright package is not installed: {err}")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        except Exception as err:  # a broken install: say what the browser said
            _unavailable(f"{CHROMIUM} did not start: {err}")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def finished_demo(tmp_path_factory) -> Iterator[tuple[AirflowCluster, str]]:
    """A quickstart run that ended in success on real Airflow components, against the emulator."""
    home = tmp_path_factory.mktemp("ui-airflow")
    with (
        EmulatorProcess(in_progress_seconds=0.5) as emulator,
        AirflowCluster(
            home / "airflow",
            dags_folder=ROOT / "example_dags",
            connections={"openai_default": emulator.connection()},
            env={"OPENAI_BATCH_WORK_DIR": str(home / "work"), "OPENAI_BATCH_POLL_INTERVAL": "1"},
        ) as cluster,
    ):
        cluster.wait_for_dag(DAG_ID)
        run_id = cluster.trigger(DAG_ID)
        state = cluster.wait_for_run(DAG_ID, run_id, timeout=300)
        assert state == "success", f"{cluster.task_states(DAG_ID, run_id)}\n{cluster.describe()}"
        yield cluster, run_id


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


@needs_external_views
def test_batches_page_in_the_airflow_ui_shows_the_demo_runs_batches(finished_demo, page):
    cluster, run_id = finished_demo
    submitted = [cluster.xcom(DAG_ID, run_id, SUBMIT, "batch_id", map_index=i) for i in (0, 1)]

    page.goto(f"{cluster.api_url}/plugin/openai-batches")
    frame = page.frame_locator("iframe")
    run = frame.locator(f'section.run[data-dag-id="{DAG_ID}"][data-run-id="{run_id}"]')
    run.wait_for()
    rows = run.locator("tr.batch")
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.batchId)")) == sorted(submitted)
    for index in range(2):
        row = rows.nth(index)
        assert row.locator(".badge").inner_text() == "completed"
        assert row.locator(".progress").get_attribute("aria-label") == "100 completed, 0 failed of 100"
        tokens, estimated, actual = (cell.inner_text() for cell in row.locator("td.num").all())
        assert tokens.endswith("/ 200") or tokens.endswith("/ 100")  # one-word answers of max_tokens=3
        # The estimate comes from Airflow's records (the build step's shard list), the cost from the
        # batch's reported usage (the emulator counts tokens its own way, so they differ a little).
        assert estimated.startswith("$") and actual.startswith("$")
        assert 0.5 < float(estimated[1:]) / float(actual[1:]) < 2
    task_link = run.locator("a", has_text=f"{SUBMIT} [1]")
    assert task_link.get_attribute("href") == f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/{SUBMIT}/mapped/1"
    shot = screenshot(page, "ui-openai-batches-in-airflow.png")
    assert shot.stat().st_size > 10_000


def test_batches_page_filters_by_status_in_the_browser(finished_demo, page):
    cluster, run_id = finished_demo
    page.goto(f"{cluster.api_url}/openai-batches/")
    page.locator("tr.batch").first.wait_for()
    screenshot(page, "ui-openai-batches-page.png")
    page.select_option('select[name="status"]', "failed")
    page.get_by_role("button", name="Filter").click()
    # The filtered page's content, not a navigation event: Playwright 1.55 (the floor environment's)
    # sees none of Chromium 156's for a form submission.
    page.locator(".empty").wait_for()
    assert "status=failed" in page.url
    assert page.locator("tr.batch").count() == 0
    assert "No batches match" in page.locator(".empty").inner_text()


@needs_external_views
def test_task_instance_tab_shows_that_tasks_batch(finished_demo, page):
    cluster, run_id = finished_demo
    batch_id = cluster.xcom(DAG_ID, run_id, SUBMIT, "batch_id", map_index=0)

    page.goto(
        f"{cluster.api_url}/dags/{DAG_ID}/runs/{run_id}/tasks/{SUBMIT}/mapped/0/plugin/openai-batches-task-instance"
    )
    frame = page.frame_locator("iframe")
    frame.locator("tr.batch").first.wait_for()
    assert frame.locator("tr.batch").evaluate_all("rows => rows.map(r => r.dataset.batchId)") == [batch_id]
    screenshot(page, "ui-openai-batches-task-instance.png")


@pytest.fixture(autouse=True, scope="module")
def _clean_artifacts():
    """Old screenshots would pass for new ones: start each run without them."""
    for name in (
        "ui-openai-batches-in-airflow.png",
        "ui-openai-batches-page.png",
        "ui-openai-batches-task-instance.png",
    ):
        (ARTIFACTS / name).unlink(missing_ok=True)
