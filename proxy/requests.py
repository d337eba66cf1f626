"""Reading and checking client request bodies: bad input gets a clear 4xx in the caller's shape."""

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

from proxy.translate.errors import ErrorKind, GatewayError

MAX_MESSAGES = 10_000
MAX_OUTPUT_TOKENS = 10_000_000  # beyond any model; a bound on what a hold can be asked to reserve


def invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param)


def read_json_body(request: HttpRequest) -> dict:
    """The request body as a JSON object; 413 when too large, 400 when not a JSON object."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > settings.RUAPI_MAX_BODY_BYTES:
        raise GatewayError(ErrorKind.REQUEST_TOO_LARGE, "Request body is too large.")
    try:
        raw = request.body
    except RequestDataTooBig as exc:
        raise GatewayError(ErrorKind.REQUEST_TOO_LARGE, "Request body is too large.") from exc
    if not raw:
        raise invalid("Request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"Request body is not valid JSON: {exc.msg} (at position {exc.pos}).") from exc
    if not isinstance(body, dict):
        raise invalid("Request body must be a JSON object.")
    return body


def _optional_int(body: dict, name: str, *, minimum: int, maximum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"`{name}` must be an integer.", name)
    if not minimum <= value <= maximum:
        raise invalid(f"`{name}` must be between {minimum} and {maximum}.", name)
    return value


def _model_and_messages(body: dict) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise invalid("`model` is required and must be a string.", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("`messages` is required and must be a non-empty array.", "messages")
    if len(messages) > MAX_MESSAGES:
        raise invalid(f"`messages` may hold at most {MAX_MESSAGES} items.", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise invalid(f"`messages[{index}]` must be an object with a `role`.", f"messages[{index}]")
    if "stream" in body and not isinstance(body["stream"], bool) and body["stream"] is not None:
        raise invalid("`stream` must be a boolean.", "stream")


def check_openai_chat(body: dict) -> int | None:
    """Validate an O chat body; returns the requested output cap, if any."""
    _model_and_messages(body)
    _optional_int(body, "n", minimum=1, maximum=16)
    if body.get("stream_options") is not None and not isinstance(body["stream_options"], dict):
        raise invalid("`stream_options` must be an object.", "stream_options")
    return _optional_int(body, "max_completion_tokens", minimum=1, maximum=MAX_OUTPUT_TOKENS) or _optional_int(
        body, "max_tokens", minimum=1, maximum=MAX_OUTPUT_TOKENS
    )


def check_anthropic_messages(body: dict) -> int:
    """Validate an A Messages body; returns max_tokens (required by the protocol)."""
    _model_and_messages(body)
    if body.get("max_tokens") is None:
        raise invalid("`max_tokens` is required.", "max_tokens")
    max_tokens = _optional_int(body, "max_tokens", minimum=1, maximum=MAX_OUTPUT_TOKENS)
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise invalid("`system` must be a string or an array of text blocks.", "system")
    return max_tokens
