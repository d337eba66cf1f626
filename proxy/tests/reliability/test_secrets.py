"""No gateway key or upstream provider key in logs, error bodies or upstream requests (issue 8 §5)."""

import logging

import pytest

from accounts.models import ApiKey
from catalog.models import Provider
from proxy.tests.mock_upstream import Script

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


def test_keys_never_logged_or_echoed(gateway, caplog):
    # given
    caplog.set_level(logging.DEBUG)
    gateway.mock.enqueue("/v1/messages", Script.error(401, provider="anthropic", message="invalid x-api-key"))
    # when: a success through each protocol, and an upstream credential failure
    gateway.openai().chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    with gateway.anthropic().messages.stream(
        model="gpt-test", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        stream.get_final_message()
    with pytest.raises(Exception) as excinfo:
        gateway.anthropic().messages.create(model="claude-test", max_tokens=20, messages=[{"role": "user", "content": "x"}])
    # then
    logged = "\n".join(record.getMessage() for record in caplog.records) + caplog.text
    for secret in (gateway.tenant.secret, gateway.mock.api_key):
        assert secret not in logged
        assert secret not in str(excinfo.value.body)
    for recorded in gateway.mock.requests:
        assert gateway.tenant.secret not in str(recorded.headers) + recorded.body.decode(errors="replace")
    # the upstream's 401 is the gateway's credentials problem, not the client's (PROTOCOLS §5.3 step 3)
    assert excinfo.value.status_code == 502


@pytest.mark.django_db
def test_stored_forms_of_secrets():
    from catalog.services import catalog_load
    from conftest import make_tenant

    tenant = make_tenant("Keys")
    catalog_load({"providers": [{"name": "p", "kind": "openai", "base_url": "http://127.0.0.1:1/v1",
                                 "api_key": "sk-provider-plaintext"}]})  # fmt: skip
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key_encrypted FROM catalog_provider")
        [(stored_provider_key,)] = cursor.fetchall()
        cursor.execute("SELECT key_hash, prefix FROM accounts_apikey")
        [(key_hash, prefix)] = cursor.fetchall()
    assert "sk-provider-plaintext" not in stored_provider_key
    assert Provider.objects.get().api_key_encrypted == stored_provider_key
    assert tenant.secret not in (key_hash, prefix) and len(key_hash) == 64
    assert ApiKey.objects.get().prefix == tenant.secret[:14]


# -- upstream error fields (issue 12 item 4) -------------------------------------------------------------------
# An upstream may echo the credential it received in any field of its error. Every field a client
# gets is the gateway's: the message scrubbed (of the route's own keys too), `type` from the
# gateway's table, `code` from a fixed allowlist, `param` only when it names a field of the
# client's request — on 4xx and 5xx replies, streamed and not, mid-stream error events, both client
# protocols and the Gemini upstream.

HEX_SECRET = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"  # key-shaped, no known prefix
LEAK_MODELS = {"gpt-test": "/v1/chat/completions", "claude-test": "/v1/messages",
               "gemini-test": "/v1beta/models/gemini-2.5-flash:generateContent"}  # fmt: skip
LEAK_STREAM_PATHS = {**LEAK_MODELS, "gemini-test": "/v1beta/models/gemini-2.5-flash:streamGenerateContent"}


@pytest.fixture
def leaky(gateway):
    """The mock catalog plus a Gemini provider (same mock, same key)."""
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate

    catalog_load({
        "providers": [{"name": "mock-gemini", "kind": "gemini", "base_url": f"{gateway.mock.url}/v1beta",
                       "api_key": gateway.mock.api_key}],
        "models": [{"name": "gemini-test", "provider": "mock-gemini", "upstream_model": "gemini-2.5-flash",
                    "input": "0.30", "output": "2.50", "max_output_tokens": 65536}],
    })  # fmt: skip
    catalog_invalidate()
    return gateway


def _leaky_error_body(model: str, status: int, key: str) -> dict:
    nested = {"raw": f"upstream said {key}", "headers": {"authorization": f"Bearer {key}"}, "key": HEX_SECRET}
    if model == "claude-test":
        return {"type": "error", "error": {"type": key, "message": f"invalid x-api-key {key} / {HEX_SECRET}",
                                           "param": key, "code": key, "details": nested}}  # fmt: skip
    if model == "gemini-test":
        return {"error": {"code": status, "message": f"API key {key} not valid ({HEX_SECRET})", "status": key,
                          "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": key,
                                       "metadata": nested}]}}  # fmt: skip
    return {"error": {"message": f"Incorrect API key provided: {key}. Also {HEX_SECRET}.", "type": key,
                      "param": key, "code": key, "metadata": nested}}  # fmt: skip


def _request(protocol: str, model: str, *, stream: bool) -> tuple[str, dict]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if protocol == "anthropic":
        return "/v1/messages", {**body, "max_tokens": 50}
    return "/v1/chat/completions", body


def _assert_no_secret(text: str, key: str) -> None:
    for secret in (key, HEX_SECRET, key[-10:], HEX_SECRET[:20]):
        assert secret not in text, text


@pytest.mark.parametrize("status", [400, 401, 404, 422, 429, 500, 503])
@pytest.mark.parametrize("model", list(LEAK_MODELS))
@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_error_fields_never_carry_the_provider_key(leaky, protocol, model, status, stream):
    # given: the upstream answers an error that repeats its key in every field
    from proxy.tests.integration.helpers import bearer, raw_client

    key = leaky.mock.api_key
    path = LEAK_STREAM_PATHS[model] if stream else LEAK_MODELS[model]
    leaky.mock.enqueue(path, Script(status=status, json=_leaky_error_body(model, status, key)))

    # when
    client_path, body = _request(protocol, model, stream=stream)
    with raw_client(leaky) as client:
        response = client.post(client_path, json=body, headers=bearer(leaky))

    # then: an error in the caller's shape, nothing of the key anywhere in it
    assert response.status_code >= 400
    _assert_no_secret(response.text + str(response.headers), key)
    error = response.json()["error"]
    if protocol == "openai":
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] is None
        assert error["type"] in {"invalid_request_error", "server_error", "rate_limit_error", "permission_error",
                                 "insufficient_quota"}  # fmt: skip
    else:
        assert set(error) == {"type", "message"}
    assert len(leaky.mock.requests) == 1  # one upstream call, nothing billed
    from proxy.tests.integration.helpers import assert_not_debited

    assert_not_debited(leaky.tenant)


@pytest.mark.parametrize("model", ["gpt-test", "claude-test", "gemini-test"])
@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_mid_stream_error_event_never_carries_the_provider_key(leaky, protocol, model):
    # given: a stream that starts and then reports an error repeating the key
    from proxy.tests.integration.helpers import stream_raw

    key = leaky.mock.api_key
    body = _leaky_error_body(model, 500, key)
    if model == "gpt-test":
        events = [(None, {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-upstream-1",
                          "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"},
                                       "finish_reason": None}]}), (None, body)]  # fmt: skip
    elif model == "claude-test":
        events = [("message_start", {"type": "message_start", "message": {
            "id": "msg_up", "type": "message", "role": "assistant", "model": "claude-upstream-1", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            ("error", {**body, "error": {**body["error"], "type": "overloaded_error"}})]  # fmt: skip
    else:
        events = [(None, {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "index": 0}],
                          "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1}}), (None, body)]
    leaky.mock.enqueue(LEAK_STREAM_PATHS[model], Script(sse=events))

    # when
    path, request = _request(protocol, model, stream=True)
    response, parsed = stream_raw(leaky, path, request)

    # then: the stream ends in the protocol's error form, free of the key
    assert parsed, response
    _assert_no_secret(str(parsed), key)
    last_name, last = parsed[-1]
    if protocol == "openai":
        assert last_name is None and set(last) == {"error"}
        assert last["error"]["param"] is None
        assert last["error"]["code"] in {None, "upstream_error", "overloaded", "rate_limit_exceeded", "timeout"}
    else:
        assert last_name == "error" and set(last["error"]) == {"type", "message"}


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_sdks_see_no_key_in_upstream_errors(leaky, protocol):
    # given
    import anthropic
    import openai

    key = leaky.mock.api_key
    leaky.mock.enqueue("/v1/chat/completions", Script(status=400, json=_leaky_error_body("gpt-test", 400, key)))

    # when
    if protocol == "openai":
        with pytest.raises(openai.BadRequestError) as excinfo:
            leaky.openai().chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    else:
        with pytest.raises(anthropic.BadRequestError) as excinfo:
            leaky.anthropic().messages.create(model="gpt-test", max_tokens=20,
                                              messages=[{"role": "user", "content": "hi"}])  # fmt: skip

    # then
    _assert_no_secret(str(excinfo.value) + str(excinfo.value.body), key)


def test_useful_upstream_param_and_code_still_reach_the_client(gateway):
    # given: an ordinary upstream 400 naming a field of the request and a documented code
    from proxy.tests.integration.helpers import bearer, raw_client

    gateway.mock.enqueue("/v1/chat/completions", Script.error(
        400, message="Invalid value for 'content'.", param="messages[0].content", code="invalid_value"))  # fmt: skip
    gateway.mock.enqueue("/v1/chat/completions", Script.error(
        400, message="Unknown field.", param="messages[7].content", code="my_custom_code"))  # fmt: skip

    # when
    with raw_client(gateway) as client:
        kept, dropped = (client.post("/v1/chat/completions", headers=bearer(gateway),
                                     json={"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})
                         for _ in range(2))  # fmt: skip

    # then
    assert kept.status_code == 400
    assert kept.json()["error"] == {"message": "Invalid value for 'content'.", "type": "invalid_request_error",
                                    "param": "messages[0].content", "code": "invalid_value"}  # fmt: skip
    assert dropped.status_code == 400
    assert dropped.json()["error"] == {"message": "Unknown field.", "type": "invalid_request_error",
                                       "param": None, "code": None}  # fmt: skip
