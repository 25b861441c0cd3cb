"""The HTTP library the installed ``openai`` is built on, for tests that speak to it directly.

openai 3.x uses ``httpx2`` and 2.x ``httpx``: transports, errors and mock transports must come
from the same one the client uses, or an ``isinstance`` check sees a stranger.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import openai

http_lib: ModuleType = importlib.import_module("httpx2" if int(openai.__version__.split(".")[0]) >= 3 else "httpx")
