"""The core and the emulator must run without Airflow: the CLI and users' scripts depend on it."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import airflow_provider_openai_batch.core as core
import airflow_provider_openai_batch.emulator as emulator


def _modules(package) -> list[str]:
    return [package.__name__] + [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]


def test_core_and_emulator_import_nothing_from_airflow():
    modules = _modules(core) + _modules(emulator)
    code = (
        "import sys\n"
        f"for name in {modules!r}:\n"
        "    __import__(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))\n"
        "print(','.join(leaked))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"airflow imported by the core: {result.stdout}"
