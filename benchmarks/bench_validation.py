"""Full validation against a bare JSON decode loop (not collected by pytest: no ``test_`` prefix).

Run: ``.venv/bin/python benchmarks/bench_validation.py [--lines N] [--schema-every K]``.
Writes N deterministic chat request lines to a temporary file, then times, each in a fresh
process so peak RSS is its own: a bare ``msgspec.json.decode`` loop over the file's lines, and
``Validator.validate_file`` on the same file. Prints seconds, µs per line, the ratio and peak RSS.
The target is a ratio of at most 2 with memory flat apart from the custom_id hashes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

import msgspec

_ASCII_TEXT = (
    "the invoice shipment customer refund order delayed because warehouse inventory was "
    "counted twice please summarise this review in one sentence and classify its sentiment "
    "2024-07-18 #4512 $19.99 https://example.com/a?b=c"
)
_OTHER_SCRIPTS = "naïve café résumé 東京 données"
_ASCII_WORDS = _ASCII_TEXT.split()
_WORDS = _ASCII_WORDS + _OTHER_SCRIPTS.split()
_SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]}},
    "required": ["sentiment"],
    "additionalProperties": False,
}


def _request(index: int, rng: random.Random, with_schema: bool, words: list[str], most: int) -> dict:
    body: dict = {
        "model": "gpt-4o-mini",
        "max_completion_tokens": 256,
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You classify customer reviews. Answer with one word."},
            {"role": "user", "content": " ".join(rng.choice(words) for _ in range(rng.randint(most // 10, most)))},
        ],
    }
    if with_schema:
        json_schema = {"name": "sentiment", "strict": True, "schema": _SCHEMA}
        body["response_format"] = {"type": "json_schema", "json_schema": json_schema}
    return {"custom_id": f"review-{index:09d}", "method": "POST", "url": "/v1/chat/completions", "body": body}


def generate(path: str, lines: int, schema_every: int, ascii_only: bool, most_words: int) -> None:
    """Stream the lines to disk so the parent's memory stays out of the picture."""
    rng = random.Random(7)
    words = _ASCII_WORDS if ascii_only else _WORDS
    encode = msgspec.json.Encoder().encode
    with open(path, "wb", buffering=1 << 20) as out:
        for index in range(lines):
            with_schema = schema_every > 0 and index % schema_every == 0
            out.write(encode(_request(index, rng, with_schema, words, most_words)) + b"\n")


def _bare(path: str) -> None:
    decode = msgspec.json.decode
    with open(path, "rb", buffering=1 << 20) as stream:
        for line in stream:
            decode(line)


def _validate(path: str) -> None:
    from airflow_provider_openai_batch.core.validate.validation import Validator

    validator = Validator(max_requests=sys.maxsize, max_bytes=sys.maxsize)
    validator.validate_file(path)
    report = validator.report()
    if not report.ok:
        raise SystemExit(f"unexpected problems:\n{report.format(limit=5)}")


def run_phase(phase: str, path: str) -> None:
    """Child side: time one phase and print seconds and peak RSS as JSON."""
    if phase == "validate":  # import before timing, like the bare loop's msgspec
        import airflow_provider_openai_batch.core.validate.validation  # noqa: F401
    start = time.perf_counter()
    {"bare": _bare, "validate": _validate}[phase](path)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024}))


def measure(path: str, repeats: int) -> dict[str, dict[str, float]]:
    """Best time per phase over ``repeats`` rounds of fresh processes, phases interleaved so a
    busy neighbour slows both alike."""
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "validate": []}
    for _ in range(repeats):
        for phase, results in runs.items():
            command = [sys.executable, __file__, "--phase", phase, "--path", path]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            results.append(json.loads(done.stdout))
    return {phase: min(results, key=lambda run: run["seconds"]) for phase, results in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_200_000, help="request lines to generate")
    parser.add_argument("--schema-every", type=int, default=0, help="give every K-th line a strict json_schema")
    parser.add_argument("--words", type=int, default=200, help="most words in a user message (least: a tenth)")
    parser.add_argument("--ascii", action="store_true", help="ASCII text only (the bare decode is fastest on it)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per phase; the fastest counts")
    parser.add_argument("--phase", choices=["bare", "validate"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_phase(args.phase, args.path)
        return
    handle, path = tempfile.mkstemp(suffix=".jsonl", prefix="bench-validation-")
    os.close(handle)
    try:
        generate(path, args.lines, args.schema_every, args.ascii, args.words)
        size_mib = os.path.getsize(path) / 2**20
        best = measure(path, args.repeats)
        bare, full = best["bare"], best["validate"]
    finally:
        os.unlink(path)
    per_line = 1e6 / args.lines
    text = "ASCII" if args.ascii else "mixed-script"
    schemas = f"strict json_schema every {args.schema_every} line(s)" if args.schema_every else "no json_schema"
    print(f"{args.lines:,} chat lines ({text}, up to {args.words} words), {size_mib:,.0f} MiB, {schemas}")
    print(f"bare msgspec.json.decode loop: {bare['seconds']:.2f} s ({bare['seconds'] * per_line:.2f} µs/line)")
    print(f"full validation:               {full['seconds']:.2f} s ({full['seconds'] * per_line:.2f} µs/line)")
    print(f"ratio:                         {full['seconds'] / bare['seconds']:.2f}x (target <= 2x)")
    print(f"peak RSS: bare {bare['peak_mib']:.0f} MiB, validation {full['peak_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
