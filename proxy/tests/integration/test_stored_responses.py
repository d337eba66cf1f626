"""The Responses API's endpoints around stored responses (PROTOCOLS-RESPONSES §0, §3, §4) against the
real server, driven by the official openai SDK where it has the call: retrieve, delete, input_items,
cancel, compact, input_tokens; and the 426 answer to Codex's WebSocket attempt (§4.2) on raw sockets.

POST /v1/responses is built on another branch: responses are stored here through
proxy.response_store.response_store_save, the function its after-the-last-byte write calls.
"""

import json
import socket

import httpx
import openai
import pytest

from proxy.models import StoredItem, StoredResponse
from proxy.response_store import response_store_save

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

REASONING = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Adding."}],
             "encrypted_content": "rg1.secret-envelope"}  # fmt: skip
ANSWER = {"type": "message", "id": "msg_answer", "role": "assistant", "status": "completed",
          "content": [{"type": "output_text", "text": "4", "annotations": [], "logprobs": []}]}  # fmt: skip


def user(text: str, item_id: str) -> dict:
    return {"type": "message", "id": item_id, "role": "user", "content": [{"type": "input_text", "text": text}]}


def response_object(response_id: str, output: list[dict], **extra) -> dict:
    return {"id": response_id, "object": "response", "created_at": 1_790_000_000, "completed_at": 1_790_000_001,
            "status": "completed", "error": None, "incomplete_details": None, "instructions": "Be brief.",
            "model": "gpt-test", "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "store": True, "metadata": {}, "previous_response_id": None,
            "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
                      "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 15, "cost": 0.00006},
            **extra}  # fmt: skip


def store(org, response_id: str, *, input_items: list[dict], output: list[dict]) -> dict:
    response = response_object(response_id, output)
    response_store_save(org_id=org.id, api_key_id=None, request={"model": "gpt-test"}, input_items=input_items,
                        response=response)  # fmt: skip
    return response


def http(gateway, secret: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {secret or gateway.tenant.secret}"}
    return httpx.Client(base_url=gateway.server.openai_base_url, headers=headers, timeout=10)


def not_found(response_id: str) -> dict:
    return {"error": {"message": f"Response with id '{response_id}' not found.", "type": "invalid_request_error",
                      "param": None, "code": None}}  # fmt: skip


# -- GET /v1/responses/{id} ----------------------------------------------------------------------------------------
def test_retrieve_returns_the_stored_response_without_the_envelope_unless_included(gateway):
    # given
    stored = store(gateway.tenant.org, "resp_get", input_items=[user("2+2?", "msg_q")], output=[REASONING, ANSWER])
    client = gateway.openai()

    # when
    raw = client.responses.with_raw_response.retrieve("resp_get")
    included = client.responses.with_raw_response.retrieve("resp_get", include=["reasoning.encrypted_content"])
    parsed = client.responses.retrieve("resp_get")

    # then
    without_envelope = {k: v for k, v in REASONING.items() if k != "encrypted_content"}
    assert raw.http_response.status_code == 200
    assert raw.http_response.json() == {**stored, "output": [without_envelope, ANSWER]}
    assert raw.http_response.headers["x-request-id"].startswith("req_")
    assert included.http_response.json() == stored
    assert (parsed.id, parsed.output_text, parsed.usage.total_tokens) == ("resp_get", "4", 15)


def test_retrieve_as_a_stream_is_refused(gateway):
    store(gateway.tenant.org, "resp_s", input_items=[user("hi", "msg_s")], output=[ANSWER])
    with http(gateway) as client:
        response = client.get("/responses/resp_s", params={"stream": "true", "starting_after": 3})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stream"
    assert response.json()["error"]["code"] == "unsupported_parameter"


def test_unknown_response_is_404_in_the_openai_shape(gateway):
    with http(gateway) as client:
        response = client.get("/responses/resp_missing")
    assert (response.status_code, response.json()) == (404, not_found("resp_missing"))
    with pytest.raises(openai.NotFoundError):
        gateway.openai().responses.retrieve("resp_missing")


def test_stored_response_endpoints_need_a_bearer_key(gateway):
    store(gateway.tenant.org, "resp_auth", input_items=[user("hi", "msg_auth")], output=[ANSWER])
    with httpx.Client(base_url=gateway.server.openai_base_url, timeout=10) as anonymous:
        for method, path in (("GET", "/responses/resp_auth"), ("DELETE", "/responses/resp_auth"),
                             ("GET", "/responses/resp_auth/input_items"), ("POST", "/responses/resp_auth/cancel"),
                             ("POST", "/responses/input_tokens")):  # fmt: skip
            response = anonymous.request(method, path, headers={"x-api-key": gateway.tenant.secret})
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["code"] == "invalid_api_key"
    assert StoredResponse.objects.filter(id="resp_auth").exists()


# -- DELETE --------------------------------------------------------------------------------------------------------
def test_delete_removes_the_response_and_its_items(gateway):
    # given: two stored responses
    store(gateway.tenant.org, "resp_del", input_items=[user("one", "msg_d1")], output=[ANSWER | {"id": "msg_d2"}])
    store(gateway.tenant.org, "resp_keep", input_items=[user("two", "msg_k1")], output=[ANSWER | {"id": "msg_k2"}])
    client = gateway.openai()

    # when
    raw = client.responses.with_raw_response.delete("resp_del")

    # then: gone (and its items), the other one intact
    assert (raw.http_response.status_code, raw.http_response.json()) == (
        200, {"id": "resp_del", "object": "response.deleted", "deleted": True})  # fmt: skip
    with http(gateway) as http_client:
        assert http_client.get("/responses/resp_del").json() == not_found("resp_del")
        again = http_client.delete("/responses/resp_del")
        assert (again.status_code, again.json()) == (404, not_found("resp_del"))
    assert sorted(StoredItem.objects.values_list("item_id", flat=True)) == ["msg_k1", "msg_k2"]
    assert client.responses.retrieve("resp_keep").id == "resp_keep"


# -- input_items -----------------------------------------------------------------------------------------------------
@pytest.fixture
def five_items(gateway):
    items = [user(f"q{i}", f"msg_{i}") for i in range(4)] + [REASONING]
    store(gateway.tenant.org, "resp_items", input_items=items, output=[ANSWER])
    return items


def test_input_items_are_listed_newest_first_and_paged_by_the_sdk(gateway, five_items):
    client = gateway.openai()
    # the SDK follows `after` = last_id while has_more
    assert [item.id for item in client.responses.input_items.list("resp_items", limit=2)] == [
        "rs_1", "msg_3", "msg_2", "msg_1", "msg_0"]  # fmt: skip
    assert [item.id for item in client.responses.input_items.list("resp_items", limit=2, order="asc")] == [
        "msg_0", "msg_1", "msg_2", "msg_3", "rs_1"]  # fmt: skip
    with http(gateway) as http_client:
        first = http_client.get("/responses/resp_items/input_items", params={"limit": 2, "after": "msg_3"})
        everything = http_client.get("/responses/resp_items/input_items",
                                     params={"order": "asc", "include": "reasoning.encrypted_content"})  # fmt: skip
    assert first.json() == {"object": "list", "data": [five_items[2], five_items[1]], "first_id": "msg_2",
                            "last_id": "msg_1", "has_more": True}  # fmt: skip
    assert everything.json() == {"object": "list", "data": five_items, "first_id": "msg_0", "last_id": "rs_1",
                                 "has_more": False}  # fmt: skip


@pytest.mark.parametrize(
    ("_case", "params", "param", "code"),
    [
        ("limit 0", {"limit": 0}, "limit", "integer_below_min_value"),
        ("limit 101", {"limit": 101}, "limit", "integer_above_max_value"),
        ("limit not a number", {"limit": "x"}, "limit", "invalid_type"),
        ("order", {"order": "sideways"}, "order", "invalid_value"),
        ("after an unknown item", {"after": "msg_nope"}, "after", "invalid_value"),
    ],
)
def test_input_items_refuses_bad_parameters(gateway, five_items, _case, params, param, code):
    with http(gateway) as client:
        response = client.get("/responses/resp_items/input_items", params=params)
    assert response.status_code == 400
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == (param, code)


def test_input_items_of_an_unknown_response_is_404(gateway):
    with http(gateway) as client:
        response = client.get("/responses/resp_nope/input_items")
    assert (response.status_code, response.json()) == (404, not_found("resp_nope"))


# -- cancel, compact -------------------------------------------------------------------------------------------------
def test_cancel_is_400_for_a_stored_response_and_404_for_an_unknown_one(gateway):
    store(gateway.tenant.org, "resp_c", input_items=[user("hi", "msg_c")], output=[ANSWER])
    client = gateway.openai()
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.cancel("resp_c")
    assert caught.value.body == {
        "message": "Cannot cancel response 'resp_c': only responses created with `background: true` can be "
                   "cancelled, and this gateway does not run background responses.",
        "type": "invalid_request_error", "param": None, "code": None}  # fmt: skip
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_unknown")
    assert StoredResponse.objects.filter(id="resp_c").exists()


def test_compact_is_an_unknown_url(gateway):
    with http(gateway) as client:
        response = client.post("/responses/compact", json={"model": "gpt-test", "input": "hi"})
    assert (response.status_code, response.json()) == (404, {"error": {
        "message": "Invalid URL (POST /v1/responses/compact)", "type": "invalid_request_error", "param": None,
        "code": None}})  # fmt: skip


# -- input_tokens ----------------------------------------------------------------------------------------------------
def test_input_tokens_counts_the_expanded_chain(gateway):
    # given: a stored turn ("What is 2+2?" -> reasoning + "4")
    store(gateway.tenant.org, "resp_prev", input_items=[user("What is 2+2?", "msg_p")], output=[REASONING, ANSWER])
    client = gateway.openai()

    # when
    raw = client.responses.input_tokens.with_raw_response.count(
        model="gpt-test", previous_response_id="resp_prev", instructions="Be brief.", input="And 3+3?",
        tools=[{"type": "function", "name": "add", "parameters": {"type": "object"}, "strict": False}],
    )  # fmt: skip

    # then: ceil(bytes / 4) per text, 4 per message, tools as compact JSON (proxy/translate/usage.py's rates)
    tools_json = '[{"type":"function","name":"add","parameters":{"type":"object"},"strict":false}]'
    expected = (3  # "Be brief."
                + 4 + 3  # "What is 2+2?"
                + 2  # reasoning summary "Adding."
                + 4 + 1  # "4"
                + 4 + 2  # "And 3+3?"
                + -(-len(tools_json) // 4))  # fmt: skip
    assert raw.http_response.json() == {"object": "response.input_tokens", "input_tokens": expected}
    assert raw.http_response.headers["x-ruapi-estimated"] == "true"
    assert raw.parse().input_tokens == expected
    assert not gateway.mock.requests  # an estimate: nothing went upstream


@pytest.mark.parametrize(
    ("_case", "body", "status", "param", "code"),
    [
        ("unknown previous response", {"previous_response_id": "resp_gone", "input": "x"}, 400,
         "previous_response_id", "previous_response_not_found"),
        ("unknown item reference", {"input": [{"type": "item_reference", "id": "fc_gone"}]}, 404, "input", None),
        ("unknown model", {"model": "no-such-model", "input": "x"}, 404, "model", "model_not_found"),
        ("conversation", {"conversation": "conv_1", "input": "x"}, 400, "conversation", "unsupported_parameter"),
        ("input a number", {"input": 3}, 400, "input", "invalid_type"),
    ],
)  # fmt: skip
def test_input_tokens_refusals(gateway, _case, body, status, param, code):
    with http(gateway) as client:
        response = client.post("/responses/input_tokens", json={"model": "gpt-test", **body})
    assert response.status_code == status
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == (param, code)


# -- Codex's WebSocket attempt (§4.2) ---------------------------------------------------------------------------------
UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "OpenAI-Beta: responses_websockets=2026-02-06\r\nAuthorization: Bearer {key}\r\n\r\n"
)
REFUSAL = {"error": {
    "message": "WebSocket transport is not supported here: send POST /v1/responses (with `stream: true` for "
               "Server-Sent Events).",
    "type": "invalid_request_error", "param": None, "code": "websocket_not_supported"}}  # fmt: skip


def upgrade(port: int, path: str, key: str) -> tuple[str, dict[str, str], bytes]:
    """Send a WebSocket upgrade; (status line, headers, body) of everything read until the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(UPGRADE.format(path=path, port=port, key=key).encode())
        data = b""
        while chunk := sock.recv(65536):  # returns b"" once the server closed the connection
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status, headers, body


@pytest.mark.parametrize("path", ["/v1/responses", "/responses", "/v1/responses/"])
def test_websocket_upgrade_gets_426_json_and_close_then_http_works(gateway, path):
    # given: a stored response, to show that ordinary requests work right after
    store(gateway.tenant.org, "resp_ws", input_items=[user("hi", "msg_ws")], output=[ANSWER])

    # when: Codex's first attempt
    status, headers, body = upgrade(gateway.server.port, path, gateway.tenant.secret)

    # then: 426 with the O-shape error, the connection closed (recv returned b"" above)
    assert status == "HTTP/1.1 426 Upgrade Required"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == REFUSAL
    # and the HTTP API answers as usual
    assert gateway.openai().responses.retrieve("resp_ws").id == "resp_ws"
    with http(gateway) as client:
        assert client.post("/responses/input_tokens", json={"input": "hi"}).json()["input_tokens"] == 5


def test_websocket_client_library_sees_426(gateway):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as caught:
        connect(f"ws://127.0.0.1:{gateway.server.port}/v1/responses",
                additional_headers={"Authorization": f"Bearer {gateway.tenant.secret}"}, open_timeout=5)  # fmt: skip
    assert caught.value.response.status_code == 426
    assert json.loads(caught.value.response.body) == REFUSAL


def test_other_websocket_routes_are_unchanged(gateway):
    # the live usage feed still refuses an anonymous caller at the handshake (its consumer closes: 403)
    status, _headers, _body = upgrade(gateway.server.port, f"/ws/orgs/{gateway.tenant.org.id}/usage/live/", "x")
    assert status == "HTTP/1.1 403 Forbidden"


@pytest.mark.asyncio
async def test_a_server_without_the_denial_extension_gets_a_refused_handshake():
    from channels.testing import WebsocketCommunicator

    from ruapi.asgi import application

    communicator = WebsocketCommunicator(application, "/v1/responses")  # its scope has no extensions
    connected, _code = await communicator.connect()
    assert not connected


# -- the write after the last byte, on the server's loop -----------------------------------------------------------
def test_a_turn_continued_at_once_finds_its_predecessor_written_by_the_servers_writer(gateway):
    from django.db import connection

    from conftest import wait_for_writes_after_answers
    from proxy import response_store

    # given: a first turn through the server (stored after its last byte)
    client = gateway.openai()
    first = client.responses.create(model="gpt-test", input="What is 2+2?")
    # when: the client continues at once
    client.responses.create(model="gpt-test", previous_response_id=first.id, input="And 3+3?")
    # then: the upstream got the whole chain, and both turns are stored
    texts = [m["content"] for m in gateway.mock.requests[1].json["messages"]]
    assert texts[0] == "What is 2+2?" and texts[-1] == "And 3+3?" and len(texts) == 3
    wait_for_writes_after_answers()
    assert StoredResponse.objects.filter(org=gateway.tenant.org).count() == 2
    if connection.vendor == "postgresql":  # by the server loop's batched writer (proxy/response_store.py)
        assert sum(w.stats["responses"] for w in response_store._writers.values()) >= 2
