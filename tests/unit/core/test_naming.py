import pytest

from airflow_provider_openai_batch.core.naming import safe_name


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("dag__manual__2026-11-26T15:00:00+00:00", "dag__manual__2026-11-26T15_00_00_00_00"),
        ("../../etc/passwd", "etc_passwd"),
        ("..", "_"),
        ("a/b\\c", "a_b_c"),
    ],
)
def test_safe_name_cannot_escape_a_prefix(value, expected):
    assert safe_name(value) == expected
    assert "/" not in safe_name(value)
