"""Repeated custom_ids: caught at once inside the window, found at the end across windows, on real spill files."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.core.validate.seen_ids import Repeat, SeenIds

# Ids buffered per spill write: a few, so a short test spills many partitions as a big job does.
FLUSH = 4


def test_a_repeat_inside_the_window_is_refused_at_once_and_not_recorded(tmp_path):
    seen = SeenIds(spill_dir=str(tmp_path))
    assert seen.add("a", 1) and seen.add("b", 2)
    assert not seen.add("a", 3)
    assert not seen.add_all(["c", "d", "c"], 4)  # a repeat within the chunk
    assert not seen.add_all(["e", "b"], 7)  # a repeat of the window
    assert seen.add_all(["c", "d", "e"], 9)
    assert not seen.add("d", 12)
    assert list(seen.finish()) == []
    assert list(tmp_path.iterdir()) == []  # under 16k ids: nothing was spilled


def test_repeats_across_windows_are_found_at_the_end_once_each(tmp_path):
    seen = SeenIds(window=3, spill_dir=str(tmp_path), flush_rows=FLUSH)
    ids = ["a", "b", "c", "d", "a", "e", "b", "f", "a", "g"]
    refused = [position for position, custom_id in enumerate(ids, 1) if not seen.add(custom_id, position)]
    assert refused == []  # each copy fell in a later window than the one before it
    assert any(tmp_path.iterdir())
    found = sorted(seen.finish(), key=lambda repeat: repeat.position)
    assert found == [Repeat(5, "a", 1), Repeat(7, "b", 2), Repeat(9, "a", 1)]
    assert list(tmp_path.iterdir()) == []  # the spill is gone


def test_a_repeat_caught_in_its_window_is_not_reported_again(tmp_path):
    seen = SeenIds(window=4, spill_dir=str(tmp_path), flush_rows=FLUSH)
    assert seen.add_all(["a", "b", "c"], 1)
    assert not seen.add("b", 4)  # the caller reports this one
    assert seen.add_all(["d"], 5)  # the window is full: a new one starts
    assert seen.add_all(["b", "x", "y"], 6)  # "b" again, now only the spill knows
    assert list(seen.finish()) == [Repeat(6, "b", 2)]


def test_chunks_spread_over_many_windows_and_partitions(tmp_path):
    seen = SeenIds(window=50, spill_dir=str(tmp_path), flush_rows=FLUSH)
    ids = [f"id-{n}" for n in range(1_000)]
    for start in range(0, 1_000, 10):
        assert seen.add_all(ids[start : start + 10], start)
    assert seen.add_all(["id-3", "id-999", "new"], 1_000)  # repeats of ids many windows back
    assert sorted(seen.finish(), key=lambda repeat: repeat.position) == [
        Repeat(1_000, "id-3", 3),
        Repeat(1_001, "id-999", 999),
    ]


def test_fresh_checks_without_recording_and_record_commits(tmp_path):
    seen = SeenIds(spill_dir=str(tmp_path))
    fresh = seen.fresh(["a", "b"])
    assert fresh is not None and seen.fresh(["a", "b"]) is not None  # nothing recorded yet
    seen.record(["a", "b"], 1, fresh)
    assert seen.fresh(["c", "a"]) is None and seen.fresh(["c", "c"]) is None


def test_without_spill_only_the_window_is_checked_and_nothing_reaches_disk(tmp_path):
    seen = SeenIds(window=2, spill=False, spill_dir=str(tmp_path), flush_rows=FLUSH)
    assert seen.add_all(["a", "b"], 1) and seen.add_all(["c"], 3)
    assert not seen.add("c", 4)
    assert seen.add("a", 5)  # an earlier window: left to whoever validates the output as a whole
    assert list(seen.finish()) == [] and list(tmp_path.iterdir()) == []


def test_a_spill_left_unfinished_is_removed_with_its_owner(tmp_path):
    seen = SeenIds(window=2, spill_dir=str(tmp_path), flush_rows=FLUSH)
    assert seen.add_all(["a", "b", "c", "d", "e"], 1)
    assert any(tmp_path.iterdir())
    del seen  # e.g. a validation that raised half-way
    assert list(tmp_path.iterdir()) == []


def test_with_no_window_every_repeat_is_accepted_at_once_and_found_at_the_end(tmp_path):
    seen = SeenIds(window=0, spill_dir=str(tmp_path), flush_rows=FLUSH)
    assert seen.add_all(["a", "b", "a"], 1)  # a repeat within the chunk: still recorded
    assert seen.add("b", 4) and seen.add_all(["c", "d", "e", "a"], 5)
    assert any(tmp_path.iterdir())
    found = sorted(seen.finish(), key=lambda repeat: repeat.position)
    assert found == [Repeat(3, "a", 1), Repeat(4, "b", 2), Repeat(8, "a", 1)]
    assert list(tmp_path.iterdir()) == []


def test_with_no_window_a_small_job_is_checked_in_memory_without_a_spill_file(tmp_path):
    seen = SeenIds(window=0, spill_dir=str(tmp_path))
    assert seen.add_all(["x", "y"], 1) and seen.add("x", 3)
    assert list(seen.finish()) == [Repeat(3, "x", 1)]
    assert list(tmp_path.iterdir()) == []
    assert list(SeenIds(window=0, spill_dir=str(tmp_path)).finish()) == []  # no ids at all


def test_no_window_and_no_spill_is_refused():
    with pytest.raises(ValueError, match="keep spill=True"):
        SeenIds(window=0, spill=False)
