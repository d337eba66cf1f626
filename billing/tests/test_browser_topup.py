"""A top-up in a real browser through the Stripe stand-in's hosted Checkout (issue 5, done-when 5).

Playwright drives Debian's Chromium (never a download). The org owner logs in, asks for $20 on the
billing page, is sent to the stand-in's Checkout page (the session's `url`, as Stripe does), pays,
and comes back to the success page. As on Stripe, paying delivers a signed
checkout.session.completed to POST /billing/stripe/webhook/ of the live gateway; the stand-in
delivers it before redirecting, so the balance has risen when the customer is back.
"""

import re

import pytest

from billing.tests.conftest import WEBHOOK_SECRET

pytestmark = [pytest.mark.integration, pytest.mark.embedded, pytest.mark.browser]

PASSWORD = "correct horse battery"



def test_owner_tops_up_through_checkout_and_sees_the_balance_rise(gateway, stripe_standin, page):
    from accounts.models import Membership
    from accounts.tests.factories import UserFactory
    from billing.models import Balance, LedgerEntry, Payment, StripeEvent
    from billing.services import ledger_reconcile

    # given: an organisation with $10 of credit, its owner, and the stand-in delivering webhooks to the gateway
    base = gateway.server.url
    org = gateway.tenant.org
    owner = UserFactory(email="owner@topup.test", username="owner@topup.test")
    Membership.objects.create(org=org, user=owner, role=Membership.Role.OWNER)
    stripe_standin.webhook_url = base + "/billing/stripe/webhook/"
    stripe_standin.webhook_secret = WEBHOOK_SECRET
    before = Balance.objects.get(org=org).balance_nanos
    assert before == 10_000_000_000

    # when: the owner logs in, opens billing and starts a $20 top-up
    page.goto(base + "/accounts/login/")
    page.fill("input[name=login]", owner.email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(re.compile(r".*/dashboard/$"))
    page.goto(base + "/billing/")
    assert page.inner_text("[data-testid=balance]") == "$10.00"
    page.goto(base + "/billing/top-up/")
    page.fill("input[name=amount]", "20")
    page.get_by_role("button", name="Continue to payment").click()

    # then: the browser is on the stand-in's Checkout page for exactly this session
    page.wait_for_url(re.compile(re.escape(stripe_standin.api_base) + r"/checkout/cs_test_\w+$"))
    payment = Payment.objects.get(org=org)
    assert payment.amount_nanos == 20_000_000_000 and payment.status == Payment.Status.PENDING
    assert page.url == payment.checkout_url
    assert page.inner_text("h1") == "Pay $20.00"
    assert Balance.objects.get(org=org).balance_nanos == before  # nothing before Stripe says paid

    # when: the customer pays
    page.get_by_role("button", name="Pay").click()

    # then: back on the success page; Stripe's webhook was accepted and processed once
    page.wait_for_url(re.compile(r".*/billing/top-up/\?result=success$"))
    assert "Thank you" in page.inner_text("main")
    assert stripe_standin.deliveries and all(status == 200 for _, status in stripe_standin.deliveries)
    assert len(stripe_standin.deliveries) == 1
    event = StripeEvent.objects.get()
    assert (event.type, event.status) == ("checkout.session.completed", StripeEvent.Status.PROCESSED)

    # and the billing page shows the balance up by exactly $20
    page.goto(base + "/billing/")
    assert page.inner_text("[data-testid=balance]") == "$30.00"
    assert Balance.objects.get(org=org).balance_nanos == before + 20_000_000_000
    topups = LedgerEntry.objects.filter(org=org, kind=LedgerEntry.Kind.TOPUP)
    assert [(e.amount_nanos, e.payment_id) for e in topups] == [(20_000_000_000, payment.pk)]
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PAID
    assert ledger_reconcile() == []

    # and a second visit to Checkout (back button) pays and credits nothing more
    page.goto(payment.checkout_url)
    page.get_by_role("button", name="Pay").click()
    page.wait_for_url(re.compile(r".*/billing/top-up/\?result=success$"))
    assert len(stripe_standin.deliveries) == 1
    assert LedgerEntry.objects.filter(org=org, kind=LedgerEntry.Kind.TOPUP).count() == 1
    assert Balance.objects.get(org=org).balance_nanos == before + 20_000_000_000
