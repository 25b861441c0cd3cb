"""The hook: one place that builds OpenAI clients from a connection and does all file and batch I/O."""

from __future__ import annotations

import asyncio
import json
import math
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

import openai
from airflow.providers.common.compat.sdk import BaseHook, ObjectStoragePath
from airflow.sdk.log import mask_secret

from airflow_provider_openai_batch.core.limits import COMPLETION_WINDOW
from airflow_provider_openai_batch.core.line_blocks import LineBlocks
from airflow_provider_openai_batch.hooks.call_retries import TRANSIENT_ERRORS, CallRetries, describe
from airflow_provider_openai_batch.hooks.client_config import ClientConfig, client_config_from_connection
from airflow_provider_openai_batch.hooks.storage import PathLike, as_storage_path

if TYPE_CHECKING:
    from openai.types import Batch, FileObject


CHUNK_SIZE = 1024 * 1024
# A batch has a page on OpenAI's dashboard only when it lives on OpenAI's own API.
DASHBOARD_URL = "https://platform.openai.com/batches/{batch_id}"
OPENAI_API_HOST = "api.openai.com"

DEFAULT_CALL_RETRIES = CallRetries()

_ANY_API_ERROR: tuple[type[Exception], ...] = (openai.APIError, *TRANSIENT_ERRORS)

__all__ = ["TRANSIENT_ERRORS", "OpenAIBatchHook"]


def is_openai_api(client: Any) -> bool:
    """Does this client talk to OpenAI's own API (rather than Azure, a proxy or an emulator)?"""
    return str(getattr(client.base_url, "host", "")) == OPENAI_API_HOST


class OpenAIBatchHook(BaseHook):
    """
    Interact with the OpenAI Batch API (and OpenAI-compatible or Azure OpenAI services).

    Most calls use the ``openai`` package's own retries and timeouts (``max_retries`` and
    ``timeout`` in the connection extra). Uploads, status reads, cancels and downloads go through
    ``call_retries`` instead (downloads resume where a reset cut them), and a batch create is
    never retried blindly: see ``operators/batch_lifecycle.py``. The API key lives only inside the
    client objects.

    :param conn_id: an ``openai_batch`` or ``openai`` connection.
    :param call_retries: the policy for uploads, status reads, cancels and downloads; by default
        the connection's ``call_retries`` extra (``attempts``, ``base_delay``, ``max_delay``) over
        8 attempts, 0.5 s doubling to 30 s.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "openai_default"
    conn_type = "openai_batch"
    hook_name = "OpenAI Batch"

    def __init__(
        self, conn_id: str = default_conn_name, *, call_retries: CallRetries | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self._call_retries = call_retries

    @cached_property
    def call_retries(self) -> CallRetries:
        """The argument's policy, else the connection's ``call_retries`` extra over the defaults."""
        if self._call_retries is not None:
            return self._call_retries
        return replace(DEFAULT_CALL_RETRIES, **self.client_config.call_retries)

    # -- clients ---------------------------------------------------------------------------

    @cached_property
    def client_config(self) -> ClientConfig:
        return _masked_config(self.get_connection(self.conn_id))

    @cached_property
    def client(self) -> openai.OpenAI:
        return build_sync_client(self.client_config)

    @cached_property
    def single_shot_client(self) -> openai.OpenAI:
        """The same client with its own retries off: the calls made through it retry by policy."""
        return self.client.with_options(max_retries=0)

    def get_conn(self) -> openai.OpenAI:
        return self.client

    def dashboard_url(self, batch_id: str) -> str | None:
        """The batch's page on OpenAI's dashboard; ``None`` for Azure, a proxy or another service."""
        return DASHBOARD_URL.format(batch_id=batch_id) if is_openai_api(self.client) else None

    async def get_async_client(self) -> openai.AsyncOpenAI:
        """Build the async client without blocking the event loop (triggerer-safe)."""
        return build_async_client(await _aconfig(self.conn_id))

    async def get_shared_async_client(self) -> openai.AsyncOpenAI:
        """
        One async client per connection settings and event loop, shared by every trigger on it.

        Building a client makes an SSL context (~50 ms of CPU) and a connection pool: one per
        trigger would block a triggerer holding 1,000 waits for most of a minute and keep 1,000
        pools. The connection is still read at every call, so a changed key or URL gets its own
        client. Callers must not close it; it lives as long as the loop.
        """
        config = await _aconfig(self.conn_id)
        key = json.dumps(config.kwargs(), sort_keys=True, default=str)
        loop = asyncio.get_running_loop()
        clients = _SHARED_ASYNC_CLIENTS.setdefault(loop, {})
        async with _SHARED_CLIENT_LOCKS.setdefault(loop, asyncio.Lock()):
            if key not in clients:
                clients[key] = await asyncio.to_thread(build_async_client, config)
        return clients[key]

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with the one permission the provider needs: listing batches."""
        try:
            self.client.batches.list(limit=1)
        except openai.APIStatusError as err:
            return False, f"OpenAI answered HTTP {err.status_code}: {_error_message(err)}"
        except openai.APIConnectionError as err:
            return False, f"Cannot reach {self.client.base_url}: {err.__class__.__name__}"
        return True, f"Connected to {self.client.base_url}"

    # -- files ------------------------------------------------------------------------------

    def upload_file(self, path: PathLike, *, purpose: str = "batch", filename: str | None = None) -> FileObject:
        """Upload a local or object-storage file, streamed from its handle (never read whole)."""
        source = as_storage_path(path)
        name = filename or source.name
        tries = 0
        started = time.monotonic()

        def upload() -> FileObject:
            nonlocal tries
            tries += 1
            with source.open("rb") as handle:
                return self.single_shot_client.files.create(file=(name, handle), purpose=purpose)  # type: ignore[arg-type]

        uploaded = self.call_retries.call(f"Upload of {name}", upload, self.log)
        if tries > 1:
            self._delete_lost_copies(uploaded, time.monotonic() - started)
        return uploaded

    def _delete_lost_copies(self, kept: FileObject, seconds: float) -> None:
        """
        Delete the copies of ``kept`` that failed tries of its upload stored before their reply
        was lost: no batch will use them, but they count against the account's storage.

        A copy has the same name, purpose and size and was stored in the ``seconds`` the upload
        took, before ``kept`` (by the service's clock: the worker's may be off). Shard names are
        unique per job and shard, so nothing else matches. Best effort: a failed look-up is logged.
        """
        since = kept.created_at - math.ceil(seconds) - 1
        try:
            copies = []
            for file in self.single_shot_client.files.list(purpose=kept.purpose, order="desc", limit=100):
                if file.created_at < since:
                    break
                same = (file.filename, file.bytes) == (kept.filename, kept.bytes)
                if same and file.id != kept.id and file.created_at <= kept.created_at:
                    copies.append(file.id)
            for copy in copies:
                self.single_shot_client.files.delete(copy)
                self.log.warning(
                    "Upload of %s: deleted %s, a copy stored by a try whose reply was lost (kept %s)",
                    kept.filename,
                    copy,
                    kept.id,
                )
        except _ANY_API_ERROR as error:
            self.log.warning(
                "Upload of %s was retried, and a failed try may have stored a copy: looking for it failed "
                "(%s); files named %s other than %s are unused and can be deleted",
                kept.filename,
                describe(error),
                kept.filename,
                kept.id,
            )

    def get_file(self, file_id: str) -> FileObject:
        return self.client.files.retrieve(file_id)

    def delete_file(self, file_id: str) -> bool:
        return self.client.files.delete(file_id).deleted

    def iter_file_chunks(self, file_id: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """
        A file's bytes, each exactly once, in order, through resets and 5xx along the way.

        After a failure the download asks for the rest (``Range: bytes=N-``), uncompressed so that
        N counts the same bytes on both sides. A server that answers with the whole file instead
        has its first N bytes skipped; a part that does not start at N, or is compressed, is not
        used: the next try asks for the whole file. Failures in a row are bounded by
        ``call_retries``; any progress starts the count again.
        """
        received = failures = 0
        ranged = True
        while True:
            headers = {"Range": f"bytes={received}-", "Accept-Encoding": "identity"} if received and ranged else {}
            try:
                with self.single_shot_client.files.with_streaming_response.content(
                    file_id, extra_headers=headers
                ) as response:
                    skip = _bytes_to_skip(response.http_response, received)
                    if skip is None:
                        ranged = False
                        self.log.warning(
                            "Download of %s: the answer to a request for bytes %d- cannot be used; "
                            "asking for the whole file and skipping what was received",
                            file_id,
                            received,
                        )
                        raise openai.APIConnectionError(
                            message="unusable partial answer", request=response.http_response.request
                        )
                    for chunk in response.iter_bytes(chunk_size):
                        if skip:
                            chunk, skip = chunk[skip:], max(skip - len(chunk), 0)
                            if not chunk:
                                continue
                        received += len(chunk)
                        failures = 0
                        yield chunk
                return
            except TRANSIENT_ERRORS as error:
                failures += 1
                wait = self.call_retries.note(f"Download of {file_id} at byte {received}", error, failures, self.log)
                time.sleep(wait)

    def iter_file_lines(self, file_id: str) -> LineBlocks:
        """Stream a file's lines as bytes, whatever the chunking of the HTTP body."""
        return LineBlocks(self.iter_file_chunks(file_id))

    def download_file(self, file_id: str, destination: PathLike) -> ObjectStoragePath:
        """Stream a file's content to a local or object-storage path; returns the path written."""
        target = as_storage_path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for chunk in self.iter_file_chunks(file_id):
                out.write(chunk)
        return target

    # -- batches ----------------------------------------------------------------------------

    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        metadata: Mapping[str, str] | None = None,
        output_expires_after_seconds: int | None = None,
    ) -> Batch:
        kwargs: dict[str, Any] = {}
        if metadata:
            kwargs["metadata"] = dict(metadata)
        if output_expires_after_seconds:
            kwargs["output_expires_after"] = {"anchor": "created_at", "seconds": output_expires_after_seconds}
        # No retry on this client: a create whose reply was lost may have made the batch.
        return self.single_shot_client.batches.create(
            input_file_id=input_file_id,
            endpoint=endpoint,  # type: ignore[arg-type]
            completion_window=COMPLETION_WINDOW,
            **kwargs,
        )

    def get_batch(self, batch_id: str) -> Batch:
        return self.call_retries.call(
            f"Status read of batch {batch_id}", lambda: self.single_shot_client.batches.retrieve(batch_id), self.log
        )

    def cancel_batch(self, batch_id: str) -> Batch:
        """
        Retried by ``call_retries``: a cancel lost to the network leaves the batch running and
        billed. A 409 after a failed try means that try got through: the batch is returned.
        """
        tries = 0

        def cancel() -> Batch:
            nonlocal tries
            tries += 1
            try:
                return self.single_shot_client.batches.cancel(batch_id)
            except openai.ConflictError:
                if tries == 1:
                    raise
                return self.single_shot_client.batches.retrieve(batch_id)

        return self.call_retries.call(f"Cancel of batch {batch_id}", cancel, self.log)

    def list_batches(self, *, page_size: int = 100) -> Iterator[Batch]:
        """All batches, newest first; pages are fetched lazily as the iterator advances."""
        yield from self.client.batches.list(limit=page_size)

    def find_batches(
        self,
        metadata: Mapping[str, str],
        *,
        created_after: float | None = None,
        window: timedelta = timedelta(hours=1),
    ) -> list[Batch]:
        """
        The batches whose metadata contains every given pair, newest first.

        Listing stops at the first batch older than ``created_after`` (epoch seconds), or older
        than the newest match by more than ``window``, so a lookup costs a page or two instead of
        the account's whole history.
        """
        return self.call_retries.call(
            "Batch lookup by metadata", lambda: self._find_batches(metadata, created_after, window), self.log
        )

    def _find_batches(self, metadata: Mapping[str, str], created_after: float | None, window: timedelta) -> list[Batch]:
        found: list[Batch] = []
        for batch in self.single_shot_client.batches.list(limit=100):
            if created_after is not None and batch.created_at < created_after:
                break
            if found and batch.created_at < found[0].created_at - window.total_seconds():
                break
            tags = batch.metadata or {}
            if all(tags.get(k) == v for k, v in metadata.items()):
                found.append(batch)
        return found


# Per event loop: connection settings (as JSON, key included; never logged) -> the shared client.
_SHARED_ASYNC_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, openai.AsyncOpenAI]] = (
    weakref.WeakKeyDictionary()
)
_SHARED_CLIENT_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def _aconfig(conn_id: str) -> ClientConfig:
    """
    The connection's client settings, read without blocking the triggerer's loop.

    Airflow 3.0 has no async connection getter, and its triggerer's channel to the supervisor
    breaks when two threads use it at once ("Response read out of order") or when the loop's own
    thread blocks on it: there, asgiref's ``sync_to_async`` reads and masks in one shared thread,
    one call at a time.
    """
    getter = getattr(BaseHook, "aget_connection", None)
    if getter is not None:
        return _masked_config(await getter(conn_id))
    from asgiref.sync import sync_to_async

    return await sync_to_async(lambda: _masked_config(BaseHook.get_connection(conn_id)))()


def _masked_config(conn: Any) -> ClientConfig:
    """Airflow masks the password as stored; the key actually sent (stripped) is masked too."""
    config = client_config_from_connection(conn)
    if config.api_key:
        mask_secret(config.api_key)
    return config


def build_sync_client(config: ClientConfig) -> openai.OpenAI:
    if config.is_azure:
        return openai.AzureOpenAI(**config.kwargs())
    return openai.OpenAI(**config.kwargs())


def build_async_client(config: ClientConfig) -> openai.AsyncOpenAI:
    if config.is_azure:
        return openai.AsyncAzureOpenAI(**config.kwargs())
    return openai.AsyncOpenAI(**config.kwargs())


def _bytes_to_skip(response: Any, received: int) -> int | None:
    """
    How much of a resumed download's body was already delivered: all of it when the server sent
    the whole file again, none when it sent the rest; ``None`` for a part that cannot be placed
    (another start, or a range of a compressed body, whose offsets are not the file's).
    """
    if not received:
        return 0
    if response.status_code != 206:
        return received
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity") or not response.headers.get("content-range", "").startswith(
        f"bytes {received}-"
    ):
        return None
    return 0


def _error_message(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, dict):
        return str(body.get("message") or body)
    return err.message
