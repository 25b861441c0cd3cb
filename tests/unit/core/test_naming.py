import hashlib

import pytest

from airflow_provider_openai_batch.core.naming import safe_name


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


@pytest.mark.parametrize(
    ("value", "prefix"),
    [
        ("dag__manual__2026-11-26T15:00:00+00:00", "dag__manual__2026-11-26T15_00_00_00_00"),
        ("../../etc/passwd", "etc_passwd"),
        ("a/b\\c", "a_b_c"),
    ],
)
def test_safe_name_cannot_escape_a_prefix(value, prefix):
    assert safe_name(value) == f"{prefix}-{_hash(value)}"
    assert "/" not in safe_name(value)


@pytest.mark.parametrize("value", ["..", "", "/", "._"])
def test_a_name_with_nothing_readable_is_its_hash(value):
    assert safe_name(value) == _hash(value)


def test_safe_short_names_are_kept_as_they_are():
    assert safe_name("feedback_2026-11-26.v2") == "feedback_2026-11-26.v2"


def test_names_that_differ_only_in_replaced_characters_stay_apart():
    assert safe_name("acme corp") != safe_name("acme/corp")
    assert safe_name("acme corp").startswith("acme_corp-")


def test_long_names_that_differ_only_past_the_cut_stay_apart():
    base = "d" * 250
    first, second = safe_name(base + "__run_1"), safe_name(base + "__run_2")
    assert first != second
    assert len(first) == len(second) == 200


@pytest.mark.parametrize("value", ["a" * 300, "dag:run+1", "ok_name", "..", "x/" * 150])
def test_safe_name_of_a_safe_name_changes_nothing(value):
    once = safe_name(value)
    assert safe_name(once) == once
