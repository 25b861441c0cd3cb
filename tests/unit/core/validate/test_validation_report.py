"""The report: the first N problems with a count of the rest, and the error raised from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.validate.validation import BatchInputError, Problem, Validator, validate_paths

GOOD = json.dumps(
    {
        "custom_id": "ok",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
).encode()


def test_problem_reads_path_line_message() -> None:
    assert str(Problem("a.jsonl", 3, "blank line")) == "a.jsonl:3: blank line"
    assert str(Problem("a.jsonl", None, "empty file")) == "a.jsonl: empty file"
    assert str(Problem("a.jsonl", 1, "CRLF", "warning")) == "a.jsonl:1: warning: CRLF"


def test_keeps_the_first_hundred_problems_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(GOOD + b"\n" + b"not json\n" * 150)
    report = validate_paths([str(path)])
    assert report.error_count == 150
    assert len(report.problems) == 100
    assert report.problems[-1].line == 101
    lines = report.format().splitlines()
    assert len(lines) == 101
    assert lines[-1] == "... and 50 more problems"


def test_format_limit_is_a_parameter(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"x\n" * 3)
    report = validate_paths([str(path)])
    assert report.format(limit=1).splitlines() == [
        f"{path}:1: not valid JSON: JSON is malformed: invalid character (byte 0)",
        "... and 2 more problems",
    ]


def test_max_problems_is_a_parameter() -> None:
    validator = Validator(max_problems=2)
    validator.validate_lines("x.jsonl", [b"\n"] * 5)
    report = validator.report()
    assert (len(report.problems), report.error_count) == (2, 6)  # five blank lines, then "empty file"


def test_raise_for_errors_names_the_count_and_the_files(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_bytes(GOOD + b"\n")
    bad.write_bytes(b"\n" + GOOD.replace(b'"ok"', b'"ok2"') + b"\n\n")
    report = validate_paths([str(good), str(bad)])
    with pytest.raises(BatchInputError) as caught:
        report.raise_for_errors()
    message = str(caught.value)
    assert message.startswith(f"2 problems in batch input {bad};")
    assert f"{bad}:1: blank line" in message
    assert f"{bad}:3: blank line" in message
    assert str(good) + ":" not in message
    assert caught.value.report is report
    assert isinstance(caught.value, OpenAIBatchInputError)
    assert isinstance(caught.value, ValueError)


def test_raise_for_errors_ignores_warnings(tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(GOOD + b"\r\n")
    report = validate_paths([str(path)])
    assert report.ok and report.warning_count == 1
    report.raise_for_errors()


def test_report_keeps_one_summary_per_file_in_order(tmp_path: Path) -> None:
    paths = []
    for index in range(3):
        path = tmp_path / f"part-{index}.jsonl"
        path.write_bytes(GOOD.replace(b'"ok"', f'"id-{index}"'.encode()) + b"\n")
        paths.append(str(path))
    report = validate_paths(paths)
    assert [summary.path for summary in report.files] == paths
    assert all(summary.ok and summary.requests == 1 for summary in report.files)
