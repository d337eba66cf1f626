"""Gateway errors, their status and type in each client protocol (§5.2), and upstream error mapping (§5.3)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class ErrorKind(StrEnum):
    INVALID_REQUEST = "invalid_request"
    AUTHENTICATION = "authentication"
    BILLING = "billing"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    REQUEST_TOO_LARGE = "request_too_large"
    RATE_LIMIT = "rate_limit"
    API_ERROR = "api_error"
    UPSTREAM_ERROR = "upstream_error"
    OVERLOADED = "overloaded"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class _Shape:
    status: int
    anthropic_type: str
    openai_type: str
    openai_code: str | None


# §5.2, one row per kind. OVERLOADED's status is 529 for A clients and 503 for O clients (status_for).
_SHAPES: dict[ErrorKind, _Shape] = {
    ErrorKind.INVALID_REQUEST: _Shape(400, "invalid_request_error", "invalid_request_error", None),
    ErrorKind.AUTHENTICATION: _Shape(401, "authentication_error", "invalid_request_error", "invalid_api_key"),
    ErrorKind.BILLING: _Shape(402, "billing_error", "insufficient_quota", "insufficient_balance"),
    ErrorKind.PERMISSION: _Shape(403, "permission_error", "permission_error", "model_not_allowed"),
    ErrorKind.NOT_FOUND: _Shape(404, "not_found_error", "invalid_request_error", "model_not_found"),
    ErrorKind.REQUEST_TOO_LARGE: _Shape(413, "request_too_large", "invalid_request_error", "request_too_large"),
    ErrorKind.RATE_LIMIT: _Shape(429, "rate_limit_error", "rate_limit_error", "rate_limit_exceeded"),
    ErrorKind.API_ERROR: _Shape(500, "api_error", "server_error", None),
    ErrorKind.UPSTREAM_ERROR: _Shape(502, "api_error", "server_error", "upstream_error"),
    ErrorKind.OVERLOADED: _Shape(529, "overloaded_error", "server_error", "overloaded"),
    ErrorKind.TIMEOUT: _Shape(504, "timeout_error", "server_error", "timeout"),
}


NULL_CODE = ""  # GatewayError(code=NULL_CODE): the O body's `code` is null instead of the kind's default


class GatewayError(Exception):
    """An error to answer in the client's protocol shape; `status` overrides the kind's default HTTP status."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        should_retry: bool | None = None,
        details: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.retry_after = retry_after
        self.should_retry = should_retry
        self.details = details  # A clients: error.details (e.g. {"error_code": …}, PROTOCOLS-RESPONSES §6 M7)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind!s}, {self.message!r}, param={self.param!r}, code={self.code!r})"

    def status_for(self, protocol: str) -> int:
        """HTTP status for a client speaking `protocol` ("openai" | "anthropic")."""
        if self.status is not None:
            return self.status
        if self.kind is ErrorKind.OVERLOADED and protocol in ("openai", "responses"):
            return 503  # 529 is Anthropic-only; the OpenAI SDK retries 503 (§5.2)
        return _SHAPES[self.kind].status


class TranslationError(GatewayError):
    """The client's request cannot be expressed in the upstream protocol: 400 before any upstream call."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(ErrorKind.INVALID_REQUEST, message, param=param, code=code)


def openai_error_body(err: GatewayError) -> dict:
    """O error body {"error": {message, type, param, code}} (§5.1)."""
    shape = _SHAPES[err.kind]
    return {
        "error": {
            "message": err.message,
            "type": shape.openai_type,
            "param": err.param,
            "code": shape.openai_code if err.code is None else (err.code or None),
        }
    }


def anthropic_error_body(err: GatewayError, request_id: str) -> dict:
    """A error body {"type": "error", "error": {type, message}, "request_id"} (§5.1)."""
    return {**anthropic_stream_error(err), "request_id": request_id}


def openai_stream_error(err: GatewayError) -> dict:
    """Data of a mid-stream O error; the openai SDK raises on a top-level `error` key (§1.4)."""
    return openai_error_body(err)


def anthropic_stream_error(err: GatewayError) -> dict:
    """Data of a mid-stream A `error` event."""
    error: dict = {"type": _SHAPES[err.kind].anthropic_type, "message": err.message}
    if err.details:
        error["details"] = dict(err.details)
    return {"type": "error", "error": error}


# §5.3 step 2: keep the upstream's words but not its hostnames, keys or addresses.
_SECRETS = re.compile(
    r"https?://\S+"
    r"|\b(?:sk|sk-ant|sk-proj|key|pk|rk)-[A-Za-z0-9_-]{8,}"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"
    r"|\b[\w-]+(?:\.[\w-]+)*\.(?:com|net|org|io|ai|cn|cloud|dev|internal|local)(?::\d+)?\b"
)
_CREDENTIALS_MESSAGE = "The upstream provider rejected the gateway's credentials; your request is not at fault."
_QUOTA_MESSAGE = "The upstream provider's quota is exhausted; try again later or use another model."


def _scrub(message: str) -> str:
    return _SECRETS.sub("[redacted]", message)


def _upstream_fields(body: dict | None) -> tuple[str | None, str | None, str | None, str | None]:
    """(message, type, code, param) from an upstream error body of either protocol or a loose variant."""
    if not isinstance(body, dict):
        return None, None, None, None
    error = body.get("error", body)
    if isinstance(error, str):  # some O-compatible servers send {"error": "text"}
        return error, None, None, None
    if not isinstance(error, dict):
        return None, None, None, None
    message = error.get("message") or error.get("detail")
    code = error.get("code")
    param = error.get("param")
    return (
        message if isinstance(message, str) else None,
        error.get("type") if isinstance(error.get("type"), str) else None,
        str(code) if isinstance(code, (str, int)) and not isinstance(code, bool) else None,
        param if isinstance(param, str) else None,
    )


def _kind_for_status(status: int) -> ErrorKind:
    if status in (401, 403, 402):
        # The gateway's own provider account, not the client's (§5.3 step 3); 402 is its credit running out.
        return ErrorKind.UPSTREAM_ERROR
    by_status = {
        404: ErrorKind.NOT_FOUND,
        408: ErrorKind.TIMEOUT,
        413: ErrorKind.REQUEST_TOO_LARGE,
        429: ErrorKind.RATE_LIMIT,
        500: ErrorKind.API_ERROR,
        503: ErrorKind.OVERLOADED,
        504: ErrorKind.TIMEOUT,
        529: ErrorKind.OVERLOADED,
    }
    if status in by_status:
        return by_status[status]
    return ErrorKind.INVALID_REQUEST if 400 <= status < 500 else ErrorKind.UPSTREAM_ERROR


def upstream_http_error(
    status: int, body: dict | None, upstream: str, *, retry_after: int | None = None
) -> GatewayError:
    """Map an upstream non-2xx reply (`upstream` "openai" | "anthropic") to the error the client sees (§5.3)."""
    message, error_type, code, param = _upstream_fields(body)
    kind = _kind_for_status(status)
    if kind is ErrorKind.RATE_LIMIT and "insufficient_quota" in (error_type, code):
        # OpenAI reports the provider account's exhausted credit as 429 (§5.4): not the client's rate limit.
        return GatewayError(ErrorKind.UPSTREAM_ERROR, _QUOTA_MESSAGE)
    if 300 <= status < 400:  # redirects are never followed (an upstream must answer where it was asked)
        return GatewayError(kind, f"The upstream provider answered with a redirect (HTTP {status}), not followed.")
    if kind is ErrorKind.UPSTREAM_ERROR and status < 500:
        return GatewayError(kind, _CREDENTIALS_MESSAGE)
    text = _scrub(message) if message else f"The upstream provider answered HTTP {status}."
    # Any other 4xx keeps its status (§5.2 last row); 422 is folded into 400 (§5.2 first row).
    keep_status = kind is ErrorKind.INVALID_REQUEST and status not in (400, 422)
    return GatewayError(
        kind,
        text,
        param=param if upstream in ("openai", "responses") else None,
        code=code if upstream in ("openai", "responses") and kind is ErrorKind.INVALID_REQUEST else None,
        status=status if keep_status else None,
        retry_after=retry_after if kind in (ErrorKind.RATE_LIMIT, ErrorKind.OVERLOADED) else None,
    )


_ANTHROPIC_TYPE_KINDS = {
    "invalid_request_error": ErrorKind.INVALID_REQUEST,
    "authentication_error": ErrorKind.UPSTREAM_ERROR,  # the gateway's credentials (§5.3 step 3)
    "permission_error": ErrorKind.UPSTREAM_ERROR,
    "billing_error": ErrorKind.UPSTREAM_ERROR,
    "not_found_error": ErrorKind.NOT_FOUND,
    "request_too_large": ErrorKind.REQUEST_TOO_LARGE,
    "rate_limit_error": ErrorKind.RATE_LIMIT,
    "api_error": ErrorKind.API_ERROR,
    "overloaded_error": ErrorKind.OVERLOADED,
    "timeout_error": ErrorKind.TIMEOUT,
}
_OPENAI_CODE_KINDS = {
    "rate_limit_exceeded": ErrorKind.RATE_LIMIT,
    "rate_limit_error": ErrorKind.RATE_LIMIT,
    "insufficient_quota": ErrorKind.UPSTREAM_ERROR,
    "invalid_api_key": ErrorKind.UPSTREAM_ERROR,
    "overloaded": ErrorKind.OVERLOADED,
    "server_overloaded": ErrorKind.OVERLOADED,
    "timeout": ErrorKind.TIMEOUT,
    "invalid_request_error": ErrorKind.INVALID_REQUEST,
    "context_length_exceeded": ErrorKind.INVALID_REQUEST,
    "server_error": ErrorKind.API_ERROR,
}


def upstream_stream_error(payload: dict, upstream: str) -> GatewayError:
    """Map a mid-stream upstream error (A `error` event data or O `{"error": …}` chunk) (§5.3 step 1)."""
    message, error_type, code, param = _upstream_fields(payload)
    if upstream == "anthropic":
        kind = _ANTHROPIC_TYPE_KINDS.get(error_type or "", ErrorKind.API_ERROR)
    elif code is not None and code.isdigit():  # some servers put the HTTP status in `code`
        kind = _kind_for_status(int(code))
    else:
        kind = _OPENAI_CODE_KINDS.get(code or "") or _OPENAI_CODE_KINDS.get(error_type or "", ErrorKind.API_ERROR)
    if kind is ErrorKind.UPSTREAM_ERROR:
        return GatewayError(
            kind, _QUOTA_MESSAGE if "insufficient_quota" in (code, error_type) else _CREDENTIALS_MESSAGE
        )
    return GatewayError(
        kind,
        _scrub(message) if message else "The upstream provider reported an error.",
        param=param if upstream == "openai" else None,
    )
