"""``openai-batch cache stats|evict FOLDER``: what an answer cache holds, and removing entries by model or age.

A local folder needs nothing but the core; a URI (``s3://conn@bucket/prefix``) is opened through
Airflow's ``ObjectStoragePath``, and a table (``conn_id:table``) through the connection's
common-sql hook, so those need Airflow and the connection.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    stats = actions.add_parser("stats", help="entries by model, oldest and newest, size, what the answers cost")
    stats.add_argument("cache", help="the cache: a local path, an ObjectStoragePath URI, or conn_id:table")
    evict = actions.add_parser("evict", help="remove entries of a model and/or older than an age")
    evict.add_argument("cache", help="the cache: a local path, an ObjectStoragePath URI, or conn_id:table")
    evict.add_argument("--model", help="remove the answers of this model")
    evict.add_argument("--older-than", type=age, help="remove answers older than this: 3600, 90m, 12h, 30d")


def age(text: str) -> float:
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"not an age: {text!r} (use seconds, or a number with s, m, h or d)")
    return float(found.group(1)) * _UNITS[found.group(2) or "s"]


def _parts(location: str) -> Any:
    if ("://" in location and not location.startswith("file://")) or re.fullmatch(r"[\w\-]+:[\w.]+", location):
        from airflow_provider_openai_batch.hooks.answer_cache import answer_store

        return answer_store(location)
    from airflow_provider_openai_batch.core.cache.store import LocalParts

    return LocalParts(location.removeprefix("file://"))


def run(args: argparse.Namespace) -> int:
    from airflow_provider_openai_batch.core.cache.store import CacheError, cache_stats, evict

    try:
        parts = _parts(args.cache)
        if args.action == "stats":
            stats = parts.stats() if hasattr(parts, "stats") else cache_stats(parts)
            print(json.dumps(stats.to_dict(), indent=2))
            return 0
        if args.model is None and args.older_than is None:
            print("openai-batch cache evict: say what to evict: --model, --older-than, or both")
            return 2
        cutoff = None if args.older_than is None else time.time() - args.older_than
        if hasattr(parts, "evict"):
            removed = parts.evict(model=args.model, older_than=cutoff)
        else:
            removed = evict(parts, model=args.model, older_than=cutoff)
    except CacheError as err:
        print(f"openai-batch cache: {err}")
        return 1
    print(f"removed {removed:,} entr{'y' if removed == 1 else 'ies'} from {args.cache}")
    return 0
