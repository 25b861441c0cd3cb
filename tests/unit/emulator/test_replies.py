"""The reply rule: a label the prompt lists, chosen by the user's text, else an echo."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.emulator.replies import listed_labels, reply_text, truncate


@pytest.mark.parametrize(
    ("prompt", "labels"),
    [
        ("Answer positive/negative/neutral.", ["positive", "negative", "neutral"]),
        ("Label: SPAM | HAM", ["SPAM", "HAM"]),
        ("Reply with one of: billing, technical, or other.", ["billing", "technical", "other"]),
        ("Pick one of 'yes' and 'no'", ["yes", "no"]),
        ("Answer positive, negative or neutral.", ["positive", "negative", "neutral"]),
        ("Classify the sentiment as positive, negative, or neutral.", ["positive", "negative", "neutral"]),
        ("Labels: bug, feature, question", ["bug", "feature", "question"]),
        ("Is it spam? Answer either spam or ham.", ["spam", "ham"]),
        ("Rate the answer as good or bad", ["good", "bad"]),
        ("Answer with a short summary of the review.", []),
        ("Extract the contract terms from the clause.", []),
        ("Summarise the text and/or translate it.", []),
        ("See https://example.com/a/b for details.", []),
        ("Summarise this article.", []),
    ],
)
def test_listed_labels(prompt, labels):
    assert list(listed_labels(prompt)) == labels


def test_reply_is_a_listed_label_chosen_by_the_user_text():
    replies = {reply_text("Classify as positive/negative/neutral", f"review {i}") for i in range(30)}

    assert replies == {"positive", "negative", "neutral"}
    assert reply_text("positive/negative", "same") == reply_text("positive/negative", "same")


def test_reply_without_labels_echoes_the_start_of_the_user_text():
    assert reply_text("Be brief.", "What is   the capital of France?") == (
        "Emulated reply to: What is the capital of France?"
    )


def test_truncate_cuts_at_four_characters_a_token():
    assert truncate("abcdefghij", 2) == ("abcdefgh", True)
    assert truncate("abc", 2) == ("abc", False)
    assert truncate("abc", None) == ("abc", False)
