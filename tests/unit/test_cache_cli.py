"""``openai-batch cache``: stats and eviction of a local cache through the real entry point."""

from __future__ import annotations

import json

from airflow_provider_openai_batch.cli import main
from airflow_provider_openai_batch.core.cache.store import LocalParts
from tests.unit.core.cache.test_store import entries, write


def test_stats_then_evict_by_model_and_by_age(tmp_path, capsys):
    parts = LocalParts(str(tmp_path))
    write(parts, entries(range(10), model="a"), entries(range(10, 14), model="b", age=3 * 86400))
    assert main(["cache", "stats", str(tmp_path)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["entries"], stats["by_model"], stats["cost_usd"]) == (14, {"a": 10, "b": 4}, 7.0)
    assert main(["cache", "evict", str(tmp_path), "--older-than", "2d"]) == 0
    assert "removed 4 entries" in capsys.readouterr().out
    assert main(["cache", "evict", str(tmp_path), "--model", "a"]) == 0
    assert "removed 10 entries" in capsys.readouterr().out
    assert main(["cache", "evict", str(tmp_path)]) == 2


def test_an_unreadable_cache_is_one_line_and_exit_1(tmp_path, capsys):
    (tmp_path / "0000000000001-x.parquet").write_bytes(b"junk")
    assert main(["cache", "stats", str(tmp_path)]) == 1
    assert "0000000000001-x.parquet" in capsys.readouterr().out
