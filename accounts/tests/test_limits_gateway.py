"""Per-key and per-organisation limits enforced by the real gateway under concurrent SDK requests."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from django.conf import settings

from accounts.models import ApiKey
from accounts.services import KeyLimits, apikey_update, org_update
from billing.models import UsageEvent
from catalog.snapshot import catalog_build
from proxy import limits
from proxy.metering import chat_hold_nanos, chat_input_bound
from proxy.translate.usage import estimate_openai_prompt_tokens

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

MESSAGES = [{"role": "user", "content": "hello limits"}]


def _limit_key(gateway, **limits) -> ApiKey:
    api_key = gateway.tenant.api_key
    apikey_update(org=gateway.tenant.org, api_key=api_key,
                  limits=KeyLimits(allowed_models=limits.pop("allowed_models", []),
                                   ip_allowlist=limits.pop("ip_allowlist", []), **limits))  # fmt: skip
    return api_key


def _same_minute(margin_s: float = 8.0) -> None:
    """Fixed one-minute windows: start a burst well inside one, so the expected counts are exact."""
    into = time.time() % 60
    if into > 60 - margin_s:
        time.sleep(60 - into + 0.2)


def _fire(gateway, n: int, **kwargs) -> list:
    client = gateway.openai()

    def one(_):
        try:
            return client.chat.completions.create(model="demo-echo", messages=MESSAGES, max_tokens=100, **kwargs)
        except openai.APIStatusError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def _statuses(results) -> dict[int, int]:
    counts: dict[int, int] = {}
    for r in results:
        code = r.status_code if isinstance(r, openai.APIStatusError) else 200
        counts[code] = counts.get(code, 0) + 1
    return counts


def test_key_rpm_under_concurrency_admits_exactly_the_limit(gateway):
    # given
    _limit_key(gateway, rpm_limit=5)
    _same_minute()
    # when
    results = _fire(gateway, 12)
    # then
    assert _statuses(results) == {200: 5, 429: 7}
    refused = next(r for r in results if isinstance(r, openai.APIStatusError))
    assert refused.body["code"] == "rate_limit_exceeded"
    assert refused.response.headers["x-ratelimit-limit-requests"] == "5"
    assert refused.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(refused.response.headers["retry-after"]) <= 61
    assert refused.response.headers["x-ratelimit-reset-requests"].endswith("s")
    assert UsageEvent.objects.count() == 5  # refused requests never reached the upstream or the ledger
    if settings.REDIS_URL:  # counted in Redis (shared by every process), not by the in-process fallback
        assert limits.local_limiter._values == {}


def test_success_carries_remaining_requests_header(gateway):
    _limit_key(gateway, rpm_limit=10)
    _same_minute()
    raw = gateway.openai().chat.completions.with_raw_response.create(model="demo-echo", messages=MESSAGES)
    assert raw.headers["x-ratelimit-limit-requests"] == "10"
    assert raw.headers["x-ratelimit-remaining-requests"] == "9"


def test_org_rpm_is_shared_by_all_keys_of_the_org(gateway):
    # given: two keys without own limits, the organisation allows 4 per minute
    from accounts.services import apikey_issue

    org = gateway.tenant.org
    org_update(org=org, set_limits=True, rpm_limit=4)
    second = apikey_issue(org=org, name="second").secret
    _same_minute()
    clients = [gateway.openai(), gateway.openai(api_key=second)]

    def one(i):
        try:
            return clients[i % 2].chat.completions.create(model="demo-echo", messages=MESSAGES, max_tokens=10)
        except openai.APIStatusError as exc:
            return exc

    # when
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(one, range(10)))
    # then
    assert _statuses(results) == {200: 4, 429: 6}


def test_anthropic_client_gets_429_in_its_shape(gateway):
    import anthropic

    _limit_key(gateway, rpm_limit=1)
    _same_minute()
    client = gateway.anthropic()
    client.messages.create(model="demo-echo", max_tokens=10, messages=MESSAGES)
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="demo-echo", max_tokens=10, messages=MESSAGES)
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_key_tpm_counts_estimated_input_tokens(gateway):
    # given: a request whose prompt estimate (the gateway's documented heuristic) is known
    body = b'{"model":"demo-echo","max_tokens":5,"messages":[{"role":"user","content":"' + b"x" * 400 + b'"}]}'
    tokens = estimate_openai_prompt_tokens(json.loads(body))
    _limit_key(gateway, tpm_limit=3 * tokens + tokens // 2)
    _same_minute()
    headers = {"authorization": f"Bearer {gateway.tenant.secret}", "content-type": "application/json"}

    def one(_):
        return httpx.post(f"{gateway.server.openai_base_url}/chat/completions", content=body, headers=headers, timeout=30)

    # when
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(one, range(8)))
    # then
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 5
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["x-ratelimit-limit-tokens"] == str(3 * tokens + tokens // 2)


def test_monthly_spend_cap_under_concurrency_refuses_with_402(gateway, settings):
    # given: a cap that fits exactly three holds of this request (issue 12: the hold is its worst case)
    settings.RUAPI_SPEND_CACHE_TTL = 60.0
    spec = catalog_build().models["demo-echo"]
    body = {"model": "demo-echo", "messages": MESSAGES, "max_tokens": 100}
    hold = chat_hold_nanos(spec, input_tokens=chat_input_bound(spec, body), max_output_tokens=100)
    cap = 3 * hold + hold // 2
    _limit_key(gateway, monthly_spend_cap_nanos=cap)
    # when
    results = _fire(gateway, 10)
    # then: at least the three that fit are served (a settled request gives back what it did not
    # spend, so a late one may fit too), every other is refused by the cap, and spend stays within it
    statuses = _statuses(results)
    assert statuses[200] >= 3 and statuses[200] + statuses.get(402, 0) == 10
    refused = next(r for r in results if isinstance(r, openai.APIStatusError))
    assert refused.body["code"] == "spend_cap_reached"
    assert refused.response.headers["x-should-retry"] == "false"
    assert UsageEvent.objects.count() == statuses[200]
    assert sum(UsageEvent.objects.values_list("cost_nanos", flat=True)) <= cap


def test_spend_cap_already_reached_refuses_every_request(gateway, settings):
    # given: spend so far (from usage events) is at the cap
    settings.RUAPI_SPEND_CACHE_TTL = 60.0
    gateway.openai().chat.completions.create(model="demo-echo", messages=MESSAGES, max_tokens=5)
    spent = UsageEvent.objects.get().cost_nanos
    _limit_key(gateway, monthly_spend_cap_nanos=spent)
    # when
    results = _fire(gateway, 6)
    # then
    assert _statuses(results) == {402: 6}


def test_org_spend_cap_refuses_with_402(gateway, settings):
    settings.RUAPI_SPEND_CACHE_TTL = 60.0
    org_update(org=gateway.tenant.org, set_limits=True, monthly_spend_cap_nanos=1)
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().chat.completions.create(model="demo-echo", messages=MESSAGES, max_tokens=5)
    assert caught.value.status_code == 402
    assert "organisation's monthly spend cap" in caught.value.message


def test_model_not_allowed_for_the_key_is_403(gateway):
    _limit_key(gateway, allowed_models=["gpt-test"])
    client = gateway.openai()
    assert client.chat.completions.create(model="gpt-test", messages=MESSAGES).choices
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="demo-echo", messages=MESSAGES)
    assert caught.value.body["code"] == "model_not_allowed"
    assert UsageEvent.objects.count() == 1


def test_ip_allowlist(gateway):
    _limit_key(gateway, ip_allowlist=["10.0.0.0/8"])
    with pytest.raises(openai.PermissionDeniedError) as caught:
        gateway.openai().chat.completions.create(model="demo-echo", messages=MESSAGES)
    assert caught.value.body["code"] == "ip_not_allowed"
    _limit_key(gateway, ip_allowlist=["10.0.0.0/8", "127.0.0.1"])
    assert gateway.openai().chat.completions.create(model="demo-echo", messages=MESSAGES).choices
