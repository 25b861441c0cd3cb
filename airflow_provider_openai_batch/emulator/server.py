"""Running the emulator: ``serve`` in the foreground, ``EmulatorServer`` in a background thread.

Both bind the listening socket themselves before uvicorn starts, so port 0 (any free port)
works without a race and the URL is known the moment the socket exists.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI

from airflow_provider_openai_batch.emulator.app import create_app
from airflow_provider_openai_batch.emulator.runtime import EmulatorRuntime
from airflow_provider_openai_batch.emulator.settings import EmulatorSettings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
STARTUP_TIMEOUT_SECONDS = 10.0
SHUTDOWN_TIMEOUT_SECONDS = 5


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def _uvicorn(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_SECONDS,
    )
    return uvicorn.Server(config)


def _base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    settings: EmulatorSettings | None = None,
    data_dir: str | Path | None = None,
) -> None:
    """Run the emulator until interrupted, after printing its base URL on one line."""
    app = create_app(settings, data_dir)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    print(f"OpenAI Batch API emulator listening on {_base_url(host, bound_port)}", flush=True)
    try:
        _uvicorn(app, host, bound_port).run(sockets=[sock])
    finally:
        sock.close()
        app.state.emulator.close()


class EmulatorServer:
    """The emulator on a loopback port in a background thread, for tests and local DAG runs.

    ``with EmulatorServer() as server: OpenAI(base_url=server.base_url, api_key="any")``.
    Port 0 (the default) picks a free port.
    """

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        data_dir: str | Path | None = None,
    ) -> None:
        self.host = host
        self.app = create_app(settings, data_dir)
        self._requested_port = port
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def runtime(self) -> EmulatorRuntime:
        runtime: EmulatorRuntime = self.app.state.emulator
        return runtime

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("The emulator is not running; use it as a context manager or call start().")
        return self._port

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:PORT`` (admin routes live under ``/_emulator``)."""
        return self.base_url.removesuffix("/v1")

    @property
    def base_url(self) -> str:
        """What to pass as the openai client's ``base_url``, e.g. ``http://127.0.0.1:PORT/v1``."""
        return _base_url(self.host, self.port)

    @property
    def settings(self) -> EmulatorSettings:
        return self.runtime.settings

    def update_settings(self, **changes: Any) -> EmulatorSettings:
        """Change knobs on the running server, e.g. ``update_settings(http_429_rate=0.5)``."""
        return self.runtime.update_settings(changes)

    def reset(self) -> None:
        """Forget all files and batches and restore the settings the server started with."""
        self.runtime.reset()

    def start(self) -> EmulatorServer:
        sock = _bind(self.host, self._requested_port)
        self._port = sock.getsockname()[1]
        self._server = _uvicorn(self.app, self.host, self._port)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="openai-batch-emulator", daemon=True
        )
        self._thread.start()
        self._wait_until_started(sock)
        return self

    def _wait_until_started(self, sock: socket.socket) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not (self._server is not None and self._server.started):
            if self._thread is None or not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"The emulator did not start on {self.host}:{self._port}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(SHUTDOWN_TIMEOUT_SECONDS + 1)
        self._server = self._thread = None
        self._port = None
        self.runtime.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
