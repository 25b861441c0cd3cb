"""Load an example DAG file freshly, after the test has set the environment it reads."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"


def load_example_dag(dag_id: str):
    path = EXAMPLE_DAGS / f"{dag_id}.py"
    name = f"_example_{dag_id}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.dag
