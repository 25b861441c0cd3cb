"""The package's layers import downwards only, as docs/architecture.md draws them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "airflow_provider_openai_batch"
NAME = PACKAGE.name
# A room may import these rooms of the package, and nothing else of it. ``exceptions`` (the error
# tree: core/errors.py plus Airflow) sits beside version_compat, just above the core.
ALLOWED = {
    "core": {"core"},
    "hooks": {"core", "hooks", "version_compat", "exceptions"},
    "triggers": {"core", "hooks", "triggers", "version_compat", "exceptions"},
    "sinks": {"core", "hooks", "sinks", "version_compat", "exceptions"},
    "links": {"core", "hooks", "links", "version_compat", "exceptions"},
    "sensors": {"core", "hooks", "triggers", "links", "sensors", "version_compat", "exceptions"},
    "emulator": {"core", "emulator"},
    "operators": {"core", "hooks", "triggers", "sinks", "links", "operators", "version_compat", "exceptions"},
    "decorators": {"core", "hooks", "operators", "decorators", "version_compat", "exceptions"},
}


def package_imports(path: Path) -> set[str]:
    """The rooms of this package a module imports (the first component under the package)."""
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == NAME and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


def modules(room: str) -> list[Path]:
    return sorted((PACKAGE / room).rglob("*.py"))


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_each_room_imports_only_the_rooms_below_it(room):
    wrong = {
        str(path.relative_to(PACKAGE)): sorted(package_imports(path) - ALLOWED[room])
        for path in modules(room)
        if package_imports(path) - ALLOWED[room]
    }
    assert wrong == {}


def test_nothing_outside_the_plugin_imports_it():
    importers = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "plugins" not in path.relative_to(PACKAGE).parts and "plugins" in package_imports(path)
    ]
    assert importers == []


# Inside the core the flow reads downwards too: build validates what it writes; validation and
# collection stand alone (a results task never loads the request structs); the answer cache is
# shared by build (lookups) and collect (new answers) and imports neither; the shared modules
# directly under core/ import none of them.
CORE_ALLOWED = {
    "build": {"build", "validate", "cache"},
    "validate": {"validate"},
    "collect": {"collect", "cache"},
    "cache": {"cache"},
    "": set(),
}


def core_imports(path: Path) -> set[str]:
    """The core sub-rooms (build, validate, collect, cache) a module imports."""
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[:2] == [NAME, "core"] and len(parts) > 2 and parts[2] in CORE_ALLOWED:
                rooms.add(parts[2])
    return rooms


@pytest.mark.parametrize("sub_room", sorted(CORE_ALLOWED))
def test_core_sub_rooms_import_downwards(sub_room):
    folder = PACKAGE / "core" / sub_room
    paths = sorted(folder.rglob("*.py") if sub_room else folder.glob("*.py"))
    assert paths
    wrong = {
        str(path.relative_to(PACKAGE)): sorted(core_imports(path) - CORE_ALLOWED[sub_room])
        for path in paths
        if core_imports(path) - CORE_ALLOWED[sub_room]
    }
    assert wrong == {}


def test_the_core_check_sees_validation_importing_build(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text(f"from {NAME}.core.build.shards import ShardWriter\n")
    assert core_imports(module) == {"build"}


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text(f"from {NAME}.operators.submit import OpenAIBatchSubmitOperator\n")
    assert package_imports(module) == {"operators"}
