"""The playground runs the public API's own ASGI app in process: same routing, metering and billing;
usage is the user's and marked playground; Stop (or the browser leaving) hangs up on the upstream
within a second and bills what was produced."""

import asyncio
import time
from types import SimpleNamespace

import pytest
import pytest_asyncio
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from accounts.models import Membership
from accounts.tests.factories import MembershipFactory
from billing.models import LedgerEntry, UsageEvent
from billing.money import nanos_to_usd
from proxy.tests.integration.test_disconnect import slow_openai_stream
from usage.tests.conftest import session_cookie, ws_headers

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


@pytest_asyncio.fixture(autouse=True)
async def _close_upstream_sessions():
    """The in-process proxy opened pooled upstream sessions on this test's loop: close them with it."""
    yield
    from proxy.upstreams.http import close_sessions

    await close_sessions()


@pytest.fixture
def member(gateway):
    user = MembershipFactory(org=gateway.tenant.org, role=Membership.Role.DEVELOPER).user
    return SimpleNamespace(user=user, cookie=session_cookie(user), org=gateway.tenant.org)


async def _connect(app, path: str, cookie: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(app, path, headers=ws_headers(cookie))
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def _until(communicator, kind: str, timeout: float = 10) -> tuple[list[dict], dict]:
    seen = []
    while True:
        message = await communicator.receive_json_from(timeout=timeout)
        if message["type"] == kind:
            return seen, message
        seen.append(message)


def _event_and_debit(request_id: str):
    event = UsageEvent.objects.get(request_id=request_id)
    debit = LedgerEntry.objects.filter(kind="usage", request_id=request_id).values_list("amount_nanos", flat=True)
    return event, list(debit)


@pytest.mark.parametrize(
    ("_case", "protocol", "model", "upstream_path", "upstream_model"),
    [
        ("openai protocol, openai upstream", "openai", "gpt-test", "/v1/chat/completions", "gpt-upstream-1"),
        ("anthropic protocol, anthropic upstream", "anthropic", "claude-test", "/v1/messages", "claude-upstream-1"),
        ("anthropic protocol, openai upstream (translated)", "anthropic", "gpt-test", "/v1/chat/completions", "gpt-upstream-1"),
    ],
)
@pytest.mark.asyncio
async def test_reply_streams_and_is_billed_as_the_users_playground_request(
    ws_app, gateway, member, _case, protocol, model, upstream_path, upstream_model
):
    # given: the playground and the live feed open
    org_id = member.org.id
    feed = await _connect(ws_app, f"/ws/orgs/{org_id}/usage/live/", member.cookie)
    playground = await _connect(ws_app, f"/ws/orgs/{org_id}/playground/", member.cookie)
    # when
    await playground.send_json_to({
        "type": "chat", "protocol": protocol, "model": model, "system": "Be brief.", "temperature": 0.5,
        "max_tokens": 50, "messages": [{"role": "user", "content": "hello there playground"}],
    })  # fmt: skip
    before, start = await _until(playground, "start")
    deltas, done = await _until(playground, "done")
    # then: the reply streamed in several deltas
    assert before == [] and start == {"type": "start", "protocol": protocol, "model": model}
    assert {d["type"] for d in deltas} == {"delta"} and len(deltas) > 1
    assert "".join(d["text"] for d in deltas) == "Echo: hello there playground"
    # billed exactly once, through the same routing, as the user's playground request without a key
    event, debits = await database_sync_to_async(_event_and_debit)(done["request_id"])
    assert (event.source, event.user_id, event.api_key_id, event.org_id) == ("playground", member.user.id, None, org_id)
    assert (event.model, event.upstream_model, event.status_code, event.is_stream) == (model, upstream_model, 200, True)
    assert event.cost_nanos > 0 and debits == [-event.cost_nanos]
    assert done["stopped"] is False and done["error"] == ""
    assert done["billed"]["cost_usd"] == f"{nanos_to_usd(event.cost_nanos).normalize():f}"
    assert (done["billed"]["input_tokens"], done["billed"]["output_tokens"]) == (event.input_tokens, event.output_tokens)
    assert done["usage"]["output_tokens"] == event.output_tokens and done["usage"]["cost"] > 0
    recorded = gateway.mock.requests[-1]
    assert recorded.path == upstream_path and recorded.json["model"] == upstream_model
    # and the live feed announced it
    live = await feed.receive_json_from(timeout=5)
    assert live["request"]["request_id"] == done["request_id"] and live["request"]["source"] == "playground"
    await playground.disconnect()
    await feed.disconnect()


@pytest.mark.asyncio
async def test_invalid_request_is_refused_without_billing(ws_app, gateway, member):
    playground = await _connect(ws_app, f"/ws/orgs/{member.org.id}/playground/", member.cookie)
    await playground.send_json_to({"type": "chat", "protocol": "openai", "model": "no-such-model",
                                   "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    _, error = await _until(playground, "error")
    assert "no-such-model" in error["message"]
    assert await database_sync_to_async(UsageEvent.objects.count)() == 0
    assert await database_sync_to_async(LedgerEntry.objects.filter(kind="usage").count)() == 0
    await playground.disconnect()


async def _start_slow_reply(ws_app, gateway, member) -> WebsocketCommunicator:
    gateway.mock.enqueue("/v1/chat/completions", slow_openai_stream(100))
    playground = await _connect(ws_app, f"/ws/orgs/{member.org.id}/playground/", member.cookie)
    await playground.send_json_to({"type": "chat", "protocol": "openai", "model": "gpt-test",
                                   "messages": [{"role": "user", "content": "talk slowly"}]})  # fmt: skip
    await _until(playground, "start")
    for _ in range(3):
        assert (await playground.receive_json_from(timeout=5))["type"] == "delta"
    return playground


async def _billed_after_hang_up(gateway, hung_up: float) -> UsageEvent:
    assert await asyncio.to_thread(gateway.mock.wait_for_disconnect, 5)
    assert time.monotonic() - hung_up < 1.0
    deadline = time.monotonic() + 5
    # The proxy settles in its response's `finally`, just after the hang-up: poll the database for it.
    while not await database_sync_to_async(UsageEvent.objects.exists)() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    request_id = await database_sync_to_async(lambda: UsageEvent.objects.get().request_id)()
    event, debits = await database_sync_to_async(_event_and_debit)(request_id)
    assert (event.source, event.error_type, event.is_estimated) == ("playground", "client_disconnected", True)
    assert 3 <= event.output_tokens < 100
    assert debits == [-event.cost_nanos] and event.cost_nanos > 0
    return event


@pytest.mark.asyncio
async def test_stop_closes_the_upstream_within_a_second_and_bills_what_was_produced(ws_app, gateway, member):
    playground = await _start_slow_reply(ws_app, gateway, member)
    # when: Stop
    await playground.send_json_to({"type": "stop"})
    hung_up = time.monotonic()
    # then
    event = await _billed_after_hang_up(gateway, hung_up)
    _, done = await _until(playground, "done")
    assert done["stopped"] is True and done["request_id"] == event.request_id
    assert done["billed"]["output_tokens"] == event.output_tokens
    # the socket stays usable for the next message
    await playground.send_json_to({"type": "chat", "protocol": "openai", "model": "demo-echo",
                                   "messages": [{"role": "user", "content": "again"}]})  # fmt: skip
    await _until(playground, "done")
    await playground.disconnect()


@pytest.mark.asyncio
async def test_browser_leaving_mid_reply_closes_the_upstream_and_bills(ws_app, gateway, member):
    playground = await _start_slow_reply(ws_app, gateway, member)
    # when: the browser goes away
    hung_up = time.monotonic()
    await playground.disconnect(timeout=5)
    # then
    await _billed_after_hang_up(gateway, hung_up)
