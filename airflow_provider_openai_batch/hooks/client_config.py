"""Turn an Airflow connection's fields into ``openai`` client arguments.

Kept apart from the hook so the same mapping serves the sync client, the async client built on
the triggerer, and the tests, without importing Airflow. A connection of this provider's type
``openai_batch`` and one of the official provider's type ``openai`` carry the same fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

EXTRA_FIELDS = (
    "organization",
    "project",
    "timeout",
    "max_retries",
    "api_version",
    "azure_endpoint",
    "azure_deployment",
)


class ConnectionLike(Protocol):
    """The few attributes read from an Airflow ``Connection``."""

    host: str | None
    password: str | None
    schema: str | None
    port: int | None
    extra: str | None


@dataclass(frozen=True)
class ClientConfig:
    """Everything needed to build a client; ``repr`` hides the key so it never lands in a log."""

    api_key: str | None = field(repr=False)
    base_url: str | None = None
    organization: str | None = None
    project: str | None = None
    timeout: float | None = None
    max_retries: int | None = None
    api_version: str | None = None
    azure_endpoint: str | None = None
    azure_deployment: str | None = None
    client_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # The provider's own retry policy (``hooks.call_retries.CallRetries`` fields), not a client kwarg.
    call_retries: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_azure(self) -> bool:
        return bool(self.azure_endpoint or self.api_version)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``OpenAI``/``AsyncOpenAI`` (or their Azure twins)."""
        out: dict[str, Any] = {"api_key": self.api_key}
        if self.is_azure:
            out["api_version"] = self.api_version
            if self.azure_endpoint:
                out["azure_endpoint"] = self.azure_endpoint
            elif self.base_url:
                out["base_url"] = self.base_url
            if self.azure_deployment:
                out["azure_deployment"] = self.azure_deployment
        elif self.base_url:
            out["base_url"] = self.base_url
        for name in ("organization", "project", "timeout", "max_retries"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.client_kwargs)
        return out


def _extra_dict(conn: ConnectionLike) -> dict[str, Any]:
    raw = conn.extra
    if not raw:
        return {}
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"the connection's extra is not valid JSON: {err.msg} at char {err.pos}") from None
    if not isinstance(parsed, dict):
        raise ValueError("the connection's extra must be a JSON object")
    return parsed


def _field(extra: Mapping[str, Any], name: str) -> Any:
    # The UI of older Airflow versions prefixed form fields; accept both spellings.
    for key in (name, f"extra__openai_batch__{name}", f"extra__openai__{name}"):
        value = extra.get(key)
        if value not in (None, ""):
            return value
    return None


def _base_url(conn: ConnectionLike) -> str | None:
    host = (conn.host or "").strip()
    if not host:
        return None
    if "://" not in host:
        scheme = conn.schema if conn.schema in ("http", "https") else "https"
        host = f"{scheme}://{host}"
        if conn.port:
            host = f"{host}:{conn.port}"
    return host.rstrip("/")


def _api_key(password: str | None) -> str | None:
    """
    The key as the service knows it: a key read from a file often ends in a newline.

    The HTTP library refuses a header holding a control character with an error that quotes the
    whole header, key included, in a form the log masker does not recognise; so such a key is
    refused here, by position, before any client sees it.
    """
    key = (password or "").strip()
    if not key:
        return None
    bad = next((i for i, char in enumerate(key) if not " " < char < "\x7f"), None)
    if bad is not None:
        raise ValueError(
            f"the connection's API key has a character HTTP headers cannot carry at position {bad + 1} "
            f"of {len(key)} (a space, control or non-ASCII character); paste the key again"
        )
    return key


def client_config_from_connection(conn: ConnectionLike) -> ClientConfig:
    """Read the connection once; invalid numbers fail with the field's name, never its secret."""
    extra = _extra_dict(conn)
    timeout = _field(extra, "timeout")
    max_retries = _field(extra, "max_retries")
    try:
        timeout_value = float(timeout) if timeout is not None else None
        retries_value = int(max_retries) if max_retries is not None else None
    except (TypeError, ValueError):
        raise ValueError(
            "connection extra 'timeout' must be a number of seconds and 'max_retries' an integer"
        ) from None
    client_kwargs = extra.get("openai_client_kwargs") or {}
    if not isinstance(client_kwargs, dict):
        raise ValueError("connection extra 'openai_client_kwargs' must be a JSON object")
    call_retries = extra.get("call_retries") or {}
    allowed = {"attempts", "base_delay", "max_delay"}
    if not isinstance(call_retries, dict) or not set(call_retries) <= allowed:
        raise ValueError(f"connection extra 'call_retries' must be a JSON object of {sorted(allowed)}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in call_retries.values()):
        raise ValueError("connection extra 'call_retries': each value must be a positive number")
    return ClientConfig(
        api_key=_api_key(conn.password),
        base_url=_base_url(conn),
        organization=_field(extra, "organization"),
        project=_field(extra, "project"),
        timeout=timeout_value,
        max_retries=retries_value,
        api_version=_field(extra, "api_version"),
        azure_endpoint=_field(extra, "azure_endpoint"),
        azure_deployment=_field(extra, "azure_deployment"),
        client_kwargs=client_kwargs,
        call_retries=call_retries,
    )
