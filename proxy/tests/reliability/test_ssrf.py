"""SSRF and request-smuggling guards (issue 8 §7): no client field changes where a request goes or
which credentials it carries; link-local / metadata upstreams are refused unless allowed."""

import asyncio

import httpx
import pytest

from billing.models import LedgerEntry
from proxy.translate.errors import GatewayError
from proxy.upstreams import http as upstream_http

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

HOSTILE = {
    "api_base": "http://169.254.169.254/latest/meta-data",
    "base_url": "http://127.0.0.1:1/steal",
    "api_key": "sk-attacker",
    "headers": {"x-api-key": "sk-attacker", "authorization": "Bearer sk-attacker"},
    "extra_headers": {"authorization": "Bearer sk-attacker"},
    "extra_body": {"api_base": "http://169.254.169.254", "api_key": "sk-attacker"},
    "metadata": {"user_id": "u1", "base_url": "http://169.254.169.254"},
}


@pytest.mark.parametrize(
    ("_case", "path", "model", "extra"),
    [
        ("O->O", "/v1/chat/completions", "gpt-test", {}),
        ("O->A", "/v1/chat/completions", "claude-test", {}),
        ("A->A", "/v1/messages", "claude-test", {"max_tokens": 20}),
        ("A->O", "/v1/messages", "gpt-test", {"max_tokens": 20}),
    ],
)
def test_client_fields_cannot_redirect_or_recredential(gateway, _case, path, model, extra):
    # when
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra, **HOSTILE}
    response = httpx.post(gateway.server.url + path, json=body, timeout=30,
                          headers={"authorization": f"Bearer {gateway.tenant.secret}"})  # fmt: skip
    # then: it went to the configured upstream with the provider's key, and none of those fields
    assert response.status_code == 200, response.text
    [upstream] = gateway.mock.requests
    assert upstream.headers.get("authorization", f"Bearer {gateway.mock.api_key}") == f"Bearer {gateway.mock.api_key}"
    assert upstream.headers.get("x-api-key", gateway.mock.api_key) == gateway.mock.api_key
    for field in ("api_base", "base_url", "api_key", "headers", "extra_headers", "extra_body"):
        assert field not in upstream.json
    # O `metadata` is free-form string pairs the protocol forwards (as data, never as a destination);
    # A `metadata` has one field, so only `user_id` goes on; nothing else carries the hostile values.
    metadata = upstream.json.pop("metadata", None)
    assert metadata in (None, {"user_id": "u1"}, HOSTILE["metadata"])
    sent = str(upstream.json)
    assert "sk-attacker" not in sent and "169.254" not in sent and "steal" not in sent


@pytest.mark.django_db(transaction=True)
def test_link_local_upstream_is_refused(live_gateway, mock_upstream):
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate
    from conftest import make_tenant

    # given: an admin (mis)configured a provider on the cloud metadata address
    catalog_load({
        "providers": [{"name": "meta", "kind": "openai", "base_url": "http://169.254.169.254/v1", "api_key": "k"}],
        "models": [{"name": "meta-model", "provider": "meta", "input": 1, "output": 1}],
    })  # fmt: skip
    catalog_invalidate()
    tenant = make_tenant("Meta")
    # when
    response = httpx.post(live_gateway.openai_base_url + "/chat/completions", timeout=30,
                          headers={"authorization": f"Bearer {tenant.secret}"},
                          json={"model": "meta-model", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    # then: refused quickly, nothing billed
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert not LedgerEntry.objects.filter(kind="usage").exists()


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/v1", "http://[fe80::1]/v1", "http://metadata.google.internal/v1", "http://[::ffff:169.254.1.1]/"],
)
def test_check_destination_refuses_link_local(url, settings):
    settings.RUAPI_UPSTREAM_ALLOW_LINK_LOCAL = False
    with pytest.raises(GatewayError):
        upstream_http.check_destination(url)
    settings.RUAPI_UPSTREAM_ALLOW_LINK_LOCAL = True
    upstream_http.check_destination(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "http://10.0.0.5/v1", "https://api.openai.com/v1"])
def test_check_destination_allows_ordinary_hosts(url, settings):
    settings.RUAPI_UPSTREAM_ALLOW_LINK_LOCAL = False
    upstream_http.check_destination(url)


def test_resolver_drops_link_local_answers(monkeypatch, settings):
    settings.RUAPI_UPSTREAM_ALLOW_LINK_LOCAL = False

    async def fake_resolve(self, host, port=0, family=0):
        return [{"hostname": host, "host": "169.254.169.254", "port": port, "family": 2, "proto": 0, "flags": 0}]

    monkeypatch.setattr(upstream_http.aiohttp.ThreadedResolver, "resolve", fake_resolve)
    async def resolve():
        return await upstream_http.GuardedResolver().resolve("rebind.example", 80)

    with pytest.raises(upstream_http.DestinationRefusedError):
        asyncio.run(resolve())
