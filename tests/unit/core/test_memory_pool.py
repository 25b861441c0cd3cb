"""The scoped Arrow memory pool: which pool, that it is put back, and that a user's choice wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from airflow_provider_openai_batch.core.memory_pool import (
    CHOICE_VARIABLE,
    choose_returning_pool,
    pool_that_returns_memory,
    returning_pool,
)


@pytest.fixture(autouse=True)
def no_user_choice(monkeypatch):
    monkeypatch.delenv(CHOICE_VARIABLE, raising=False)


def test_the_pool_is_jemalloc_where_pyarrow_has_it_and_the_system_allocator_elsewhere(monkeypatch):
    assert returning_pool().backend_name in ("jemalloc", "system")

    def no_jemalloc():
        raise NotImplementedError("this pyarrow was built without jemalloc")

    monkeypatch.setattr(pa, "jemalloc_memory_pool", no_jemalloc)
    assert returning_pool().backend_name == "system"


def test_arrow_allocates_from_it_inside_the_scope_and_from_the_previous_default_after():
    before = pa.default_memory_pool().backend_name
    with pool_that_returns_memory() as pool:
        assert pa.default_memory_pool().backend_name == pool.backend_name == returning_pool().backend_name
        start = pool.bytes_allocated()
        held = pa.array(range(100_000), pa.int64())  # 800 kB from the default pool
        assert pool.bytes_allocated() - start >= 800_000
    assert pa.default_memory_pool().backend_name == before
    del held  # freed into the pool it came from, after the scope


def test_the_previous_default_is_put_back_when_the_work_fails():
    before = pa.default_memory_pool().backend_name
    with pytest.raises(RuntimeError, match="reconcile failed"), pool_that_returns_memory():
        raise RuntimeError("reconcile failed")
    assert pa.default_memory_pool().backend_name == before


def test_a_pool_the_user_chose_with_the_environment_variable_is_left_alone(monkeypatch):
    monkeypatch.setenv(CHOICE_VARIABLE, "mimalloc")
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.mimalloc_memory_pool())  # what the variable makes pyarrow choose at start
    try:
        with pool_that_returns_memory() as pool:
            assert pool.backend_name == pa.default_memory_pool().backend_name == "mimalloc"
    finally:
        pa.set_memory_pool(previous)


@pytest.mark.parametrize(("chosen", "expected"), [(None, "jemalloc"), ("system", "system")])
def test_a_task_about_to_load_pyarrow_makes_jemalloc_the_process_default_unless_the_user_chose(chosen, expected):
    code = (
        "from airflow_provider_openai_batch.core.memory_pool import choose_returning_pool\n"
        "choose_returning_pool()\n"
        "import pyarrow\n"
        "print(pyarrow.default_memory_pool().backend_name)"
    )
    env = {k: v for k, v in os.environ.items() if k != CHOICE_VARIABLE} | ({CHOICE_VARIABLE: chosen} if chosen else {})
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [expected]


def test_once_pyarrow_is_loaded_the_default_is_left_alone(monkeypatch):
    choose_returning_pool()  # pyarrow is loaded in this process: too late to choose, so nothing is set
    assert CHOICE_VARIABLE not in os.environ
