"""Errors in the caller's shape and status (PROTOCOLS §5), and never a debit for them: auth, balance, unknown
model, bad bodies, upstream failures before any byte, and mid-stream failures (billed only for what was made)."""

import anthropic
import openai
import pytest

from conftest import make_tenant
from proxy.tests.integration.helpers import (
    assert_not_debited,
    bearer,
    raw_client,
    stream_raw,
    token_cost_nanos,
    upstream_tokens,
    usage_events,
    wait_for_usage_events,
)
from proxy.tests.mock_upstream import Script

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

HELLO = [{"role": "user", "content": "hello there"}]
MODELS = ["gpt-test", "claude-test"]
UPSTREAM_PATH = {"gpt-test": "/v1/chat/completions", "claude-test": "/v1/messages"}
PROVIDER = {"gpt-test": "openai", "claude-test": "anthropic"}


def _openai_error(exc) -> dict:
    """The O error object (the SDK's `body` is the inner `error`)."""
    assert set(exc.body) == {"message", "type", "param", "code"}, exc.body
    return exc.body


def _anthropic_error(exc) -> dict:
    body = exc.body
    assert body["type"] == "error"
    assert body["request_id"] == exc.response.headers["request-id"]
    assert body["request_id"].startswith("req_")
    return body["error"]


def _assert_nothing_recorded_or_charged(gateway) -> None:
    """A request refused before any upstream call: no upstream request, no debit, no money on hold."""
    assert gateway.mock.requests == []
    assert_not_debited(gateway.tenant)


def _assert_failure_recorded_without_debit(gateway, status: int) -> None:
    """An upstream failure before any byte: recorded as a failed event of cost 0, nothing debited."""
    events = usage_events(gateway.tenant)
    assert [(event.status_code, event.cost_nanos) for event in events] == [(status, 0)]
    assert_not_debited(gateway.tenant)


# -- authentication --------------------------------------------------------------------------------------------


def test_openai_bad_key_is_401_in_openai_shape(gateway):
    # when
    with pytest.raises(openai.AuthenticationError) as excinfo:
        gateway.openai(api_key="sk-ru-not-a-key").chat.completions.create(model="gpt-test", messages=HELLO)

    # then
    error = _openai_error(excinfo.value)
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_api_key", None)
    assert excinfo.value.response.headers["x-request-id"].startswith("req_")
    _assert_nothing_recorded_or_charged(gateway)


@pytest.mark.parametrize(
    ("case", "path", "headers", "status"),
    [
        ("O: no key", "/v1/chat/completions", {}, 401),
        ("O: x-api-key is not accepted", "/v1/chat/completions", "x-api-key", 401),
        ("A: x-api-key only", "/v1/messages", "x-api-key", 200),
        ("A: Bearer only", "/v1/messages", "bearer", 200),
        ("A: neither", "/v1/messages", {}, 401),
        ("A: bad x-api-key wins over a good Bearer", "/v1/messages", "bad x-api-key + bearer", 401),
        ("A: good x-api-key wins over a bad Bearer", "/v1/messages", "x-api-key + bad bearer", 200),
    ],
)
def test_auth_headers(gateway, case, path, headers, status):
    # given
    secret = gateway.tenant.secret
    headers = {
        "x-api-key": {"x-api-key": secret},
        "bearer": {"Authorization": f"Bearer {secret}"},
        "bad x-api-key + bearer": {"x-api-key": "sk-ru-wrong", "Authorization": f"Bearer {secret}"},
        "x-api-key + bad bearer": {"x-api-key": secret, "Authorization": "Bearer sk-ru-wrong"},
    }.get(headers, headers) if isinstance(headers, str) else headers  # fmt: skip
    body = {"model": "claude-test", "messages": HELLO, "max_tokens": 20}

    # when
    with raw_client(gateway) as client:
        response = client.post(path, json=body, headers=headers)

    # then
    assert response.status_code == status
    if status == 200:
        assert response.json()["content"][0]["text"] == "Echo: hello there"
        return
    if path == "/v1/messages":
        assert response.json() == {
            "type": "error",
            "error": {"type": "authentication_error", "message": response.json()["error"]["message"]},
            "request_id": response.headers["request-id"],
        }
    else:
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert response.json()["error"]["code"] == "invalid_api_key"
    _assert_nothing_recorded_or_charged(gateway)


@pytest.mark.parametrize("credentials", ["api_key", "auth_token"])
def test_anthropic_sdk_authenticates_with_either_credential(gateway, credentials):
    # when: the SDK sends X-Api-Key for api_key and Authorization: Bearer for auth_token
    client = gateway.anthropic(**{"api_key": None, credentials: gateway.tenant.secret})
    message = client.messages.create(model="claude-test", max_tokens=20, messages=HELLO)

    # then
    assert message.content[0].text == "Echo: hello there"


def test_anthropic_sdk_bad_key_is_401_in_anthropic_shape(gateway):
    # when
    with pytest.raises(anthropic.AuthenticationError) as excinfo:
        gateway.anthropic(api_key="sk-ru-wrong").messages.create(model="gpt-test", max_tokens=20, messages=HELLO)

    # then
    assert _anthropic_error(excinfo.value)["type"] == "authentication_error"
    _assert_nothing_recorded_or_charged(gateway)


# -- balance ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "model"), [("openai", "claude-test"), ("anthropic", "gpt-test")])
def test_balance_that_cannot_cover_the_hold_is_402(gateway, protocol, model):
    # given
    poor = make_tenant("Poor", credit="0.000001")

    # when
    with pytest.raises(openai.APIStatusError if protocol == "openai" else anthropic.APIStatusError) as excinfo:
        if protocol == "openai":
            gateway.openai(api_key=poor.secret).chat.completions.create(model=model, messages=HELLO)
        else:
            gateway.anthropic(api_key=poor.secret).messages.create(model=model, max_tokens=20, messages=HELLO)

    # then: §5.4 shapes, not retried
    response = excinfo.value.response
    assert response.status_code == 402
    assert response.headers["x-should-retry"] == "false"
    if protocol == "openai":
        assert _openai_error(excinfo.value) == {
            "message": "Insufficient balance: top up to continue.",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_balance",
        }
    else:
        assert _anthropic_error(excinfo.value) == {
            "type": "billing_error",
            "message": "Insufficient balance: top up to continue.",
        }
    assert gateway.mock.requests == []
    assert_not_debited(poor, start=1_000)


# -- bad requests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_is_404_in_each_shape(gateway, stream):
    # when
    with pytest.raises(openai.NotFoundError) as o_error:
        gateway.openai().chat.completions.create(model="no-such-model", messages=HELLO, stream=stream)
    with pytest.raises(anthropic.NotFoundError) as a_error:
        gateway.anthropic().messages.create(model="no-such-model", max_tokens=20, messages=HELLO, stream=stream)

    # then
    error = _openai_error(o_error.value)
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "model_not_found", "model")
    assert _anthropic_error(a_error.value)["type"] == "not_found_error"
    _assert_nothing_recorded_or_charged(gateway)


@pytest.mark.parametrize(
    ("case", "path", "content", "param"),
    [
        ("O: malformed JSON", "/v1/chat/completions", b'{"model": "gpt-test", "messages": [', None),
        ("A: malformed JSON", "/v1/messages", b'{"model": "claude-test", "max_tokens": 5,', None),
        ("O: not an object", "/v1/chat/completions", b"[1, 2]", None),
        ("A: missing max_tokens", "/v1/messages",
         b'{"model": "claude-test", "messages": [{"role": "user", "content": "hi"}]}', "max_tokens"),
        ("O: empty messages", "/v1/chat/completions", b'{"model": "gpt-test", "messages": []}', "messages"),
        ("O: embedding model on chat", "/v1/chat/completions",
         b'{"model": "embed-test", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    ],
)  # fmt: skip
def test_bad_request_bodies_are_400(gateway, case, path, content, param):
    # when
    headers = {**bearer(gateway), "Content-Type": "application/json"}
    with raw_client(gateway) as client:
        response = client.post(path, content=content, headers=headers)

    # then
    assert response.status_code == 400
    body = response.json()
    if path == "/v1/messages":
        assert set(body) == {"type", "error", "request_id"}
        assert body["error"]["type"] == "invalid_request_error"
    else:
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["param"] == param
    assert response.headers["x-request-id"].startswith("req_")
    _assert_nothing_recorded_or_charged(gateway)


# -- upstream failures before any byte -------------------------------------------------------------------------


def _enqueue_error(gateway, model: str, status: int, **kwargs) -> None:
    gateway.mock.enqueue(UPSTREAM_PATH[model], Script.error(status, provider=PROVIDER[model], **kwargs))


def _call(gateway, protocol: str, model: str, *, stream: bool = False):
    if protocol == "openai":
        result = gateway.openai().chat.completions.create(model=model, messages=HELLO, stream=stream)
    else:
        result = gateway.anthropic().messages.create(model=model, max_tokens=20, messages=HELLO, stream=stream)
    if stream:
        list(result)
    return result


@pytest.mark.parametrize(
    ("case", "protocol", "model", "stream"),
    [
        ("O->O", "openai", "gpt-test", False),
        ("O->A stream", "openai", "claude-test", True),
        ("A->O stream", "anthropic", "gpt-test", True),
        ("A->A", "anthropic", "claude-test", False),
    ],
)
def test_upstream_429_is_429_with_retry_after(gateway, case, protocol, model, stream):
    # given
    _enqueue_error(gateway, model, 429, message="Slow down please", retry_after=7)

    # when (G4: a stream that fails before its first byte is a plain HTTP error)
    with pytest.raises(openai.RateLimitError if protocol == "openai" else anthropic.RateLimitError) as excinfo:
        _call(gateway, protocol, model, stream=stream)

    # then
    response = excinfo.value.response
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["content-type"].startswith("application/json")
    if protocol == "openai":
        error = _openai_error(excinfo.value)
        assert (error["type"], error["code"], error["message"]) == (
            "rate_limit_error",
            "rate_limit_exceeded",
            "Slow down please",
        )
    else:
        assert _anthropic_error(excinfo.value) == {"type": "rate_limit_error", "message": "Slow down please"}
    _assert_failure_recorded_without_debit(gateway, 429)


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
@pytest.mark.parametrize(("model", "upstream_status"), [("gpt-test", 503), ("claude-test", 529)])
def test_upstream_overloaded_is_503_for_openai_clients_and_529_for_anthropic_clients(
    gateway, model, upstream_status, protocol
):
    # given
    _enqueue_error(gateway, model, upstream_status, message="Overloaded", retry_after=3)

    # when
    with pytest.raises(openai.APIStatusError if protocol == "openai" else anthropic.APIStatusError) as excinfo:
        _call(gateway, protocol, model)

    # then
    response = excinfo.value.response
    expected_status = 503 if protocol == "openai" else 529
    assert response.status_code == expected_status
    assert response.headers["retry-after"] == "3"
    if protocol == "openai":
        error = _openai_error(excinfo.value)
        assert (error["type"], error["code"]) == ("server_error", "overloaded")
    else:
        assert isinstance(excinfo.value, anthropic.OverloadedError)
        assert _anthropic_error(excinfo.value)["type"] == "overloaded_error"
    _assert_failure_recorded_without_debit(gateway, expected_status)


@pytest.mark.parametrize(("model", "status"), [("gpt-test", 429), ("claude-test", 529)])
def test_retry_after_is_sent_even_when_the_upstream_gave_none(gateway, model, status):
    # given
    _enqueue_error(gateway, model, status)

    # when
    with raw_client(gateway) as client:
        response = client.post(
            "/v1/messages", json={"model": model, "max_tokens": 20, "messages": HELLO}, headers=bearer(gateway)
        )

    # then
    assert response.status_code == status
    assert "retry-after" in response.headers


@pytest.mark.parametrize(
    ("case", "model", "upstream_status", "stream", "o_status", "o_type", "a_status", "a_type"),
    [
        ("O upstream 500", "gpt-test", 500, False, 500, "server_error", 500, "api_error"),
        ("A upstream 500, streaming", "claude-test", 500, True, 500, "server_error", 500, "api_error"),
        ("O upstream 502, streaming", "gpt-test", 502, True, 502, "server_error", 502, "api_error"),
        ("A upstream 401: the gateway's credentials", "claude-test", 401, False, 502, "server_error", 502, "api_error"),
        ("O upstream 403: the gateway's credentials", "gpt-test", 403, True, 502, "server_error", 502, "api_error"),
    ],
)
def test_upstream_errors_before_any_byte(
    gateway, case, model, upstream_status, stream, o_status, o_type, a_status, a_type
):
    # given: one failure per client request
    _enqueue_error(gateway, model, upstream_status, message="internal failure at https://internal.example/x")
    _enqueue_error(gateway, model, upstream_status, message="internal failure at https://internal.example/x")

    # when
    with pytest.raises(openai.APIStatusError) as o_error:
        _call(gateway, "openai", model, stream=stream)
    with pytest.raises(anthropic.APIStatusError) as a_error:
        _call(gateway, "anthropic", model, stream=stream)

    # then: the client's shape; upstream hostnames never leak (§5.3 step 2)
    assert (o_error.value.status_code, _openai_error(o_error.value)["type"]) == (o_status, o_type)
    assert (a_error.value.status_code, _anthropic_error(a_error.value)["type"]) == (a_status, a_type)
    for message in (o_error.value.body["message"], a_error.value.body["error"]["message"]):
        assert "internal.example" not in message
    assert len(gateway.mock.requests) == 2
    assert sorted(event.status_code for event in usage_events(gateway.tenant)) == sorted([o_status, a_status])
    assert {event.cost_nanos for event in usage_events(gateway.tenant)} == {0}
    assert_not_debited(gateway.tenant)


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_upstream_400_keeps_its_message_and_status(gateway, protocol):
    # given
    _enqueue_error(gateway, "gpt-test", 400, message="messages[0]: bad role", param="messages")

    # when
    with pytest.raises(openai.BadRequestError if protocol == "openai" else anthropic.BadRequestError) as excinfo:
        _call(gateway, protocol, "gpt-test")

    # then
    if protocol == "openai":
        assert _openai_error(excinfo.value)["message"] == "messages[0]: bad role"
        assert _openai_error(excinfo.value)["param"] == "messages"
    else:
        assert _anthropic_error(excinfo.value) == {"type": "invalid_request_error", "message": "messages[0]: bad role"}
    _assert_failure_recorded_without_debit(gateway, 400)


# -- failures mid-stream ---------------------------------------------------------------------------------------


def _o_chunk(delta: dict, finish_reason=None) -> tuple:
    return None, {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-upstream-1",
                  "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}  # fmt: skip


def _a_event(name: str, **fields) -> tuple:
    return name, {"type": name, **fields}


O_PARTIAL = [_o_chunk({"role": "assistant", "content": ""}), _o_chunk({"content": "Hello "}),
             _o_chunk({"content": "wonderful "}), _o_chunk({"content": "world"})]  # fmt: skip
A_PARTIAL = [
    _a_event("message_start", message={
        "id": "msg_up", "type": "message", "role": "assistant", "model": "claude-upstream-1", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 0}}),
    _a_event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
    _a_event("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hello "}),
    _a_event("content_block_delta", index=0, delta={"type": "text_delta", "text": "wonderful "}),
    _a_event("content_block_delta", index=0, delta={"type": "text_delta", "text": "world"}),
]  # fmt: skip


def _partial_script(model: str, tail: list | None = None) -> Script:
    events = list(O_PARTIAL if model == "gpt-test" else A_PARTIAL)
    if tail is None:
        return Script(sse=events, drop_after=len(events))  # the connection breaks after the last one
    return Script(sse=events + tail)


def _stream_request(protocol: str, model: str) -> tuple[str, dict]:
    body = {"model": model, "messages": HELLO, "stream": True}
    if protocol == "anthropic":
        body["max_tokens"] = 200
        return "/v1/messages", body
    return "/v1/chat/completions", body


def _produced_text(protocol: str, events: list) -> str:
    if protocol == "openai":
        return "".join(d["choices"][0]["delta"].get("content") or "" for _, d in events if isinstance(d, dict) and
                       d.get("choices"))  # fmt: skip
    return "".join(d["delta"].get("text", "") for name, d in events if name == "content_block_delta")


def _assert_stream_ended_with_error(protocol: str, events: list) -> dict:
    """The protocol's mid-stream error form, last, with no success marker anywhere (§5.1, §5.3 step 4)."""
    if protocol == "openai":
        name, data = events[-1]
        assert name is None
        assert set(data) == {"error"}
        assert (None, "[DONE]") not in events
        assert set(data["error"]) == {"message", "type", "param", "code"}
        return data["error"]
    name, data = events[-1]
    assert name == "error"
    assert data["type"] == "error"
    assert "message_stop" not in [event_name for event_name, _ in events]
    return data["error"]


def _assert_partial_billing(gateway, model: str, *, input_tokens: int | None) -> None:
    """One debit for what was produced: estimated, at the catalog price of the counts recorded."""
    (event,) = wait_for_usage_events(gateway.tenant)
    assert event.is_estimated
    assert event.status_code >= 500
    assert 1 <= event.output_tokens <= 10  # "Hello wonderful world", not the hold's maximum
    if input_tokens is not None:
        assert event.input_tokens == input_tokens  # message_start's real count
    from proxy.tests.integration.helpers import event_tokens

    cost = token_cost_nanos(model, event_tokens(event))
    assert cost > 0
    assert event.cost_nanos == cost
    from billing.models import Balance, LedgerEntry

    assert list(LedgerEntry.objects.filter(org_id=gateway.tenant.org.id, kind="usage").values_list(
        "amount_nanos", flat=True)) == [-cost]  # fmt: skip
    balance = Balance.objects.get(org_id=gateway.tenant.org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (10_000_000_000 - cost, 0)


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
@pytest.mark.parametrize("model", MODELS)
def test_upstream_connection_drop_mid_stream(gateway, model, protocol):
    # given
    gateway.mock.enqueue(UPSTREAM_PATH[model], _partial_script(model))

    # when
    path, body = _stream_request(protocol, model)
    response, events = stream_raw(gateway, path, body)

    # then: what was produced reached the client, then the protocol's error form
    assert response.status_code == 200
    assert _produced_text(protocol, events) == "Hello wonderful world"
    error = _assert_stream_ended_with_error(protocol, events)
    assert error["type"] == ("server_error" if protocol == "openai" else "api_error")
    _assert_partial_billing(gateway, model, input_tokens=12 if model == "claude-test" else None)


@pytest.mark.parametrize(("protocol", "model"), [("openai", "claude-test"), ("anthropic", "gpt-test")])
def test_upstream_stream_ending_without_its_end_marker(gateway, protocol, model):
    # given: a clean EOF, but no finish_reason / message_stop (edge case 11)
    gateway.mock.enqueue(UPSTREAM_PATH[model], _partial_script(model, tail=[]))

    # when
    path, body = _stream_request(protocol, model)
    _, events = stream_raw(gateway, path, body)

    # then
    assert _produced_text(protocol, events) == "Hello wonderful world"
    _assert_stream_ended_with_error(protocol, events)
    _assert_partial_billing(gateway, model, input_tokens=12 if model == "claude-test" else None)


@pytest.mark.parametrize(
    ("case", "model", "tail", "o_error", "a_type"),
    [
        ("A upstream overloaded_error (edge 16)", "claude-test",
         [_a_event("error", error={"type": "overloaded_error", "message": "Overloaded"})],
         ("server_error", "overloaded"), "overloaded_error"),
        ("O upstream rate limit error chunk (edge 17)", "gpt-test",
         [(None, {"error": {"message": "Rate limited", "type": "rate_limit_error", "param": None,
                            "code": "rate_limit_exceeded"}})],
         ("rate_limit_error", "rate_limit_exceeded"), "rate_limit_error"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_upstream_error_event_mid_stream(gateway, protocol, case, model, tail, o_error, a_type):
    # given
    gateway.mock.enqueue(UPSTREAM_PATH[model], _partial_script(model, tail=tail))

    # when
    path, body = _stream_request(protocol, model)
    _, events = stream_raw(gateway, path, body)

    # then
    assert _produced_text(protocol, events) == "Hello wonderful world"
    error = _assert_stream_ended_with_error(protocol, events)
    if protocol == "openai":
        assert (error["type"], error["code"]) == o_error
    else:
        assert error["type"] == a_type
    (event,) = wait_for_usage_events(gateway.tenant)
    assert event.output_tokens >= 1
    assert event.cost_nanos == token_cost_nanos(model, _tokens(event))


def _tokens(event):
    from proxy.tests.integration.helpers import event_tokens

    return event_tokens(event)


@pytest.mark.parametrize("model", MODELS)
def test_sdks_raise_on_a_mid_stream_error(gateway, model):
    # given
    gateway.mock.enqueue(UPSTREAM_PATH[model], _partial_script(model))
    gateway.mock.enqueue(UPSTREAM_PATH[model], _partial_script(model))

    # when / then: the OpenAI SDK raises on a top-level `error` chunk, the Anthropic SDK on `event: error`
    received = []
    with pytest.raises(openai.APIError):
        for chunk in gateway.openai().chat.completions.create(model=model, messages=HELLO, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Hello wonderful world"
    with (
        pytest.raises(anthropic.APIStatusError),
        gateway.anthropic().messages.stream(model=model, max_tokens=200, messages=HELLO) as stream,
    ):
        for _ in stream.text_stream:
            pass
    assert len(wait_for_usage_events(gateway.tenant, count=2)) == 2


@pytest.mark.parametrize(
    ("case", "model", "script"),
    [
        ("O upstream: 200 with an error body", "gpt-test",
         Script(json={"error": {"message": "oops", "type": "server_error", "param": None, "code": None}})),
        ("A upstream: 200 with an error body", "claude-test",
         Script(json={"type": "error", "error": {"type": "api_error", "message": "oops"}})),
        ("A upstream: 200 that is not JSON", "claude-test", Script(raw=b"<html>proxy error</html>")),
    ],
)  # fmt: skip
@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_upstream_200_without_a_valid_answer_is_502(gateway, protocol, case, model, script):
    # given
    gateway.mock.enqueue(UPSTREAM_PATH[model], script)

    # when
    with pytest.raises(openai.APIStatusError if protocol == "openai" else anthropic.APIStatusError) as excinfo:
        _call(gateway, protocol, model)

    # then
    assert excinfo.value.status_code == 502
    if protocol == "openai":
        assert _openai_error(excinfo.value)["type"] == "server_error"
    else:
        assert _anthropic_error(excinfo.value)["type"] == "api_error"
    _assert_failure_recorded_without_debit(gateway, 502)


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_stream_that_breaks_before_any_upstream_event_is_not_debited(gateway, protocol):
    # given: the upstream answers 200 and then drops the connection before its first event
    gateway.mock.enqueue("/v1/chat/completions", Script(sse=[(None, {"never": "sent"})], drop_after=0))

    # when
    path, body = _stream_request(protocol, "gpt-test")
    response, events = stream_raw(gateway, path, body)

    # then: the client got nothing but the error form, and pays nothing
    assert response.status_code == 200
    assert _produced_text(protocol, events) == ""
    _assert_stream_ended_with_error(protocol, events)
    (event,) = wait_for_usage_events(gateway.tenant)
    assert event.output_tokens == 0
    assert event.cost_nanos == 0
    assert_not_debited(gateway.tenant)


@pytest.mark.parametrize(
    ("case", "headers", "expected"),
    [
        ("OpenAI shape by default", {}, "openai"),
        ("Anthropic shape with anthropic-version", {"anthropic-version": "2023-06-01"}, "anthropic"),
    ],
)
def test_unknown_endpoint_is_404_in_the_requested_shape(gateway, case, headers, expected):
    # when
    with raw_client(gateway) as client:
        response = client.post("/v1/no/such/endpoint", json={}, headers={**bearer(gateway), **headers})

    # then
    assert response.status_code == 404
    if expected == "openai":
        assert response.json()["error"]["type"] == "invalid_request_error"
    else:
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] == "not_found_error"


# -- timeouts, unreachable upstreams, fallback -----------------------------------------------------------------


def _reload_catalog(gateway, *, provider_options: dict | None = None, providers=(), models=()) -> None:
    """The fixture's catalog with some provider fields changed and extra providers/models."""
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate
    from conftest import mock_catalog

    data = mock_catalog(gateway.mock)
    for provider in data["providers"]:
        provider.update((provider_options or {}).get(provider["name"], {}))
    data["providers"] += list(providers)
    data["models"] += list(models)
    catalog_load(data)
    catalog_invalidate()


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_upstream_that_does_not_answer_in_time_is_504(gateway, protocol):
    # given: a provider whose read timeout is shorter than the upstream's silence
    _reload_catalog(gateway, provider_options={"mock-anthropic": {"read_timeout": 0.3}})
    gateway.mock.enqueue("/v1/messages", Script(json={"never": "read"}, first_byte_delay=2))

    # when
    with pytest.raises(openai.APIStatusError if protocol == "openai" else anthropic.APIStatusError) as excinfo:
        _call(gateway, protocol, "claude-test")

    # then (§5.2: upstream timeout)
    assert excinfo.value.status_code == 504
    if protocol == "openai":
        error = _openai_error(excinfo.value)
        assert (error["type"], error["code"]) == ("server_error", "timeout")
    else:
        assert _anthropic_error(excinfo.value)["type"] == "timeout_error"
    _assert_failure_recorded_without_debit(gateway, 504)


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_upstream_stalling_mid_stream_ends_the_stream_with_an_error(gateway, protocol):
    # given
    _reload_catalog(gateway, provider_options={"mock-openai": {"read_timeout": 0.3}})
    gateway.mock.enqueue(
        "/v1/chat/completions", Script(sse=[*O_PARTIAL, _o_chunk({}, "stop")], stall_after=len(O_PARTIAL))
    )

    # when
    path, body = _stream_request(protocol, "gpt-test")
    _, events = stream_raw(gateway, path, body)

    # then: what was produced, then a timeout error; billed for that part only
    assert _produced_text(protocol, events) == "Hello wonderful world"
    error = _assert_stream_ended_with_error(protocol, events)
    assert error["type"] == ("server_error" if protocol == "openai" else "timeout_error")
    _assert_partial_billing(gateway, "gpt-test", input_tokens=None)
    assert gateway.mock.wait_for_disconnect(timeout=3)  # the stalled upstream request was abandoned


def test_unreachable_upstream_is_502(gateway):
    # given: a provider nobody listens for
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    _reload_catalog(
        gateway,
        providers=[{"name": "dead", "kind": "openai", "base_url": f"http://127.0.0.1:{dead_port}/v1", "api_key": "x"}],
        models=[{"name": "dead-test", "provider": "dead", "upstream_model": "m", "input": "1", "output": "1"}],
    )

    # when
    with pytest.raises(openai.APIStatusError) as o_error:
        gateway.openai().chat.completions.create(model="dead-test", messages=HELLO)
    with pytest.raises(anthropic.APIStatusError) as a_error:
        gateway.anthropic().messages.create(model="dead-test", max_tokens=20, messages=HELLO)

    # then
    assert (o_error.value.status_code, _openai_error(o_error.value)["code"]) == (502, "upstream_error")
    assert (a_error.value.status_code, _anthropic_error(a_error.value)["type"]) == (502, "api_error")
    assert sorted(event.status_code for event in usage_events(gateway.tenant)) == [502, 502]
    assert_not_debited(gateway.tenant)


def test_failed_route_falls_back_to_the_next_one_across_protocols(gateway):
    # given: an O route that answers 500, then an A route
    _reload_catalog(
        gateway,
        models=[{"name": "fallback-test", "input": "3", "output": "15", "routes": [
            {"provider": "mock-openai", "upstream_model": "gpt-upstream-1", "priority": 1},
            {"provider": "mock-anthropic", "upstream_model": "claude-upstream-1", "priority": 2},
        ]}],
    )  # fmt: skip
    _enqueue_error(gateway, "gpt-test", 500)

    # when
    completion = gateway.openai().chat.completions.create(model="fallback-test", messages=HELLO)

    # then: the client never saw the failure; one debit at the model's price for the upstream that answered
    assert [request.path for request in gateway.mock.requests] == ["/v1/chat/completions", "/v1/messages"]
    assert completion.model == "fallback-test"
    assert completion.choices[0].message.content == "Echo: hello there"
    (event,) = wait_for_usage_events(gateway.tenant)
    assert (event.status_code, event.attempts, event.provider, event.upstream_model) == (
        200,
        2,
        "mock-anthropic",
        "claude-upstream-1",
    )
    cost = token_cost_nanos("claude-test", _tokens(event))  # same $3 / $15 prices
    assert event.cost_nanos == cost == token_cost_nanos("claude-test", upstream_tokens(gateway.mock.requests[1]))
