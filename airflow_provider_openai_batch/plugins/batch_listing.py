"""Read the batches Airflow created from the OpenAI API: one row per batch, for the UI page.

The submit operator tags each batch with metadata (``airflow_dag_id``, ``airflow_task_id``,
``airflow_run_id``, ``airflow_map_index``, ``openai_batch_job``, ``openai_batch_shard``). This
module lists an account's recent batches, keeps the tagged ones, and turns each into a
``BatchRow`` with progress, tokens and cost. It neither renders nor knows the page's HTTP layer,
so the same rows feed the HTML views and the JSON API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_openai_batch.core.costs import PriceTable, UnknownModelPriceError
from airflow_provider_openai_batch.core.limits import TERMINAL_STATUSES
from airflow_provider_openai_batch.hooks.openai_batch import DASHBOARD_URL, is_openai_api

if TYPE_CHECKING:
    import openai

# Dashboard pages exist only for batches on OpenAI's own API (not Azure, not a compatible service).
# The page must answer quickly even when a connection is down: short timeout, one retry.
API_TIMEOUT_SECONDS = 10.0
API_MAX_RETRIES = 1
# Never read more than this many batches of one account for one page view.
MAX_SCANNED_BATCHES = 2_000
PAGE_SIZE = 100

ClientFactory = Callable[[str], "openai.OpenAI"]
TaskInstanceId = tuple[str, str, str, int]  # dag_id, run_id, task_id, map_index
OWNER_TAGS = ("airflow_dag_id", "airflow_run_id", "airflow_task_id", "airflow_map_index")


@dataclass(frozen=True)
class BatchFilter:
    """Which Airflow batches to keep; ``None`` fields match anything.

    ``dag_allowed`` hides the DAGs the viewer may not read, even from the list of DAG ids.
    """

    dag_id: str | None = None
    status: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    dag_allowed: Callable[[str], bool] | None = field(default=None, compare=False, repr=False)

    def allows(self, dag_id: str) -> bool:
        return self.dag_allowed is None or self.dag_allowed(dag_id)

    def matches(self, row: BatchRow) -> bool:
        wanted = (
            (self.dag_id, row.dag_id),
            (self.status, row.status),
            (self.run_id, row.run_id),
            (self.task_id, row.task_id),
            (self.map_index, row.map_index),
        )
        return all(want is None or want == got for want, got in wanted)


@dataclass(frozen=True)
class BatchRow:
    """One batch as the page shows it. Costs are USD at Batch prices; ``None`` means unknown."""

    conn_id: str
    batch_id: str
    status: str
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    job_id: str | None
    shard: str | None
    endpoint: str
    model: str | None
    total: int
    completed: int
    failed: int
    input_tokens: int | None
    cached_tokens: int | None
    output_tokens: int | None
    actual_cost_usd: float | None
    created_at: float
    finished_at: float | None
    dashboard_url: str | None
    estimated_cost_usd: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def completed_percent(self) -> float:
        return _percent(self.completed, self.total)

    @property
    def failed_percent(self) -> float:
        return _percent(self.failed, self.total)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created"] = iso_time(self.created_at)
        data["finished"] = iso_time(self.finished_at)
        return data


@dataclass(frozen=True)
class SourceError:
    """A connection whose batches could not be read; the page shows it instead of failing."""

    conn_id: str
    message: str


@dataclass(frozen=True)
class RunGroup:
    """The batches of one DAG run, with their totals."""

    dag_id: str
    run_id: str
    rows: tuple[BatchRow, ...]

    @property
    def total(self) -> int:
        return sum(r.total for r in self.rows)

    @property
    def completed(self) -> int:
        return sum(r.completed for r in self.rows)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.rows)

    @property
    def actual_cost_usd(self) -> float | None:
        return _sum_known(r.actual_cost_usd for r in self.rows)

    @property
    def estimated_cost_usd(self) -> float | None:
        return _sum_known(r.estimated_cost_usd for r in self.rows)


@dataclass(frozen=True)
class Listing:
    """The rows found (newest first), the connections that failed, and whether a limit cut it short."""

    rows: tuple[BatchRow, ...] = ()
    errors: tuple[SourceError, ...] = ()
    truncated: bool = False
    dag_ids: tuple[str, ...] = field(default=())

    def groups(self) -> list[RunGroup]:
        """Rows per (DAG, run), runs ordered by their newest batch, tasks in map-index order."""
        by_run: dict[tuple[str, str], list[BatchRow]] = {}
        for row in self.rows:
            by_run.setdefault((row.dag_id, row.run_id), []).append(row)
        return [
            RunGroup(dag_id, run_id, tuple(sorted(rows, key=lambda r: (r.task_id, r.map_index, r.created_at))))
            for (dag_id, run_id), rows in by_run.items()
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": [row.to_dict() for row in self.rows],
            "errors": [asdict(e) for e in self.errors],
            "truncated": self.truncated,
            "dag_ids": list(self.dag_ids),
        }


def client_for_connection(conn_id: str) -> openai.OpenAI:
    """A client for ``conn_id`` with the page's short timeout (the connection is read now, not at import)."""
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

    client: openai.OpenAI = OpenAIBatchHook(conn_id=conn_id).client
    return client.with_options(timeout=API_TIMEOUT_SECONDS, max_retries=API_MAX_RETRIES)


class BatchLister:
    """
    Lists the Airflow-created batches of several connections.

    :param clients: builds a client for a connection id (injectable so tests pass their own).
    :param prices: the price table for costs (the packaged one by default).
    :param max_scanned: batches read per connection at most, tagged or not.
    """

    def __init__(
        self,
        clients: ClientFactory = client_for_connection,
        prices: PriceTable | None = None,
        max_scanned: int = MAX_SCANNED_BATCHES,
    ) -> None:
        self._clients = clients
        self._prices = prices
        self._max_scanned = max_scanned

    @property
    def prices(self) -> PriceTable:
        if self._prices is None:
            self._prices = PriceTable.load()
        return self._prices

    def find(self, conn_ids: Sequence[str], flt: BatchFilter, *, since: float, limit: int) -> Listing:
        """Batches created after ``since`` (epoch seconds) that match ``flt``, at most ``limit``."""
        rows: list[BatchRow] = []
        errors: list[SourceError] = []
        dag_ids: set[str] = set()
        truncated = False
        for conn_id in conn_ids:
            try:
                found, cut = self._list_one(conn_id, flt, since, limit, dag_ids)
            except Exception as err:  # one broken connection must not hide the others
                errors.append(SourceError(conn_id, describe_error(err)))
                continue
            rows.extend(found)
            truncated = truncated or cut
        rows.sort(key=lambda r: r.created_at, reverse=True)
        if len(rows) > limit:
            rows, truncated = rows[:limit], True
        return Listing(tuple(rows), tuple(errors), truncated, tuple(sorted(dag_ids)))

    def get(
        self, conn_ids: Sequence[str], batch_id: str, owner: TaskInstanceId
    ) -> tuple[BatchRow | None, list[SourceError]]:
        """A batch Airflow recorded for ``owner``, from the first connection that knows its id.

        Airflow's record is proof enough of ownership, so the batch is shown even when its
        metadata lacks our tags (e.g. created by an older version of the provider).
        """
        import openai

        errors: list[SourceError] = []
        for conn_id in conn_ids:
            try:
                client = self._clients(conn_id)
                batch = client.batches.retrieve(batch_id)
            except openai.NotFoundError:
                continue
            except Exception as err:
                errors.append(SourceError(conn_id, describe_error(err)))
                continue
            return row_from_batch(batch, conn_id, self.prices, _dashboard_ok(client), owner), errors
        return None, errors

    def _list_one(
        self, conn_id: str, flt: BatchFilter, since: float, limit: int, dag_ids: set[str]
    ) -> tuple[list[BatchRow], bool]:
        client = self._clients(conn_id)
        dashboard = _dashboard_ok(client)
        rows: list[BatchRow] = []
        for scanned, batch in enumerate(_recent(client, since)):
            if scanned >= self._max_scanned:
                return rows, True
            row = row_from_batch(batch, conn_id, self.prices, dashboard)
            if row is None or not flt.allows(row.dag_id):
                continue
            dag_ids.add(row.dag_id)
            if flt.matches(row):
                rows.append(row)
                if len(rows) >= limit:
                    return rows, True
        return rows, False


def _recent(client: openai.OpenAI, since: float) -> Iterator[Any]:
    """Batches newest first, stopping at the first one created before ``since``."""
    for batch in client.batches.list(limit=PAGE_SIZE):
        if batch.created_at < since:
            return
        yield batch


def row_from_batch(
    batch: Any, conn_id: str, prices: PriceTable, dashboard: bool, owner: TaskInstanceId | None = None
) -> BatchRow | None:
    """The row for a batch Airflow created, or ``None`` for a batch without our metadata.

    ``owner`` (dag_id, run_id, task_id, map_index) stands in for missing metadata tags.
    """
    meta: dict[str, str] = dict(batch.metadata or {})
    if owner is not None and not meta.get("airflow_dag_id"):
        meta.update(zip(OWNER_TAGS, (owner[0], owner[1], owner[2], str(owner[3])), strict=True))
    dag_id = meta.get("airflow_dag_id")
    if not dag_id:
        return None
    counts = batch.request_counts
    # Usage is final only once the batch has ended: a running batch reports zeros, shown as "—".
    usage = batch.usage if batch.status in TERMINAL_STATUSES else None
    cached = usage.input_tokens_details.cached_tokens if usage and usage.input_tokens_details else 0
    return BatchRow(
        conn_id=conn_id,
        batch_id=batch.id,
        status=batch.status,
        dag_id=dag_id,
        task_id=meta.get("airflow_task_id", ""),
        run_id=meta.get("airflow_run_id", ""),
        map_index=_int(meta.get("airflow_map_index"), -1),
        job_id=meta.get("openai_batch_job"),
        shard=meta.get("openai_batch_shard"),
        endpoint=batch.endpoint,
        model=batch.model,
        total=counts.total if counts else 0,
        completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
        input_tokens=usage.input_tokens if usage else None,
        cached_tokens=cached if usage else None,
        output_tokens=usage.output_tokens if usage else None,
        actual_cost_usd=_cost(prices, batch.model, usage, cached),
        created_at=float(batch.created_at),
        finished_at=_finished_at(batch),
        dashboard_url=DASHBOARD_URL.format(batch_id=batch.id) if dashboard else None,
    )


def describe_error(err: BaseException) -> str:
    """What went wrong reading a connection, without anything from its configuration."""
    status = getattr(err, "status_code", None)
    detail = f"HTTP {status}: " if status else ""
    return f"{type(err).__name__}: {detail}{err}"[:500]


def iso_time(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _finished_at(batch: Any) -> float | None:
    for name in ("completed_at", "failed_at", "expired_at", "cancelled_at"):
        value = getattr(batch, name, None)
        if value is not None:
            return float(value)
    return None


def _cost(prices: PriceTable, model: str | None, usage: Any, cached: int) -> float | None:
    if usage is None or not model:
        return None
    try:
        return prices.cost(model, usage.input_tokens, usage.output_tokens, min(cached, usage.input_tokens))
    except UnknownModelPriceError:
        return None


def _dashboard_ok(client: Any) -> bool:
    return is_openai_api(client)


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _sum_known(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None
