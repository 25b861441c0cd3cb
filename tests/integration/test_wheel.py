"""The built wheel holds everything the package reads at run time, not only its modules.

The wheel is built with ``uv build`` and installed (``--no-deps``) into a folder of its own; a
child process imports the package from there, outside the source tree, and uses each data file:
the price table, both token encodings (read offline from the package) and the page templates. A
file left out of the wheel fails here instead of in a user's deployment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".tools" / "bin" / "uv"


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    if not UV.exists():
        pytest.fail(f"{UV} is missing: `make test` installs it")
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([str(UV), "build", "--wheel", "--out-dir", str(dist), str(ROOT)], check=True, capture_output=True)
    (wheel,) = dist.glob("airflow_provider_openai_batch-*.whl")
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [str(UV), "pip", "install", "--no-deps", "--target", str(target), "--python", sys.executable, str(wheel)],
        check=True,
        capture_output=True,
    )
    return target


def test_the_installed_wheel_serves_prices_encodings_and_templates(installed_wheel, tmp_path):
    script = textwrap.dedent(
        """
        import json
        import airflow_provider_openai_batch as package
        from airflow_provider_openai_batch.core.costs import PriceTable
        from airflow_provider_openai_batch.core.tokens import count_text_tokens
        from airflow_provider_openai_batch.get_provider_info import get_provider_info
        from airflow_provider_openai_batch.plugins.batch_listing import Listing
        from airflow_provider_openai_batch.plugins.page import PageContext, render_batches_page

        page = render_batches_page(Listing(), PageContext(("openai_default",), None, None, None, 7, 100))
        print(json.dumps({
            "file": package.__file__,
            "price": PriceTable.load().cost("gpt-4o-mini", 1_000_000, 0),
            "o200k": count_text_tokens("hello world", "gpt-4o-mini"),
            "cl100k": count_text_tokens("hello world", "gpt-4"),
            "page": "OpenAI Batches" in page,
            "provider": get_provider_info()["package-name"],
        }))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(installed_wheel), "TIKTOKEN_CACHE_DIR": str(tmp_path / "no-cache")}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["file"].startswith(str(installed_wheel))  # the wheel's copy, not the source tree
    assert found["price"] > 0
    assert found["o200k"] == 2 and found["cl100k"] == 2
    assert found["page"] is True
    assert found["provider"] == "airflow-provider-openai-batch"
