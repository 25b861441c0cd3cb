"""``openai-batch validate`` and ``openai-batch estimate``: output lines and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from airflow_provider_openai_batch.cli import main


def line(custom_id: str, model: str = "gpt-4o-mini", **body) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


@pytest.fixture
def files(tmp_path):
    def write(name: str, lines: list[str], ending: str = "\n") -> str:
        path = tmp_path / name
        path.write_bytes("".join(f"{text}{ending}" for text in lines).encode())
        return str(path)

    return write


def test_validate_prints_path_line_messages_and_exits_1(files, capsys):
    bad = files("bad.jsonl", [line("a", max_token=3), "not json", line("a")])
    assert main(["validate", bad]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{bad}:1: invalid body for /v1/chat/completions: unknown key `max_token` at body",
        f"{bad}:2: not valid JSON: JSON is malformed: invalid character (byte 4)",
        f"{bad}:3: duplicate custom_id 'a'; custom_ids must be unique across the job",
    ]
    assert "1 file(s), 3 requests: 3 error(s), 0 warning(s)" in err


def test_validate_exits_0_when_clean_and_warnings_do_not_fail(files, capsys):
    crlf = files("crlf.jsonl", [line("a"), line("b")], ending="\r\n")
    assert main(["validate", crlf]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines() == [f"{crlf}:1: warning: CRLF line endings (first here); accepted, but LF is expected"]
    clean = files("clean.jsonl", [line("c")])
    assert main(["validate", clean]) == 0
    assert capsys.readouterr().out == ""


def test_validate_treats_files_as_one_job_unless_per_file(files, capsys):
    first, second = files("1.jsonl", [line("a")]), files("2.jsonl", [line("a")])
    assert main(["validate", first, second]) == 1
    assert capsys.readouterr().out.startswith(f"{second}:1: duplicate custom_id 'a'")
    assert main(["validate", "--per-file", first, second]) == 0


def test_validate_lists_the_first_problems_then_a_count(files, capsys):
    bad = files("bad.jsonl", ["{"] * 5)
    assert main(["validate", "--max-problems", "2", bad]) == 1
    assert capsys.readouterr().out.splitlines()[2:] == ["... and 3 more problems"]


def test_validate_a_missing_file_exits_1(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.jsonl")]) == 1
    assert "nope.jsonl" in capsys.readouterr().err


def test_estimate_prints_each_file_and_the_total(files, capsys):
    first = files("1.jsonl", [line("a", max_completion_tokens=10)] * 2)
    second = files("2.jsonl", [line("b", max_completion_tokens=10)])
    assert main(["estimate", first, second]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{first}: 2 requests to gpt-4o-mini, 18 input tokens, up to 20 output tokens, $0.0000")
    assert out[1].startswith(f"{second}: 1 requests to gpt-4o-mini, 9 input tokens, up to 10 output tokens")
    assert out[2].startswith("total: 3 requests to gpt-4o-mini, 27 input tokens, up to 30 output tokens, $")


def test_estimate_uses_price_overrides_and_guards_a_budget(files, tmp_path, capsys):
    path = files("1.jsonl", [line("a", model="my-model", max_completion_tokens=10)])
    assert main(["estimate", path]) == 0
    assert "cost unknown" in capsys.readouterr().out
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"my-model": {"input": 1_000_000, "output": 0}}))
    assert main(["estimate", path, "--prices", str(prices)]) == 0
    assert "9 input tokens, up to 10 output tokens, $9.0000 (tokens counted exactly" in capsys.readouterr().out
    assert main(["estimate", path, "--prices", str(prices), "--max-cost-usd", "5"]) == 1
    assert "exceeds max_cost_usd=$5.0000" in capsys.readouterr().err


def test_estimate_prices_each_model_of_a_mixed_file_and_names_them(files, tmp_path, capsys):
    path = files(
        "mixed.jsonl", [line("a", max_completion_tokens=10), line("b", model="my-model", max_completion_tokens=10)]
    )
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"my-model": {"input": 1_000_000, "output": 0}}))
    assert main(["estimate", path, "--prices", str(prices)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: 2 requests to gpt-4o-mini, my-model, 18 input tokens" in out
    # my-model's 9 input tokens at $1/token, plus gpt-4o-mini's few cents' worth: priced per model
    assert ", $9.0000 (tokens counted exactly" in out


def test_a_line_without_a_model_is_named_by_its_line(files, capsys):
    path = files("nomodel.jsonl", [line("a", max_completion_tokens=10), line("b", model="")])
    assert main(["estimate", path]) == 1
    out, err = capsys.readouterr()
    assert f"{path}:2: the body names no model" in err
    assert "No known tokenizer for model ''" not in out + err
    assert f"{path}: 1 requests to gpt-4o-mini" in out


def test_a_tiny_budget_is_printed_with_its_significant_digits(files, capsys):
    path = files("1.jsonl", [line("a", max_completion_tokens=10)])
    assert main(["estimate", path, "--max-cost-usd", "0.0000001"]) == 1
    err = capsys.readouterr().err
    assert "exceeds max_cost_usd=$0.00000010:" in err
    assert "Estimated batch cost $0.0000" in err and "$0.0000 exceeds" not in err


def test_an_unpriced_model_points_a_cli_user_to_prices_file(files, capsys):
    path = files("1.jsonl", [line("a", model="my-finetune")])
    assert main(["estimate", path]) == 0
    out = capsys.readouterr().out
    assert '{"my-finetune": {"input": ..., "output": ..., "cached_input": ...}}' in out
    assert "--prices FILE" in out


def test_the_installed_command_runs(files):
    clean = files("clean.jsonl", [line("a")])
    command = [sys.executable, "-m", "airflow_provider_openai_batch.cli", "validate", clean]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "1 file(s), 1 requests: 0 error(s), 0 warning(s)" in done.stderr
