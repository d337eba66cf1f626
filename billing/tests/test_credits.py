"""Operator credit, redemption codes, postpaid profiles and the billing admin screens (issue 16)."""

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from accounts.models import Membership
from billing.models import Balance, BillingProfile, CreditCode, CreditCodeRedemption, LedgerEntry
from billing.money import usd_to_nanos
from billing.services import balance_get, ledger_reconcile
from billing.services.credits import (
    ATTEMPTS_PER_MINUTE_PER_USER,
    CreditCodeAlreadyRedeemedError,
    CreditCodeExpiredError,
    CreditCodeThrottledError,
    CreditCodeUnknownError,
    CreditCodeUsedUpError,
    credit_add,
    creditcode_hash,
    creditcode_issue,
    creditcode_redeem,
)
from billing.tests.factories import org_with
from catalog.models import AuditEntry

pytestmark = [pytest.mark.embedded]

USD = 1_000_000_000


def ledger(org) -> list[tuple[str, int, str, str]]:
    return list(
        LedgerEntry.objects.filter(org=org)
        .order_by("id")
        .values_list("kind", "amount_nanos", "description", "created_by")
    )


def user(email: str):
    return get_user_model().objects.create_user(username=email, email=email, password="pw-123456")


@pytest.fixture
def staff(client, db):
    admin_user = get_user_model().objects.create_superuser("ops", "ops@example.test", "pw-ops-123")
    client.force_login(admin_user)
    return client, admin_user


# --- operator credit ------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_adds_credit_with_reason_to_the_ledger_and_the_audit_log(staff):
    # given
    client, admin_user = staff
    org, other = org_with("Acme", usd="2"), org_with("Globex", usd="3")
    # when
    response = client.post(f"/admin/billing/balance/{org.pk}/credit/",
                           {"amount": "25.50", "kind": "adjustment", "reason": "goodwill for ticket 42"})  # fmt: skip
    # then
    assert response.status_code == 302
    assert balance_get(org_id=org.id).balance_nanos == usd_to_nanos("27.50")
    assert ledger(org)[1:] == [("adjustment", usd_to_nanos("25.50"), "goodwill for ticket 42", "ops@example.test")]
    audit = AuditEntry.objects.get(action="balance.credit")
    assert (audit.actor, audit.target_type, audit.target_id) == (admin_user, "organization", str(org.pk))
    assert audit.before == {"balance_usd": "2.00"}
    assert audit.after["balance_usd"] == "27.50" and audit.after["reason"] == "goodwill for ticket 42"
    assert balance_get(org_id=other.id).balance_nanos == 3 * USD and len(ledger(other)) == 1
    assert ledger_reconcile() == []


@pytest.mark.django_db
def test_admin_credit_needs_a_reason_and_changes_nothing_without(staff):
    client, _ = staff
    org = org_with("Acme", usd="2")
    response = client.post(f"/admin/billing/balance/{org.pk}/credit/", {"amount": "5", "kind": "adjustment",
                                                                        "reason": ""})  # fmt: skip
    assert response.status_code == 200 and b"This field is required" in response.content
    assert balance_get(org_id=org.id).balance_nanos == 2 * USD and len(ledger(org)) == 1
    assert not AuditEntry.objects.filter(action="balance.credit").exists()


@pytest.mark.django_db
def test_admin_grants_expiring_promotional_credit(staff):
    client, _ = staff
    org = org_with("Acme")
    expires = (timezone.now() + timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")
    response = client.post(f"/admin/billing/balance/{org.pk}/credit/",
                           {"amount": "10", "kind": "promo", "expires_at": expires, "reason": "launch promo"})  # fmt: skip
    assert response.status_code == 302
    entry = LedgerEntry.objects.get(org=org)
    assert (entry.kind, entry.amount_nanos, entry.description, entry.created_by) == ("promo", 10 * USD,
                                                                                      "launch promo", "ops@example.test")  # fmt: skip
    assert entry.expires_at is not None


@pytest.mark.django_db
def test_organisation_admin_action_opens_the_credit_form(staff):
    client, _ = staff
    org = org_with("Acme")
    response = client.post("/admin/accounts/organization/", {"action": "add_credit", "_selected_action": [org.pk]})
    assert response.status_code == 302 and response["Location"] == f"/admin/billing/balance/{org.pk}/credit/"
    assert client.get(response["Location"]).status_code == 200


@pytest.mark.django_db
def test_credit_command_prints_the_new_balance():
    org = org_with("Acme", usd="1.25")
    out = StringIO()
    call_command("credit", "Acme", "3.75", "--reason", "manual bank transfer 2026-12", stdout=out)
    assert out.getvalue().strip() == "5"
    assert ledger(org)[1:] == [("adjustment", usd_to_nanos("3.75"), "manual bank transfer 2026-12", "manage.py credit")]
    assert AuditEntry.objects.filter(action="balance.credit", actor_label="manage.py credit").count() == 1
    with pytest.raises(CommandError):
        call_command("credit", "Acme", "abc", "--reason", "x", stdout=StringIO())
    with pytest.raises(CommandError):
        call_command("credit", "Nobody", "1", "--reason", "x", stdout=StringIO())
    with pytest.raises(CommandError):
        call_command("credit", "Acme", "1", "--reason", "  ", stdout=StringIO())
    assert balance_get(org_id=org.id).balance_nanos == 5 * USD


# --- redemption codes: issue and redeem -----------------------------------------------------


@pytest.mark.django_db
def test_a_code_is_stored_only_as_its_hash_and_redeems_once_per_org():
    # given
    [issued] = creditcode_issue(amount_nanos=5 * USD, max_redemptions=3, note="launch")
    org, other = org_with("Acme"), org_with("Globex", usd="1")
    member = user("dev@acme.test")
    code = CreditCode.objects.get()
    assert issued.code.startswith("RU-") and len(issued.code) == 22
    assert code.code_hash == creditcode_hash(issued.code) and issued.code not in str(code.__dict__)
    # when: typed in lower case with spaces
    redemption = creditcode_redeem(org=org, user=member, code=issued.code.lower().replace("-", " "))
    # then
    assert (redemption.n, redemption.number, redemption.user) == (1, 1, member)
    assert ledger(org) == [("promo", 5 * USD, f"Redemption code {code.prefix}…", "dev@acme.test")]
    code.refresh_from_db()
    assert (code.remaining, code.used) == (2, 1)
    with pytest.raises(CreditCodeAlreadyRedeemedError):
        creditcode_redeem(org=org, user=member, code=issued.code)
    assert balance_get(org_id=org.id).balance_nanos == 5 * USD
    assert balance_get(org_id=other.id).balance_nanos == USD
    assert ledger_reconcile() == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("_case", "setup", "error"),
    [
        ("unknown", lambda code: "RU-AAAA-BBBB-CCCC-DDDD", CreditCodeUnknownError),
        ("inactive", lambda code: CreditCode.objects.update(is_active=False) and code, CreditCodeUnknownError),
        ("expired", lambda code: CreditCode.objects.update(expires_at=timezone.now() - timedelta(seconds=1)) and code,
         CreditCodeExpiredError),
        ("used up", lambda code: CreditCode.objects.update(remaining=0) and code, CreditCodeUsedUpError),
    ],
)  # fmt: skip
def test_refused_redemptions_change_nothing(_case, setup, error):
    [issued] = creditcode_issue(amount_nanos=5 * USD, max_redemptions=2)
    org = org_with("Acme", usd="1")
    code = setup(issued.code)
    with pytest.raises(error):
        creditcode_redeem(org=org, user=None, code=code)
    assert ledger(org) == [("promo", USD, "test credit", "")]
    assert not CreditCodeRedemption.objects.exists()


@pytest.mark.django_db
def test_per_org_limit_allows_that_many_redemptions():
    [issued] = creditcode_issue(amount_nanos=USD, max_redemptions=5, per_org_limit=2)
    org = org_with("Acme")
    assert [creditcode_redeem(org=org, user=None, code=issued.code).n for _ in range(2)] == [1, 2]
    with pytest.raises(CreditCodeAlreadyRedeemedError, match="2 times"):
        creditcode_redeem(org=org, user=None, code=issued.code)
    assert balance_get(org_id=org.id).balance_nanos == 2 * USD


@pytest.mark.django_db
def test_guessing_is_throttled_per_user():
    org = org_with("Acme")
    member = user("dev@acme.test")
    for _ in range(ATTEMPTS_PER_MINUTE_PER_USER):
        with pytest.raises(CreditCodeUnknownError):
            creditcode_redeem(org=org, user=member, code="RU-NOPE-NOPE-NOPE-NOPE")
    [issued] = creditcode_issue(amount_nanos=USD)
    with pytest.raises(CreditCodeThrottledError) as refused:
        creditcode_redeem(org=org, user=member, code=issued.code)  # even a valid code, until the window ends
    assert 0 < refused.value.retry_after <= 60
    assert ledger(org) == [] and CreditCode.objects.get().remaining == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_redemptions_credit_exactly_max_redemptions():
    # given: a 5-use code and 12 organisations redeeming it at once (threads, one connection each)
    [issued] = creditcode_issue(amount_nanos=USD, max_redemptions=5)
    orgs = [org_with(f"Org {i}") for i in range(12)]
    start = threading.Barrier(len(orgs))
    results: list[str] = []

    def redeem(org):
        start.wait()
        try:
            creditcode_redeem(org=org, user=None, code=issued.code)
            results.append("ok")
        except CreditCodeUsedUpError:
            results.append("used_up")
        except Exception as exc:  # SQLite: a writer that waited past the busy timeout
            results.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=redeem, args=(org,)) for org in orgs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # then
    assert sorted(results) == ["ok"] * 5 + ["used_up"] * 7, results
    assert CreditCode.objects.get().remaining == 0
    assert sorted(CreditCodeRedemption.objects.values_list("number", flat=True)) == [1, 2, 3, 4, 5]
    assert sum(balance_get(org_id=o.id).balance_nanos for o in orgs) == 5 * USD
    assert ledger_reconcile() == []


# --- the customer's page --------------------------------------------------------------------


@pytest.fixture
def owner_client(client, db):
    org = org_with("Acme", usd="1", owner_email="owner@acme.test")
    client.login(username="owner@acme.test", password="pw-123456")
    return client, org


@pytest.mark.django_db
def test_customer_redeems_a_code_on_the_billing_page(owner_client):
    client, org = owner_client
    [issued] = creditcode_issue(amount_nanos=usd_to_nanos("12.50"))
    page = client.get("/billing/top-up/").content.decode()
    assert 'action="/billing/redeem/"' in page
    response = client.post("/billing/redeem/", {"code": issued.code}, follow=True)
    assert response.redirect_chain == [("/billing/", 303)]
    html = response.content.decode()
    assert "Code redeemed: $12.50 added to your balance." in html
    assert '<strong data-testid="balance"><span class="money" title="13.50">$13.50</span></strong>' in html
    again = client.post("/billing/redeem/", {"code": issued.code})
    assert again.status_code == 409
    assert "Your organisation has already redeemed this code." in again.content.decode()
    assert balance_get(org_id=org.id).balance_nanos == usd_to_nanos("13.50")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("_case", "code", "status", "message"),
    [("empty", "", 400, "Enter a code."), ("unknown", "RU-XXXX", 400, "That code is not valid.")],
)
def test_redeem_page_errors(owner_client, _case, code, status, message):
    client, org = owner_client
    response = client.post("/billing/redeem/", {"code": code})
    assert response.status_code == status and message in response.content.decode()
    assert balance_get(org_id=org.id).balance_nanos == USD


@pytest.mark.django_db
def test_redeem_page_throttles_with_retry_after(owner_client):
    client, _ = owner_client
    statuses = [client.post("/billing/redeem/", {"code": "RU-WRONG-CODE"}).status_code
                for _ in range(ATTEMPTS_PER_MINUTE_PER_USER + 1)]  # fmt: skip
    assert statuses == [400] * ATTEMPTS_PER_MINUTE_PER_USER + [429]
    response = client.post("/billing/redeem/", {"code": "RU-WRONG-CODE"})
    assert response.status_code == 429 and 0 < int(response["Retry-After"]) <= 60


@pytest.mark.django_db
def test_roles_without_billing_manage_cannot_redeem(client):
    org = org_with("Acme", owner_email="dev@acme.test", role=Membership.Role.DEVELOPER)
    [issued] = creditcode_issue(amount_nanos=USD)
    client.login(username="dev@acme.test", password="pw-123456")
    assert client.post("/billing/redeem/", {"code": issued.code}).status_code == 403
    assert balance_get(org_id=org.id).balance_nanos == 0 and CreditCode.objects.get().remaining == 1


@pytest.mark.django_db
def test_with_stripe_off_the_top_up_page_points_to_codes_not_to_stripe_settings(owner_client, settings):
    settings.STRIPE_SECRET_KEY = ""
    client, _ = owner_client
    for url in ("/billing/top-up/", "/billing/"):
        html = client.get(url).content.decode()
        assert "STRIPE_SECRET_KEY" not in html, url
        assert "Top-ups by card are not available here" in html, url
    assert "Redeem a code" in client.get("/billing/top-up/").content.decode()


# --- admin: codes, profiles, events, payments -----------------------------------------------


@pytest.mark.django_db
def test_admin_generates_codes_once_and_lists_their_usage(staff):
    client, admin_user = staff
    response = client.post("/admin/billing/creditcode/generate/", {
        "count": "3", "amount": "2.50", "max_redemptions": "4", "per_org_limit": "1", "note": "black friday",
        "format": "page",
    })  # fmt: skip
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    html = response.content.decode()
    codes = CreditCode.objects.order_by("id")
    assert [c.note for c in codes] == ["black friday"] * 3 and {c.created_by for c in codes} == {admin_user}
    shown = [line.split(">")[1].split("<")[0] for line in html.split('data-testid="issued-code"')[1:]]
    assert [creditcode_hash(code) for code in shown] == [c.code_hash for c in codes]
    assert "text/csv" in html  # the download link carries the codes
    creditcode_redeem(org=org_with("Acme"), user=None, code=shown[0])
    listing = client.get("/admin/billing/creditcode/").content.decode()
    assert "1 / 4" in listing and "0 / 4" in listing and shown[0] not in listing
    csv = client.post("/admin/billing/creditcode/generate/", {
        "count": "2", "amount": "1", "max_redemptions": "1", "per_org_limit": "1", "format": "csv",
    })  # fmt: skip
    rows = csv.content.decode().strip().splitlines()
    assert csv["Content-Type"] == "text/csv" and rows[0].startswith("code,amount_usd") and len(rows) == 3
    assert CreditCode.objects.count() == 5
    assert AuditEntry.objects.filter(action="creditcode.issue").count() == 2


@pytest.mark.django_db
def test_admin_makes_an_organisation_postpaid_with_a_credit_limit(staff):
    client, _ = staff
    org = org_with("Acme")
    BillingProfile.objects.create(org=org)
    response = client.post(f"/admin/billing/billingprofile/{org.pk}/change/",
                           {"is_postpaid": "on", "credit_limit": "250", "review_reason": ""})  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:3000]
    assert BillingProfile.objects.get(pk=org.pk).is_postpaid
    assert Balance.objects.get(org=org).credit_limit_nanos == 250 * USD
    assert AuditEntry.objects.get(action="billing.postpaid").after == {"is_postpaid": True, "credit_limit_usd": "250.00"}
    refused = client.post(f"/admin/billing/billingprofile/{org.pk}/change/", {"credit_limit": "10", "review_reason": ""})
    assert refused.status_code == 200 and Balance.objects.get(org=org).credit_limit_nanos == 250 * USD


@pytest.mark.django_db
def test_billing_admin_screens_render_money_to_the_cent(staff):
    client, _ = staff
    org = org_with("Acme")
    credit_add(org=org, amount_nanos=9_999_842_440, reason="odd amount", actor="ops")
    for url in ("/admin/billing/balance/", "/admin/billing/ledgerentry/", "/admin/billing/payment/",
                "/admin/billing/stripeevent/", "/admin/billing/billingprofile/", "/admin/billing/creditcode/",
                "/admin/billing/creditcoderedemption/", "/admin/billing/creditcode/generate/"):  # fmt: skip
        assert client.get(url).status_code == 200, url
    html = client.get("/admin/billing/balance/").content.decode()
    assert '<span class="money" title="9.99984244">$9.99</span>' in html
