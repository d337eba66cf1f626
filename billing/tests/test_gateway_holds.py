"""Holds through the real gateway: concurrent SDK calls can never overspend (issue 5, done-when 1)."""

import asyncio

import openai
import pytest

from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from billing.services import ledger_reconcile
from billing.tasks import expire_holds

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

TEN_CENTS = 100_000_000


def _completion(n: int) -> dict:
    return {
        "id": f"chatcmpl-hold{n}", "object": "chat.completion", "created": 1, "model": "gpt-upstream-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1000, "total_tokens": 1010},
    }  # fmt: skip


def test_fifty_concurrent_requests_against_one_dollar(gateway):
    # given: a model whose every request holds (and costs) exactly $0.10: output $100/1M, 1000 tokens max
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate
    from conftest import make_tenant, mock_catalog
    from proxy.tests.mock_upstream import Script

    catalog = mock_catalog(gateway.mock)
    catalog["models"].append({"name": "hold-test", "provider": "mock-openai", "upstream_model": "gpt-upstream-1",
                              "input": 0, "output": 100, "max_output_tokens": 1000})  # fmt: skip
    catalog_load(catalog)
    catalog_invalidate()
    poor = make_tenant("Poor", credit="1")
    for n in range(50):
        gateway.mock.enqueue("/v1/chat/completions", Script(json=_completion(n), first_byte_delay=0.2))
    client = openai.AsyncOpenAI(base_url=gateway.server.openai_base_url, api_key=poor.secret, max_retries=0)

    async def one():
        return await client.chat.completions.create(
            model="hold-test", max_tokens=1000, messages=[{"role": "user", "content": "spend"}]
        )

    async def all_at_once():
        try:
            return await asyncio.gather(*(one() for _ in range(50)), return_exceptions=True)
        finally:
            await client.close()

    # when
    results = asyncio.run(all_at_once())
    # then
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError) and r.status_code == 402]
    assert (len(ok), len(refused)) == (10, 40), [r for r in results if isinstance(r, BaseException)][:3]
    balance = Balance.objects.get(org_id=poor.org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (0, 0)
    usage = list(LedgerEntry.objects.filter(org_id=poor.org.id, kind="usage").values_list("amount_nanos", flat=True))
    assert usage == [-TEN_CENTS] * 10
    assert UsageEvent.objects.filter(org_id=poor.org.id, status_code=200).count() == 10
    assert ledger_reconcile() == []
    assert Balance.objects.get(org_id=gateway.tenant.org.id).balance_nanos == 10_000_000_000  # other org untouched


@pytest.mark.django_db
def test_expired_holds_are_released_by_the_task():
    from datetime import timedelta

    from django.utils import timezone

    from billing.services import balance_hold
    from billing.tests.factories import org_with

    org = org_with("Acme", usd="1")
    stale = balance_hold(org_id=org.id, request_id="crashed", amount_nanos=TEN_CENTS * 3)
    fresh = balance_hold(org_id=org.id, request_id="in-flight", amount_nanos=TEN_CENTS)
    Hold.objects.filter(pk=stale.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert expire_holds.apply().get() == 1
    assert expire_holds.apply().get() == 0
    assert dict(Hold.objects.values_list("request_id", "status")) == {"crashed": "released", "in-flight": "pending"}
    assert Balance.objects.get(org_id=org.id).held_nanos == TEN_CENTS
    assert Hold.objects.get(pk=fresh.id).status == "pending"
