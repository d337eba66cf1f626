"""Router behaviour end to end: fallback before any byte, circuit breaker, caps, prices, visibility, 404s."""

import asyncio
import logging

import pytest
from django.db import connection

from billing.models import UsageEvent
from proxy.router import router
from proxy.tests.mock_upstream import Delay, Script

from .helpers import bearer, raw_client, stream_raw, wait_for_usage_events

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


@pytest.fixture
def routed(gateway, settings):
    """`dual-test`: route 1 via the mock's Anthropic endpoint, route 2 via its OpenAI endpoint."""
    from catalog.services import catalog_load

    settings.RUAPI_ROUTE_FAILURE_THRESHOLD = 1
    settings.RUAPI_ROUTE_COOLDOWN_SECONDS = 60
    router.reset()
    catalog_load({"models": [{
        "name": "dual-test", "input": "1", "output": "2",
        "routes": [{"provider": "mock-anthropic", "upstream_model": "claude-primary", "priority": 1},
                   {"provider": "mock-openai", "upstream_model": "gpt-backup", "priority": 2}],
    }]})  # fmt: skip
    yield gateway
    router.reset()


def paths(gateway) -> list[str]:
    return [record.path for record in gateway.mock.requests]


def test_500_falls_back_then_the_failing_route_cools_down(routed):
    # given
    routed.mock.enqueue("/v1/messages", Script.error(500, provider="anthropic", message="boom"))
    client = routed.openai()
    # when
    raw = client.chat.completions.with_raw_response.create(
        model="dual-test", messages=[{"role": "user", "content": "hello"}]
    )
    # then: served by the second route, in two attempts
    assert raw.parse().choices[0].message.content == "Echo: hello"
    assert raw.headers["x-ruapi-attempts"] == "2"
    assert raw.headers["x-ruapi-upstream-model"] == "gpt-backup"
    assert "x-ruapi-provider" not in raw.headers
    assert paths(routed) == ["/v1/messages", "/v1/chat/completions"]
    event = UsageEvent.objects.get()
    assert (event.provider, event.upstream_model, event.attempts, event.status_code) == ("mock-openai", "gpt-backup", 2, 200)
    # when: the next request comes, the first route is cooling down and is not tried first
    routed.mock.reset()
    raw = client.chat.completions.with_raw_response.create(model="dual-test", messages=[{"role": "user", "content": "again"}])
    assert raw.headers["x-ruapi-attempts"] == "1"
    assert paths(routed) == ["/v1/chat/completions"]


def test_timeout_falls_back(routed):
    from catalog.models import Provider
    from catalog.services import catalog_changed

    Provider.objects.filter(name="mock-anthropic").update(read_timeout_s=0.3)
    catalog_changed()
    routed.mock.enqueue("/v1/messages", Script(first_byte_delay=2, json={}))
    message = routed.anthropic().messages.create(model="dual-test", max_tokens=50,
                                                 messages=[{"role": "user", "content": "slow"}])  # fmt: skip
    assert message.content[0].text == "Echo: slow"
    event = UsageEvent.objects.get()
    assert (event.provider, event.attempts) == ("mock-openai", 2)


def test_half_open_probe_after_cooldown(routed, settings):
    settings.RUAPI_ROUTE_COOLDOWN_SECONDS = 0
    routed.mock.enqueue("/v1/messages", Script.error(503, provider="anthropic"))
    client = routed.anthropic()
    client.messages.create(model="dual-test", max_tokens=50, messages=[{"role": "user", "content": "a"}])
    routed.mock.reset()
    # the cool-down is over: one probe goes to the first route again, and succeeds
    client.messages.create(model="dual-test", max_tokens=50, messages=[{"role": "user", "content": "b"}])
    assert paths(routed) == ["/v1/messages"]
    assert UsageEvent.objects.order_by("id").last().provider == "mock-anthropic"


def test_mid_stream_failure_is_an_error_event_and_never_retried(routed):
    # given: the first route starts streaming, then its connection drops
    events = [("message_start", {"type": "message_start", "message": {
        "id": "msg_x", "type": "message", "role": "assistant", "model": "claude-primary", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        Delay(0.05), ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": "lo"}})]  # fmt: skip
    routed.mock.enqueue("/v1/messages", Script(sse=events, drop_after=3))
    # when
    response, sse = stream_raw(routed, "/v1/chat/completions",
                               {"model": "dual-test", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    # then
    assert response.status_code == 200
    assert sse[-1][1]["error"]["type"] == "server_error"
    assert (None, "[DONE]") not in sse
    assert paths(routed) == ["/v1/messages"]  # never retried after bytes went out
    (event,) = wait_for_usage_events(routed.tenant)
    assert (event.provider, event.attempts) == ("mock-anthropic", 1)
    assert event.output_tokens > 0  # what was streamed is billed


def test_all_routes_failing_answers_the_last_error(routed):
    routed.mock.enqueue("/v1/messages", Script.error(529, provider="anthropic"))
    routed.mock.enqueue("/v1/chat/completions", Script.error(503))
    with raw_client(routed) as client:
        response = client.post("/v1/messages", headers={"x-api-key": routed.tenant.secret},
                               json={"model": "dual-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 529
    assert response.json()["error"]["type"] == "overloaded_error"
    assert response.headers["x-ruapi-attempts"] == "2"
    assert UsageEvent.objects.get().attempts == 2


def test_concurrency_cap_skips_a_full_route(routed):
    from catalog.models import Route
    from catalog.services import catalog_changed
    from proxy.router import route_key

    Route.objects.filter(upstream_model="claude-primary").update(max_concurrency=1)
    catalog_changed()
    # one request "in flight" on the first route
    from catalog.snapshot import catalog_build

    route = next(r for r in catalog_build().get("dual-test").routes if r.upstream_model == "claude-primary")
    # With Redis the cap is global (proxy/router.py SharedRouter): claim the slot the way a request does.
    slot = asyncio.run(router.claim(route))

    async def give_back():
        slot.release()
        await asyncio.gather(*router.background)

    try:
        routed.openai().chat.completions.create(model="dual-test", messages=[{"role": "user", "content": "x"}])
    finally:
        asyncio.run(give_back())
    assert paths(routed) == ["/v1/chat/completions"]
    assert router.states[route_key(route)].in_flight == 0


def test_price_change_applies_to_later_requests_only(routed):
    from catalog.models import Model
    from catalog.services import price_set

    client = routed.openai()
    client.chat.completions.create(model="dual-test", messages=[{"role": "user", "content": "one two"}])
    first = UsageEvent.objects.get()
    price_set(model=Model.objects.get(name="dual-test"),
              nanos={"input_nanos_per_mtok": 10_000_000_000, "output_nanos_per_mtok": 20_000_000_000})  # fmt: skip
    client.chat.completions.create(model="dual-test", messages=[{"role": "user", "content": "one two"}])
    second = UsageEvent.objects.exclude(pk=first.pk).get()
    first.refresh_from_db()
    assert first.price.input_nanos_per_mtok == 1_000_000_000  # unchanged
    assert second.price.input_nanos_per_mtok == 10_000_000_000
    assert (first.input_tokens, first.output_tokens) == (second.input_tokens, second.output_tokens)
    assert second.cost_nanos == 10 * first.cost_nanos


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_disabled_model_is_a_clear_404_in_each_shape(routed, protocol):
    from catalog.models import Model
    from catalog.services import models_set_enabled

    models_set_enabled(models=Model.objects.filter(name="dual-test"), enabled=False)
    with raw_client(routed) as client:
        if protocol == "openai":
            response = client.post("/v1/chat/completions", headers=bearer(routed),
                                   json={"model": "dual-test", "messages": [{"role": "user", "content": "x"}]})
            assert response.json()["error"] == {"message": "The model `dual-test` is currently disabled.",
                                                "type": "invalid_request_error", "param": "model",
                                                "code": "model_not_found"}  # fmt: skip
        else:
            response = client.post("/v1/messages", headers={"x-api-key": routed.tenant.secret},
                                   json={"model": "dual-test", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
            body = response.json()
            assert (body["type"], body["error"]["type"]) == ("error", "not_found_error")
            assert "disabled" in body["error"]["message"]
    assert response.status_code == 404
    assert routed.mock.requests == []


def test_visibility_restricts_models_to_chosen_organisations(routed):
    from catalog.models import Model
    from conftest import make_tenant

    other = make_tenant("Other Org")
    model = Model.objects.get(name="dual-test")
    model.visibility = Model.Visibility.RESTRICTED
    model.save()
    model.organizations.set([routed.tenant.org])
    from catalog.services import catalog_changed

    catalog_changed()
    with raw_client(routed) as client:
        mine = client.get("/v1/models", headers=bearer(routed)).json()
        theirs = client.get("/v1/models", headers={"Authorization": f"Bearer {other.secret}"}).json()
        denied = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {other.secret}"},
                             json={"model": "dual-test", "messages": [{"role": "user", "content": "x"}]})
        a_list = client.get("/v1/models", headers={**bearer(routed), "anthropic-version": "2023-06-01"}).json()
    assert "dual-test" in [m["id"] for m in mine["data"]]
    assert "dual-test" not in [m["id"] for m in theirs["data"]]
    assert "gpt-test" in [m["id"] for m in theirs["data"]]
    assert denied.status_code == 404
    assert "does not exist" in denied.json()["error"]["message"]
    entry = next(m for m in a_list["data"] if m["id"] == "dual-test")
    assert set(entry) == {"type", "id", "display_name", "created_at"}


def test_upstream_keys_are_encrypted_and_never_logged(gateway, caplog):
    from catalog.models import Provider, ProviderKey
    from catalog.services import provider_key_add

    caplog.set_level(logging.DEBUG)
    provider = Provider.objects.get(name="mock-openai")
    provider_key_add(provider=provider, api_key="sk-rotation-secret-9999", label="second")
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key_encrypted FROM catalog_provider WHERE name = %s", ["mock-openai"])
        (raw_primary,) = cursor.fetchone()
        cursor.execute("SELECT key_encrypted, key_hint FROM catalog_providerkey")
        raw_extra, hint = cursor.fetchone()
    assert gateway.mock.api_key not in raw_primary and raw_primary.startswith("gAAAA")
    assert "sk-rotation-secret-9999" not in raw_extra and hint == "…9999"
    # the rotation key is used for every other request; the mock rejects it, the error says nothing of it
    with raw_client(gateway) as client:
        for _ in range(2):
            response = client.post("/v1/chat/completions", headers=bearer(gateway),
                                   json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]})
            assert "sk-rotation-secret-9999" not in response.text
            assert gateway.mock.api_key not in response.text
    sent = [record.headers["authorization"] for record in gateway.mock.requests]
    assert sorted(sent) == sorted([f"Bearer {gateway.mock.api_key}", "Bearer sk-rotation-secret-9999"])
    assert ProviderKey.objects.count() == 1
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "sk-rotation-secret-9999" not in logged
    assert gateway.mock.api_key not in logged
