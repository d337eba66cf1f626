"""Helpers of the tenant-isolation sweep (test_isolation_sweep.py): two fully populated tenants, what
marks the victim's data, a snapshot of everything the victim owns, and the URL patterns enumerated
from the resolver and the ASGI WebSocket router.

Every victim string that a page or API could show (organisation name and slug, e-mail addresses,
key and token names, request ids, model and provider names, ledger descriptions, invoice numbers,
a restricted model's name) contains the victim's random token, so "no leak" is "the token is not
in the body". Secrets' displayed prefixes are random and checked on their own, and the victim's
usage and balance use figures the attacker's data never sums to (see MARKER_NUMBERS).
"""

import re
import secrets
from dataclasses import dataclass, field
from datetime import date

from django.contrib.auth import get_user_model
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from accounts.models import ApiKey, Invitation, ManagementKey, Membership, Organization
from accounts.services import invitation_create, managementkey_issue
from accounts.tests.factories import MembershipFactory, UserFactory, key_for
from billing.models import Balance, BillingProfile, Invoice, LedgerEntry, Payment, UsageEvent
from billing.money import usd_to_nanos
from billing.services import balance_credit, balance_ensure
from billing.tests.factories import org_with

# The victim's usage: figures that appear in an aggregate only if the victim's rows were summed in
# (the attacker's own events have zero cache-write tokens and zero cost).
VICTIM_CACHE_WRITE_TOKENS = 7_777_777
VICTIM_COST_USD = "987.654321"
VICTIM_CREDIT_USD = "4321.09"
MARKER_NUMBERS = ("7777777", "7,777,777", "987.65", "4321.09", "4,321.09")


@dataclass
class TenantWorld:
    """One organisation with one of everything a tenant owns, all named after `token`."""

    token: str
    org: Organization
    owner: Membership
    member: Membership
    api_key: ApiKey
    api_key_secret: str
    invitation: Invitation
    invitation_token: str
    management_key: ManagementKey
    management_secret: str
    usage_event: UsageEvent
    invoice: Invoice
    payment: Payment
    model_name: str  # a catalog model restricted to this organisation
    extra: dict = field(default_factory=dict)

    @property
    def markers(self) -> tuple[str, ...]:
        return (self.token, self.api_key.prefix, self.management_key.prefix)


def build_tenant(label: str, *, victim: bool) -> TenantWorld:
    token = f"{label}{secrets.token_hex(5)}"
    org = org_with(f"Org {token}")
    balance_ensure(org_id=org.id)
    balance_credit(org_id=org.id, amount_nanos=usd_to_nanos(VICTIM_CREDIT_USD if victim else "10"), kind="promo",
                   description=f"credit {token}")  # fmt: skip
    owner = MembershipFactory(
        org=org, role=Membership.Role.OWNER, user=UserFactory(email=f"owner-{token}@example.test")
    )
    member = MembershipFactory(
        org=org, role=Membership.Role.VIEWER, user=UserFactory(email=f"member-{token}@example.test")
    )
    issued_key = key_for(org, name=f"key-{token}")
    issued_invitation = invitation_create(org=org, email=f"invitee-{token}@example.test", role="viewer",
                                          invited_by=owner.user, actor_role="owner", base_url="http://testserver")  # fmt: skip
    issued_token = managementkey_issue(org=org, name=f"token-{token}", role="admin", actor_role="owner")
    event = UsageEvent.objects.create(
        request_id=f"req_{token}", org=org, api_key=issued_key.api_key, endpoint="chat.completions",
        model=f"model-{token}", provider=f"prov-{token}", client_protocol="openai", status_code=200,
        input_tokens=11, output_tokens=13, cache_write_tokens=VICTIM_CACHE_WRITE_TOKENS if victim else 0,
        cost_nanos=usd_to_nanos(VICTIM_COST_USD) if victim else 0, latency_ms=5,
    )  # fmt: skip
    invoice = Invoice.objects.create(
        org=org, number=f"INV-{token}", period_start=date(2026, 9, 1), period_end=date(2026, 10, 1),
        opening_balance_nanos=0, closing_balance_nanos=0, html=f"<p>invoice of {token}</p>",
        pdf=b"%PDF-1.4 " + token.encode(),
    )  # fmt: skip
    payment = Payment.objects.create(org=org, purpose="topup", amount_nanos=usd_to_nanos("25"),
                                     checkout_session_id=f"cs_{token}", error=f"declined {token}")  # fmt: skip
    profile = BillingProfile.objects.get_or_create(org=org)[0]
    BillingProfile.objects.filter(pk=profile.pk).update(card_brand=f"brand-{token}", card_last4="4242")
    return TenantWorld(
        token=token, org=org, owner=owner, member=member, api_key=issued_key.api_key,
        api_key_secret=issued_key.secret, invitation=issued_invitation.invitation,
        invitation_token=issued_invitation.token, management_key=issued_token.management_key,
        management_secret=issued_token.secret, usage_event=event, invoice=invoice, payment=payment,
        model_name=f"only-{token}",
    )  # fmt: skip


def load_restricted_models(models: dict[str, Organization]) -> None:
    """Echo models (name -> organisation), each visible to its organisation only."""
    from catalog.services import catalog_load

    catalog_load({
        "providers": [{"name": "isolation-echo", "kind": "echo"}],
        "models": [{"name": name, "provider": "isolation-echo", "upstream_model": "echo-1", "input": "1",
                    "output": "1", "visibility": "restricted", "organizations": [org.slug]}
                   for name, org in models.items()],
    })  # fmt: skip


def build_worlds() -> tuple[TenantWorld, TenantWorld]:
    """(attacker, victim): the attacker's owner acts; nothing of the victim's may show or change."""
    from usage.services import rollups_refresh

    attacker = build_tenant("a", victim=False)
    victim = build_tenant("v", victim=True)
    load_restricted_models({attacker.model_name: attacker.org, victim.model_name: victim.org})
    rollups_refresh(now=timezone.now())
    return attacker, victim


def snapshot(world: TenantWorld) -> dict:
    """Everything the tenant owns, as plain values: compared before and after the attacks."""
    org = world.org
    users = [world.owner.user_id, world.member.user_id]
    from allauth.account.models import EmailAddress

    from catalog.models import Model

    def rows(queryset):
        return list(queryset.order_by("pk").values())

    return {
        "org": rows(Organization.objects.filter(pk=org.pk)),
        "memberships": rows(Membership.objects.filter(org=org)),
        "users": rows(get_user_model().objects.filter(pk__in=users)),
        "emails": rows(EmailAddress.objects.filter(user_id__in=users)),
        "api_keys": rows(ApiKey.objects.filter(org=org).defer("last_used_at")),
        "invitations": rows(Invitation.objects.filter(org=org)),
        "management_keys": rows(ManagementKey.objects.filter(org=org).defer("last_used_at")),
        "balance": rows(Balance.objects.filter(org=org).defer("updated_at")),
        "ledger": rows(LedgerEntry.objects.filter(org=org)),
        "profile": rows(BillingProfile.objects.filter(org=org).defer("updated_at")),
        "payments": rows(Payment.objects.filter(org=org).defer("updated_at")),
        "invoices": rows(Invoice.objects.filter(org=org).defer("pdf")),
        "usage_events": rows(UsageEvent.objects.filter(org=org)),
        "model": rows(Model.objects.filter(name=world.model_name)),
        "model_orgs": sorted(Model.objects.filter(name=world.model_name).values_list("organizations", flat=True)),
    }


def leaks(body: bytes | str, victim: TenantWorld) -> list[str]:
    """The victim's markers found in a response body (empty: no leak)."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    return [marker for marker in (*victim.markers, *MARKER_NUMBERS) if marker in text]


def response_body(response) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return response.content


# -- enumeration ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HttpRoute:
    name: str  # "namespace:name", or the route itself for an unnamed pattern
    route: str
    kwargs: tuple[str, ...]  # the URL's converters, in order
    namespace: str = ""
    named: bool = True  # False: an unnamed pattern (`name` is its route); reverse() cannot build it
    callback: object = field(default=None, compare=False, repr=False)

    def path(self, kwargs: dict) -> str:
        """The URL with these kwargs: reverse() for named patterns, substitution for unnamed ones."""
        if self.named:
            return reverse(self.name, kwargs=kwargs)
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(kwargs[m.group(1)]), self.route)
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(kwargs[m.group(1)]), path)
        return "/" + path.replace("^", "").replace("$", "")


def http_routes() -> list[HttpRoute]:
    """Every URL pattern the root resolver serves (namespaces joined with ':', kwargs of enclosing
    resolvers included)."""
    out: list[HttpRoute] = []

    def walk(patterns, prefix: str, namespace: str | None, outer: tuple[str, ...]) -> None:
        for pattern in patterns:
            kwargs = outer + tuple(pattern.pattern.regex.groupindex)
            if isinstance(pattern, URLResolver):
                ns = namespace
                if pattern.namespace:
                    ns = f"{namespace}:{pattern.namespace}" if namespace else pattern.namespace
                walk(pattern.url_patterns, prefix + str(pattern.pattern), ns, kwargs)
            elif isinstance(pattern, URLPattern):
                route = prefix + str(pattern.pattern)
                name = pattern.name and (f"{namespace}:{pattern.name}" if namespace else pattern.name)
                out.append(HttpRoute(name or route, route, kwargs, namespace or "", bool(name), pattern.callback))

    walk(get_resolver().url_patterns, "", None, ())
    return out


def websocket_routes() -> list[tuple[str, tuple[str, ...], object]]:
    """(route, kwargs, consumer class) of every WebSocket pattern under the ASGI application's router,
    found by walking the middleware stack (OriginValidator -> Cookie/Session/Auth -> URLRouter)."""
    from channels.routing import URLRouter

    from ruapi.asgi import application

    out = []

    def walk(app, prefix: str) -> None:
        while not isinstance(app, URLRouter):
            app = getattr(app, "application", None) or getattr(app, "inner", None)
            if app is None:
                raise AssertionError("no URLRouter under the websocket application")
        for pattern in app.routes:
            route = prefix + str(pattern.pattern)
            callback = pattern.callback
            if isinstance(callback, URLRouter):
                walk(callback, route)
                continue
            consumer = getattr(callback, "consumer_class", callback)
            out.append((route, tuple(pattern.pattern.regex.groupindex), consumer))

    walk(application.application_mapping["websocket"], "")
    return out
