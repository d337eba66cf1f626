"""Reading and checking client request bodies: bad input gets a clear 4xx in the caller's shape."""

from collections.abc import Callable

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


# -- documented parameters, by type and range (issue 12: a provider rejects them; the gateway must
# not forward and bill them). Each check takes a value and returns what is wrong with it, or None.
# Fields a protocol does not document here are not checked (and forwarded as before when allowed).
Check = Callable[[object], str | None]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(minimum: float, maximum: float) -> Check:
    def check(value: object) -> str | None:
        if not _is_number(value):
            return "must be a number"
        return None if minimum <= value <= maximum else f"must be between {minimum:g} and {maximum:g}"

    return check


def integer(minimum: int, maximum: int = MAX_OUTPUT_TOKENS) -> Check:
    def check(value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        return None if minimum <= value <= maximum else f"must be between {minimum} and {maximum}"

    return check


def boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else "must be a boolean"


def string(value: object) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def obj(value: object) -> str | None:
    return None if isinstance(value, dict) else "must be an object"


def one_of(*values: str) -> Check:
    def check(value: object) -> str | None:
        return None if isinstance(value, str) and value in values else "must be one of " + ", ".join(values)

    return check


def array_of(item: Check, *, max_items: int | None = None) -> Check:
    def check(value: object) -> str | None:
        if not isinstance(value, list):
            return "must be an array"
        if max_items is not None and len(value) > max_items:
            return f"may hold at most {max_items} items"
        for entry in value:
            if (problem := item(entry)) is not None:
                return "items " + problem
        return None

    return check


def either(*checks: Check, expected: str) -> Check:
    def check(value: object) -> str | None:
        return None if any(c(value) is None for c in checks) else expected

    return check


def object_with(**fields: Check) -> Check:
    """An object whose named fields are checked when present (and not null)."""

    def check(value: object) -> str | None:
        if not isinstance(value, dict):
            return "must be an object"
        for name, field_check in fields.items():
            if value.get(name) is not None and (problem := field_check(value[name])) is not None:
                return f"`{name}` {problem}"
        return None

    return check


def typed_object(types: tuple[str, ...] | None = None, **fields: Check) -> Check:
    """An object with a string `type` (one of `types` when given), its named fields checked when present."""
    inner = object_with(**fields)

    def check(value: object) -> str | None:
        if not isinstance(value, dict) or not isinstance(value.get("type"), str):
            return "must be an object with a `type`"
        if types is not None and value["type"] not in types:
            return "must have `type` " + " or ".join(types)
        return inner(value)

    return check


def string_map(max_pairs: int) -> Check:
    def check(value: object) -> str | None:
        if not isinstance(value, dict):
            return "must be an object"
        if len(value) > max_pairs:
            return f"may hold at most {max_pairs} pairs"
        return None if all(isinstance(v, str) for v in value.values()) else "values must be strings"

    return check


def _tool_has_name(value: object) -> str | None:
    if not isinstance(value, dict):
        return "must be objects"
    if value.get("type", "function") == "function":
        function = value.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return "of type function must have `function.name`"
    elif not isinstance(value.get("type"), str):
        return "must have a string `type`"
    return None


def _anthropic_tool(value: object) -> str | None:
    if not isinstance(value, dict):
        return "must be objects"
    if not isinstance(value.get("name"), str) and not isinstance(value.get("type"), str):
        return "must have a `name`"
    if value.get("input_schema") is not None and not isinstance(value["input_schema"], dict):
        return "`input_schema` must be an object"
    return None


def _anthropic_thinking(value: object) -> str | None:
    if not isinstance(value, dict) or value.get("type") not in ("enabled", "disabled", "adaptive"):
        return "must be an object with `type` enabled, disabled or adaptive"
    if value["type"] == "enabled":
        budget = value.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int) or not 1024 <= budget <= MAX_OUTPUT_TOKENS:
            return "`budget_tokens` must be an integer of at least 1024"
    return None


def _anthropic_tool_choice(value: object) -> str | None:
    if not isinstance(value, dict) or value.get("type") not in ("auto", "any", "none", "tool"):
        return "must be an object with `type` auto, any, none or tool"
    if value["type"] == "tool" and not isinstance(value.get("name"), str):
        return "of type tool must name the tool"
    if value.get("disable_parallel_tool_use") is not None and not isinstance(value["disable_parallel_tool_use"], bool):
        return "`disable_parallel_tool_use` must be a boolean"
    return None


_STRINGS = array_of(string)
_BLOCKS = array_of(typed_object())

# PROTOCOLS §1.1
OPENAI_CHAT_CHECKS: dict[str, Check] = {
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "stop": either(string, array_of(string, max_items=4), expected="must be a string or an array of at most 4 strings"),
    "stream_options": object_with(include_usage=boolean, include_obfuscation=boolean),
    "presence_penalty": number(-2, 2),
    "frequency_penalty": number(-2, 2),
    "seed": integer(-(2**63), 2**64),
    "logit_bias": either(obj, expected="must be an object"),
    "logprobs": boolean,
    "top_logprobs": integer(0, 20),
    "parallel_tool_calls": boolean,
    "tools": array_of(_tool_has_name),
    "tool_choice": either(
        one_of("none", "auto", "required"),
        typed_object(),
        expected="must be none, auto, required or an object with a `type`",
    ),
    "response_format": typed_object(("text", "json_object", "json_schema"), json_schema=obj),
    "reasoning_effort": one_of("none", "minimal", "low", "medium", "high", "xhigh", "max"),
    "verbosity": one_of("low", "medium", "high"),
    "user": string,
    "safety_identifier": string,
    "prompt_cache_key": string,
    "metadata": string_map(16),
    "service_tier": string,
    "store": boolean,
    "modalities": _STRINGS,
    "audio": obj,
    "prediction": obj,
    "web_search_options": obj,
    "functions": array_of(obj),
    "function_call": either(string, obj, expected="must be a string or an object"),
}

# PROTOCOLS §1.5 (plus what Claude Code sends: `context_management`, `system`-role messages)
ANTHROPIC_MESSAGES_CHECKS: dict[str, Check] = {
    "temperature": number(0, 1),
    "top_p": number(0, 1),
    "top_k": integer(0),
    "stop_sequences": _STRINGS,
    "system": either(string, _BLOCKS, expected="must be a string or an array of text blocks"),
    "tools": array_of(_anthropic_tool),
    "tool_choice": _anthropic_tool_choice,
    "thinking": _anthropic_thinking,
    "output_config": object_with(effort=one_of("low", "medium", "high", "xhigh", "max"), format=obj),
    "metadata": object_with(user_id=string),
    "service_tier": one_of("auto", "standard_only"),
    "context_management": obj,
}

OPENAI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
ANTHROPIC_ROLES = frozenset({"user", "assistant", "system"})


def _check_fields(body: dict, checks: dict[str, Check]) -> None:
    for name, check in checks.items():
        value = body.get(name)
        if value is not None and (problem := check(value)) is not None:
            raise invalid(f"`{name}` {problem}.", name)


def _content_ok(content: object) -> bool:
    return isinstance(content, str) or (
        isinstance(content, list)
        and all(isinstance(part, dict) and isinstance(part.get("type"), str) for part in content)
    )


def _check_openai_message(index: int, message: dict) -> None:
    where = f"messages[{index}]"
    role = message["role"]
    if role not in OPENAI_ROLES:
        raise invalid(f"`{where}.role` must be one of " + ", ".join(sorted(OPENAI_ROLES)) + ".", f"{where}.role")
    content = message.get("content")
    if role == "assistant":
        # content may be null or absent when the turn calls tools (or a legacy function), or is audio or a refusal
        if content is None and not any(
            message.get(name) for name in ("tool_calls", "function_call", "audio", "refusal")
        ):
            raise invalid(f"`{where}` needs `content` or `tool_calls`.", f"{where}.content")
        if message.get("tool_calls") is not None and not isinstance(message["tool_calls"], list):
            raise invalid(f"`{where}.tool_calls` must be an array.", f"{where}.tool_calls")
    elif content is None:
        raise invalid(f"`{where}.content` is required.", f"{where}.content")
    if content is not None and not _content_ok(content):
        raise invalid(f"`{where}.content` must be a string or an array of content parts.", f"{where}.content")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise invalid(f"`{where}.tool_call_id` is required.", f"{where}.tool_call_id")


def _check_anthropic_message(index: int, message: dict) -> None:
    where = f"messages[{index}]"
    if message["role"] not in ANTHROPIC_ROLES:
        raise invalid(f"`{where}.role` must be user or assistant.", f"{where}.role")
    if "content" not in message:
        raise invalid(f"`{where}.content` is required.", f"{where}.content")
    if not _content_ok(message["content"]):
        raise invalid(f"`{where}.content` must be a string or an array of content blocks.", f"{where}.content")


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
    """Validate an O chat body (every documented parameter by type and range); returns the requested
    output cap, if any."""
    _model_and_messages(body)
    for index, message in enumerate(body["messages"]):
        _check_openai_message(index, message)
    _optional_int(body, "n", minimum=1, maximum=16)
    _check_fields(body, OPENAI_CHAT_CHECKS)
    return _optional_int(body, "max_completion_tokens", minimum=1, maximum=MAX_OUTPUT_TOKENS) or _optional_int(
        body, "max_tokens", minimum=1, maximum=MAX_OUTPUT_TOKENS
    )


def check_anthropic_messages(body: dict) -> int:
    """Validate an A Messages body (every documented parameter by type and range); returns max_tokens
    (required by the protocol)."""
    _model_and_messages(body)
    for index, message in enumerate(body["messages"]):
        _check_anthropic_message(index, message)
    if body.get("max_tokens") is None:
        raise invalid("`max_tokens` is required.", "max_tokens")
    max_tokens = _optional_int(body, "max_tokens", minimum=1, maximum=MAX_OUTPUT_TOKENS)
    _check_fields(body, ANTHROPIC_MESSAGES_CHECKS)
    return max_tokens
