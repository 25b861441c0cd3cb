"""API errors in OpenAI's shape, so the official client raises its usual exception classes."""

from __future__ import annotations

from typing import Any


class EmulatorAPIError(Exception):
    """An HTTP error answered as ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> EmulatorAPIError:
    return EmulatorAPIError(400, message, param=param, code=code)


def missing_parameter(param: str) -> EmulatorAPIError:
    return bad_request(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def invalid_value(param: str, message: str) -> EmulatorAPIError:
    return bad_request(f"Invalid value for '{param}': {message}", param=param, code="invalid_value")


def file_not_found(file_id: str, param: str = "id") -> EmulatorAPIError:
    return EmulatorAPIError(404, f"No such File object: {file_id}", param=param)


def batch_not_found(batch_id: str) -> EmulatorAPIError:
    return EmulatorAPIError(404, f"No batch found with id '{batch_id}'.")
