"""One call for the common job: build → submit (mapped, one per shard) → collect, as a task group.

``openai_batch_job`` wires the three operators; ``@task.openai_batch`` does the same around a
TaskFlow function that returns the records (a list of dicts) or where they are (a file or an
``ObjectStoragePath`` URI)::

    @task.openai_batch(model="gpt-4o-mini", messages=[...], key_field="id",
                       work_dir="s3://aws_default@bucket/batch", destination="s3://aws_default@bucket/results")
    def feedback():
        return "s3://aws_default@bucket/feedback.jsonl"

    summary = feedback()   # the collect task's XCom: counts and where the rows went

Options are routed to the operator that takes them (``key_field`` to build, ``reattach`` to
submit, ``max_attempts`` to results); one every operator takes with one meaning (``conn_id``,
``poll_interval``, ``wait_timeout``, ``prices``, ``max_consecutive_errors``) goes to each. Per-task
settings — and ``sql_conn_id``, which is the source of the build but the destination of the
results — go in ``build=``, ``submit=`` and ``results=``. The three tasks keep their ids
(``<group>.build_requests``, ``.submit_batch``, ``.collect_results``), so pools, retries and the
batches page work as with the operators written out.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from airflow.providers.common.compat.sdk import BaseOperator, TaskGroup, task

from airflow_provider_openai_batch.operators.build import OpenAIBatchBuildOperator
from airflow_provider_openai_batch.operators.results import OpenAIBatchResultsOperator
from airflow_provider_openai_batch.operators.submit import OpenAIBatchSubmitOperator

OPERATORS: dict[str, type[BaseOperator]] = {
    "build": OpenAIBatchBuildOperator,
    "submit": OpenAIBatchSubmitOperator,
    "results": OpenAIBatchResultsOperator,
}
# Taken by several operators with different meanings: only in build= / submit= / results=.
AMBIGUOUS = frozenset({"sql_conn_id", "work_dir"})
# The endpoint when none is given: chat, the one most jobs use.
DEFAULT_ENDPOINT = "/v1/chat/completions"


def _own_parameters(operator: type[BaseOperator]) -> set[str]:
    """The keyword arguments an operator adds to BaseOperator's."""
    return {
        name
        for name, parameter in inspect.signature(operator.__init__).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }


def route_options(options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Split the job's options by the operators that take them; refuse unknown or ambiguous ones."""
    routed: dict[str, dict[str, Any]] = {step: {} for step in OPERATORS}
    for name, value in options.items():
        takers = [step for step, operator in OPERATORS.items() if name in _own_parameters(operator)]
        if name in AMBIGUOUS:
            raise TypeError(
                f"{name}= means something else to each task: "
                "pass it in build={...}, submit={...} or results={...}"
            )
        if not takers:
            raise TypeError(
                f"openai_batch_job got an unexpected option {name}=; per-task settings (retries, pool, …) "
                "go in build={...}, submit={...} or results={...}"
            )
        for step in takers:
            routed[step][name] = value
    return routed


def openai_batch_job(
    group_id: str,
    *,
    work_dir: str,
    destination: str | None = None,
    records: Any = None,
    build: Mapping[str, Any] | None = None,
    submit: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    **options: Any,
) -> TaskGroup:
    """
    The three tasks of a batch job in a task group named ``group_id``; returns the group.

    :param work_dir: where the request files go (``{work_dir}/requests``) — object storage when the
        tasks run on several machines.
    :param destination: where the results go (Parquet by default); or ``results={"sql_conn_id": ...,
        "table": ...}`` for a table.
    :param records: the records (a list, an XCom, a file or URI); or ``build={"sql": ..., "sql_conn_id": ...}``.
    :param build: more arguments for the build task (any of ``OpenAIBatchBuildOperator``'s and BaseOperator's).
    :param submit: more arguments for the mapped submit task (``pool=`` to cap batches in flight).
    :param results: more arguments for the collect task.
    :param options: any other argument of the three operators, routed to the one(s) that take it
        (``model``, ``messages``, ``key_field``, ``endpoint``, ``body``, ``conn_id``, ``poll_interval``…).
    """
    steps = route_options(options)
    with TaskGroup(group_id=group_id) as group:
        _add_job(work_dir, destination, records, steps, build, submit, results)
    return group


def _add_job(
    work_dir: str,
    destination: str | None,
    records: Any,
    steps: dict[str, dict[str, Any]],
    build: Mapping[str, Any] | None,
    submit: Mapping[str, Any] | None,
    results: Mapping[str, Any] | None,
) -> Any:
    """Build → submit.expand → collect in the current task group; returns the collect task's output."""
    build_args = {
        "work_dir": f"{work_dir}/requests",
        "endpoint": DEFAULT_ENDPOINT,
        **steps["build"],
        **dict(build or {}),
    }
    if records is not None:
        build_args["records"] = records
    results_args = {**steps["results"], **dict(results or {})}
    if destination is not None:
        results_args["destination"] = destination
    shards = OpenAIBatchBuildOperator(task_id="build_requests", **build_args)
    submitted = OpenAIBatchSubmitOperator.partial(
        task_id="submit_batch", **steps["submit"], **dict(submit or {})
    ).expand(shard=shards.output)
    batches: Any = submitted.output  # the submit tasks' returns, resolved when the collect task runs
    return OpenAIBatchResultsOperator(task_id="collect_results", batches=batches, **results_args).output


def openai_batch_task(python_callable: Callable[..., Any] | None = None, **job: Any) -> Any:
    """
    ``@task.openai_batch(...)``: the decorated function supplies the records; the job runs after it.

    Calling the decorated function in a DAG adds a task group named after it (or ``task_id=``):
    ``<name>.records`` runs the function, then the three tasks of :func:`openai_batch_job`, with
    ``job`` as their options. The call returns the collect task's output (the job's summary).
    """
    options = dict(job)
    task_id = options.pop("task_id", None)
    work_dir, destination = options.pop("work_dir", None), options.pop("destination", None)
    parts = {name: options.pop(name, None) for name in ("build", "submit", "results")}
    if work_dir is None:
        raise TypeError("@task.openai_batch needs work_dir=, where the request files go")
    steps = route_options(options)

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def add_job(*args: Any, **kwargs: Any) -> Any:
            with TaskGroup(group_id=task_id or function.__name__):
                records = task(task_id="records")(function)(*args, **kwargs)
                return _add_job(work_dir, destination, records, steps, **parts)

        return add_job

    return decorate(python_callable) if python_callable is not None else decorate
