"""Per-endpoint checks a struct cannot express, run on a line that decoded cleanly.

Each returns ``(inputs, problems)``: the inputs the line adds to the embeddings limit (0 for other
endpoints) and messages naming where in the body. The common case returns the shared ``CLEAN``
without allocating, since these run once per line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from airflow_provider_openai_batch.core.limits import MAX_EMBEDDING_INPUTS_PER_REQUEST
from airflow_provider_openai_batch.core.validate.bodies.base import UNSET
from airflow_provider_openai_batch.core.validate.bodies.chat import ChatCompletionBody
from airflow_provider_openai_batch.core.validate.bodies.chat import FunctionTool as ChatFunctionTool
from airflow_provider_openai_batch.core.validate.bodies.completions import CompletionBody
from airflow_provider_openai_batch.core.validate.bodies.embeddings import EmbeddingBody
from airflow_provider_openai_batch.core.validate.bodies.formats import ResponseFormatJSONSchema
from airflow_provider_openai_batch.core.validate.bodies.inputs import input_count, mixed_kinds
from airflow_provider_openai_batch.core.validate.bodies.moderations import ModerationBody
from airflow_provider_openai_batch.core.validate.bodies.responses import FunctionTool as ResponsesFunctionTool
from airflow_provider_openai_batch.core.validate.bodies.responses import ResponsesBody, TextFormatJSONSchema
from airflow_provider_openai_batch.core.validate.bodies.schemas import SchemaChecker

Inspection = tuple[int, Sequence[str]]
Check = Callable[[Any, bytes, SchemaChecker], Inspection]
CLEAN: Final[Inspection] = (0, ())


def utf8_problem(line: bytes) -> str | None:
    """Why ``line`` is not UTF-8, or None.

    The struct decoder checks UTF-8 in every string it reads, but not in what it skips (raw
    schemas, keys of loose structs), so endpoints with loose parts call this.
    """
    if line.isascii():
        return None
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte {exc.start + 1} of the line); save the file as UTF-8"
    return None


def _add(found: list[str], where: str, problems: Sequence[str]) -> None:
    if problems:  # usually empty: skip building anything
        found.extend(where + problem for problem in problems)


def check_chat(body: ChatCompletionBody, line: bytes, schemas: SchemaChecker) -> Inspection:
    """Schemas in ``response_format``, ``tools`` and the legacy ``functions``."""
    fmt, tools, functions = body.response_format, body.tools, body.functions
    if fmt is UNSET and tools is UNSET and functions is UNSET:
        return CLEAN
    found: list[str] = []
    if type(fmt) is ResponseFormatJSONSchema and isinstance(schema := fmt.json_schema.schema, msgspec.Raw):
        _add(found, "body.response_format.json_schema.schema", schemas(schema, fmt.json_schema.strict is True))
    if tools:
        for index, tool in enumerate(tools):
            if (
                type(tool) is ChatFunctionTool
                and isinstance(schema := tool.function.parameters, msgspec.Raw)
                and (problems := schemas(schema, tool.function.strict is True))
            ):
                _add(found, f"body.tools[{index}].function.parameters", problems)
    if functions:
        for index, function in enumerate(functions):
            if isinstance(schema := function.parameters, msgspec.Raw) and (problems := schemas(schema, False)):
                _add(found, f"body.functions[{index}].parameters", problems)
    return (0, found) if found else CLEAN


def check_responses(body: ResponsesBody, line: bytes, schemas: SchemaChecker) -> Inspection:
    """Schemas in ``text.format`` and function tools; UTF-8 when a loose tool was skipped."""
    text, tools = body.text, body.tools
    if text is UNSET and tools is UNSET:
        return CLEAN
    found: list[str] = []
    fmt = text.format if text is not UNSET else None
    if type(fmt) is TextFormatJSONSchema:
        _add(found, "body.text.format.schema", schemas(fmt.schema, fmt.strict is True))
    loose = False
    for index, tool in enumerate(tools or ()):
        if type(tool) is ResponsesFunctionTool:
            if problems := schemas(tool.parameters, tool.strict is True, nullable=True):
                _add(found, f"body.tools[{index}].parameters", problems)
        else:
            loose = True
    problem = utf8_problem(line) if loose else None
    if problem:
        found.append(problem)
    return (0, found) if found else CLEAN


def _list_input(where: str, value: Any) -> Inspection:
    if type(value) is not list:
        return CLEAN
    problem = mixed_kinds(value)
    return (0, (f"{where} {problem}",)) if problem else CLEAN


def check_embeddings(body: EmbeddingBody, line: bytes, schemas: SchemaChecker) -> Inspection:
    """
    Counts inputs for the per-batch limit; rejects what the endpoint refuses, line by line, instead
    of a failed request hours later: empty strings or lists, mixed lists, over 2,048 inputs.
    """
    value = body.input
    if value == "":
        return 0, ("body.input is an empty string; the embeddings endpoint refuses it",)
    _, problems = _list_input("body.input", value)
    if problems:
        return 0, problems
    count = input_count(value)
    if type(value) is list and type(value[0]) is not int:
        if count > MAX_EMBEDDING_INPUTS_PER_REQUEST:
            return 0, (f"body.input has {count:,} inputs, over the limit of {MAX_EMBEDDING_INPUTS_PER_REQUEST:,}",)
        empty = "" if type(value[0]) is str else []
        if empty in value:
            what = "an empty string" if empty == "" else "an empty token list"
            return 0, (f"body.input[{value.index(empty)}] is {what}; the embeddings endpoint refuses it",)
    return count, ()


def check_completions(body: CompletionBody, line: bytes, schemas: SchemaChecker) -> Inspection:
    return _list_input("body.prompt", body.prompt)


def check_moderations(body: ModerationBody, line: bytes, schemas: SchemaChecker) -> Inspection:
    return _list_input("body.input", body.input)


def check_images(body: Any, line: bytes, schemas: SchemaChecker) -> Inspection:
    return CLEAN


def check_loose(body: Any, line: bytes, schemas: SchemaChecker) -> Inspection:
    """Loose bodies skip unknown keys unread, so their UTF-8 is checked here."""
    problem = utf8_problem(line)
    return (0, (problem,)) if problem else CLEAN
