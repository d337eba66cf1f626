"""One multi-use redemption code, redeemed at the same instant by many organisations through two gateway
processes (uvicorn, production settings, one database): exactly `max_redemptions` succeed (issue 16).

Each organisation's owner POSTs the billing page's "Redeem a code" form from a browser session; the
requests are released together and spread over the two processes. Exactly seven get the redirect to
their balance, the others "used up"; seven redemptions numbered 1..7, seven ledger credits, the
organisations' balances add up to seven credits, and `python manage.py reconcile` is clean.
"""

import os
import secrets
import subprocess
import sys
import threading

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from billing.models import CreditCode, CreditCodeRedemption, LedgerEntry
from billing.money import usd_to_nanos
from billing.services import balance_get, ledger_reconcile
from billing.services.credits import creditcode_issue
from billing.tests.factories import org_with
from proxy.tests.reliability.faults import BASE_DIR, GatewayProcess, database_url

pytestmark = [pytest.mark.integration]

ACCOUNTS = 24
LIMIT = 7
CREDIT = usd_to_nanos("2.50")


@pytest.fixture
def two_gateways(transactional_db, tmp_path):
    env = {"DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL or ""}
    processes = [GatewayProcess(tmp_path / f"gateway-{n}.log", env=env) for n in range(2)]
    try:
        yield [process.wait_ready() for process in processes]
    finally:
        for process in processes:
            process.kill()


def _browser(base_url: str, user) -> httpx.Client:
    from usage.tests.conftest import session_cookie

    csrf = secrets.token_hex(16)  # Django accepts its 32-character secret itself as the form token
    client = httpx.Client(base_url=base_url, timeout=60, follow_redirects=False)
    client.cookies.set("sessionid", session_cookie(user))
    client.cookies.set("csrftoken", csrf)
    client.headers["x-csrftoken"] = csrf
    return client


def test_a_multi_use_code_redeemed_at_once_by_many_organisations_credits_exactly_its_limit(two_gateways):
    # given: a 7-use code, 24 organisations each with an owner signed in, and one bystander organisation
    [issued] = creditcode_issue(amount_nanos=CREDIT, max_redemptions=LIMIT, note="race")
    orgs = [org_with(f"Racer {n}", owner_email=f"owner{n}@racers.test") for n in range(ACCOUNTS)]
    bystander = org_with("Bystander", usd="1")
    users = {u.email: u for u in get_user_model().objects.filter(email__endswith="@racers.test")}
    browsers = [_browser(two_gateways[n % 2].url, users[f"owner{n}@racers.test"]) for n in range(ACCOUNTS)]
    for browser in browsers:  # every session works on its process before the race
        assert browser.get("/billing/top-up/").status_code == 200
    start = threading.Barrier(ACCOUNTS)
    answers: dict[int, httpx.Response] = {}

    def redeem(n: int) -> None:
        start.wait()
        answers[n] = browsers[n].post("/billing/redeem/", data={"code": issued.code})

    # when
    threads = [threading.Thread(target=redeem, args=(n,)) for n in range(ACCOUNTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # then: exactly LIMIT redirects to the balance page, the rest are told the code is used up
    winners = sorted(n for n, r in answers.items() if r.status_code == 303)
    losers = sorted(n for n, r in answers.items() if r.status_code == 409)
    assert len(answers) == ACCOUNTS and len(winners) == LIMIT, {n: r.status_code for n, r in answers.items()}
    assert len(losers) == ACCOUNTS - LIMIT
    assert all(answers[n].headers["location"] == "/billing/" for n in winners)
    assert all("That code has been used up." in answers[n].text for n in losers)
    # and the database agrees, to the nano-USD
    assert CreditCode.objects.get().remaining == 0
    redemptions = CreditCodeRedemption.objects.all()
    assert sorted(r.number for r in redemptions) == list(range(1, LIMIT + 1))
    assert {r.org_id for r in redemptions} == {orgs[n].id for n in winners}
    assert [balance_get(org_id=o.id).balance_nanos for o in orgs] == [CREDIT if n in winners else 0
                                                                      for n in range(ACCOUNTS)]  # fmt: skip
    assert LedgerEntry.objects.filter(kind="promo", org__in=orgs).count() == LIMIT
    assert balance_get(org_id=bystander.id).balance_nanos == usd_to_nanos("1")
    assert ledger_reconcile() == []
    command = subprocess.run([sys.executable, "manage.py", "reconcile"], cwd=BASE_DIR, capture_output=True, text=True,
                             env={**os.environ, "DJANGO_SETTINGS_MODULE": "ruapi.settings",
                                  "DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL or ""})  # fmt: skip
    assert (command.returncode, command.stdout.strip()) == (0, "ok"), command.stderr[-2000:]
    for browser in browsers:
        browser.close()
