"""The fallbacks the provider takes on older Airflow, and that it says so once."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_openai_batch import version_compat


@pytest.mark.parametrize(
    ("v31", "v33", "expected"),
    [(True, True, 0), (True, False, 2), (False, False, 4)],
)
def test_each_missing_feature_is_named_with_what_happens_instead(monkeypatch, v31, v33, expected):
    monkeypatch.setattr(version_compat, "AIRFLOW_V_3_1_PLUS", v31)
    monkeypatch.setattr(version_compat, "AIRFLOW_V_3_3_PLUS", v33)
    notes = version_compat.fallbacks()
    assert len(notes) == expected
    assert all(":" in note for note in notes)


def test_fallbacks_are_logged_once_per_process(monkeypatch, caplog):
    monkeypatch.setattr(version_compat, "AIRFLOW_V_3_3_PLUS", False)
    monkeypatch.setattr(version_compat, "_logged", False)
    log = logging.getLogger("test.fallbacks")
    with caplog.at_level(logging.INFO, logger="test.fallbacks"):
        version_compat.log_fallbacks(log)
        version_compat.log_fallbacks(log)
    lines = [r.getMessage() for r in caplog.records if "task state store" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("Airflow ")
