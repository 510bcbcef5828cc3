"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with the right HTTP status."""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "context_length_exceeded", "error_body"]


class ApiError(Exception):
    """An answer the client gets instead of a completion. ``headers``: e.g. ``Retry-After`` on a 503."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ("server_error" if status >= 500 else "invalid_request_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def context_length_exceeded(used: int, max_tokens: int, limit: int, reason: str) -> ApiError:
    """OpenAI's message for a prompt plus completion that does not fit, with the numbers."""
    what = (
        f"This model's maximum context length is {limit} tokens"
        if reason == "context"
        else f"This server's memory budget allows {limit} tokens for one conversation"
    )
    return ApiError(
        400,
        f"{what}. However, you requested {used + max_tokens} tokens ({used} in the messages, {max_tokens} in the "
        "completion). Please reduce the length of the messages or completion.",
        param="messages",
        code="context_length_exceeded",
    )
