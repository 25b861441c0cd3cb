"""Bring your own batch input: validate JSONL written elsewhere and hand it to the submit operator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, Context

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.naming import safe_name
from airflow_provider_openai_batch.hooks.storage import as_storage_path
from airflow_provider_openai_batch.operators.build import DEFAULT_JOB_ID

if TYPE_CHECKING:
    from airflow_provider_openai_batch.core.build.building import JobEstimate
    from airflow_provider_openai_batch.core.build.input_files import InspectedFile
    from airflow_provider_openai_batch.core.costs import PriceTable


class OpenAIBatchValidateOperator(BaseOperator):
    """
    Validate batch input files you wrote yourself; return them as shards for the submit operator.

    The files (local paths or ``ObjectStoragePath`` URIs) are read once, streamed: every line is
    checked like the build operator's shards (problems as ``path:line: message``, custom_ids unique
    across all the files), fingerprinted (sha256, which keys re-attachment on retry) and, unless
    ``estimate=False``, its tokens are counted exactly and priced. Any error, or an estimate over
    ``max_cost_usd``, fails the task before anything is uploaded. The return value has the build
    operator's shape, so ``OpenAIBatchSubmitOperator.partial(...).expand(shard=validate.output)``
    works; the files themselves are submitted where they are (no copy, no manifest).

    :param paths: one path/URI or a list; each file becomes one batch (at most 50,000 requests, 200 MB).
    :param job_id: tags the batches; defaults to ``<dag_id>__<run_id>``.
    :param estimate: count tokens and cost (exact, ~10 µs per 40-token prompt).
    :param prices: Batch price overrides (a mapping or a JSON file path).
    :param max_cost_usd: fail when the estimated cost (output at its ceiling) is above this.
    """

    template_fields: Sequence[str] = ("paths", "job_id", "prices")

    def __init__(
        self,
        *,
        paths: str | Sequence[str],
        job_id: str = DEFAULT_JOB_ID,
        estimate: bool = True,
        prices: Mapping[str, Any] | str | None = None,
        max_cost_usd: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.paths = paths
        self.job_id = job_id
        self.estimate = estimate
        self.prices = prices
        self.max_cost_usd = max_cost_usd

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_provider_openai_batch.core.build.input_files import inspect_files
        from airflow_provider_openai_batch.core.costs import PriceTable, check_budget

        paths = [self.paths] if isinstance(self.paths, str) else [str(p) for p in self.paths]
        if not paths:
            raise OpenAIBatchInputError("no batch input files to validate")
        if self.max_cost_usd is not None and not self.estimate:
            raise OpenAIBatchInputError("max_cost_usd needs estimate=True")
        report, files = inspect_files(paths, _open, estimate=self.estimate)
        if report.warning_count and report.ok:
            self.log.warning("Batch input warnings:\n%s", report.format())
        report.raise_for_errors()
        prices = PriceTable.load(self.prices)
        job_id = safe_name(self.job_id)
        estimate = self._estimate(files, prices)
        self.log.info("Validated %d file(s): %s", len(files), estimate.describe())
        if self.max_cost_usd is not None:
            if estimate.total is None or not estimate.priced:
                raise OpenAIBatchInputError(f"max_cost_usd is set but the cost cannot be estimated: {estimate.note}")
            check_budget(estimate.total, self.max_cost_usd)
        context["ti"].xcom_push(
            key="summary",
            value={
                "job_id": job_id,
                "files": len(files),
                "requests": sum(f.summary.requests for f in files),
                "estimate": estimate.to_dict(),
            },
        )
        return [self._shard_ref(index, file, job_id, prices) for index, file in enumerate(files)]

    def _estimate(self, files: list[InspectedFile], prices: PriceTable) -> JobEstimate:
        from airflow_provider_openai_batch.core.build.building import JobEstimate
        from airflow_provider_openai_batch.core.costs import Estimate

        if not self.estimate:
            return JobEstimate(None, "none", note="estimate=False")
        estimates = [f.estimator.estimate(prices) for f in files if f.estimator is not None]
        total = Estimate.empty()
        for one in estimates:
            if one.total is not None:
                total += one.total
        notes = "; ".join(e.note for e in estimates if e.note)
        return JobEstimate(total, "exact", priced=all(e.priced for e in estimates), note=notes)

    def _shard_ref(self, index: int, file: InspectedFile, job_id: str, prices: PriceTable) -> dict[str, Any]:
        return {
            **file.shard(index, prices if self.estimate else None).to_dict(),
            "job_id": job_id,
            "endpoint": file.summary.url,
            "model": file.summary.model,
            "manifest": None,
            "expect_json": file.expects_json,
        }


def _open(path: str) -> Any:
    return as_storage_path(path).open("rb")
