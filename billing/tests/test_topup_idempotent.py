"""A double-clicked top-up is one payment and one Checkout session (issue 12 item 5).

Through the real server: the owner's browser session POSTs the top-up form twice at the same instant;
both answers send the browser to the same Checkout session, and Stripe (the stand-in, which honours
Idempotency-Key as Stripe does) holds exactly one session.
"""

import secrets
import threading
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from billing.models import Payment
from billing.money import usd_to_nanos
from billing.services import payment_converge, topup_create
from billing.services.payments import TOPUP_BURST_SECONDS
from billing.tests.factories import org_with

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


def _browser(gateway_url: str, user) -> httpx.Client:
    from usage.tests.conftest import session_cookie

    csrf = secrets.token_hex(16)  # Django accepts its 32-character secret itself as the form token
    client = httpx.Client(base_url=gateway_url, timeout=30, follow_redirects=False)
    client.cookies.set("sessionid", session_cookie(user))
    client.cookies.set("csrftoken", csrf)
    client.headers["x-csrftoken"] = csrf
    return client


def test_two_concurrent_top_up_posts_make_one_payment_and_one_checkout_session(live_gateway, transactional_db,
                                                                                stripe_standin):  # fmt: skip
    # given: the owner of an organisation (and another organisation that must stay untouched)
    from django.contrib.auth import get_user_model

    org = org_with("Acme", owner_email="owner@acme.test")
    other = org_with("Globex", owner_email="boss@globex.test")
    owner = get_user_model().objects.get(email="owner@acme.test")
    browsers = [_browser(live_gateway.url, owner) for _ in range(2)]
    start = threading.Barrier(2)
    answers: list[httpx.Response] = []

    def click(browser):
        start.wait()
        answers.append(browser.post("/billing/top-up/", data={"amount": "25"}))

    # when: the form is submitted twice at once (a double click)
    threads = [threading.Thread(target=click, args=(b,)) for b in browsers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # then: both go to the same Checkout session; one payment, one session in Stripe
    assert [a.status_code for a in answers] == [302, 302], [a.text[:500] for a in answers]
    payment = Payment.objects.get()
    assert (payment.org_id, payment.amount_nanos, payment.status) == (org.id, usd_to_nanos("25"), "pending")
    assert {a.headers["location"] for a in answers} == {payment.checkout_url}
    sessions = stripe_standin.objects_of("checkout.session")
    assert [s["id"] for s in sessions] == [payment.checkout_session_id]
    assert sessions[0]["amount_total"] == 2500 and sessions[0]["metadata"]["payment_id"] == str(payment.pk)
    # and a third click a moment later still reuses it
    again = browsers[0].post("/billing/top-up/", data={"amount": "25"})
    assert again.headers["location"] == payment.checkout_url
    assert Payment.objects.count() == 1 and len(stripe_standin.objects_of("checkout.session")) == 1
    assert not Payment.objects.filter(org=other).exists()
    for browser in browsers:
        browser.close()


@pytest.mark.django_db
def test_a_top_up_is_reused_only_within_the_burst_while_pending_and_for_the_same_amount(stripe_standin):
    org = org_with("Acme")

    def start(usd: str) -> Payment:
        return topup_create(org=org, amount_nanos=usd_to_nanos(usd), success_url="http://t/ok",
                            cancel_url="http://t/no")  # fmt: skip

    first = start("25")
    assert start("25").pk == first.pk
    other_amount = start("30")
    assert other_amount.pk != first.pk
    # older than the burst window: a new payment and session
    Payment.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(seconds=TOPUP_BURST_SECONDS + 1))
    later = start("25")
    assert later.pk not in (first.pk, other_amount.pk)
    # paid: never reused
    Payment.objects.filter(pk=later.pk).update(status=Payment.Status.PAID)
    payment_converge(payment_id=later.pk)
    after_paid = start("25")
    assert after_paid.pk not in (first.pk, other_amount.pk, later.pk)
    sessions = {s["id"] for s in stripe_standin.objects_of("checkout.session")}
    assert sessions == set(Payment.objects.values_list("checkout_session_id", flat=True)) and len(sessions) == 4


def test_the_stand_in_refuses_a_reused_idempotency_key_with_other_parameters(stripe_standin):
    import stripe

    client = stripe.StripeClient(stripe_standin.api_key, base_addresses={"api": stripe_standin.api_base},
                                 max_network_retries=0)  # fmt: skip
    first = client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "k1"})
    assert client.v1.customers.create(params={"name": "A"}, options={"idempotency_key": "k1"}).id == first.id
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create(params={"name": "B"}, options={"idempotency_key": "k1"})
    assert [c["id"] for c in stripe_standin.objects_of("customer")] == [first.id]
