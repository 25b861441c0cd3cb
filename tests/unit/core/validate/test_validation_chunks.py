"""Clean chunks take a fast path; the report must not depend on where chunks begin and end."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_openai_batch.core.validate.validation import ValidationReport, Validator

CHAT = "/v1/chat/completions"
STRICT_BROKEN = {"type": "json_schema", "json_schema": {"name": "n", "strict": True, "schema": {"type": "object"}}}


def request(custom_id: str, url: str = CHAT, **body: Any) -> bytes:
    if url == CHAT:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": custom_id}], **body}
    line = {"custom_id": custom_id, "method": "POST", "url": url, "body": body}
    return json.dumps(line).encode() + b"\n"


def chat_file(prefix: str) -> list[bytes]:
    """Mostly clean lines with every kind of cross-line problem in between."""
    lines = [request(f"{prefix}{index}") for index in range(40)]
    lines[7] = request(f"{prefix}3")  # duplicate within the file
    lines[11] = request(f"{prefix}11", model="gpt-4.1")  # another model
    lines[13] = request(f"{prefix}13", url="/v1/embeddings", model="gpt-4o-mini", input="x")  # another url
    lines[17] = request(f"{prefix}17").replace(b"\n", b"\r\n")  # CRLF: a warning
    lines[18] = request(f"{prefix}18").replace(b"\n", b"\r\n")
    lines[21] = b"\n"  # blank
    lines[25] = request(f"{prefix}25", response_format=STRICT_BROKEN)  # decodes, fails the extra check
    lines[26] = request(f"{prefix}26", max_token=1)  # unknown key
    lines[33] = request("a0")  # duplicate of a line in the first file
    return lines


def embeddings_file() -> list[bytes]:
    url = "/v1/embeddings"
    lines = [
        request(f"e{index}", url, model="text-embedding-3-small", input=["x"] * (index % 3 + 1)) for index in range(30)
    ]
    lines[20] = request("e20", url, model="text-embedding-3-small", input=["x", 1])  # mixed kinds
    return lines


def run(files: dict[str, list[bytes]], chunk_lines: int, monkeypatch: pytest.MonkeyPatch) -> ValidationReport:
    validator = Validator(max_embedding_inputs=50, chunk_lines=chunk_lines)
    for label, lines in files.items():
        validator.validate_lines(label, lines)
    return validator.report()


@pytest.mark.parametrize("chunk_lines", [2, 3, 8, 128])
def test_report_is_the_same_whatever_the_chunk_size(monkeypatch: pytest.MonkeyPatch, chunk_lines: int) -> None:
    files = {"a.jsonl": chat_file("a"), "b.jsonl": chat_file("b"), "e.jsonl": embeddings_file()}
    line_by_line = run(files, 1, monkeypatch)
    chunked = run(files, chunk_lines, monkeypatch)
    assert chunked == line_by_line


def test_the_reference_report_finds_each_planted_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    report = run({"a.jsonl": chat_file("a"), "b.jsonl": chat_file("b")}, 1, monkeypatch)
    lines_with_problems = sorted({(problem.path, problem.line) for problem in report.problems})
    planted = [8, 12, 14, 18, 22, 26, 27, 34]  # line 34 repeats a0, first seen on a.jsonl:1
    assert lines_with_problems == [("a.jsonl", n) for n in planted] + [("b.jsonl", n) for n in planted]
    assert report.files[0].crlf_lines == 2
    assert report.warning_count == 2


def test_embedding_inputs_counted_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    report = run({"e.jsonl": embeddings_file()}, 128, monkeypatch)
    expected = sum(index % 3 + 1 for index in range(30) if index != 20)
    assert report.files[0].embedding_inputs == expected
    assert [str(problem) for problem in report.problems] == [
        "e.jsonl:21: body.input mixes string and token items; use one kind per request",
        f"e.jsonl: {expected} embedding inputs, over the limit of 50 per batch; split it into shards",
    ]


def test_a_long_clean_file_stays_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    slow = Validator._scan_lines

    def counting(self: Validator, file: Any, start: int, chunk: list[bytes]) -> None:
        calls.append(start)
        slow(self, file, start, chunk)

    monkeypatch.setattr(Validator, "_scan_lines", counting)
    lines = [request(f"r{index}") for index in range(1000)]
    lines[700] = request("r5")
    validator = Validator()
    summary = validator.validate_lines("big.jsonl", lines)
    assert summary.requests == 1000
    assert [str(problem) for problem in validator.report().problems] == [
        "big.jsonl:701: duplicate custom_id 'r5'; custom_ids must be unique across the job"
    ]
    assert calls == []  # the repeat is found in the spill at the report: no chunk went line by line


def test_a_chunk_skips_the_extra_check_only_when_no_body_sets_what_it_looks_at():
    from airflow_provider_openai_batch.core.validate.bodies.endpoints import RULES_BY_URL

    chat, embeddings = RULES_BY_URL[CHAT], RULES_BY_URL["/v1/embeddings"]
    body = chat.body_decoder().decode
    plain = [body(json.dumps({"model": "m", "messages": [{"role": "user", "content": str(i)}]})) for i in range(3)]
    assert chat.plain(plain)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    for extra in ({"response_format": STRICT_BROKEN}, {"tools": [tool]}, {"functions": [tool["function"]]}):
        odd = body(json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}))
        assert not chat.plain([*plain, odd]), extra
    # Embeddings count every line's inputs: never skipped.
    assert not embeddings.plain([embeddings.body_decoder().decode(b'{"model": "m", "input": "x"}')])


def test_a_strict_schema_problem_in_one_line_of_a_plain_chunk_is_still_reported():
    lines = [request(f"r{index}") for index in range(200)]
    lines[150] = request("r150", response_format=STRICT_BROKEN)
    validator = Validator()
    validator.validate_lines("big.jsonl", lines)
    problems = [(p.line, p.message) for p in validator.report().problems]
    assert [line for line, _ in problems] == [151]
    assert "response_format.json_schema.schema" in problems[0][1]
