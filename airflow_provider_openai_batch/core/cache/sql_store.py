"""The cache as a SQL table (PostgreSQL or SQLite), for teams that keep results in a database.

One row per key. A run's new answers go in one transaction (``INSERT … ON CONFLICT (key) DO UPDATE``
where the new answer is newer), so a run killed mid-write adds nothing, and two runs writing at
once each add theirs: the database serialises them per key. Lookups ask for a round's keys a few
hundred at a time (``key IN (…)`` on the primary key), so memory is one round, whatever the table
holds. The connection comes from a callable (a common-sql hook's ``get_conn`` in Airflow).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any, Final, Literal

import msgspec
import pyarrow as pa

from airflow_provider_openai_batch.core.cache.keys import k64
from airflow_provider_openai_batch.core.cache.store import ENTRY_SCHEMA, CacheError, CacheStats

SqlFamily = Literal["postgres", "sqlite"]
IN_KEYS: Final = 500  # keys per lookup query
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")
_TIMES: Final = ("cached_at", "responded_at", "batch_created_at", "batch_ended_at")
_INTS: Final = {"shard", "attempt", "http_status", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens"}
# Every entry column but k64 (derived from the key); the key as 64 hex characters.
COLUMNS: Final = tuple(name for name in ENTRY_SCHEMA.names if name != "k64")
_encode = msgspec.json.Encoder().encode


def _sql_type(name: str, family: SqlFamily) -> str:
    if name == "key":
        return "TEXT PRIMARY KEY"
    if name in _TIMES:
        return "BIGINT" + (" NOT NULL" if name == "cached_at" else "")
    if name in _INTS:
        return "BIGINT" if family == "postgres" else "INTEGER"
    if name == "cost_usd":
        return "DOUBLE PRECISION" if family == "postgres" else "REAL"
    return "TEXT"


class SqlAnswers:
    """The answer cache in ``table`` (``schema.table`` allowed), created on first use.

    :param connect: returns a new DB-API connection.
    :param family: ``postgres`` or ``sqlite`` (their upsert and placeholders are what this uses).
    """

    def __init__(self, connect: Callable[[], Any], table: str, family: str, location: str | None = None) -> None:
        if family not in ("postgres", "sqlite"):
            raise CacheError(f"an answer cache table needs PostgreSQL or SQLite; this connection is {family!r}")
        if not _NAME.fullmatch(table):
            raise CacheError(f"answer cache table name {table!r} is not allowed: letters, digits, underscores")
        self.connect = connect
        self.table = table
        self.family: SqlFamily = family  # type: ignore[assignment]
        self.location = location or table
        self._mark = "%s" if family == "postgres" else "?"
        self._ready = False

    # -- lookups (``lookup.AnswerSource``) ------------------------------------------------------

    def empty(self) -> bool:
        return not self._query(f"SELECT 1 FROM {self.table} LIMIT 1", ())

    def matching(self, requests: pa.Table, low: int, high: int, cutoff: int | None) -> list[pa.Table]:
        keys = sorted({key.hex() for key in requests.column("key").to_pylist()})
        found = []
        for start in range(0, len(keys), IN_KEYS):
            some = keys[start : start + IN_KEYS]
            sql = f"SELECT {', '.join(COLUMNS)} FROM {self.table} WHERE key IN ({', '.join([self._mark] * len(some))})"
            if cutoff is not None:
                sql += f" AND cached_at >= {self._mark}"
            rows = self._query(sql, (*some, cutoff) if cutoff is not None else tuple(some))
            if rows:
                found.append(_table(rows))
        return found

    # -- writes ---------------------------------------------------------------------------------

    def writer(self) -> SqlEntryWriter:
        return SqlEntryWriter(self)

    def upsert_sql(self) -> str:
        names = ", ".join(COLUMNS)
        marks = ", ".join([self._mark] * len(COLUMNS))
        updates = ", ".join(f"{name} = excluded.{name}" for name in COLUMNS if name != "key")
        return (
            f"INSERT INTO {self.table} ({names}) VALUES ({marks}) ON CONFLICT (key) DO UPDATE SET {updates} "
            f"WHERE excluded.cached_at >= {self.table}.cached_at"
        )

    # -- upkeep ---------------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        rows = self._query(
            f"SELECT model, count(*), sum(cost_usd), min(cached_at), max(cached_at) FROM {self.table} GROUP BY model",
            (),
        )
        stats = CacheStats(parts=1 if rows else 0)
        for model, count, cost, oldest, newest in rows:
            stats.entries += count
            stats.cost_usd += cost or 0.0
            stats.by_model[model or "(none)"] = count
            stats.oldest = oldest / 1000 if stats.oldest is None else min(stats.oldest, oldest / 1000)
            stats.newest = newest / 1000 if stats.newest is None else max(stats.newest, newest / 1000)
        return stats

    def evict(self, *, model: str | None = None, older_than: float | None = None) -> int:
        if model is None and older_than is None:
            raise ValueError("say what to evict: a model, an age, or both")
        where: list[str] = []
        args: list[Any] = []
        if model is not None:
            where.append(f"model = {self._mark}")
            args.append(model)
        if older_than is not None:
            where.append(f"cached_at < {self._mark}")
            args.append(int(older_than * 1000))
        with closing(self.open()) as conn, closing(conn.cursor()) as cursor:
            cursor.execute(f"DELETE FROM {self.table} WHERE {' OR '.join(where)}", tuple(args))
            removed = cursor.rowcount
            conn.commit()
        return int(removed)

    # -- plumbing -------------------------------------------------------------------------------

    def open(self) -> Any:
        """A new connection, the table made first if need be."""
        try:
            conn = self.connect()
            if not self._ready:
                with closing(conn.cursor()) as cursor:
                    columns = ", ".join(f"{name} {_sql_type(name, self.family)}" for name in COLUMNS)
                    cursor.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({columns})")
                conn.commit()
                self._ready = True
        except Exception as err:
            raise CacheError(
                f"answer cache table {self.location} cannot be reached: {type(err).__name__}: {err}"
            ) from err
        return conn

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            with closing(self.open()) as conn, closing(conn.cursor()) as cursor:
                cursor.execute(sql, args)
                return list(cursor.fetchall())
        except CacheError:
            raise
        except Exception as err:
            raise CacheError(f"answer cache table {self.location} cannot be read: {type(err).__name__}: {err}") from err


class SqlEntryWriter:
    """A run's new answers, sent as they come and committed together (nothing on failure)."""

    def __init__(self, answers: SqlAnswers) -> None:
        self.answers = answers
        self.added = 0
        self._conn: Any = None
        self.parts = answers  # where, for log lines (``.location``)

    def add(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        if self._conn is None:
            self._conn = self.answers.open()
        with closing(self._conn.cursor()) as cursor:
            cursor.executemany(self.answers.upsert_sql(), list(_rows(batch)))
        self.added += batch.num_rows

    def commit(self) -> str | None:
        if self._conn is None:
            return None
        try:
            self._conn.commit()
        except Exception as err:
            raise CacheError(
                f"answer cache table {self.answers.location}: new answers not saved: {type(err).__name__}: {err}"
            ) from err
        finally:
            self._conn.close()
            self._conn = None
        return self.answers.table

    def discard(self) -> None:
        if self._conn is not None:
            self._conn.rollback()
            self._conn.close()
            self._conn = None


def _rows(batch: pa.RecordBatch) -> Iterator[tuple[Any, ...]]:
    columns = []
    for name in COLUMNS:
        column = batch.column(name)
        if name == "key":
            columns.append([None if v is None else v.hex() for v in column.to_pylist()])
        elif name in _TIMES:
            columns.append(column.cast(pa.int64()).to_pylist())
        elif name == "embedding":
            columns.append([None if v is None else _encode(v).decode() for v in column.to_pylist()])
        else:
            columns.append(column.to_pylist())
    return zip(*columns, strict=True)


def _table(rows: list[tuple[Any, ...]]) -> pa.Table:
    data: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for row in rows:
        for name, value in zip(COLUMNS, row, strict=True):
            data[name].append(value)
    data["key"] = [bytes.fromhex(key) for key in data["key"]]
    data["embedding"] = [None if v is None else msgspec.json.decode(v) for v in data["embedding"]]
    arrays = {"k64": pa.array([k64(key) for key in data["key"]], pa.int64())}
    for name in COLUMNS:
        kind = ENTRY_SCHEMA.field(name).type
        if name in _TIMES:
            arrays[name] = pa.array(data[name], pa.int64()).cast(kind)
        else:
            arrays[name] = pa.array(data[name], kind)
    return pa.table([arrays[name] for name in ENTRY_SCHEMA.names], schema=ENTRY_SCHEMA)
