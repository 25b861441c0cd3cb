"""Print the README's benchmark table from ``bench-results.json`` (written by ``make bench``).

.venv/bin/python benchmarks/readme_table.py [bench-results.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TIMES = "\u00d7"  # the multiplication sign the README uses


def _number(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _target(row: dict) -> str:
    verdict = "met" if row.get("target_met") else "**missed**"
    if row["stage"].startswith("task_rss_"):
        return f"≤ 300 MB {verdict}" if row["records"] == 50_000 else f"within 10% of 50k {verdict}"
    if row["stage"] == "e2e_1200k":
        return f"overhead ≤ 60 s {verdict}"
    if "ratio_to_floor_less_lookup" in row:
        text = (
            f"{row['ratio_to_floor_less_lookup']:.2f}{TIMES} less the lookup's {row['lookup_seconds']:.2f} s "
            f"(≤ {row['target_ratio_less_lookup']}{TIMES})"
        )
        if "rss_ratio_to_small_cache" in row:
            text += f", RSS {row['rss_ratio_to_small_cache']:.2f}{TIMES} the 1.2M-entry cache's (≤ 1.1{TIMES})"
        return f"{text} {verdict}"
    if "rss_added_mb" in row:
        return f"+{row['rss_added_mb']} MB RSS (≤ 64) {'met' if row['target_met'] else '**missed**'}"
    if "target_ratio" in row:
        return f"≤ {row['target_ratio']}{TIMES} {'met' if row['target_met'] else '**missed**'}"
    return ""


def table(results: dict) -> str:
    lines = [
        f"| stage | requests | seconds | floor s | {TIMES} floor | naive s | {TIMES} naive "
        "| peak RSS MB (ours / floor / naive) | target |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    trigger = notice = e2e = None
    for row in results["stages"]:
        if row["stage"] == "trigger_1000_waits":
            trigger = row
            continue
        if row["stage"] == "notice_latency":
            notice = row
            continue
        if row["stage"] == "e2e_1200k":
            e2e = row
        rss = " / ".join(
            _number(row.get(key), ".0f") for key in ("peak_rss_mb", "floor_peak_rss_mb", "naive_peak_rss_mb")
        )
        if "processes" in row and "worker_peak_rss_mb" in row:
            rss += f" (workers {row['worker_peak_rss_mb']:.0f})"
        cells = [
            row["stage"],
            f"{row['records']:,}",
            _number(row["seconds"], ".2f"),
            _number(row["floor_seconds"], ".2f"),
            _number(row["ratio_to_floor"], ".2f"),
            _number(row["naive_seconds"], ".2f"),
            _number(row.get("ratio_to_naive"), ".2f"),
            rss,
            _target(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    out = ["\n".join(lines)]
    if trigger is not None:
        verdict = "met" if trigger["target_met"] else "**missed**"
        hourly = ""
        if "api_calls_per_batch_per_hour" in trigger:
            hourly = (
                f", {trigger['api_calls_per_batch_per_hour']} per batch in the first hour "
                f"(≤ {trigger['api_calls_per_batch_per_hour_fixed']} on the fixed schedule)"
            )
        out.append(
            f"1,000 waits in a real triggerer: {trigger['api_calls_per_batch_per_poll']} API calls per batch per "
            f"poll (≤ 1){hourly}, RSS +{trigger['rss_growth_mb']} MB (≤ 100), {trigger['cpu_per_poll_round_s']} s "
            f"CPU per poll round (< 1): {verdict}."
        )
    if notice is not None:
        verdict = "met" if notice["target_met"] else "**missed**"
        later = ""
        if notice.get("latency_share_later") is not None:
            later = (
                f"; {notice['latency_share_later']:.1%} of the batch's age for those done later (≤ 10%; "
                f"{notice['fixed_latency_share_later']:.1%} fixed)"
            )
            if notice.get("max_latency_share_later") is not None:
                later += f", at most {notice['max_latency_share_later']:.1%}"
        out.append(
            f"Notice latency (completion to the trigger's event, `poll_interval={notice['poll_interval_s']:.0f}`): "
            f"{notice['seconds']} s median for batches done within their first minute (≤ 10 s; "
            f"{notice['fixed_seconds']} s on the fixed schedule){later}: {verdict}."
        )
    if e2e is not None:
        out.append(end_to_end(e2e))
    if results.get("rss_flatness"):
        flat = ["Peak RSS, 120k → 1.2M requests (flat: within 10%):"]
        for item in results["rss_flatness"]:
            mark = "flat" if item["flat"] else "**grows**"
            flat.append(
                f"- {item['stage']}: {item['rss_small_mb']} → {item['rss_large_mb']} MB ({item['ratio']}{TIMES}) {mark}"
            )
        out.append("\n".join(flat))
    return "\n\n".join(out)


def end_to_end(row: dict) -> str:
    """The e2e run's split: where the wall time beyond the emulator's own went."""
    return (
        f"End to end, {row['records']:,} requests in {row['shards']} shards through real Airflow components "
        f"(LocalExecutor, 2 tasks at a time): {row['wall_s']:.0f} s from the trigger to the results file, of "
        f"which the emulator's own work {row['emulator_s']:.0f} s (checking the files "
        f"{row['emulator_scan_s']:.0f} s, writing the answers {row['emulator_answers_s']:.0f} s); overhead "
        f"{row['overhead_s']:.0f} s. Build {row['build_s']:.0f} s, submit (first upload to last deferral) "
        f"{row['submit_s']:.0f} s, notice latency (answers written to the submit task resuming) median "
        f"{row['notice_latency_median_s']:.1f} s, max {row['notice_latency_max_s']:.1f} s, reconcile "
        f"{row['reconcile_s']:.0f} s, delivery {row['delivery_s']:.1f} s; trigger to the build task's start "
        f"{row['trigger_to_build_s']:.0f} s. Peak RSS of the task processes: build {row['build_peak_rss_mb']:.0f}, "
        f"submit {row['submit_peak_rss_mb']:.0f}, results {row['results_peak_rss_mb']:.0f} MB (reconcile workers "
        f"{row['reconcile_workers_peak_rss_mb']:.0f} MB). API calls: {row['api_calls']}."
    )


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench-results.json"
    print(table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
