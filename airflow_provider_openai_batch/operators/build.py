"""Build the batch input: request lines from records, split into validated shards with a manifest."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_provider_openai_batch.core.naming import safe_name
from airflow_provider_openai_batch.core.requests import Message, RequestBuilder, RequestTemplate
from airflow_provider_openai_batch.core.shards import Manifest, ShardWriter
from airflow_provider_openai_batch.core.sources import read_records
from airflow_provider_openai_batch.hooks.openai_batch import as_storage_path
from airflow_provider_openai_batch.operators.storage import opener_under

DEFAULT_JOB_ID = "{{ dag.dag_id }}__{{ run_id }}"


class OpenAIBatchBuildOperator(BaseOperator):
    """
    Turn records into batch request files ready to submit.

    Each record becomes one request whose ``custom_id`` is the record's ``key_field`` (stable across
    reruns, so results join back to records). Requests are written as shards within the per-file
    limits under ``{work_dir}/{job_id}/``, with a ``manifest.json`` describing them.

    The return value (XCom) is the list of shards — location, request count, bytes, sha256 and the
    manifest's location, never the requests — so a submit task maps over it with
    ``submit.expand(shard=build.output)``. A job summary is pushed under the XCom key ``summary``.

    :param records: the records: a list of mappings (e.g. an upstream task's XCom), or the path or
        URI of a ``.jsonl``/``.csv`` file, read streamed.
    :param key_field: the record field that identifies it; becomes the ``custom_id``.
    :param endpoint: the Batch endpoint, e.g. ``/v1/chat/completions``.
    :param model: one model for the whole job.
    :param messages: chat messages ``[{"role": ..., "content": "<jinja over the record>"}]``; these
        are rendered per record by the provider, not by Airflow's own templating.
    :param prompt: the Jinja template for single-input endpoints (embeddings, responses, …).
    :param body: other body parameters passed through (``max_tokens``, ``response_format``, …).
    :param work_dir: where shards and the manifest are written (local path or ``ObjectStoragePath`` URI).
    :param job_id: names the job's folder and tags its batches; defaults to ``<dag_id>__<run_id>``.
    :param max_requests_per_shard: at most 50,000 (the API's limit).
    :param max_bytes_per_shard: at most 200 MB (the API's limit).
    """

    template_fields: Sequence[str] = ("records", "work_dir", "job_id", "model")

    def __init__(
        self,
        *,
        records: Iterable[Mapping[str, Any]] | str,
        key_field: str,
        endpoint: str,
        model: str,
        work_dir: str,
        messages: Sequence[Mapping[str, str]] = (),
        prompt: str | None = None,
        body: Mapping[str, Any] | None = None,
        job_id: str = DEFAULT_JOB_ID,
        max_requests_per_shard: int = 50_000,
        max_bytes_per_shard: int = 200 * 1024 * 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.records = records
        self.key_field = key_field
        self.endpoint = endpoint
        self.model = model
        self.work_dir = work_dir
        self.messages = messages
        self.prompt = prompt
        self.body = dict(body or {})
        self.job_id = job_id
        self.max_requests_per_shard = max_requests_per_shard
        self.max_bytes_per_shard = max_bytes_per_shard

    def execute(self, context: Context) -> list[dict[str, Any]]:
        job_id = safe_name(self.job_id)
        template = RequestTemplate(
            endpoint=self.endpoint,
            model=self.model,
            messages=tuple(Message(m["role"], m["content"]) for m in self.messages),
            prompt=self.prompt,
            body=self.body,
        )
        job_dir = as_storage_path(self.work_dir) / job_id
        writer = ShardWriter(
            opener_under(job_dir / "requests"),
            job_id,
            max_requests=self.max_requests_per_shard,
            max_bytes=self.max_bytes_per_shard,
        )
        builder = RequestBuilder(template, self.key_field)
        shards = writer.write_all(builder.lines(self._records()))
        if not shards:
            raise ValueError("no records to build: the job would be an empty batch")
        manifest = Manifest(
            job_id=job_id,
            endpoint=self.endpoint,
            model=self.model,
            key_field=self.key_field,
            shards=tuple(shards),
            extra={"expect_json": _expects_json(self.body)},
        )
        manifest_path = job_dir / "manifest.json"
        manifest_path.write_bytes(manifest.to_json())
        self.log.info(
            "Built %d requests in %d shard(s) for job %s at %s",
            manifest.requests,
            len(shards),
            job_id,
            job_dir,
        )
        shard_refs = [
            {
                **shard.to_dict(),
                "job_id": job_id,
                "endpoint": self.endpoint,
                "model": self.model,
                "manifest": str(manifest_path),
                "expect_json": manifest.extra["expect_json"],
            }
            for shard in shards
        ]
        summary = {
            "job_id": job_id,
            "manifest": str(manifest_path),
            "requests": manifest.requests,
            "shards": len(shards),
            "endpoint": self.endpoint,
            "model": self.model,
        }
        context["ti"].xcom_push(key="summary", value=summary)
        return shard_refs

    def _records(self) -> Iterator[Mapping[str, Any]]:
        if isinstance(self.records, str):
            path = as_storage_path(self.records)
            with path.open("rb") as handle:
                yield from read_records(handle, self.records)
        else:
            yield from self.records


def _expects_json(body: Mapping[str, Any]) -> bool:
    fmt = body.get("response_format") or (body.get("text") or {}).get("format") or {}
    return isinstance(fmt, Mapping) and fmt.get("type") in ("json_schema", "json_object")
