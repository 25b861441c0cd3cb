"""The error tree: the docstring's drawing is the class hierarchy, and failures raise the kind they name."""

from __future__ import annotations

import importlib
import pickle
import pkgutil
import re
import time

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

import airflow_provider_openai_batch
from airflow_provider_openai_batch import exceptions
from airflow_provider_openai_batch.core import errors
from airflow_provider_openai_batch.core.collect.results import ReconcileError as ReconcileErrorFromResults
from airflow_provider_openai_batch.exceptions import (
    BatchFailedError,
    BatchIncompleteError,
    BatchLostError,
    BatchTimeoutError,
    DeliveryError,
    OpenAIBatchError,
    OpenAIBatchInputError,
    ReconcileError,
)
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.sensors.batch import OpenAIBatchSensor
from airflow_provider_openai_batch.triggers.events import batch_event
from tests.unit.operators.fakes import RecordingTI, context
from tests.unit.operators.test_build import build
from tests.unit.operators.test_results import collect, run_to_completion, submitted_job
from tests.unit.operators.test_submit import knobs, make_shard, operator, request

PACKAGE = airflow_provider_openai_batch.__name__
# What a note's "also a ..." may name.
ALSO = {"ValueError": ValueError, "RuntimeError": RuntimeError, "AirflowException": AirflowException}
# A tree line: its indent ("|   " per level above the parent), "+-- " unless it is the root, the class name.
TREE_LINE = re.compile(r"^    (?P<indent>(?:[| ]   )*)(?:\+-- )?(?P<name>[A-Z]\w+)\s+(?P<note>.*)$")


def drawn_tree() -> dict[str, tuple[str | None, str]]:
    """Each class the module docstring draws: its parent (None for the root) and its note."""
    block = exceptions.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    drawn: dict[str, tuple[str | None, str]] = {}
    parents: list[str] = []
    for line in block.splitlines():
        match = TREE_LINE.match(line)
        assert match, f"not a tree line: {line!r}"
        depth = len(match["indent"]) // 4 + (1 if "+-- " in line else 0)
        parents[depth:] = [match["name"]]
        drawn[match["name"]] = (parents[depth - 1] if depth else None, match["note"])
    return drawn


def provider_classes() -> dict[str, type]:
    """OpenAIBatchError and every subclass the package defines, wherever it lives (all modules imported)."""
    for module in pkgutil.walk_packages(airflow_provider_openai_batch.__path__, PACKAGE + "."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found, pending = {}, [OpenAIBatchError]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith(PACKAGE):
            found[cls.__name__] = cls
            pending.extend(cls.__subclasses__())
    return found


# -- the tree --------------------------------------------------------------------------------


def test_the_docstring_draws_exactly_the_class_hierarchy():
    drawn, classes = drawn_tree(), provider_classes()
    assert drawn.keys() == classes.keys()
    for name, (parent, _) in drawn.items():
        cls = classes[name]
        provider_bases = [base.__name__ for base in cls.__bases__ if base.__module__.startswith(PACKAGE)]
        assert provider_bases == ([parent] if parent else []), name


def test_the_docstring_says_where_each_class_lives_and_what_else_it_is():
    classes = provider_classes()
    for name, (parent, note) in drawn_tree().items():
        where = re.match(r"\((core[.\w]+)\)", note)
        assert classes[name].__module__ == f"{PACKAGE}.{where[1] if where else 'exceptions'}", name
        inherited = classes[parent] if parent else Exception
        gained = {
            base for base, cls in ALSO.items() if issubclass(classes[name], cls) and not issubclass(inherited, cls)
        }
        assert gained == set(re.findall(r"also an? (\w+)", note)), name


def test_this_module_exports_its_own_kinds_and_the_core_errors_ones():
    home = {exceptions.__name__, errors.__name__}
    assert set(exceptions.__all__) == {name for name, cls in provider_classes().items() if cls.__module__ in home}
    assert all(getattr(exceptions, name) is getattr(errors, name) for name in dir(errors) if name.endswith("Error"))
    assert ReconcileErrorFromResults is exceptions.ReconcileError  # where the results CLI and old code import it


def test_every_kind_keeps_airflows_retries():
    """Airflow fails without retry only on these two; no kind is one, so task retries still apply."""
    for cls in provider_classes().values():
        assert not issubclass(cls, (AirflowFailException, AirflowSensorTimeout)), cls


# -- what each error carries -----------------------------------------------------------------


def test_the_batch_id_and_path_are_attributes_and_in_the_message():
    named = BatchFailedError("Batch batch_1 failed", batch_id="batch_1", path="/w/shard-0.jsonl")
    assert (named.batch_id, named.path) == ("batch_1", "/w/shard-0.jsonl")
    assert str(named) == "Batch batch_1 failed (path /w/shard-0.jsonl)"  # the id was there; the path is added
    assert str(BatchLostError("lost", batch_id="batch_2")) == "lost (batch batch_2)"
    assert str(OpenAIBatchInputError("in.jsonl:2: not JSON", path="in.jsonl")) == "in.jsonl:2: not JSON"
    plain = ReconcileError("no id to give")
    assert (plain.batch_id, plain.path, str(plain)) == (None, None, "no id to give")


def test_errors_survive_a_trip_to_a_worker_process_and_back():
    errors = [
        BatchTimeoutError("timed out", batch_id="batch_1"),
        BatchIncompleteError("Batch batch_1 ended expired", batch_id="batch_1", status="expired"),
        DeliveryError("write failed", path="s3://b/k", job_id="job-1"),
        ReconcileError("2 rows for 3 requests", batch_id="batch_1"),
        OpenAIBatchInputError("bad", path="in.jsonl"),
    ]
    for error in errors:
        back = pickle.loads(pickle.dumps(error))
        assert (type(back), str(back), vars(back)) == (type(error), str(error), vars(error))


# -- raised where it happens -----------------------------------------------------------------


def wait_for_end(batch_id: str) -> object:
    hook = OpenAIBatchHook()
    batch = hook.get_batch(batch_id)
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.05)
        batch = hook.get_batch(batch_id)
    return batch


def test_a_failed_batch_resumes_the_submit_task_as_batch_failed(openai_conn, tmp_path):
    shard = make_shard(tmp_path, [request("a"), "{not json"])
    op = operator(shard)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    batch = wait_for_end(deferred.value.trigger.batch_id)
    with pytest.raises(BatchFailedError) as failure:
        op.execute_complete(context(), batch_event(batch))
    assert (failure.value.batch_id, failure.value.path) == (batch.id, shard.path)
    assert f"{shard.path}:2: [invalid_json_line]" in str(failure.value)


def test_a_wait_timeout_is_batch_timeout_naming_the_batch(openai_conn, emulator, tmp_path):
    op = operator(make_shard(tmp_path, [request("a")]))
    with knobs(emulator, in_progress_seconds=30), pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    batch_id = deferred.value.trigger.batch_id
    event = {"status": "timeout", "batch_id": batch_id, "deadline": time.time(), "batch_status": "in_progress"}
    with pytest.raises(BatchTimeoutError, match="wait timeout, not a batch failure") as timeout:
        op.execute_complete(context(), event)
    assert timeout.value.batch_id == batch_id


def test_a_destination_that_cannot_be_written_is_a_delivery_error(openai_conn, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the results folder should be")
    op = collect(submitted_job(tmp_path, [2]), blocker / "results")
    with pytest.raises(DeliveryError) as failure:
        run_to_completion(op, {"ti": RecordingTI()})
    error = failure.value
    # the destination as a successful run's summary names it
    assert error.job_id and error.path == f"file://{blocker}/results/{error.job_id}/results.parquet"
    assert f"job {error.job_id} to {error.path} failed" in str(error)
    assert isinstance(error.__cause__, OSError)


def test_a_missing_records_file_is_an_input_error_naming_the_path(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(OpenAIBatchInputError, match="does not exist") as failure:
        build(tmp_path, missing)
    assert failure.value.path == missing
    assert isinstance(failure.value, ValueError)


def test_a_bad_record_line_names_its_file(tmp_path):
    records = tmp_path / "in.jsonl"
    records.write_text('{"id": 1, "text": "ok"}\n[1, 2]\n')
    with pytest.raises(OpenAIBatchInputError, match=r"in\.jsonl:2: a record must be a JSON object") as failure:
        build(tmp_path, str(records))
    assert failure.value.path == str(records)


def test_a_deferrable_sensor_with_soft_fail_still_skips_on_a_failed_batch():
    """Airflow's sensor skips on an AirflowException after a deferral: the kinds it raises still are one."""
    failed = {"id": "batch_x", "status": "failed", "errors": [{"code": "invalid_json_line", "message": "bad"}]}
    resume = ("execute_complete", {"event": {"status": "failed", "batch_id": "batch_x", "batch": failed}})
    soft = OpenAIBatchSensor(task_id="wait", batch_id="batch_x", deferrable=True, soft_fail=True)
    with pytest.raises(AirflowSkipException) as skipped:
        soft.resume_execution(*resume, {"ti": RecordingTI()})
    assert isinstance(skipped.value.__cause__, BatchFailedError)
    with pytest.raises(BatchFailedError, match="batch_x failed with 1 error"):
        OpenAIBatchSensor(task_id="wait", batch_id="batch_x", deferrable=True).resume_execution(
            *resume, {"ti": RecordingTI()}
        )
