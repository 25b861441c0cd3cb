"""Connection faults a real network has and HTTP status codes cannot show: a reply lost after the
server committed the call, an upload dropped on its way in, a status read reset, a download cut off
halfway.

They live in an ASGI wrapper around the whole app because only it sees the wire: it can let a
route commit a batch and then drop the connection instead of answering. A drop is a response
start promising a body that never comes, then an abort, which makes uvicorn close the socket; the
client sees the same ``RemoteProtocolError``/``ReadError`` a reset gives it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_openai_batch.emulator.runtime import EmulatorRuntime

_BATCHES = re.compile(r"^/(?:v1|openai)/batches/?$")
_STATUS = re.compile(r"^/(?:v1|openai)/batches/[^/]+/?$")
_UPLOAD = re.compile(r"^/(?:v1|openai)/files/?$")
_DOWNLOAD = re.compile(r"^/(?:v1|openai)/files/[^/]+/content/?$")

_SERVER_ERROR = {
    "error": {
        "message": "The server had an error processing your request (emulated by error_after_create).",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}


class ConnectionDropped(Exception):
    """Raised after a response start so uvicorn closes the socket mid-reply, as a reset would."""


class _QuietDrops(logging.Filter):
    """Uvicorn logs every aborted reply as an application error; ours are on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


def quiet_uvicorn_drops() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in logger.filters):
        logger.addFilter(_QuietDrops())


class ConnectionFaults:
    """Applies the counting connection-fault knobs (``reset_after_create`` …) to matching calls."""

    def __init__(self, app: ASGIApp, runtime: EmulatorRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        settings = self.runtime.settings
        if method == "POST" and _BATCHES.match(path):
            if settings.reset_after_create > 0:
                await self._after_commit(scope, receive, send, "reset_after_create", _drop)
                return
            if settings.error_after_create > 0:
                await self._after_commit(scope, receive, send, "error_after_create", _server_error)
                return
        elif method == "POST" and _UPLOAD.match(path):
            if self.runtime.take("reset_before_upload"):
                await _drop(send)
            if settings.reset_after_upload > 0:
                await self._after_commit(scope, receive, send, "reset_after_upload", _drop)
                return
        elif (
            method == "GET"
            and (_STATUS.match(path) or _BATCHES.match(path))
            and self.runtime.take("reset_status_reads")
        ):
            await _drop(send)
        elif method == "GET" and _DOWNLOAD.match(path) and settings.cut_downloads > 0:
            await self.app(scope, receive, self._cutting(send))
            return
        await self.app(scope, receive, send)

    async def _after_commit(
        self, scope: Scope, receive: Receive, send: Send, knob: str, fault: Callable[[Send], Awaitable[None]]
    ) -> None:
        """Serve the call, then, if it succeeded and the knob is still armed, lose its reply."""
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, receive, hold)
        status = next((m["status"] for m in held if m["type"] == "http.response.start"), 500)
        if status < 400 and self.runtime.take(knob):
            await fault(send)
            return
        for message in held:
            await send(message)

    def _cutting(self, send: Send) -> Send:
        """A ``send`` that passes the first ``cut_download_after_bytes`` of a good body, then drops."""
        sent = 0
        cut: int | None = None

        async def cutting_send(message: Message) -> None:
            nonlocal sent, cut
            if message["type"] == "http.response.start":
                if message["status"] < 300 and self.runtime.take("cut_downloads"):
                    cut = self.runtime.settings.cut_download_after_bytes
                await send(message)
                return
            if cut is None or message["type"] != "http.response.body":
                await send(message)
                return
            body: bytes = message.get("body", b"")
            if sent + len(body) < cut or (sent + len(body) == cut and not message.get("more_body", False)):
                sent += len(body)
                await send(message)
                return
            await send({"type": "http.response.body", "body": body[: cut - sent], "more_body": True})
            raise ConnectionDropped(f"download cut after {cut} bytes")

        return cutting_send


async def _drop(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})
    raise ConnectionDropped("reply dropped")


async def _server_error(send: Send) -> None:
    body = json.dumps(_SERVER_ERROR).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})
