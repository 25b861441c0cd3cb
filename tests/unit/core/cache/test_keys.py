from __future__ import annotations

import msgspec
import pytest

from airflow_provider_openai_batch.core.build.requests import RequestBuilder, RequestTemplate
from airflow_provider_openai_batch.core.cache.keys import answer_key, k64, k64s, line_keys, nondeterministic

CHAT = "/v1/chat/completions"


def line(custom_id: str, body: dict, url: str = CHAT) -> bytes:
    return msgspec.json.encode({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def test_the_key_ignores_custom_id_and_parameter_order_but_not_parameters():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    reordered = {"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
    a, b, c, d, e = line_keys(
        [
            line("a", body),
            line("b", reordered),
            line("c", {**body, "max_tokens": 3}),
            line("d", {**body, "model": "other"}),
            line("e", body, url="/v1/responses"),
        ]
    )
    assert a == b == answer_key(CHAT, body)
    assert len({a, c, d, e}) == 4


def test_the_builder_makes_the_keys_the_written_lines_have():
    template = RequestTemplate(
        endpoint=CHAT,
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "Label {{ kind }}"}, {"content": "{{ text }}", "role": "user"}],
        body={"temperature": 0, "max_tokens": 3},
    )
    records = [{"id": i, "kind": "k", "text": f'say "{i}" \u00e9\n'} for i in range(600)]
    chunks = list(RequestBuilder(template, "id", answer_keys=True).chunks(records))
    assert all(chunk.keys == line_keys(chunk.lines) for chunk in chunks)
    keys = [key for chunk in chunks for key in chunk.keys or []]
    assert len(set(keys)) == 600


@pytest.mark.parametrize(
    ("endpoint", "body", "varies"),
    [
        (CHAT, {"temperature": 0}, False),
        (CHAT, {"temperature": 0.7, "seed": 1}, False),
        (CHAT, {"temperature": 0.7}, True),
        (CHAT, {}, True),  # the default temperature is 1
        (CHAT, {"temperature": 0, "n": 3}, True),
        ("/v1/embeddings", {}, False),
    ],
)
def test_sampling_settings_are_named_as_nondeterministic(endpoint, body, varies):
    assert (nondeterministic(endpoint, body) is not None) is varies


def test_k64_of_many_keys_at_once_is_each_keys_k64():
    keys = line_keys([line(str(i), {"model": "m", "input": str(i)}) for i in range(100)])
    assert k64s(keys) == [k64(key) for key in keys]
    assert all(0 <= value < 2**63 for value in k64s(keys))
