"""Throughput of offline token counting (not collected by pytest: no ``test_`` prefix).

Run: ``.venv/bin/python benchmarks/bench_tokens.py [--requests N]``. Builds deterministic
synthetic chat and embeddings requests, then times ``count_request_tokens`` against a bare
``encode_ordinary`` over the same text so the per-request overhead is visible.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from airflow_provider_openai_batch.core.tokens import count_request_tokens, encoding_for_model

_VOCABULARY = (
    "the invoice shipment customer refund order delayed because warehouse inventory was "
    "counted twice please summarise this review in one sentence and classify its sentiment "
    "naïve café résumé 東京 données 2024-07-18 #4512 $19.99 https://example.com/a?b=c "
    "def main(): return {'key': [1, 2, 3]}"
)
_WORDS = tuple(_VOCABULARY.split())


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def _chat_requests(
    n: int, rng: random.Random, system_words: int, user_words: tuple[int, int]
) -> list[tuple[str, dict]]:
    system = _text(rng, system_words)
    return [
        (
            "/v1/chat/completions",
            {
                "model": "gpt-4o-mini",
                "max_completion_tokens": 256,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": _text(rng, rng.randint(*user_words))},
                ],
            },
        )
        for _ in range(n)
    ]


def _embedding_requests(n: int, rng: random.Random) -> list[tuple[str, dict]]:
    return [
        (
            "/v1/embeddings",
            {"model": "text-embedding-3-small", "input": [_text(rng, 60) for _ in range(8)]},
        )
        for _ in range(n)
    ]


def _timed(label: str, fn: Callable[[], int], requests: int) -> None:
    start = time.perf_counter()
    tokens = fn()
    elapsed = time.perf_counter() - start
    print(
        f"{label:<34} {requests:>8,} req {tokens:>12,} tok {elapsed:7.2f} s "
        f"{tokens / elapsed:>12,.0f} tok/s {requests / elapsed:>10,.0f} req/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    rng = random.Random(0)

    start = time.perf_counter()
    encoding_for_model("gpt-4o-mini")
    encoding_for_model("text-embedding-3-small")
    print(f"load o200k_base + cl100k_base from package data: {time.perf_counter() - start:.2f} s")

    chat = _chat_requests(args.requests, rng, system_words=40, user_words=(50, 400))
    # A typical classification batch: long shared instructions, short unique inputs.
    shared = _chat_requests(args.requests, rng, system_words=1500, user_words=(30, 80))
    embeddings = _embedding_requests(args.requests // 4, rng)
    o200k = encoding_for_model("gpt-4o-mini")
    texts = [m["content"] for _, body in chat for m in body["messages"]]

    _timed("encode_ordinary (raw, o200k)", lambda: sum(len(o200k.encode_ordinary(t)) for t in texts), len(chat))
    _timed(
        "count_request_tokens chat",
        lambda: sum(count_request_tokens(u, b).input_tokens for u, b in chat),
        len(chat),
    )
    _timed(
        "count_request_tokens chat, shared",
        lambda: sum(count_request_tokens(u, b).input_tokens for u, b in shared),
        len(shared),
    )
    _timed(
        "count_request_tokens embeddings x8",
        lambda: sum(count_request_tokens(u, b).input_tokens for u, b in embeddings),
        len(embeddings),
    )


if __name__ == "__main__":
    main()
