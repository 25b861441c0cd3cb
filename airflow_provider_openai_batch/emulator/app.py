"""The HTTP surface: OpenAI's Files and Batches routes under ``/v1``, admin routes under ``/_emulator``.

The same Files and Batches routes are served the way Azure OpenAI's clients call them, under
``/openai`` with an ``api-version`` query parameter and the key in an ``api-key`` header, so a
connection set up for Azure (``azure_endpoint`` pointing here) runs against the emulator too.

Routes are plain ``def`` functions, so FastAPI runs them in its thread pool and the event loop
never waits on disk or on the store's lock. Every error leaves as OpenAI's error object.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_openai_batch.core.limits import MAX_BYTES_PER_FILE
from airflow_provider_openai_batch.emulator import params
from airflow_provider_openai_batch.emulator.connection_faults import ConnectionFaults, quiet_uvicorn_drops
from airflow_provider_openai_batch.emulator.errors import (
    EmulatorAPIError,
    bad_request,
    invalid_value,
    missing_parameter,
)
from airflow_provider_openai_batch.emulator.runtime import EmulatorRuntime
from airflow_provider_openai_batch.emulator.settings import MASKED_KEY, EmulatorSettings, EmulatorSettingsError
from airflow_provider_openai_batch.emulator.views import batch_view, file_view, page_view

# The Files API takes up to 512 MB; batch input files up to MAX_BYTES_PER_FILE.
FILES_API_MAX_BYTES = 512 * 1024 * 1024
UPLOAD_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
BATCH_FILE_EXPIRES_SECONDS = 30 * 24 * 3600
MAX_FILES_PAGE = 10_000


def create_app(settings: EmulatorSettings | None = None, data_dir: str | Path | None = None) -> FastAPI:
    """Build the emulator app; without ``settings`` the knobs come from ``OPENAI_BATCH_EMULATOR_*``."""
    runtime = EmulatorRuntime(settings if settings is not None else EmulatorSettings.from_env(), data_dir)
    app = FastAPI(title="OpenAI Batch API emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.emulator = runtime
    _install_error_handlers(app)
    app.add_middleware(_RequestIdMiddleware)
    app.add_middleware(ConnectionFaults, runtime=runtime)
    quiet_uvicorn_drops()
    for prefix, guard in (("/v1", _guard(runtime)), ("/openai", _guard(runtime, azure=True))):
        app.include_router(_files_router(runtime), prefix=prefix, dependencies=[Depends(guard)])
        app.include_router(_batches_router(runtime), prefix=prefix, dependencies=[Depends(guard)])
    app.include_router(_admin_router(runtime), prefix="/_emulator", dependencies=[Depends(_admin_guard(runtime))])
    return app


def _guard(runtime: EmulatorRuntime, azure: bool = False) -> Any:
    """Check the API key, then maybe answer with an injected 429/500 instead of serving the call."""

    def guard(request: Request) -> None:
        settings = runtime.settings
        if azure:
            _check_azure_request(request, settings.api_key)
        else:
            _check_api_key(request.headers.get("authorization"), settings.api_key)
        fault = runtime.faults.draw(settings)
        if fault is not None:
            raise fault

    return guard


def _admin_guard(runtime: EmulatorRuntime) -> Any:
    """The admin routes take the same key as the API when one is required (health stays open)."""

    def guard(request: Request) -> None:
        if not request.url.path.endswith("/health"):
            _check_api_key(request.headers.get("authorization"), runtime.settings.api_key)

    return guard


def _check_azure_request(request: Request, expected: str | None) -> None:
    """Azure's way: an ``api-version`` on every call; the key in ``api-key`` (or an Entra bearer token)."""
    if not request.query_params.get("api-version"):
        raise EmulatorAPIError(404, "Resource not found", code="404")
    key = request.headers.get("api-key")
    if key is None:
        _check_api_key(request.headers.get("authorization"), expected)
    elif expected is not None and not secrets.compare_digest(key.encode(), expected.encode()):
        message = "Access denied due to invalid subscription key or wrong API endpoint."
        raise EmulatorAPIError(401, message, code="401")


def _check_api_key(header: str | None, expected: str | None) -> None:
    if expected is None:
        return
    if not header or not header.lower().startswith("bearer "):
        message = "You didn't provide an API key. You need to provide your API key in an Authorization header."
        raise EmulatorAPIError(401, message)
    given = header[len("bearer ") :].strip()
    if not secrets.compare_digest(given.encode(), expected.encode()):
        masked = f"{given[:3]}{'*' * max(len(given) - 7, 0)}{given[-4:]}" if len(given) > 8 else "****"
        message = f"Incorrect API key provided: {masked}. You can find your API key in the emulator's settings."
        raise EmulatorAPIError(401, message, code="invalid_api_key")


def _files_router(runtime: EmulatorRuntime) -> APIRouter:
    router = APIRouter()
    store = runtime.store

    @router.post("/files")
    def upload_file(
        file: Annotated[UploadFile, File()],
        purpose: Annotated[str, Form()],
        anchor: Annotated[str | None, Form(alias="expires_after[anchor]")] = None,
        seconds: Annotated[str | None, Form(alias="expires_after[seconds]")] = None,
    ) -> dict[str, Any]:
        filename = file.filename or "upload"
        _check_upload(purpose, filename)
        expires = _upload_expiry(purpose, anchor, seconds)
        limit = MAX_BYTES_PER_FILE if purpose == "batch" else FILES_API_MAX_BYTES
        return file_view(store.save_upload(file.file, filename, purpose, limit, expires))

    @router.get("/files")
    def list_files(
        purpose: str | None = None,
        limit: int = MAX_FILES_PAGE,
        after: str | None = None,
        order: Literal["asc", "desc"] = "desc",
    ) -> dict[str, Any]:
        size = params.page_limit(limit, MAX_FILES_PAGE)
        records = [r for r in store.list_files() if purpose is None or r.purpose == purpose]
        if order == "desc":
            records.reverse()  # the store keeps upload order
        ids = [r.id for r in records]
        start = ids.index(after) + 1 if after in ids else 0
        chosen = records[start : start + size]
        return page_view([file_view(r) for r in chosen], start + size < len(records))

    @router.get("/files/{file_id}")
    def retrieve_file(file_id: str) -> dict[str, Any]:
        return file_view(store.get_file(file_id))

    @router.get("/files/{file_id}/content", response_model=None)
    def file_content(file_id: str, request: Request) -> FileResponse | Response:
        record = store.get_file(file_id)
        start = _range_start(request.headers.get("range"))
        size = Path(record.path).stat().st_size
        if start is None or not 0 < start < size:
            return FileResponse(record.path, media_type="application/octet-stream", filename=record.filename)
        # "bytes=N-", what a resumed download asks; answered here so it works on every Starlette.
        headers = {
            "content-range": f"bytes {start}-{size - 1}/{size}",
            "content-length": str(size - start),
            "accept-ranges": "bytes",
        }
        body = _file_chunks(record.path, start)
        return StreamingResponse(body, status_code=206, media_type="application/octet-stream", headers=headers)

    @router.delete("/files/{file_id}")
    def delete_file(file_id: str) -> dict[str, Any]:
        store.delete_file(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    return router


def _file_chunks(path: str | Path, start: int, size: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(start)
        while chunk := handle.read(size):
            yield chunk


def _range_start(header: str | None) -> int | None:
    if not header or not header.startswith("bytes=") or not header.endswith("-"):
        return None
    value = header[len("bytes=") : -1]
    return int(value) if value.isdigit() else None


def _check_upload(purpose: str, filename: str) -> None:
    if purpose not in UPLOAD_PURPOSES:
        raise invalid_value("purpose", f"{purpose!r}. Supported values are: {sorted(UPLOAD_PURPOSES)}.")
    if purpose == "batch" and not filename.lower().endswith(".jsonl"):
        raise bad_request("Invalid file format for Batch API. Must be .jsonl", param="file")


def _upload_expiry(purpose: str, anchor: str | None, seconds: str | None) -> int | None:
    if anchor is None and seconds is None:
        return BATCH_FILE_EXPIRES_SECONDS if purpose == "batch" else None
    return params.expires_after({"anchor": anchor, "seconds": seconds}, "expires_after")


def _batches_router(runtime: EmulatorRuntime) -> APIRouter:
    router = APIRouter()
    engine = runtime.engine

    @router.post("/batches")
    def create_batch(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        return batch_view(engine.create(params.batch_params(body)))

    @router.get("/batches")
    def list_batches(after: str | None = None, limit: int = params.DEFAULT_BATCH_PAGE) -> dict[str, Any]:
        records, has_more = engine.page(after, params.page_limit(limit, params.MAX_BATCH_PAGE))
        return page_view([batch_view(r) for r in records], has_more)

    @router.get("/batches/{batch_id}")
    def retrieve_batch(batch_id: str) -> dict[str, Any]:
        return batch_view(engine.get(batch_id))

    @router.post("/batches/{batch_id}/cancel")
    def cancel_batch(batch_id: str) -> dict[str, Any]:
        return batch_view(engine.cancel(batch_id))

    return router


def _admin_router(runtime: EmulatorRuntime) -> APIRouter:
    """Knobs a test can turn on a running server; not part of OpenAI's API, so no injected faults."""
    router = APIRouter()

    @router.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/settings")
    def get_settings() -> dict[str, Any]:
        return runtime.settings.shown()

    @router.post("/settings")
    def update_settings(changes: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        if changes.get("api_key") == MASKED_KEY:  # settings read, edited and sent back keep the key
            changes = {k: v for k, v in changes.items() if k != "api_key"}
        try:
            return runtime.update_settings(changes).shown()
        except EmulatorSettingsError as error:
            raise bad_request(str(error), code="invalid_setting") from error

    @router.post("/reset")
    def reset() -> dict[str, Any]:
        runtime.reset()
        return runtime.settings.shown()

    return router


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EmulatorAPIError)
    async def api_error(request: Request, error: EmulatorAPIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return await api_error(request, _from_validation(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = (
            f"Invalid URL ({request.method} {request.url.path})" if error.status_code in (404, 405) else error.detail
        )
        return await api_error(request, EmulatorAPIError(error.status_code, str(message)))


def _from_validation(error: RequestValidationError) -> EmulatorAPIError:
    """FastAPI's 422 for a missing or malformed parameter, told the way OpenAI tells it (400)."""
    first = error.errors()[0] if error.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = location[-1] if location else None
    if first.get("type") == "json_invalid" or param is None:
        return bad_request("We could not parse the JSON body of your request.")
    if first.get("type") == "missing":
        return missing_parameter(param)
    return invalid_value(param, str(first.get("msg", "invalid value")))


class _RequestIdMiddleware:
    """Adds the ``x-request-id`` header the openai client reports on errors."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = (b"x-request-id", f"req_{secrets.token_hex(16)}".encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)
