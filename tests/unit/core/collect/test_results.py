from __future__ import annotations

import base64
from array import array

import msgspec
import pytest

from airflow_provider_openai_batch.core.collect.results import BatchOutcome, ReconcileCounts, ReconcileError, Reconciler
from tests.unit.core.collect.rows import reconciled_rows

enc = msgspec.json.encode


def chat_line(custom_id: str, content: str = "positive", status: int = 200) -> bytes:
    body = {
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {
            "prompt_tokens": 11,
            "completion_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
    }
    if status != 200:
        body = {"error": {"message": "bad", "type": "invalid_request_error", "code": "bad_param"}}
    return enc({"id": "r", "custom_id": custom_id, "response": {"status_code": status, "body": body}, "error": None})


def error_line(custom_id: str, code: str) -> bytes:
    return enc({"id": "r", "custom_id": custom_id, "response": None, "error": {"code": code, "message": code}})


def reconcile(ids, *sources, status="completed", expect_json=False):
    reconciler = Reconciler(BatchOutcome("job", 0, "batch_1", status, expect_json=expect_json), ids)
    rows = {row.custom_id: row for row in reconciled_rows(reconciler, *sources)}
    return rows, reconciler.counts


def test_out_of_order_lines_join_by_custom_id():
    rows, counts = reconcile(["a", "b", "c"], [chat_line("c", "neg"), chat_line("a", "pos"), chat_line("b", "neu")])
    assert {k: r.content for k, r in rows.items()} == {"a": "pos", "b": "neu", "c": "neg"}
    assert counts.by_status["succeeded"] == 3
    row = rows["a"]
    assert (row.input_tokens, row.cached_tokens, row.output_tokens, row.reasoning_tokens) == (11, 3, 2, 1)
    assert (row.model, row.finish_reason, row.http_status, row.batch_id) == ("gpt-4o-mini", "stop", 200, "batch_1")


def test_success_is_decided_by_status_code_not_by_the_error_field():
    rows, counts = reconcile(["a"], [chat_line("a", status=400)])
    assert rows["a"].status == "failed"
    assert (rows["a"].http_status, rows["a"].error_code, rows["a"].error_message) == (400, "bad_param", "bad")


def test_error_file_only_batch():
    rows, counts = reconcile(["a", "b"], [], [chat_line("a", status=500), chat_line("b", status=429)])
    assert counts.by_status["failed"] == 2 and counts.rows == 2


def test_expired_batch_keeps_partial_results_and_marks_the_rest():
    rows, counts = reconcile(["a", "b", "c"], [chat_line("a")], [error_line("b", "batch_expired")], status="expired")
    assert (rows["a"].status, rows["b"].status, rows["c"].status) == ("succeeded", "expired", "expired")
    assert counts.to_dict()["expired"] == 2


def test_cancelled_batch_marks_unanswered_requests_cancelled():
    rows, _ = reconcile(["a", "b"], [chat_line("a")], [error_line("b", "batch_cancelled")], status="cancelled")
    assert rows["b"].status == "cancelled"


def test_requests_absent_from_a_completed_batch_are_missing_not_dropped():
    rows, counts = reconcile(["a", "b"], [chat_line("a")])
    assert rows["b"].status == "missing"
    assert counts.rows == 2


def test_duplicates_unknown_ids_and_garbage_are_counted_not_written():
    rows, counts = reconcile(["a"], [chat_line("a"), chat_line("a", "again"), chat_line("zzz"), b"{not json", b""])
    assert list(rows) == ["a"] and rows["a"].content == "positive"
    assert (counts.duplicate_lines, counts.unknown_custom_ids, counts.unparseable_lines) == (1, 1, 1)


def test_json_schema_output_is_parsed_or_marked_invalid_with_raw_text_kept():
    rows, counts = reconcile(["a", "b"], [chat_line("a", '{"x": 1}'), chat_line("b", "{oops")], expect_json=True)
    assert rows["a"].parsed == {"x": 1}
    assert rows["b"].status == "invalid_output" and rows["b"].content == "{oops"
    assert counts.by_status["invalid_output"] == 1


def test_embeddings_and_responses_bodies():
    emb = enc(
        {
            "custom_id": "e",
            "response": {
                "status_code": 200,
                "body": {
                    "object": "list",
                    "model": "m",
                    "data": [{"embedding": [0.5, 0.25]}],
                    "usage": {"prompt_tokens": 4},
                },
            },
        }
    )
    resp = enc(
        {
            "custom_id": "r",
            "response": {
                "status_code": 200,
                "body": {
                    "object": "response",
                    "status": "completed",
                    "output": [{"type": "message", "content": [{"type": "output_text", "text": "hi"}]}],
                    "usage": {"input_tokens": 5, "output_tokens": 1, "output_tokens_details": {"reasoning_tokens": 0}},
                },
            },
        }
    )
    rows, _ = reconcile(["e", "r"], [emb, resp])
    assert rows["e"].embedding == [0.5, 0.25] and rows["e"].input_tokens == 4
    assert rows["r"].content == "hi" and rows["r"].finish_reason == "completed" and rows["r"].input_tokens == 5


def test_cost_comes_from_reported_usage_and_the_price_table():
    from airflow_provider_openai_batch.core.costs import PriceTable

    prices = PriceTable.load({"gpt-4o-mini": {"input": 1.0, "cached_input": 0.5, "output": 2.0}})
    reconciler = Reconciler(BatchOutcome("job", 0, "b", "completed"), ["a"], prices=prices)
    (row,) = list(reconciled_rows(reconciler, [chat_line("a")]))
    # 8 uncached input tokens at $1/M, 3 cached at $0.5/M, 2 output at $2/M
    assert row.cost_usd == pytest.approx((8 * 1.0 + 3 * 0.5 + 2 * 2.0) / 1e6)
    assert reconciler.counts.to_dict()["cost_usd"] == pytest.approx(row.cost_usd, abs=1e-6)


def test_unknown_model_price_leaves_cost_empty_and_is_counted():
    from airflow_provider_openai_batch.core.costs import PriceTable

    reconciler = Reconciler(BatchOutcome("job", 0, "b", "completed"), ["a"], prices=PriceTable.load({}))
    line = chat_line("a").replace(b"gpt-4o-mini", b"my-finetune")
    (row,) = list(reconciled_rows(reconciler, [line]))
    assert row.cost_usd is None and reconciler.counts.unpriced_rows == 1


def test_a_failed_http_status_in_the_output_file_is_a_failure_even_without_an_error_field():
    line = enc({"custom_id": "a", "response": {"status_code": 503, "body": {}}, "error": None})
    rows, _ = reconcile(["a"], [line])
    assert (rows["a"].status, rows["a"].http_status, rows["a"].error_code) == ("failed", 503, None)


def test_request_timeouts_and_unknown_request_errors_are_failures_with_their_code():
    rows, counts = reconcile(["a", "b"], [], [error_line("a", "request_timeout"), error_line("b", "weird")])
    assert (rows["a"].status, rows["a"].error_code, rows["a"].http_status) == ("failed", "request_timeout", None)
    assert rows["b"].error_code == "weird"


def test_a_body_of_an_unknown_shape_keeps_its_status_code_and_raw_text():
    line = enc({"custom_id": "a", "response": {"status_code": 200, "body": {"choices": "not a list"}}})
    rows, counts = reconcile(["a"], [line])
    assert (rows["a"].status, rows["a"].http_status, rows["a"].error_code) == ("invalid_output", 200, "unreadable_body")
    assert msgspec.json.decode(rows["a"].content) == {"choices": "not a list"}
    assert counts.unparseable_lines == 0


def test_a_failed_batch_makes_every_request_a_failure_carrying_the_batch_error():
    outcome = BatchOutcome(
        "job", 0, "b", "failed", error_code="token_limit_exceeded", error_message="Enqueued token limit"
    )
    rows = list(reconciled_rows(Reconciler(outcome, ["a", "b"])))
    assert [(r.status, r.error_code, r.error_message) for r in rows] == [
        ("failed", "token_limit_exceeded", "Enqueued token limit")
    ] * 2


def test_a_shard_repeating_a_custom_id_is_refused():
    with pytest.raises(ReconcileError, match="'a' appears twice"):
        Reconciler(BatchOutcome("job", 0, "b", "completed"), ["a", "b", "a"])


def test_retry_shard_rows_keep_the_input_shard_each_request_came_from():
    reconciler = Reconciler(
        BatchOutcome("job", 7, "b", "completed", attempt=2), ["a", "b", "c"], origins=[(0, 2), (3, 1)]
    )
    rows = {row.custom_id: row for row in reconciled_rows(reconciler, [chat_line("c"), chat_line("a"), chat_line("b")])}
    assert {k: (r.shard, r.attempt) for k, r in rows.items()} == {"a": (0, 2), "b": (0, 2), "c": (3, 2)}


def test_rows_carry_the_batch_timestamps_and_the_answer_time():
    line = chat_line("a").replace(b'"object":"chat.completion"', b'"object":"chat.completion","created":1767225600')
    outcome = BatchOutcome("job", 0, "b", "completed", created_at=100, ended_at=200)
    (row,) = reconciled_rows(Reconciler(outcome, ["a"]), [line])
    assert (row.responded_at, row.batch_created_at, row.batch_ended_at) == (1767225600, 100, 200)
    assert row.collected_at is not None and row.collected_at > 1767225600 - 10**9


def test_base64_embeddings_are_decoded_to_floats():
    vector = base64.b64encode(array("f", [0.5, -2.0]).tobytes()).decode()
    body = {"object": "list", "model": "m", "data": [{"embedding": vector}], "usage": {"prompt_tokens": 1}}
    (row,) = reconciled_rows(
        Reconciler(BatchOutcome("job", 0, "b", "completed"), ["e"]),
        [enc({"custom_id": "e", "response": {"status_code": 200, "body": body}})],
    )
    assert row.embedding == [0.5, -2.0]


def test_responses_refusals_and_incomplete_answers():
    body = {
        "object": "response",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": [{"type": "message", "content": [{"type": "refusal", "refusal": "I can't"}]}],
    }
    (row,) = reconciled_rows(
        Reconciler(BatchOutcome("job", 0, "b", "completed"), ["r"]),
        [enc({"custom_id": "r", "response": {"status_code": 200, "body": body}})],
    )
    assert (row.content, row.refusal, row.finish_reason) == (None, "I can't", "max_output_tokens")


def test_counts_survive_a_round_trip_through_json():
    _, counts = reconcile(["a", "b"], [chat_line("a"), chat_line("zzz"), b"{bad"], status="expired")
    again = ReconcileCounts.from_dict(msgspec.json.decode(msgspec.json.encode(counts.to_dict())))
    assert again.to_dict() == counts.to_dict()
