"""Every fenced shell command of the README's quick start, install and first-DAG sections, run as written.

The commands are read from README.md itself, one test each; a command this module does not know
fails, so a new or changed command cannot go unchecked. Commands that need the network or a real
OpenAI key are listed in ``NOT_RUN`` with the reason; everything else runs and must succeed.

``make demo`` runs in a copy of the tree (the files a clone has), as on a fresh clone, except that
its ``.venv`` and ``.tools`` are the ones ``make test`` just made from the same ``uv.lock``: the
copy's ``pyproject.toml`` and ``uv.lock`` keep their times, so make sees the environment up to date
and skips only ``uv sync`` (a download on a truly fresh clone). The wheel is still built and
installed, with uv offline, and the demo runs as written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.airflow_cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SECTIONS = ("Quick start", "Install", "Your first DAG against the OpenAI API")
BIN = Path(sys.executable).parent

# Starting Airflow's CLI three times and the demo's DAG run: about two minutes on two busy cores.
pytestmark = pytest.mark.timeout(600)

NOT_RUN = {
    "make test": "runs the whole suite, this module included (about 10 minutes); its recipe is checked with make -n",
    "pip install": "installs Airflow and the provider's dependencies from PyPI into an environment: needs the network",
}


def section_commands(text: str, titles: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(section, command)`` for each line of each ```bash/```sh block under those ``##`` titles."""
    commands = []
    for part in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        title, _, body = part.partition("\n")
        if title.strip() not in titles:
            continue
        for block in re.findall(r"^ *```(?:bash|sh)\n(.*?)^ *```", body, flags=re.MULTILINE | re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                if line.strip() and not line.strip().startswith("#"):
                    commands.append((title.strip(), line.strip()))
    return commands


COMMANDS = section_commands(README.read_text(), SECTIONS)


def newcomer_env(**extra: str) -> dict[str, str]:
    """A shell with the provider's environment on PATH and none of this test session's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "OPENAI", "PYTEST", "UV_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def run(command: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    """Run one command line in bash; its standard output."""
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{command!r} exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory) -> Path:
    """The tree's files as a clone has them (tracked and new, not ignored), with the built environments."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    copy = tmp_path_factory.mktemp("clone") / "airflow-provider-openai-batch"
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)  # keeps mtimes: .venv/.synced stays newer than uv.lock
    for built in (".venv", ".tools"):
        (copy / built).symlink_to(ROOT / built)
    return copy


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> dict[str, str]:
    """An Airflow environment the provider is installed in, as step 1 of the first DAG assumes."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = newcomer_env(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    run("airflow db migrate", home, env)
    return env


def demo_output_block() -> list[str]:
    """The lines the README says ``make demo`` ends with."""
    quick_start = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"ends with:\n\n```\n(.*?)```", quick_start, flags=re.DOTALL)
    assert block, "the quick start no longer shows what make demo prints"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def run_make_demo(command: str, request: pytest.FixtureRequest) -> None:
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("make demo runs in .venv; this run is in another environment (make test-lowest)")
    copy: Path = request.getfixturevalue("fresh_copy")
    env = newcomer_env(OPENAI_BATCH_EMULATOR_PORT=str(free_port()), UV_OFFLINE="1")
    output = run(command, copy, env, timeout=480)
    printed = {line.strip() for line in output.splitlines()}
    assert [line for line in demo_output_block() if line not in printed] == []
    assert (copy / ".demo" / "work" / "results.db").exists()


def dry_run_make_test(command: str, request: pytest.FixtureRequest) -> None:
    copy: Path = request.getfixturevalue("fresh_copy")
    recipe = run(f"make -n {command.split()[1]}", copy, newcomer_env())
    assert ".venv/bin/pytest" in recipe
    pytest.skip(NOT_RUN["make test"])


def run_git_clone(command: str, request: pytest.FixtureRequest) -> None:
    where: Path = request.getfixturevalue("tmp_path")
    assert "<this repository>" in command
    run(command.replace("<this repository>", str(ROOT)), where, newcomer_env(), timeout=120)
    target = command.split()[-1]
    assert (where / target / "README.md").exists() and (where / target / "pyproject.toml").exists()


def run_connections_add(command: str, request: pytest.FixtureRequest) -> None:
    env: dict[str, str] = request.getfixturevalue("airflow_home")
    key = "sk-readme-test-0123456789"
    run(command, Path(env["AIRFLOW_HOME"]), {**env, "OPENAI_API_KEY": key})
    shown = run("airflow connections get openai_default -o json", Path(env["AIRFLOW_HOME"]), env)
    (connection,) = json.loads(shown[shown.index("[") :])
    assert connection["conn_type"] == "openai_batch"
    assert connection["password"] == key


def skip_with_reason(prefix: str) -> Callable[[str, pytest.FixtureRequest], None]:
    def skip(command: str, request: pytest.FixtureRequest) -> None:
        pytest.skip(NOT_RUN[prefix])

    return skip


RUNNERS: dict[str, Callable[[str, pytest.FixtureRequest], None]] = {
    "make demo": run_make_demo,
    "make test": dry_run_make_test,
    "git clone": run_git_clone,
    "pip install": skip_with_reason("pip install"),
    "airflow connections add": run_connections_add,
}


def test_the_sections_have_the_commands_a_newcomer_types():
    assert {section for section, _ in COMMANDS} == set(SECTIONS)
    assert [command for _, command in COMMANDS if command.startswith("make demo")]


@pytest.mark.parametrize(("section", "command"), COMMANDS, ids=[command for _, command in COMMANDS])
def test_readme_command_works_as_written(section: str, command: str, request: pytest.FixtureRequest):
    runner = next((RUNNERS[prefix] for prefix in RUNNERS if command.startswith(prefix)), None)
    assert runner is not None, f"README ({section}): no runner or reason for {command!r}; add one here"
    runner(command, request)
