"""Money under concurrency, public API and playground together (issue 8).

Bursts of requests against a small balance, all released at once: official-SDK clients (OpenAI and
Anthropic protocol, streams and not) through two gateways — the in-process test server and a
separate gateway process, both on the same database — and dashboard playground requests over
its WebSocket consumer (which drives the /v1 app in this process). Every request holds and costs
exactly one cent (input free, output $2000/1M tokens, 5 tokens, answered with exactly 5), and the
balance allows ten of them: so exactly ten are served in every burst whatever the interleaving,
the others get 402, the balance never goes below zero, and the ledger equals the balance after
(`python manage.py reconcile` says so too).
"""

import asyncio
import random
import subprocess
import sys
import threading
import time

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings

from billing.models import Balance, Hold, LedgerEntry, UsageEvent
from billing.money import usd_to_nanos
from billing.services import balance_credit
from proxy.tests.reliability.faults import (
    BASE_DIR,
    FULL,
    REFUSED,
    Clients,
    GatewayProcess,
    Outcome,
    assert_billed_exactly_once,
    assert_ledger_equals_balance,
    database_url,
    is_protocol_error,
    one_request,
)

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

CENT = 10_000_000  # nano-USD
SERVABLE = 10  # requests the balance allows in each burst
ROUNDS = 3
# Per burst, how long each SDK client waits after the common start (seconds, uniform): the
# playground's requests take longer to set off, so they get a head start in some bursts.
HEAD_START = [(0, 0.05), (0.05, 0.3), (0, 0.2)]
PROMPT = "one two three four five six seven eight"  # more words than the 5 output tokens allowed


@pytest.fixture
def tight(gateway, tmp_path):
    """Cent-priced models on both upstream protocols, an organisation with ten and a half cents, a
    developer member for the playground, and a second gateway process on the same database."""
    from channels.layers import channel_layers

    from accounts.models import Membership
    from accounts.tests.factories import MembershipFactory
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate
    from conftest import make_tenant, mock_catalog
    from usage.tests.conftest import session_cookie

    catalog = mock_catalog(gateway.mock)
    for name, provider, upstream in (("cent-gpt", "mock-openai", "gpt-upstream-1"),
                                     ("cent-claude", "mock-anthropic", "claude-upstream-1")):  # fmt: skip
        catalog["models"].append({"name": name, "provider": provider, "upstream_model": upstream, "input": 0,
                                  "output": 2000, "max_output_tokens": 5})  # fmt: skip
    catalog_load(catalog)
    catalog_invalidate()
    tenant = make_tenant("Tight", credit="0.105")
    member = MembershipFactory(org=tenant.org, role=Membership.Role.DEVELOPER).user
    channel_layers.backends.clear()
    other = GatewayProcess(tmp_path / "gateway.log", env={"DATABASE_URL": database_url(),
                                                          "REDIS_URL": settings.REDIS_URL or ""}).wait_ready()  # fmt: skip
    playground = Playground(tenant.org.id, session_cookie(member))
    try:
        playground.warm_up()
        yield tenant, playground, other
    finally:
        playground.close()
        other.kill()
        channel_layers.backends.clear()


class Playground:
    """Playground WebSockets on one event loop of their own (a thread), kept across bursts."""

    def __init__(self, org_id: int, cookie: str) -> None:
        self.org_id, self.cookie = org_id, cookie
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="playground", daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    async def connect(self) -> WebsocketCommunicator:
        from ruapi.asgi import application
        from usage.tests.conftest import ws_headers

        communicator = WebsocketCommunicator(application, f"/ws/orgs/{self.org_id}/playground/",
                                             headers=ws_headers(self.cookie))  # fmt: skip
        connected, _ = await communicator.connect()
        assert connected
        return communicator

    async def one(self, protocol: str, model: str, communicator) -> Outcome:
        outcome = Outcome(protocol, True, model, time.monotonic())
        await communicator.send_json_to({"type": "chat", "protocol": protocol, "model": model, "max_tokens": 5,
                                         "messages": [{"role": "user", "content": PROMPT}]})  # fmt: skip
        while True:
            message = await communicator.receive_json_from(timeout=30)
            if message["type"] in ("done", "error"):
                break
        outcome.ended, outcome.request_id = time.monotonic(), message.get("request_id") or ""
        if message["type"] == "done" and not message["error"]:
            outcome.kind, outcome.cost = FULL, message["usage"].get("cost")
        else:
            outcome.kind, outcome.body = REFUSED, message
        await communicator.disconnect()
        return outcome

    def warm_up(self) -> None:
        """One request the catalog refuses (no money involved): the path is warm for the bursts."""
        outcome = self.run(self._warm_up())
        assert outcome.kind == REFUSED and "no-such-model" in outcome.body["message"], outcome

    async def _warm_up(self) -> Outcome:
        return await self.one("openai", "no-such-model", await self.connect())

    def burst(self, turns: list[tuple[str, str]], start: threading.Barrier) -> list[Outcome]:
        """One WebSocket per request (one reply at a time per socket), all sent at the common start."""
        return self.run(self._burst(turns, start))

    async def _burst(self, turns, start) -> list[Outcome]:
        communicators = [await self.connect() for _ in turns]
        await asyncio.to_thread(start.wait)
        return await asyncio.gather(*(self.one(p, m, c) for (p, m), c in zip(turns, communicators, strict=True)))

    def close(self) -> None:
        from channels.db import database_sync_to_async
        from django.db import connections

        from proxy.upstreams.http import close_sessions

        self.run(close_sessions())
        # the consumers' ORM calls ran in asgiref's thread for this loop: hand its connection back
        self.run(database_sync_to_async(connections.close_all)())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def _sdk_one(base_url: str, secret: str, turn: tuple[str, bool, str], start: threading.Barrier, delay: float,
            out: list) -> None:  # fmt: skip
    clients = Clients(base_url, secret, timeout=30)
    try:
        start.wait()
        time.sleep(delay)
        out.append(one_request(clients, *turn, max_tokens=5, prompt=PROMPT))
    finally:
        clients.close()


def _watch_balance(org_id: int, stop: threading.Event, seen: list) -> None:
    from django.db import connection

    try:
        while not stop.is_set():
            seen.append(tuple(Balance.objects.filter(org_id=org_id).values_list("balance_nanos", "held_nanos")[0]))
            time.sleep(0.005)
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_bursts_over_sdk_and_playground_never_overspend(gateway, tight):
    tenant, playground_ws, other = tight
    org_id = tenant.org.id
    rng = random.Random(8)
    sdk_turns = [(protocol, stream, model) for protocol in ("openai", "anthropic") for stream in (False, True)
                 for model in ("cent-gpt", "cent-claude")]  # fmt: skip
    everything: list[Outcome] = []
    for round_ in range(ROUNDS):
        # given: ten and a half cents
        assert Balance.objects.get(org_id=org_id).balance_nanos == SERVABLE * CENT + CENT // 2
        # when: 24 SDK requests (half through each gateway) and 12 playground requests start at once
        sdk = [(url, sdk_turns[i % len(sdk_turns)]) for i in range(24)
               for url in [(gateway.server.url, other.url)[i % 2]]]  # fmt: skip
        rng.shuffle(sdk)
        playground = [(("openai", "anthropic")[i % 2], ("cent-gpt", "cent-claude")[i // 2 % 2]) for i in range(12)]
        start = threading.Barrier(len(sdk) + 1)
        results: list[Outcome] = []
        threads = [threading.Thread(target=_sdk_one, args=(url, tenant.secret, turn, start, rng.uniform(*HEAD_START[round_]),
                                                           results)) for url, turn in sdk]  # fmt: skip
        stop, seen = threading.Event(), []
        watcher = threading.Thread(target=_watch_balance, args=(org_id, stop, seen))
        watcher.start()
        for thread in threads:
            thread.start()
        played = playground_ws.burst(playground, start)
        for thread in threads:
            thread.join(timeout=60)
        stop.set()
        watcher.join()

        # then: exactly as many served as the balance allows, each told one cent; the others refused
        # with 402 in their protocol's shape (the playground says so in its error message)
        results += played
        assert len(results) == 36
        served = [o for o in results if o.kind == FULL]
        refused = [o for o in results if o.kind == REFUSED]
        assert len(served) == SERVABLE and len(refused) == 36 - SERVABLE, [o for o in results if o.kind != FULL][:3]
        assert all(usd_to_nanos(str(o.cost)) == CENT for o in served), served
        for o in refused:
            if o in played:  # the playground's error message
                assert "insufficient balance" in o.body["message"].lower(), o
            else:
                assert o.status == 402 and is_protocol_error(o.protocol, o.status, o.body), o
        # and: the balance never went below zero, nor did what was free to hold
        assert seen and all(balance >= 0 and balance - held >= 0 for balance, held in seen), min(seen)
        # and: half a cent left, nothing held, every served request debited once
        assert Balance.objects.get(org_id=org_id).balance_nanos == CENT // 2
        assert Balance.objects.get(org_id=org_id).held_nanos == 0
        assert not Hold.objects.filter(org_id=org_id, status=Hold.Status.PENDING).exists()
        everything += results
        assert_billed_exactly_once(org_id, everything)
        assert LedgerEntry.objects.filter(org_id=org_id, kind="usage").count() == SERVABLE * (round_ + 1)
        assert_ledger_equals_balance()
        # top up for the next burst
        balance_credit(org_id=org_id, amount_nanos=SERVABLE * CENT, kind="promo", description="next burst")

    sources = dict.fromkeys(("api", "playground"), 0)
    for source in UsageEvent.objects.filter(org_id=org_id, status_code=200).values_list("source", flat=True):
        sources[source] += 1
    assert sum(sources.values()) == SERVABLE * ROUNDS and all(sources.values()), sources
    print(f"\nserved by source over {ROUNDS} bursts: {sources}")
    # `python manage.py reconcile` on this database: no drift
    command = subprocess.run([sys.executable, "manage.py", "reconcile"], cwd=BASE_DIR, capture_output=True, text=True,
                             env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "ruapi.settings",
                                  "DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL or ""})  # fmt: skip
    assert (command.returncode, command.stdout.strip()) == (0, "ok"), command.stderr[-2000:]
