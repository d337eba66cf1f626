"""Error shapes and upstream error mapping: PROTOCOLS §5 and edge cases 16–18, 40 (error-shape part)."""

import pytest

from proxy.translate import (
    ErrorKind,
    GatewayError,
    TranslationError,
    anthropic_error_body,
    anthropic_stream_error,
    openai_error_body,
    openai_stream_error,
    upstream_http_error,
    upstream_stream_error,
)

BALANCE = "Insufficient balance: top up to continue."


@pytest.mark.parametrize(
    ("_case", "err", "openai_status", "openai_error", "anthropic_status", "anthropic_error"),
    [
        (
            "bad field with param and code",
            TranslationError("Only n=1 is supported.", param="n", code="unsupported_value"),
            400,
            {
                "message": "Only n=1 is supported.",
                "type": "invalid_request_error",
                "param": "n",
                "code": "unsupported_value",
            },
            400,
            {"type": "invalid_request_error", "message": "Only n=1 is supported."},
        ),
        (
            "edge 40: missing key",
            GatewayError(ErrorKind.AUTHENTICATION, "Missing API key."),
            401,
            {"message": "Missing API key.", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"},
            401,
            {"type": "authentication_error", "message": "Missing API key."},
        ),
        (
            "edge 40 / §5.4: balance exhausted",
            GatewayError(ErrorKind.BILLING, BALANCE, should_retry=False),
            402,
            {"message": BALANCE, "type": "insufficient_quota", "param": None, "code": "insufficient_balance"},
            402,
            {"type": "billing_error", "message": BALANCE},
        ),
        (
            "model not allowed",
            GatewayError(ErrorKind.PERMISSION, "Not allowed."),
            403,
            {"message": "Not allowed.", "type": "permission_error", "param": None, "code": "model_not_allowed"},
            403,
            {"type": "permission_error", "message": "Not allowed."},
        ),
        (
            "unknown model",
            GatewayError(ErrorKind.NOT_FOUND, "No such model.", param="model"),
            404,
            {"message": "No such model.", "type": "invalid_request_error", "param": "model", "code": "model_not_found"},
            404,
            {"type": "not_found_error", "message": "No such model."},
        ),
        (
            "body too large",
            GatewayError(ErrorKind.REQUEST_TOO_LARGE, "Too large."),
            413,
            {"message": "Too large.", "type": "invalid_request_error", "param": None, "code": "request_too_large"},
            413,
            {"type": "request_too_large", "message": "Too large."},
        ),
        (
            "rate limit",
            GatewayError(ErrorKind.RATE_LIMIT, "Slow down.", retry_after=3),
            429,
            {"message": "Slow down.", "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"},
            429,
            {"type": "rate_limit_error", "message": "Slow down."},
        ),
        (
            "gateway bug",
            GatewayError(ErrorKind.API_ERROR, "Internal error."),
            500,
            {"message": "Internal error.", "type": "server_error", "param": None, "code": None},
            500,
            {"type": "api_error", "message": "Internal error."},
        ),
        (
            "upstream unreachable",
            GatewayError(ErrorKind.UPSTREAM_ERROR, "Upstream unreachable."),
            502,
            {"message": "Upstream unreachable.", "type": "server_error", "param": None, "code": "upstream_error"},
            502,
            {"type": "api_error", "message": "Upstream unreachable."},
        ),
        (
            "overloaded: 529 for A clients, 503 for O clients",
            GatewayError(ErrorKind.OVERLOADED, "Overloaded."),
            503,
            {"message": "Overloaded.", "type": "server_error", "param": None, "code": "overloaded"},
            529,
            {"type": "overloaded_error", "message": "Overloaded."},
        ),
        (
            "timeout",
            GatewayError(ErrorKind.TIMEOUT, "Timed out."),
            504,
            {"message": "Timed out.", "type": "server_error", "param": None, "code": "timeout"},
            504,
            {"type": "timeout_error", "message": "Timed out."},
        ),
        (
            "any other 4xx keeps its status",
            GatewayError(ErrorKind.INVALID_REQUEST, "Conflict.", status=409),
            409,
            {"message": "Conflict.", "type": "invalid_request_error", "param": None, "code": None},
            409,
            {"type": "invalid_request_error", "message": "Conflict."},
        ),
    ],
)
def test_error_shapes(_case, err, openai_status, openai_error, anthropic_status, anthropic_error):
    assert (err.status_for("openai"), openai_error_body(err)) == (openai_status, {"error": openai_error})
    assert (err.status_for("anthropic"), anthropic_error_body(err, "req_1")) == (
        anthropic_status,
        {"type": "error", "error": anthropic_error, "request_id": "req_1"},
    )
    assert openai_stream_error(err) == {"error": openai_error}
    assert anthropic_stream_error(err) == {"type": "error", "error": anthropic_error}


CREDENTIALS = "The upstream provider rejected the gateway's credentials; your request is not at fault."


@pytest.mark.parametrize(
    ("_case", "status", "body", "upstream", "retry_after", "expected"),
    [
        (
            "edge 18: A 529 → overloaded (503 to O clients, 529 to A clients)",
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "anthropic",
            None,
            (ErrorKind.OVERLOADED, "Overloaded", None, None, 503, 529, None),
        ),
        (
            "O 503 → overloaded",
            503,
            {
                "error": {
                    "message": "The engine is currently overloaded",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
            "openai",
            7,
            (ErrorKind.OVERLOADED, "The engine is currently overloaded", None, None, 503, 529, 7),
        ),
        (
            "edge 18: 429 keeps retry_after",
            429,
            {
                "error": {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
            "openai",
            12,
            (ErrorKind.RATE_LIMIT, "Rate limit reached", None, None, 429, 429, 12),
        ),
        (
            "O 400 keeps message, param and code",
            400,
            {
                "error": {
                    "message": "Invalid 'temperature'",
                    "type": "invalid_request_error",
                    "param": "temperature",
                    "code": "invalid_value",
                }
            },
            "openai",
            None,
            (ErrorKind.INVALID_REQUEST, "Invalid 'temperature'", "temperature", "invalid_value", 400, 400, None),
        ),
        (
            "A 400 keeps the message",
            400,
            {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: too large"}},
            "anthropic",
            None,
            (ErrorKind.INVALID_REQUEST, "max_tokens: too large", None, None, 400, 400, None),
        ),
        (
            "422 → 400",
            422,
            {"detail": "Unprocessable"},
            "openai",
            None,
            (ErrorKind.INVALID_REQUEST, "Unprocessable", None, None, 400, 400, None),
        ),
        (
            "409 keeps its status",
            409,
            {"type": "error", "error": {"type": "conflict_error", "message": "Conflict"}},
            "anthropic",
            None,
            (ErrorKind.INVALID_REQUEST, "Conflict", None, None, 409, 409, None),
        ),
        (
            "§5.3 step 3: upstream 401 is the gateway's credentials, not the client's",
            401,
            {
                "error": {
                    "message": "Incorrect API key provided: sk-proj-abcdefgh1234",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            "openai",
            None,
            (ErrorKind.UPSTREAM_ERROR, CREDENTIALS, None, None, 502, 502, None),
        ),
        (
            "upstream 403",
            403,
            {"type": "error", "error": {"type": "permission_error", "message": "key lacks access"}},
            "anthropic",
            None,
            (ErrorKind.UPSTREAM_ERROR, CREDENTIALS, None, None, 502, 502, None),
        ),
        (
            "OpenAI's 429 insufficient_quota is the provider account, not a client rate limit",
            429,
            {
                "error": {
                    "message": "You exceeded your current quota",
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                }
            },
            "openai",
            None,
            (
                ErrorKind.UPSTREAM_ERROR,
                "The upstream provider's quota is exhausted; try again later or use another model.",
                None,
                None,
                502,
                502,
                None,
            ),
        ),
        (
            "500 → api_error",
            500,
            {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}},
            "anthropic",
            None,
            (ErrorKind.API_ERROR, "Internal server error", None, None, 500, 500, None),
        ),
        (
            "504 → timeout",
            504,
            None,
            "openai",
            None,
            (ErrorKind.TIMEOUT, "The upstream provider answered HTTP 504.", None, None, 504, 504, None),
        ),
        (
            "other 5xx → bad gateway; hostnames and keys scrubbed",
            502,
            {
                "error": "connect to https://10.0.0.5:8000/v1 failed via api.internal-llm.example.com with key sk-abcdefghijkl"
            },
            "openai",
            None,
            (
                ErrorKind.UPSTREAM_ERROR,
                "connect to [redacted] failed via [redacted] with key [redacted]",
                None,
                None,
                502,
                502,
                None,
            ),
        ),
    ],
)
def test_upstream_http_error(_case, status, body, upstream, retry_after, expected):
    request = {"model": "m", "temperature": 7, "messages": [{"role": "user", "content": "hi"}]}
    err = upstream_http_error(status, body, upstream, retry_after=retry_after, request=request)

    assert (
        err.kind,
        err.message,
        err.param,
        err.code,
        err.status_for("openai"),
        err.status_for("anthropic"),
        err.retry_after,
    ) == expected


@pytest.mark.parametrize(
    ("_case", "payload", "upstream", "expected_kind", "expected_message"),
    [
        (
            "edge 16: A overloaded_error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "anthropic",
            ErrorKind.OVERLOADED,
            "Overloaded",
        ),
        (
            "A rate limit",
            {"type": "error", "error": {"type": "rate_limit_error", "message": "Too many"}},
            "anthropic",
            ErrorKind.RATE_LIMIT,
            "Too many",
        ),
        (
            "A unknown type",
            {"type": "error", "error": {"type": "new_error", "message": "?"}},
            "anthropic",
            ErrorKind.API_ERROR,
            "?",
        ),
        (
            "A authentication error mid-stream blames the gateway",
            {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
            "anthropic",
            ErrorKind.UPSTREAM_ERROR,
            CREDENTIALS,
        ),
        (
            "edge 17: O rate_limit_exceeded code",
            {"error": {"message": "Rate limit", "type": "tokens", "code": "rate_limit_exceeded"}},
            "openai",
            ErrorKind.RATE_LIMIT,
            "Rate limit",
        ),
        (
            "O numeric status in code",
            {"error": {"message": "busy", "code": 503}},
            "openai",
            ErrorKind.OVERLOADED,
            "busy",
        ),
        ("O unknown", {"error": {"message": "odd", "type": "odd"}}, "openai", ErrorKind.API_ERROR, "odd"),
        ("O bare string error", {"error": "boom"}, "openai", ErrorKind.API_ERROR, "boom"),
    ],
)
def test_upstream_stream_error(_case, payload, upstream, expected_kind, expected_message):
    err = upstream_stream_error(payload, upstream)

    assert (err.kind, err.message) == (expected_kind, expected_message)


def test_edge_16_overloaded_mid_stream_renders_as_openai_server_error():
    err = upstream_stream_error(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "anthropic"
    )

    assert openai_stream_error(err) == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded"}
    }


def test_edge_17_rate_limit_mid_stream_renders_as_anthropic_rate_limit_error():
    err = upstream_stream_error({"error": {"message": "Rate limit", "code": "rate_limit_exceeded"}}, "openai")

    assert anthropic_stream_error(err) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Rate limit"},
    }


def test_translation_error_is_a_gateway_error():
    err = TranslationError("bad", param="x")

    assert isinstance(err, GatewayError)
    assert (err.kind, err.param, str(err)) == (ErrorKind.INVALID_REQUEST, "x", "bad")


# -- nothing of an upstream's error reaches a client unchecked (issue 12 item 4) ------------------------------


@pytest.mark.parametrize(
    ("_case", "param", "expected"),
    [
        ("top-level field present", "temperature", "temperature"),
        ("nested path present", "messages[0].content", "messages[0].content"),
        ("OpenAI's spelling", "messages.[0].role", "messages.[0].role"),
        ("index out of range", "messages[3].content", None),
        ("field absent", "top_p", None),
        ("key-shaped", "sk-proj-abcdefghijklmnop1234567890", None),
        ("free text", "the key sk-upstream-test is invalid", None),
        ("empty", "", None),
    ],
)
def test_relayed_param_names_only_fields_of_the_request(_case, param, expected):
    from proxy.translate.errors import relayed_param

    request = {"model": "m", "temperature": 1, "messages": [{"role": "user", "content": "hi"}]}
    assert relayed_param(param, request) == expected
    assert relayed_param(param, None) is None


@pytest.mark.parametrize(
    ("_case", "text", "expected"),
    [
        ("provider key by prefix", "bad key sk-ant-api03-AbCdEf123456", "bad key [redacted]"),
        ("gemini key", "key AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUv", "key [redacted]"),
        ("hex secret", "token 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b here", "token [redacted] here"),
        ("bearer", "got Bearer abc.def", "got [redacted]"),
        ("the route's own key, not key-shaped", "password hunter22 rejected", "password [redacted] rejected"),
        ("model names stay", "model claude-sonnet-4-5-20250929 not found", "model claude-sonnet-4-5-20250929 not found"),
    ],
)
def test_scrub_removes_key_shaped_text_and_the_provider_keys(_case, text, expected):
    from proxy.translate.errors import _scrub

    assert _scrub(text, ("hunter22",)) == expected


def test_an_upstream_code_outside_the_allowlist_is_replaced_by_the_gateways():
    body = {"error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": "sk-secret-12345678"}}
    assert upstream_http_error(400, body, "openai").code is None
    body["error"]["code"] = "context_length_exceeded"
    assert upstream_http_error(400, body, "openai").code == "context_length_exceeded"


def test_a_stream_error_relays_no_param_or_code():
    from proxy.translate.errors import upstream_stream_error

    error = upstream_stream_error({"error": {"message": "x", "type": "server_error", "param": "messages",
                                             "code": "server_error"}}, "openai")  # fmt: skip
    assert (error.param, error.code) == (None, None)
