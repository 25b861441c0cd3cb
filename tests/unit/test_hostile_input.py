"""Hostile input: a ``path:line: message`` and exit 1, never a traceback, a hang or a memory blow-up.

Each file here is one a careless user or a broken upstream job produces: bytes that are not UTF-8,
JSON nested a hundred thousand levels deep, a byte-order mark, a CSV field past csv's limit, a
gzip that is not one or stops halfway, a line of many megabytes, a file that inflates to a
gigabyte-long line, numbers no request can mean.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_provider_openai_batch.cli import main
from airflow_provider_openai_batch.core.build.requests import RecordError, RequestBuilder, RequestTemplate
from airflow_provider_openai_batch.core.build.sources import read_records
from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.limits import MAX_LINE_BYTES
from airflow_provider_openai_batch.core.line_blocks import bounded_lines

DEEP = 100_000
HALF_A_GZIP = gzip.compress(b"".join(b'{"id": %d}\n' % i for i in range(999)))[:900]


def request(custom_id: str = "r1", content: str = "hello", **body) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **body}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return json.dumps(line).encode() + b"\n"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.fixture
def write(tmp_path):
    def write(name: str, data: bytes) -> str:
        path = tmp_path / name
        path.write_bytes(data)
        return str(path)

    return write


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- validate and estimate -------------------------------------------------------------------


@pytest.mark.parametrize("where", ["first", "last"])
def test_invalid_utf8_on_the_first_or_last_line_is_reported_by_line(write, capsys, where):
    bad = b'{"custom_id": "r\xff", "method": "POST"}\n'
    path = write("bad.jsonl", bad + request("r2") if where == "first" else request("r1") + bad)
    number = 1 if where == "first" else 2

    code, out, _ = run(capsys, "validate", path)
    assert code == 1 and f"{path}:{number}: not valid UTF-8" in out

    code, _, err = run(capsys, "estimate", path)
    assert code == 1 and f"{path}:{number}:" in err


def test_deep_nesting_is_named_not_a_recursion_error(write, capsys):
    path = write(
        "deep.jsonl", request("r1", metadata=None).replace(b'"metadata": null', b'"metadata": ' + nested(DEEP))
    )
    for command, stream in (("validate", 1), ("estimate", 2)):
        code, *outputs = run(capsys, command, path)
        assert code == 1
        assert f"{path}:1: JSON nested too deeply to read" in outputs[stream - 1]


def test_a_byte_order_mark_is_named_by_estimate_too(write, capsys):
    path = write("bom.jsonl", b"\xef\xbb\xbf" + request())
    code, _, err = run(capsys, "estimate", path)
    assert code == 1 and f"{path}:1: starts with a UTF-8 byte order mark (BOM)" in err
    assert "invalid character" not in err


def test_estimate_of_an_empty_file_fails_saying_so(write, capsys):
    path = write("empty.jsonl", b"")
    code, _, err = run(capsys, "estimate", path)
    assert code == 1 and f"{path}: empty file" in err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": 10**40}, "expected `int` <= 10000000 at body.max_tokens"),
        ({"max_tokens": -1}, "expected `int` >= 1 at body.max_tokens"),
        ({"max_completion_tokens": 0}, "expected `int` >= 1 at body.max_completion_tokens"),
        ({"n": 0}, "expected `int` >= 1 at body.n"),
    ],
)
def test_numbers_no_request_can_mean_fail_validation(write, capsys, body, message):
    path = write("gaps.jsonl", request(**body))
    code, out, _ = run(capsys, "validate", path)
    assert code == 1 and f"{path}:1: invalid body for /v1/chat/completions: {message}" in out


def test_an_absurd_max_tokens_is_not_priced(write, capsys):
    path = write("gaps.jsonl", request(max_tokens=10**40) + request("r2", max_tokens=5))
    code, out, err = run(capsys, "estimate", path)
    assert code == 1 and f"{path}:1: body.max_tokens is {10**40}; it must be 1 to 10,000,000" in err
    assert "up to 5 output tokens" in out


def test_an_empty_custom_id_fails_validation(write, capsys):
    path = write("empty-id.jsonl", request(""))
    code, out, _ = run(capsys, "validate", path)
    assert code == 1 and f"{path}:1: custom_id is empty" in out


def test_a_line_over_the_cap_is_refused_before_it_is_decoded(write, capsys):
    path = write("long.jsonl", request("big", "word " * (MAX_LINE_BYTES // 5 + 10)) + request("r2"))
    code, out, _ = run(capsys, "validate", path)
    assert code == 1 and f"{path}:1: line over {MAX_LINE_BYTES:,} bytes" in out
    assert f"{path}:2:" not in out  # the line after it is read normally
    code, out, err = run(capsys, "estimate", path)
    assert code == 1 and f"{path}:1: line over" in err and "1 requests" in out


def test_bounded_lines_keep_endings_and_cut_a_long_line_short():
    data = b"a\n" + b"x" * 50 + b"\nb\r\nc"
    lines = list(bounded_lines(io.BytesIO(data).read, max_line=10, block=7))
    assert lines == [b"a\n", b"x" * 11, b"b\r\n", b"c"]


# -- the build's record readers ----------------------------------------------------------------


def records(data: bytes, name: str) -> list[dict]:
    return list(read_records(io.BytesIO(data), name))


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("bad.jsonl", b'{"id": 1}\n{"id": "\xff"}\n', "bad.jsonl:2: not valid UTF-8"),
        ("deep.jsonl", b'{"id": 1, "x": ' + nested(DEEP) + b"}\n", "deep.jsonl:1: JSON nested too deeply"),
        ("bad.csv", b"id,text\n1,\xff\xfe\n", "bad.csv: not valid UTF-8 (near line"),
        ("wide.csv", b"id,text\n1,ok\n2," + b"a" * 200_000 + b"\n", "wide.csv:3: not a readable CSV row (field larger"),
        ("bad.jsonl.gz", b"not gzip at all", "bad.jsonl.gz: not a valid gzip file"),
        ("cut.jsonl.gz", HALF_A_GZIP, "cut.jsonl.gz: the gzip file is truncated"),
        ("long.jsonl", b'{"id": 1, "t": "' + b"a" * MAX_LINE_BYTES + b'"}\n', "long.jsonl:1: record line over"),
    ],
)
def test_unreadable_records_are_named_by_file_and_line(name, data, message):
    with pytest.raises(OpenAIBatchInputError) as failure:
        records(data, name)
    assert str(failure.value).startswith(message)


def test_a_record_whose_request_is_over_the_cap_is_named_before_it_is_tokenized():
    template = RequestTemplate(
        endpoint="/v1/chat/completions", model="gpt-4o-mini", messages=[{"role": "user", "content": "{{ text }}"}]
    )
    builder = RequestBuilder(template, "id", token_estimate="exact")
    rows = [{"id": "small", "text": "hi"}, {"id": "huge", "text": "word " * (MAX_LINE_BYTES // 5 + 1)}]
    with pytest.raises(RecordError, match=r"record #2 \(id='huge'\): its request would be [\d,]+ bytes, over the cap"):
        list(builder.chunks(rows))


@pytest.fixture(scope="module")
def gzip_bomb(tmp_path_factory) -> Path:
    """1 MB on disk, one 1 GiB line inflated."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.jsonl.gz"
    block = b"a" * (1 << 20)
    with gzip.open(path, "wb", compresslevel=6) as out:
        out.write(b'{"id": 1, "text": "')
        for _ in range(1024):
            out.write(block)
        out.write(b'"}\n')
    return path


def test_a_small_gzip_that_inflates_to_a_gigabyte_line_is_refused_without_inflating_it(gzip_bomb):
    # A guard against the blow-up itself (2.4 GB before this fix), not a performance target:
    # the benchmark suite holds those. The child reads the bomb as the build does.
    script = textwrap.dedent(
        f"""
        import sys
        from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
        from airflow_provider_openai_batch.core.build.sources import read_records
        try:
            with open({str(gzip_bomb)!r}, "rb") as handle:
                for _ in read_records(handle, {gzip_bomb.name!r}):
                    pass
        except OpenAIBatchInputError as err:
            print(err)
        # VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec.
        status = open("/proc/self/status").read()
        print(int(status.split("VmHWM:")[1].split()[0]) // 1024)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    message, peak_mb = done.stdout.splitlines()
    assert message.startswith("bomb.jsonl.gz:1: record line over")
    assert int(peak_mb) < 400


# -- reconcile ----------------------------------------------------------------------------------


def answer(custom_id: str) -> bytes:
    body = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
    line = {"id": "r", "custom_id": custom_id, "response": {"status_code": 200, "request_id": "x", "body": body}}
    return json.dumps(line).encode() + b"\n"


def test_reconcile_counts_unreadable_output_lines_and_never_fails_on_them(write, capsys, tmp_path):
    requests = write("requests.jsonl", request("r0") + request("r1") + request("r2"))
    mangled = b'{"custom_id": "r1\xff", "response": null}\n' + b'{"x": ' + nested(DEEP) + b"}\n"
    output = write("output.jsonl", answer("r0") + mangled + answer("r2"))
    code, out, err = run(
        capsys, "reconcile", "--requests", requests, "--output", output, "--dest", str(tmp_path / "r.jsonl")
    )
    assert code == 0
    assert "requests=3 succeeded=2" in out and "missing=1" in out
    assert "2 unparseable line(s)" in err


def test_reconcile_to_an_unknown_format_says_so_without_a_traceback(write, capsys, tmp_path):
    requests = write("requests.jsonl", request("r0"))
    output = write("output.jsonl", answer("r0"))
    code, _, err = run(
        capsys, "reconcile", "--requests", requests, "--output", output, "--dest", str(tmp_path / "rows.csv")
    )
    assert code == 1
    assert "cannot tell the format of" in err and "name it .parquet or .jsonl" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (request("r0") + b'{"custom_id": "r\xff1"}\n', "requests.jsonl:2: not valid UTF-8"),
        (b"\xef\xbb\xbf" + request("r0"), "requests.jsonl:1: starts with a UTF-8 byte order mark (BOM)"),
        (b'{"custom_id": "r0", "body": ' + nested(DEEP) + b"}\n", "requests.jsonl:1: JSON nested too deeply"),
        (b"[1]\n", "requests.jsonl:1: not a request line: Expected `object`, got `array`"),
        (b'{"custom_id": 5}\n', "requests.jsonl:1: not a request line: Expected `str`, got `int`"),
        (request(""), "requests.jsonl:1: custom_id is empty"),
        (request("r0") + request("r1") + request("r0"), "requests.jsonl:3: custom_id 'r0' repeats line 1"),
        (b"", "requests.jsonl: empty file: no requests to reconcile"),
    ],
)
def test_reconcile_names_a_requests_file_it_cannot_join_by_line(write, capsys, tmp_path, lines, message):
    # The requests give the rows' ids: one that cannot be read would drop or double rows.
    requests = write("requests.jsonl", lines)
    output = write("output.jsonl", answer("r0"))
    dest = tmp_path / "rows.jsonl"
    code, _, err = run(capsys, "reconcile", "--requests", requests, "--output", output, "--dest", str(dest))
    assert code == 1 and f"{tmp_path / message}" in err
    assert not dest.exists()


def test_reconcile_names_gzip_unwritable_and_price_problems_without_a_traceback(write, capsys, tmp_path):
    requests = write("requests.jsonl", request("r0"))
    output = write("output.jsonl", answer("r0"))
    zipped = write("output.jsonl.gz", gzip.compress(answer("r0")))
    prices = write("prices.json", b"[" * DEEP + b"]" * DEEP)
    cases = [
        (["--output", zipped, "--dest", str(tmp_path / "r.jsonl")], f"{zipped}: gzip-compressed"),
        (["--output", output, "--dest", "/proc/rows.jsonl"], "cannot write /proc/rows.jsonl"),
        (["--output", output, "--dest", str(tmp_path / "r.jsonl"), "--prices", prices], "Cannot read price overrides"),
        (["--output", str(tmp_path / "nope.jsonl"), "--dest", str(tmp_path / "r.jsonl")], "nope.jsonl: no such file"),
    ]
    for args, message in cases:
        code, _, err = run(capsys, "reconcile", "--requests", requests, *args)
        assert code == 1 and message in err, err
