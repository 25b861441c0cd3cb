"""Destinations for result rows, behind one small interface (:class:`ResultSink`).

- :class:`ObjectStorageSink`: one Parquet or JSONL object per job on any ObjectStoragePath store.
- :class:`SqlSink`: a table over any common-sql connection (COPY on Postgres, inserts elsewhere).
"""

from __future__ import annotations

from airflow_provider_openai_batch.sinks.base import ResultSink
from airflow_provider_openai_batch.sinks.object_storage import ObjectStorageSink
from airflow_provider_openai_batch.sinks.sql import SqlSink

__all__ = ["ObjectStorageSink", "ResultSink", "SqlSink"]
