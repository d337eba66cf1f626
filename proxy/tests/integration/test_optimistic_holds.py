"""Optimistic admission (issue 15): a rich organisation's chat request starts its upstream call while
its hold is written; the hold is confirmed before any of the answer leaves, and a refused one answers
402 with nothing debited.

"A slow hold statement": another connection holds the organisation's balance row (FOR UPDATE), so
every hold statement waits for it (Postgres only). "Another process spends the funds": an operator's
debit through the billing service, which the gateway process's view of the funds does not see.
"""

import asyncio
import contextlib
import threading
import time
from decimal import Decimal

import httpx
import openai
import psycopg
import pytest
from django.db import OperationalError, connection
from prometheus_client import REGISTRY

from accounts.services import KeyLimits, apikey_update
from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from billing.money import usd_to_nanos
from billing.services import balance_adjust, ledger_reconcile
from billing.services import holds as boundary
from proxy import metering
from proxy.tests.mock_upstream import Script
from proxy.tests.reliability.faults import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "responses": "/v1/responses"}
PROMPT = [{"role": "user", "content": "hello optimist"}]


def needs_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("holds a balance row locked from another connection: Postgres")


@pytest.fixture(autouse=True)
def _view(settings):
    """A fresh view for each test, trusted for long enough that a slow machine does not age it."""
    settings.RUAPI_OPTIMISTIC_HOLD_FACTOR = 20.0
    settings.RUAPI_OPTIMISTIC_HOLD_MAX_AGE = 30.0
    boundary.funds_forget()
    yield
    boundary.funds_forget()


def post(
    gateway, protocol: str, *, stream: bool = False, timeout: float = 15, answered: threading.Event | None = None
) -> httpx.Response:
    """One request; `answered` is set as soon as the response's status line and headers arrive."""
    headers = {"authorization": f"Bearer {gateway.tenant.secret}"}
    if protocol == "anthropic":
        headers["anthropic-version"] = "2023-06-01"
    body = {"model": "gpt-test", "messages": PROMPT, "max_tokens": 50, "stream": stream}
    if protocol == "responses":
        body = {"model": "gpt-test", "input": "hello optimist", "max_output_tokens": 50, "stream": stream, "store": False}
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream("POST", gateway.server.url + PATHS[protocol], json=body, headers=headers) as response,
    ):
        if answered is not None:
            answered.set()
        response.read()
        return response


class InBackground:
    """One request in a thread: its response, or the exception it ended with."""

    def __init__(self, call) -> None:
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call) -> None:
        try:
            self.result = call()
        except Exception as exc:  # handed to the test
            self.result = exc

    def join(self, timeout: float = 20):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the request did not end"
        return self.result


@contextlib.contextmanager
def balance_row_locked(org_id: int):
    """Another connection holds the organisation's balance row: hold statements wait until the end."""
    settings = connection.settings_dict
    with psycopg.connect(
        dbname=settings["NAME"], user=settings.get("USER") or None, host=settings.get("HOST") or None,
        port=settings.get("PORT") or None, password=settings.get("PASSWORD") or None,
    ) as locker:  # fmt: skip
        locker.execute("SELECT 1 FROM billing_balance WHERE org_id = %s FOR UPDATE", [org_id])
        yield
        locker.rollback()


def warm(gateway) -> int:
    """One request: its settlement gives the process a fresh view of the organisation. Its hold amount."""
    response = post(gateway, "openai")
    assert response.status_code == 200, response.text
    return Hold.objects.get(request_id=response.headers["x-request-id"]).amount_nanos


def refusals() -> float:
    return REGISTRY.get_sample_value("ruapi_optimistic_hold_refusals_total") or 0.0


def held(org_id: int) -> int:
    return Balance.objects.get(org_id=org_id).held_nanos


def drain(org_id: int, *, leave: int) -> None:
    """Another process spends the funds: the gateway's view does not see it."""
    balance = Balance.objects.get(org_id=org_id).balance_nanos
    balance_adjust(org_id=org_id, amount_nanos=leave - balance, reason="spent elsewhere", actor="test")


# -- taken, and not taken -------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["non-streamed", "streamed"])
@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_rich_organisation_reaches_the_upstream_while_its_hold_is_written(gateway, protocol, stream):
    needs_postgres()
    org_id = gateway.tenant.org.id
    hold = warm(gateway)
    assert Balance.objects.get(org_id=org_id).balance_nanos > 20 * hold
    started = metering.stats["optimistic"]
    # when: a request comes while its hold statement cannot finish
    with balance_row_locked(org_id):
        answered = threading.Event()
        request = InBackground(lambda: post(gateway, protocol, stream=stream, answered=answered))
        # then: the upstream got it (and answered) all the same, while the hold was not written and
        # nothing, not even a status line, went to the client
        wait_for(lambda: len(gateway.mock.requests) == 2, 10, "the upstream call")
        gateway.mock.wait_idle(5)
        time.sleep(0.3)
        assert not Hold.objects.filter(status="pending").exists() and held(org_id) == 0
        assert not answered.is_set(), "an answer left before its hold was written"
    # and: once the hold is written the answer goes out, billed once
    response = request.join()
    assert response.status_code == 200, response.text
    assert metering.stats["optimistic"] == started + 1
    event = UsageEvent.objects.get(request_id=response.headers["x-request-id"])
    assert event.cost_nanos > 0 and event.status_code == 200
    assert LedgerEntry.objects.get(request_id=event.request_id).amount_nanos == -event.cost_nanos
    assert held(org_id) == 0
    assert ledger_reconcile() == []


@pytest.mark.parametrize("case", ["no view", "stale view", "not rich enough", "turned off"])
def test_the_hold_is_awaited_before_the_upstream_call_otherwise(gateway, settings, case):
    needs_postgres()
    org_id = gateway.tenant.org.id
    hold = warm(gateway)
    if case == "no view":
        boundary.funds_forget()
    elif case == "stale view":
        settings.RUAPI_OPTIMISTIC_HOLD_MAX_AGE = 0.2
        time.sleep(0.5)
    elif case == "not rich enough":  # 19.5 holds available once the view knows it
        drain(org_id, leave=hold * 39 // 2)
        assert post(gateway, "openai").status_code == 200  # its settlement refreshes the view
        assert boundary.funds_available(org_id, max_age=30) < 20 * hold
    else:
        settings.RUAPI_OPTIMISTIC_HOLD_FACTOR = 0
    calls = len(gateway.mock.requests)
    started = metering.stats["optimistic"]
    # when: a request comes while its hold statement cannot finish
    with balance_row_locked(org_id):
        request = InBackground(lambda: post(gateway, "openai"))
        time.sleep(0.8)
        # then: the upstream has not been called
        assert len(gateway.mock.requests) == calls
    response = request.join()
    assert response.status_code == 200, response.text
    assert len(gateway.mock.requests) == calls + 1
    assert metering.stats["optimistic"] == started
    assert held(org_id) == 0 and ledger_reconcile() == []


# -- refused after the upstream call started ------------------------------------------------------------------
def assert_refused_like_a_refused_hold(gateway, protocol: str, response: httpx.Response) -> None:
    """402 in the caller's shape, the very answer a request refused before its upstream call gets."""
    assert response.status_code == 402, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert b"data:" not in response.content and b"event:" not in response.content
    calls = len(gateway.mock.requests)
    plain = post(gateway, protocol)  # the view now knows: refused before any upstream call
    assert len(gateway.mock.requests) == calls
    assert plain.status_code == 402
    mine, theirs = response.json(), plain.json()
    if protocol == "anthropic":
        assert mine["type"] == "error" and mine["error"] == theirs["error"]
    else:
        assert mine["error"] == theirs["error"]
    assert response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("moment", ["during the upstream call", "after the upstream answered"])
@pytest.mark.parametrize("stream", [False, True], ids=["non-streamed", "streamed"])
@pytest.mark.parametrize("protocol", ["openai", "anthropic", "responses"])
def test_a_hold_refused_after_the_upstream_call_started_answers_402_and_debits_nothing(
    gateway, caplog, protocol, stream, moment
):
    needs_postgres()
    # given: a fresh view of a rich organisation, whose funds another process then spends
    org_id = gateway.tenant.org.id
    warm(gateway)
    drain(org_id, leave=1000)
    before = (refusals(), UsageEvent.objects.count(), LedgerEntry.objects.count())
    if moment == "during the upstream call":
        gateway.mock.enqueue(PATHS["openai"], Script(json=completion(), first_byte_delay=10))
    # when: the upstream gets the request (and answers, headers and all) before the hold statement can run
    with balance_row_locked(org_id):
        answered = threading.Event()
        request = InBackground(lambda: post(gateway, protocol, stream=stream, answered=answered))
        wait_for(lambda: len(gateway.mock.requests) == 2, 10, "the upstream call")
        time.sleep(0.5)
        assert not answered.is_set(), "an answer left before its hold was written"
        refused_at = time.monotonic()
    response = request.join()
    # then: 402 at once, the upstream call cancelled if it was still running, nothing of the answer sent
    assert time.monotonic() - refused_at < 3
    if moment == "during the upstream call":
        assert gateway.mock.wait_for_disconnect(timeout=5)
    assert refusals() == before[0] + 1
    assert "optimistic hold" in caplog.text
    assert_refused_like_a_refused_hold(gateway, protocol, response)
    # and: nothing debited, held or recorded
    assert (UsageEvent.objects.count(), LedgerEntry.objects.count()) == before[1:]
    balance = Balance.objects.get(org_id=org_id)
    assert (balance.balance_nanos, balance.held_nanos) == (1000, 0)
    assert Hold.objects.count() == 1  # the warm-up's
    assert ledger_reconcile() == []


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_database_failure_while_the_hold_is_written_is_a_failed_hold(gateway, settings, monkeypatch, protocol):
    # given: a fresh view of a rich organisation, and a database that fails every hold statement
    org_id = gateway.tenant.org.id
    warm(gateway)

    async def unreachable(request):
        await asyncio.sleep(0.2)
        raise OperationalError("the database is unreachable (test)")

    monkeypatch.setattr(boundary, "_hold_open", unreachable)
    gateway.mock.enqueue(PATHS["openai"], Script(json=completion(), first_byte_delay=10))
    # when: one request goes ahead while its hold fails, and one waits for its hold (today's way)
    started = metering.stats["optimistic"]
    ahead = post(gateway, protocol)
    assert metering.stats["optimistic"] == started + 1
    assert gateway.mock.wait_for_disconnect(timeout=5)  # its upstream call was cancelled
    calls = len(gateway.mock.requests)
    settings.RUAPI_OPTIMISTIC_HOLD_FACTOR = 0
    waited = post(gateway, protocol)
    # then: the same error, and nothing held, recorded or debited
    assert len(gateway.mock.requests) == calls
    assert ahead.status_code == waited.status_code >= 500, (ahead.text, waited.text)
    assert ahead.json()["error"]["type"] == waited.json()["error"]["type"]
    assert held(org_id) == 0 and Hold.objects.count() == 1 and UsageEvent.objects.count() == 1
    assert ledger_reconcile() == []


# -- a client that leaves while its hold is written -----------------------------------------------------------
def test_a_client_that_leaves_while_its_hold_is_written_leaves_nothing_held(gateway):
    needs_postgres()
    org_id = gateway.tenant.org.id
    hold = warm(gateway)
    spent = UsageEvent.objects.get().cost_nanos
    # a spend cap with room for one hold: a reservation not given back would refuse the next request
    apikey_update(org=gateway.tenant.org, api_key=gateway.tenant.api_key,
                  limits=KeyLimits(allowed_models=[], ip_allowlist=[], monthly_spend_cap_nanos=spent + hold))  # fmt: skip
    started = metering.stats["optimistic"]
    gateway.mock.enqueue(PATHS["openai"], Script(json=completion(), first_byte_delay=10))
    # when: the client gives up while the upstream has not answered and the hold statement cannot finish
    with balance_row_locked(org_id):
        with pytest.raises(httpx.ReadTimeout):
            post(gateway, "openai", timeout=1.0)
        assert gateway.mock.wait_for_disconnect(timeout=5)
        assert metering.stats["optimistic"] == started + 1
    # then: the hold, once written, is released; no usage event; no task left
    wait_for(lambda: Hold.objects.filter(status="released").count() == 1, 10, "the hold released")
    wait_for(lambda: not metering._tasks and not boundary._releases, 10, "the hold's tasks done")
    assert held(org_id) == 0 and not Hold.objects.filter(status="pending").exists()
    assert UsageEvent.objects.count() == 1
    assert ledger_reconcile() == []
    # and: its spend-cap reservation is back: the cap still has room for one hold
    assert post(gateway, "openai").status_code == 200


# -- a burst near the threshold -------------------------------------------------------------------------------
def completion(tokens: int = 20) -> dict:
    return {"id": "chatcmpl-opt", "object": "chat.completion", "created": 1, "model": "gpt-upstream-1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 10 + tokens}}  # fmt: skip


def burst(gateway, n: int = 24, *, raw: bool = False) -> tuple[list, list]:
    """n chat requests at once, every hold decided before the first settlement: (answers, 402 refusals);
    `raw`: the answers with their headers."""
    for _ in range(n):
        gateway.mock.enqueue(PATHS["openai"], Script(json=completion(), first_byte_delay=2))
    client = openai.AsyncOpenAI(base_url=gateway.server.openai_base_url, api_key=gateway.tenant.secret, max_retries=0)
    create = client.chat.completions.with_raw_response.create if raw else client.chat.completions.create

    async def run():
        try:
            requests = (create(model="gpt-test", messages=PROMPT, max_tokens=50) for _ in range(n))
            return await asyncio.gather(*requests, return_exceptions=True)
        finally:
            await client.close()

    results = asyncio.run(run())
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError) and r.status_code == 402]
    assert len(ok) + len(refused) == n, [r for r in results if isinstance(r, BaseException)][:3]
    return ok, refused


def test_a_burst_on_a_balance_near_the_threshold_never_overdraws(gateway):
    # given: a view just above the threshold (22 holds) of a balance another process has since cut to 2 holds
    org_id = gateway.tenant.org.id
    hold = warm(gateway)
    drain(org_id, leave=22 * hold)
    assert post(gateway, "openai").status_code == 200  # its settlement refreshes the view
    drain(org_id, leave=2 * hold)
    started, refused_before = metering.stats["optimistic"], refusals()
    # when
    ok, refused = burst(gateway)
    # then: at most what the balance covers is served, the rest refused with 402
    assert 1 <= len(ok) <= 2
    assert metering.stats["optimistic"] > started
    # and: never overdrawn, nothing held, each answer billed once, no refusal recorded
    wait_for(lambda: not metering._tasks, 10, "the hold tasks done")
    balance = Balance.objects.get(org_id=org_id)
    assert balance.balance_nanos >= 0 and balance.held_nanos == 0
    assert UsageEvent.objects.filter(org_id=org_id).count() == 2 + len(ok)
    assert LedgerEntry.objects.filter(kind="usage").count() == 2 + len(ok)
    assert not Hold.objects.filter(status="pending").exists()
    assert ledger_reconcile() == []
    after_upstream = refusals() - refused_before
    print(f"\nburst: {len(ok)} served, {len(refused)} refused, {after_upstream:.0f} of them after the upstream call")


# -- a complete answer whose settlement overlaps it (production's default) -----------------------------------
# RUAPI_SETTLE_BEFORE_RESPONSE unset: a non-streamed answer leaves while its settlement commits, and a
# hold still being written when the upstream's headers come is confirmed by that settlement
# (proxy/metering.py `_hold_after_answer`). Streams and keys with limits still confirm first.
def shown_cost(response) -> int:
    return usd_to_nanos(Decimal(response.headers["x-ruapi-cost-usd"]))


def lost() -> float:
    return REGISTRY.get_sample_value("ruapi_settlements_lost_total") or 0.0


def answered_while_the_hold_waits(gateway, protocol: str) -> httpx.Response:
    """One non-streamed request, answered while its hold statement waits (the balance row is locked)."""
    answered = threading.Event()
    request = InBackground(lambda: post(gateway, protocol, answered=answered))
    wait_for(answered.is_set, 10, "the answer")
    return request.join()


@pytest.fixture
def overlapping(settings):
    needs_postgres()
    settings.RUAPI_SETTLE_BEFORE_RESPONSE = False
    yield
    wait_for(lambda: not metering._settling and not metering._tasks, 10, "the settlements after the answers")


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "responses"])
def test_a_complete_answer_leaves_before_its_hold_is_written_and_is_billed_once(gateway, overlapping, protocol):
    org_id = gateway.tenant.org.id
    warm(gateway)
    wait_for(lambda: not metering._settling, 10, "the warm-up's settlement")
    # when: the hold statement cannot finish while the upstream answers
    with balance_row_locked(org_id):
        response = answered_while_the_hold_waits(gateway, protocol)
        # then: the answer left all the same, nothing held yet
        assert response.status_code == 200, response.text
        assert held(org_id) == 0 and not Hold.objects.filter(request_id=response.headers["x-request-id"]).exists()
    # and: once the hold is written it is settled: exactly the cost the answer showed, once
    request_id = response.headers["x-request-id"]
    wait_for(lambda: not metering._settling, 10, "the settlement")
    event = UsageEvent.objects.get(request_id=request_id)
    assert event.cost_nanos == shown_cost(response) > 0
    assert LedgerEntry.objects.get(request_id=request_id).amount_nanos == -event.cost_nanos
    assert Hold.objects.get(request_id=request_id).status == "settled"
    assert held(org_id) == 0 and ledger_reconcile() == []


def test_a_stream_still_waits_for_its_hold(gateway, overlapping):
    org_id = gateway.tenant.org.id
    warm(gateway)
    with balance_row_locked(org_id):
        answered = threading.Event()
        request = InBackground(lambda: post(gateway, "openai", stream=True, answered=answered))
        wait_for(lambda: len(gateway.mock.requests) == 2, 10, "the upstream call")
        time.sleep(0.5)
        assert not answered.is_set(), "a stream's first byte left before its hold was written"
    assert request.join().status_code == 200
    assert held(org_id) == 0 and ledger_reconcile() == []


@pytest.mark.parametrize("funds", ["cover the cost", "do not cover the cost"])
@pytest.mark.parametrize("protocol", ["openai", "responses"])
def test_a_hold_refused_after_the_answer_left_holds_the_cost_or_bills_nothing(
    gateway, overlapping, caplog, protocol, funds
):
    # given: a fresh view of a rich organisation, whose funds another process then spends down to less
    # than the request's hold (and, in the second case, less than its cost)
    org_id = gateway.tenant.org.id
    hold = warm(gateway)
    wait_for(lambda: not metering._settling, 10, "the warm-up's settlement")
    leave = hold - 1 if funds == "cover the cost" else 1
    drain(org_id, leave=leave)
    before = (refusals(), lost(), UsageEvent.objects.count())
    # when: the upstream answers before the hold statement can run
    with balance_row_locked(org_id):
        response = answered_while_the_hold_waits(gateway, protocol)
    # then: the answer was the upstream's, and the hold is refused once written
    assert response.status_code == 200, response.text
    request_id, shown = response.headers["x-request-id"], shown_cost(response)
    assert 1 < shown < hold
    wait_for(lambda: not metering._settling and not metering._tasks, 10, "the settlement")
    assert refusals() == before[0] + 1
    balance = Balance.objects.get(org_id=org_id)
    if funds == "cover the cost":
        # and: its cost is held and settled instead: debited exactly what the answer showed, once
        event = UsageEvent.objects.get(request_id=request_id)
        assert event.cost_nanos == shown
        assert LedgerEntry.objects.get(request_id=request_id).amount_nanos == -shown
        assert Hold.objects.get(request_id=request_id).amount_nanos == shown
        assert (balance.balance_nanos, balance.held_nanos) == (leave - shown, 0)
        assert lost() == before[1]
        assert "held its cost" in caplog.text
    else:
        # and: nothing is debited, held or recorded; the balance never goes below zero; it is counted
        assert UsageEvent.objects.count() == before[2]
        assert not LedgerEntry.objects.filter(request_id=request_id).exists()
        assert not Hold.objects.filter(request_id=request_id).exists()
        assert (balance.balance_nanos, balance.held_nanos) == (1, 0)
        assert lost() == before[1] + 1
        assert "not billed" in caplog.text
    assert ledger_reconcile() == []


def test_a_key_with_limits_confirms_its_hold_before_the_answer(gateway, overlapping):
    org_id = gateway.tenant.org.id
    warm(gateway)
    apikey_update(org=gateway.tenant.org, api_key=gateway.tenant.api_key,
                  limits=KeyLimits(allowed_models=[], ip_allowlist=[], monthly_spend_cap_nanos=10**15))  # fmt: skip
    with balance_row_locked(org_id):
        answered = threading.Event()
        request = InBackground(lambda: post(gateway, "openai", answered=answered))
        wait_for(lambda: len(gateway.mock.requests) == 2, 10, "the upstream call")
        time.sleep(0.5)
        assert not answered.is_set(), "an answer left before its hold was written"
    assert request.join().status_code == 200
    wait_for(lambda: not metering._settling, 10, "the settlement")
    assert held(org_id) == 0 and ledger_reconcile() == []


def test_a_burst_of_complete_answers_on_a_drained_balance_never_overdraws(gateway, overlapping):
    # given: a rich view of a balance another process has since cut to 2 holds
    org_id = gateway.tenant.org.id
    hold = warm(gateway)
    drain(org_id, leave=22 * hold)
    assert post(gateway, "openai").status_code == 200
    wait_for(lambda: not metering._settling, 10, "the settlement")
    drain(org_id, leave=2 * hold)
    lost_before = lost()
    ok, refused = burst(gateway, raw=True)
    wait_for(lambda: not metering._settling and not metering._tasks, 10, "the settlements")
    # then: never overdrawn, nothing held; each served answer billed once what it showed, or counted unbilled
    balance = Balance.objects.get(org_id=org_id)
    assert balance.balance_nanos >= 0 and balance.held_nanos == 0
    billed = {e.request_id: e.cost_nanos for e in UsageEvent.objects.filter(org_id=org_id)}
    unbilled = [r for r in ok if r.headers["x-request-id"] not in billed]
    for r in ok:
        if r.headers["x-request-id"] in billed:
            assert billed[r.headers["x-request-id"]] == shown_cost(r)
    assert lost() - lost_before == len(unbilled)
    assert 2 * hold - balance.balance_nanos == sum(shown_cost(r) for r in ok
                                                    if r.headers["x-request-id"] in billed)  # fmt: skip
    assert not Hold.objects.filter(status="pending").exists()
    assert ledger_reconcile() == []
    print(f"\nburst (overlapping): {len(ok)} served ({len(unbilled)} unbilled), {len(refused)} refused")
