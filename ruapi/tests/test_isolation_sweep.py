"""Tenant isolation, swept over every URL and WebSocket route the project serves.

The URL patterns come from Django's resolver and the WebSocket patterns from the ASGI application's
router, so a URL added later without an isolation case fails `test_every_route_has_an_isolation_case`
(and its own sweep case) with a message naming it. Each URL is mapped in HTTP_SPECS to how it is
attacked: for a URL with object kwargs, a builder of another tenant's object for each kwarg; for one
without, whether it must show the caller's own data (a positive control that the leak check can see
anything). Every case tries GET and the mutating methods (POST, PUT, PATCH, DELETE) as the owner of
organisation A (dashboard session; for the management API also A's management token) against
organisation B's ids, and then asserts:

- objects of B in the URL: 403/404 (405 for a method the view does not take), never 2xx/3xx, and
  at least one method reaches the view's tenancy check (403/404); with A's own ids the same URL works;
- no object in the URL: no 5xx, and none of B's data in any body (B's strings all carry B's random
  token; B's usage and balance use figures only a cross-tenant sum can produce, isolation.MARKER_NUMBERS);
- object ids of B in the query string (usage filters) or the body (POST payloads carry B's ids): the same;
- B's rows are unchanged afterwards, in every table B owns (isolation.snapshot).

The public /v1 API is keyed by API key: its one object is the model, and another organisation's
restricted model must be invisible through every /v1 route (test_v1_routes_hide_other_tenants_models).
The Django admin is staff-only as a whole (test_admin_is_staff_only covers every admin URL, new
ModelAdmins included). Existing narrower cases stay in accounts/tests/test_tenancy.py and
usage/tests/test_consumers.py.
"""

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import reverse

from ruapi.tests.isolation import (
    TenantWorld,
    build_worlds,
    http_routes,
    leaks,
    response_body,
    snapshot,
    websocket_routes,
)
from usage.tests.conftest import _fresh_channel_layer, session_cookie, ws_headers  # noqa: F401 - autouse fixture

pytestmark = [pytest.mark.django_db]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
REFUSED = {403, 404, 405}


def _id(attr: str) -> Callable[[TenantWorld], int]:
    """A builder of one object's id: `_id("api_key")` -> the tenant's API key id."""

    def build(world: TenantWorld) -> int:
        return getattr(world, attr).id

    build.__name__ = f"{attr}_id"
    return build


def _const(value) -> Callable[[TenantWorld], object]:
    return lambda world: value


def _guess(world: TenantWorld) -> str:
    """A secret the attacker does not have (invitation / confirmation / reset tokens)."""
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Spec:
    """How one URL is attacked.

    kind: "tenant" - a dashboard page of the session's current organisation;
          "api" - a management-API endpoint (org_id in the URL; session and management token);
          "user" - the signed-in user's own account pages (allauth, creating/switching organisations);
          "staff" - platform staff only; "public" - no login (must never show restricted data);
          "secret" - the URL carries a secret token, not an object id (a guessed one must not work);
          "webhook" - authenticated by a signature; "key" - the /v1 API (test_v1_routes_hide_other_tenants_models).
    objects: URL kwarg -> builder of a tenant's value (called with B for the attack, with A for the control).
    query: query parameter -> builder (B's ids in filters must not show B's data).
    shows_own: the GET body must contain A's token (the positive control of the leak check).
    allowed_5xx: statuses >= 500 that are a documented answer, not an error (with the reason in `note`).
    """

    kind: str
    objects: dict[str, Callable[[TenantWorld], object]] = field(default_factory=dict)
    query: dict[str, Callable[[TenantWorld], object]] = field(default_factory=dict)
    shows_own: bool = False
    allowed_5xx: frozenset[int] = frozenset()
    note: str = ""


ORG = {"org_id": _id("org")}
KEY_FILTER = {"api_key_id": _id("api_key")}

ACCOUNT_PAGES = (
    "account_login", "account_logout", "account_inactive", "account_signup", "account_reauthenticate",
    "account_request_reauthentication_code", "account_confirm_reauthentication_code",  # allauth 65.22+
    "account_email", "account_email_verification_sent", "account_change_password", "account_set_password",
    "account_reset_password", "account_confirm_login_code", "account_reset_password_from_key_done",
    "account_reset_password_done", "mfa_index", "mfa_authenticate", "mfa_reauthenticate", "mfa_activate_totp",
    "mfa_deactivate_totp", "mfa_view_recovery_codes", "mfa_generate_recovery_codes",
    "mfa_download_recovery_codes",
)  # fmt: skip
V1_NAMES = (
    "v1:openapi-json", "v1:openapi-view", "v1:chat_completions", "v1:messages", "v1:count_tokens",
    "v1:list_models", "v1:get_model", "v1:embeddings", "v1:images_generations", "v1:audio_transcriptions",
    "v1:audio_speech", "v1:not_found", "v1:api-root", "v1:responses_input_tokens", "v1:responses_compact",
    "v1:responses_input_items", "v1:responses_cancel", "v1:responses_retrieve", "v1:responses_delete",
    "v1:responses",
)  # fmt: skip

HTTP_SPECS: dict[str, Spec] = {
    # -- dashboard (session's organisation) ------------------------------------------------------
    "root": Spec("user", note="redirects to the dashboard (signed in) or shows the public landing page"),
    "dashboard:overview": Spec("tenant", shows_own=True),
    "dashboard:org_create": Spec("user", note="creates an organisation owned by the caller"),
    "dashboard:org_switch": Spec("user", note="POST org_id=B's is 404 (the generic payload carries it)"),
    "dashboard:org_leave": Spec("tenant"),
    "dashboard:settings": Spec("tenant", shows_own=True),
    "dashboard:management_key_create": Spec("tenant"),
    "dashboard:management_key_revoke": Spec("tenant", objects={"management_key_id": _id("management_key")}),
    "dashboard:keys": Spec("tenant", shows_own=True),
    "dashboard:key_create": Spec("tenant"),
    "dashboard:key_edit": Spec("tenant", objects={"api_key_id": _id("api_key")}),
    "dashboard:key_revoke": Spec("tenant", objects={"api_key_id": _id("api_key")}),
    "dashboard:members": Spec("tenant", shows_own=True),
    "dashboard:member_role": Spec("tenant", objects={"membership_id": _id("member")}),
    "dashboard:member_remove": Spec("tenant", objects={"membership_id": _id("member")}),
    "dashboard:ownership_transfer": Spec("tenant", objects={"membership_id": _id("member")}),
    "dashboard:invitation_revoke": Spec("tenant", objects={"invitation_id": _id("invitation")}),
    "dashboard:invitation_accept": Spec("secret", objects={"token": _guess}),
    "dashboard:quickstart": Spec("tenant"),
    "dashboard:models": Spec("tenant", shows_own=True, note="restricted models: only the organisation's own"),
    "usage:usage": Spec("tenant", shows_own=True, query={"api_key": _id("api_key")}),
    "usage:export": Spec("tenant", shows_own=True, query={"api_key": _id("api_key")}),
    "usage:platform": Spec("staff"),
    "usage:playground": Spec("tenant", shows_own=True),
    # -- billing pages ---------------------------------------------------------------------------
    "billing:overview": Spec("tenant", shows_own=True),
    "billing:topup": Spec("tenant", allowed_5xx=frozenset({503}), note="503: payments are off without Stripe"),
    "billing:redeem": Spec("tenant", note="POST only (405 otherwise); a code credits only the session's organisation"),
    "billing:settings": Spec("tenant", shows_own=True),
    "billing:transactions": Spec("tenant", shows_own=True),
    "billing:invoices": Spec("tenant", shows_own=True),
    "billing:invoice_download": Spec("tenant", objects={"invoice_id": _id("invoice"), "fmt": _const("pdf")}),
    "billing:admin_revenue": Spec("staff"),
    "billing:stripe_webhook": Spec("webhook"),
    # -- management API ----------------------------------------------------------------------------
    "api-orgs": Spec("api", shows_own=True),
    "api-org": Spec("api", objects=ORG, shows_own=True),
    "api-org-leave": Spec("api", objects=ORG),
    "api-members": Spec("api", objects=ORG, shows_own=True),
    "api-member": Spec("api", objects={**ORG, "membership_id": _id("member")}),
    "api-transfer-ownership": Spec("api", objects=ORG),
    "api-invitations": Spec("api", objects=ORG, shows_own=True),
    "api-invitation": Spec("api", objects={**ORG, "invitation_id": _id("invitation")}),
    "api-keys": Spec("api", objects=ORG, shows_own=True),
    "api-key": Spec("api", objects={**ORG, "api_key_id": _id("api_key")}),
    "api-key-revoke": Spec("api", objects={**ORG, "api_key_id": _id("api_key")}),
    "api-management-keys": Spec("api", objects=ORG, shows_own=True),
    "api-management-key-revoke": Spec("api", objects={**ORG, "management_key_id": _id("management_key")}),
    "api-balance": Spec("api", objects=ORG),
    "api-usage": Spec("api", objects=ORG, query=KEY_FILTER),
    "api-invoices": Spec("api", objects=ORG, shows_own=True),
    "api-invoice-pdf": Spec("api", objects={**ORG, "invoice_id": _id("invoice")}),
    "api-usage-series": Spec("api", objects=ORG, query=KEY_FILTER),
    "api-usage-breakdown": Spec("api", objects=ORG, query=KEY_FILTER, shows_own=True),
    "api-usage-requests": Spec("api", objects=ORG, query=KEY_FILTER, shows_own=True),
    "api-usage-platform": Spec("api", note="staff sessions only: 403 for a tenant's owner or token"),
    "schema": Spec("public"),
    "swagger-ui": Spec("public"),
    # -- public pages ------------------------------------------------------------------------------
    "healthz": Spec("public"),
    "favicon": Spec("public"),
    "pricing:list": Spec("public"),
    "pricing:model": Spec("public", objects={"name": lambda world: world.model_name}, note="restricted: 404"),
    # -- allauth: the signed-in user's own account (no organisation data) ------------------------------
    **{name: Spec("user") for name in ACCOUNT_PAGES},
    "account_confirm_email": Spec("secret", objects={"key": _guess}),
    "account_reset_password_from_key": Spec(
        "secret", objects={"uidb36": lambda world: _base36(world.owner.user_id), "key": _guess}
    ),
    # -- the public API (key-authenticated): see test_v1_routes_hide_other_tenants_models -------------
    **{name: Spec("key") for name in V1_NAMES},
}
NAMESPACE_RULES = {"admin": "staff-only Django admin: test_admin_is_staff_only"}


def _base36(number: int) -> str:
    from django.utils.http import int_to_base36

    return int_to_base36(number)


ROUTES = http_routes()
SWEPT = [
    r
    for r in ROUTES
    if r.namespace.split(":")[0] not in NAMESPACE_RULES and HTTP_SPECS.get(r.name, Spec("?")).kind != "key"
]


# -- completeness --------------------------------------------------------------------------------------
def _missing_cases() -> list[str]:
    problems = []
    for route in ROUTES:
        if route.namespace.split(":")[0] in NAMESPACE_RULES:
            continue
        spec = HTTP_SPECS.get(route.name)
        if spec is None:
            problems.append(f"URL {route.name!r} ({route.route}) has no isolation case: add it to HTTP_SPECS")
            continue
        unmapped = [kwarg for kwarg in route.kwargs if kwarg not in spec.objects]
        if unmapped and spec.kind != "key":
            problems.append(f"URL {route.name!r} ({route.route}): kwargs {unmapped} have no builder of another "
                            f"tenant's object in HTTP_SPECS[{route.name!r}].objects")  # fmt: skip
    names = {route.name for route in ROUTES}
    problems += [f"HTTP_SPECS names {name!r}, which no URL has (stale)" for name in HTTP_SPECS if name not in names]
    for route, kwargs, _consumer in websocket_routes():
        spec = WS_SPECS.get(route)
        if spec is None:
            problems.append(f"WebSocket route {route!r} has no isolation case: add it to WS_SPECS")
        elif set(kwargs) - set(spec.objects):
            problems.append(f"WebSocket route {route!r}: kwargs {sorted(set(kwargs) - set(spec.objects))} unmapped")
    missing_v1 = [r.name for r in ROUTES if HTTP_SPECS.get(r.name, Spec("?")).kind == "key" and r.name not in V1_CASES]
    problems += [f"/v1 URL {name!r} has no case in V1_CASES" for name in missing_v1]
    return problems


@pytest.mark.embedded
def test_every_route_has_an_isolation_case():
    problems = _missing_cases()
    assert not problems, "\n".join(problems)


# -- HTTP sweep ---------------------------------------------------------------------------------------
@pytest.fixture
def worlds(settings):
    settings.STRIPE_SECRET_KEY = ""  # payments off: no call leaves the machine
    return build_worlds()


def _payload(victim: TenantWorld) -> dict:
    """A body naming B's objects in every field a view might read them from (and no B strings, which
    a form could legitimately echo back)."""
    return {
        "org_id": victim.org.id, "membership_id": victim.member.id, "api_key_id": victim.api_key.id,
        "invitation_id": victim.invitation.id, "management_key_id": victim.management_key.id,
        "invoice_id": victim.invoice.id, "name": "pwned", "role": "admin", "email": "intruder@example.test",
        "org-name": "pwned", "limits-rpm_limit": "1", "rpm_limit": 1, "action": "alerts", "amount": "25",
        "threshold": "1", "login": "intruder@example.test", "password": "pwned-password-1",
    }  # fmt: skip


def _request(client: Client, method: str, url: str, payload: dict, *, as_json: bool, query: dict | None = None):
    if method == "GET":
        return client.get(url, query or {})
    if as_json:
        return client.generic(method, url, json.dumps(payload), content_type="application/json")
    if method == "POST":
        return client.post(url, payload)
    from urllib.parse import urlencode

    return client.generic(method, url, urlencode(payload), content_type="application/x-www-form-urlencoded")


def _attempt(client, method, url, victim, *, as_json=False, query=None) -> tuple[int, bytes]:
    response = _request(client, method, url, _payload(victim), as_json=as_json, query=query)
    return response.status_code, response_body(response)


def _check_clean(name: str, spec: Spec, method: str, url: str, status: int, body: bytes, victim) -> None:
    assert status < 500 or status in spec.allowed_5xx, f"{method} {url} ({name}) answered {status}"
    found = leaks(body, victim)
    assert not found, f"{method} {url} ({name}) shows another tenant's data: {found}"


def _clients(attacker: TenantWorld, spec: Spec) -> list[tuple[str, Client]]:
    """A's owner's session; for the management API A's management token first (the session's
    control requests may revoke that very token or remove A's member)."""
    session = Client()
    session.force_login(attacker.owner.user)
    if spec.kind != "api":
        return [("session", session)]
    token = Client(HTTP_AUTHORIZATION=f"Bearer {attacker.management_secret}")
    return [("token", token), ("session", session)]


@pytest.mark.parametrize("route", SWEPT, ids=[r.name for r in SWEPT])
def test_http_route_is_tenant_isolated(worlds, route):
    attacker, victim = worlds
    spec = HTTP_SPECS.get(route.name)
    if spec is None:
        pytest.fail(f"URL {route.name!r} ({route.route}) has no isolation case: add it to HTTP_SPECS in {__file__}")
    before = snapshot(victim)
    for auth, client in _clients(attacker, spec):
        if spec.kind == "api":
            _sweep_api(route, spec, client, attacker, victim, control=auth == "session")
        elif spec.kind == "staff":
            _sweep_staff(route, spec, client, victim)
        elif spec.kind == "webhook":
            _sweep_webhook(route, client, victim)
        else:
            anonymous = Client() if spec.kind in ("public", "secret") else None
            for who in [c for c in (client, anonymous) if c is not None]:
                _sweep_page(route, spec, who, attacker, victim)
        assert snapshot(victim) == before, f"{route.name} ({auth}): another tenant's rows changed"


def _sweep_page(route, spec: Spec, client: Client, attacker: TenantWorld, victim: TenantWorld) -> None:
    """Dashboard, account, public and secret-token pages (the organisation is the session's)."""
    object_kwargs = [k for k in route.kwargs if k in spec.objects]
    query = {param: build(victim) for param, build in spec.query.items()}
    if object_kwargs:
        url = reverse(route.name, kwargs={k: spec.objects[k](victim) for k in route.kwargs})
        statuses = {}
        for method in METHODS:
            status, body = _attempt(client, method, url, victim)
            _check_clean(route.name, spec, method, url, status, body, victim)
            statuses[method] = status
            if spec.kind == "tenant":
                assert status in REFUSED, f"{method} {url}: {status} for another tenant's object"
        if spec.kind == "tenant":
            reached = (REFUSED - {405}) & set(statuses.values())
            assert reached, f"{url}: no method reached the tenancy check {statuses}"
            _control_own_objects(route, spec, client, attacker)
        elif spec.kind in ("secret", "public"):
            assert all(s in {302, 404, 405} or s < 300 for s in statuses.values()), statuses
            if spec.kind == "public":
                assert statuses["GET"] == 404, f"{url}: a restricted model's public page answered {statuses['GET']}"
        return
    url = reverse(route.name)
    for method in METHODS:
        status, body = _attempt(client, method, url, victim, query=query if method == "GET" else None)
        _check_clean(route.name, spec, method, url, status, body, victim)
    if query:  # above, GET carried B's ids as filters; once more without them
        status, body = _attempt(client, "GET", url, victim)
        _check_clean(route.name, spec, "GET", url, status, body, victim)
    if spec.shows_own and spec.kind == "tenant":
        body = response_body(client.get(url))
        assert attacker.token in body.decode(errors="replace"), f"{url} does not show the caller's own data"


def _control_own_objects(route, spec: Spec, client: Client, attacker: TenantWorld) -> None:
    """The same URL with A's own ids reaches the view: the 404s above were the tenancy check."""
    url = reverse(route.name, kwargs={k: spec.objects[k](attacker) for k in route.kwargs})
    statuses = {method: _request(client, method, url, {}, as_json=False).status_code for method in ("GET", "POST")}
    assert any(s < 400 for s in statuses.values()), f"{url} with the caller's own ids: {statuses}"


def _sweep_api(route, spec: Spec, client: Client, attacker: TenantWorld, victim: TenantWorld, *, control: bool) -> None:
    extra = [k for k in route.kwargs if k != "org_id"]
    if "org_id" in route.kwargs:
        # 1. B's organisation (with B's objects): 404 for every method, before anything else
        url = reverse(route.name, kwargs={k: spec.objects[k](victim) for k in route.kwargs})
        for method in METHODS:
            status, body = _attempt(client, method, url, victim, as_json=True)
            _check_clean(route.name, spec, method, url, status, body, victim)
            assert status == 404, f"{method} {url} on another organisation: {status}"
            assert json.loads(body)["error"]["code"] == "not_found"
    own_org = {"org_id": attacker.org.id} if "org_id" in route.kwargs else {}
    if extra:
        # 2. A's organisation, B's objects: refused, and at least one method reached the object lookup
        url = reverse(route.name, kwargs={**own_org, **{k: spec.objects[k](victim) for k in extra}})
        statuses = {}
        for method in METHODS:
            status, body = _attempt(client, method, url, victim, as_json=True)
            _check_clean(route.name, spec, method, url, status, body, victim)
            assert status in REFUSED, f"{method} {url}: {status} for another tenant's object"
            statuses[method] = status
        assert 404 in statuses.values(), f"{url}: no method looked the object up {statuses}"
        if not control:
            return
        own = reverse(route.name, kwargs={**own_org, **{k: spec.objects[k](attacker) for k in extra}})
        own_statuses = {m: _request(client, m, own, {}, as_json=True).status_code for m in METHODS}
        assert any(s < 300 for s in own_statuses.values()), f"{own} with the caller's own ids: {own_statuses}"
        return
    # 3. A's organisation (or no organisation in the URL): nothing of B's, whatever the method and body
    url = reverse(route.name, kwargs=own_org)
    for method in METHODS:
        status, body = _attempt(client, method, url, victim, as_json=True)
        _check_clean(route.name, spec, method, url, status, body, victim)
    if spec.query:
        status, body = _attempt(client, "GET", url, victim, query={p: b(victim) for p, b in spec.query.items()})
        _check_clean(route.name, spec, "GET", url, status, body, victim)
        assert status == 404, f"GET {url} filtered by another tenant's object: {status}"
    if spec.shows_own:
        body = response_body(client.get(url))
        assert attacker.token in body.decode(errors="replace"), f"{url} does not show the caller's own data"
    if route.name == "api-usage-platform":
        assert client.get(url).status_code == 403


def _sweep_staff(route, spec: Spec, client: Client, victim: TenantWorld) -> None:
    url = reverse(route.name)
    for method in METHODS:
        status, body = _attempt(client, method, url, victim)
        _check_clean(route.name, spec, method, url, status, body, victim)
        assert status in {302, 403, 405}, f"{method} {url}: a tenant's owner got {status} on a staff page"


def _sweep_webhook(route, client: Client, victim: TenantWorld) -> None:
    url = reverse(route.name)
    body = json.dumps({"id": "evt_forged", "type": "checkout.session.completed",
                       "data": {"object": {"metadata": {"org_id": victim.org.id}}}})  # fmt: skip
    response = client.post(url, body, content_type="application/json")
    assert response.status_code == 400, "an unsigned webhook must be refused"
    assert client.get(url).status_code == 405


# -- Django admin ----------------------------------------------------------------------------------------
ADMIN_ROUTES = [r for r in ROUTES if r.namespace.split(":")[0] == "admin"]
ADMIN_PUBLIC = {"admin:login", "admin:logout"}  # the login form itself; logout only ends the caller's session


def test_admin_is_staff_only(worlds):
    """Every admin URL (new ModelAdmins included) refuses a tenant's owner, whatever the object id."""
    attacker, victim = worlds
    client = Client()
    before = snapshot(victim)
    for route in ADMIN_ROUTES:
        kwargs = {}
        for kwarg in route.kwargs:
            kwargs[kwarg] = {"app_label": "accounts", "object_id": str(victim.org.id)}.get(kwarg, "1")
        url = route.path(kwargs)
        for method in ("GET", "POST"):
            client.force_login(attacker.owner.user)  # admin:logout ends the session
            response = _request(client, method, url, _payload(victim), as_json=False)
            assert response.status_code < 500, f"{method} {url}: {response.status_code}"
            assert not leaks(response_body(response), victim), f"{method} {url} shows another tenant's data"
            if route.name not in ADMIN_PUBLIC:
                assert response.status_code == 302, f"{method} {url}: {response.status_code} for a non-staff owner"
                assert "/admin/login/" in response.headers["Location"], f"{method} {url}"
    assert snapshot(victim) == before


# -- WebSockets ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WsSpec:
    objects: dict[str, Callable[[TenantWorld], object]]
    after_connect: str = ""  # a check run on the caller's own socket: what B's data must not reach


WS_SPECS: dict[str, WsSpec] = {
    "ws/orgs/<int:org_id>/usage/live/": WsSpec(ORG, after_connect="feed"),
    "ws/orgs/<int:org_id>/playground/": WsSpec(ORG, after_connect="playground"),
}
WS_ROUTES = websocket_routes()


def _ws_path(route: str, kwargs: dict) -> str:
    path = route
    for name, value in kwargs.items():
        path = path.replace(f"<int:{name}>", str(value)).replace(f"<{name}>", str(value))
    return "/" + path


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("route", "kwargs", "consumer"), WS_ROUTES, ids=[r[0] for r in WS_ROUTES])
@pytest.mark.asyncio
async def test_websocket_route_is_tenant_isolated(route, kwargs, consumer, settings):
    from ruapi.asgi import application

    settings.STRIPE_SECRET_KEY = ""
    spec = WS_SPECS.get(route)
    if spec is None:
        pytest.fail(f"WebSocket route {route!r} ({consumer.__name__}) has no isolation case: add it to WS_SPECS")
    attacker, victim = await database_sync_to_async(build_worlds)()
    cookie = await database_sync_to_async(session_cookie)(attacker.owner.user)
    before = await database_sync_to_async(snapshot)(victim)
    # B's organisation: refused before the handshake, as an owner of A (every permission) and anonymously
    for who in (cookie, None):
        foreign = WebsocketCommunicator(application, _ws_path(route, {k: spec.objects[k](victim) for k in kwargs}),
                                        headers=ws_headers(who))  # fmt: skip
        connected, code = await foreign.connect()
        assert not connected, f"{route}: connected to another organisation"
        assert code == 4403
    # A's own organisation: accepted (the control), and nothing of B's reaches it
    own = WebsocketCommunicator(application, _ws_path(route, {k: spec.objects[k](attacker) for k in kwargs}),
                                headers=ws_headers(cookie))  # fmt: skip
    connected, _ = await own.connect()
    assert connected, f"{route}: the caller's own organisation was refused"
    try:
        if spec.after_connect == "feed":
            from usage.live import usage_event_publish

            usage_event_publish(victim.usage_event, key_prefix=victim.api_key.prefix)
            assert await own.receive_nothing(timeout=0.5), "another tenant's request reached the feed"
        elif spec.after_connect == "playground":
            await own.send_json_to({"type": "chat", "protocol": "openai", "model": victim.model_name,
                                    "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
            messages = [await own.receive_json_from(timeout=10)]
            while messages[-1]["type"] not in ("done", "error"):
                messages.append(await own.receive_json_from(timeout=10))
            assert messages[-1]["type"] == "error", f"another tenant's restricted model answered: {messages}"
            assert "does not exist" in messages[-1]["message"]
    finally:
        await own.disconnect()
    assert await database_sync_to_async(snapshot)(victim) == before


# -- the public API (/v1) -----------------------------------------------------------------------------------
HI = [{"role": "user", "content": "hi"}]
# name -> (method, path, body builder taking B's restricted model, expected status)
V1_CASES: dict[str, tuple[str, str, Callable[[str], dict] | None, int | None]] = {
    "v1:chat_completions": ("POST", "/v1/chat/completions", lambda m: {"model": m, "messages": HI}, 404),
    "v1:messages": ("POST", "/v1/messages", lambda m: {"model": m, "max_tokens": 5, "messages": HI}, 404),
    "v1:count_tokens": ("POST", "/v1/messages/count_tokens", lambda m: {"model": m, "messages": HI}, 404),
    "v1:get_model": ("GET", "/v1/models/{model}", None, 404),
    "v1:embeddings": ("POST", "/v1/embeddings", lambda m: {"model": m, "input": "x"}, 404),
    "v1:images_generations": ("POST", "/v1/images/generations", lambda m: {"model": m, "prompt": "x"}, 404),
    "v1:audio_speech": ("POST", "/v1/audio/speech", lambda m: {"model": m, "input": "x", "voice": "alloy"}, 404),
    "v1:audio_transcriptions": ("MULTIPART", "/v1/audio/transcriptions", None, 404),
    "v1:list_models": ("GET", "/v1/models", None, 200),
    "v1:openapi-json": ("GET", "/v1/openapi.json", None, None),
    "v1:openapi-view": ("GET", "/v1/docs", None, None),
    "v1:not_found": ("GET", "/v1/{model}", None, 404),
    "v1:api-root": ("GET", "/v1/", None, None),
    # Stored responses: B's model name stands in for an id here; B's real response ids are attacked in
    # test_v1_stored_responses_of_another_tenant_are_404.
    "v1:responses_input_tokens": ("POST", "/v1/responses/input_tokens", lambda m: {"model": m, "input": "x"}, 404),
    "v1:responses_compact": ("POST", "/v1/responses/compact", lambda m: {"model": m, "input": "x"}, 404),
    "v1:responses_input_items": ("GET", "/v1/responses/{model}/input_items", None, 404),
    "v1:responses_cancel": ("POST", "/v1/responses/{model}/cancel", lambda m: {}, 404),
    "v1:responses_retrieve": ("GET", "/v1/responses/{model}", None, 404),
    "v1:responses_delete": ("DELETE", "/v1/responses/{model}", None, 404),
    "v1:responses": ("POST", "/v1/responses", lambda m: {"model": m, "input": "x"}, 404),
}


@pytest.mark.integration
def test_v1_routes_hide_other_tenants_models(gateway):
    """A's key cannot see or use B's restricted model through any /v1 route, nor spend B's money."""
    import httpx

    from accounts.services import org_create
    from ruapi.tests.isolation import load_restricted_models

    # given: B with a model only B may use; A (the gateway's tenant) with one of its own
    victim_org = org_create(name=f"Victim {secrets.token_hex(4)}")
    victim_model, own_model = f"only-v{secrets.token_hex(5)}", f"only-a{secrets.token_hex(5)}"
    load_restricted_models({own_model: gateway.tenant.org, victim_model: victim_org})
    headers = {"Authorization": f"Bearer {gateway.tenant.secret}", "x-api-key": gateway.tenant.secret}
    missing_model = f"only-m{secrets.token_hex(5)}"  # no such model at all

    def call(client, name: str, model: str):
        method, path, body, _expected = V1_CASES[name]
        url = path.format(model=model)
        if method == "MULTIPART":
            return client.post(url, data={"model": model}, files={"file": ("a.wav", b"RIFF0000")})
        if method == "POST":
            return client.post(url, json=body(model))
        if method == "DELETE":
            return client.delete(url)
        return client.get(url)

    def same_as_missing(text: str, model: str) -> str:
        return re.sub(r'"?req_\w+"?', "REQ", text.replace(model, "MODEL"))

    with httpx.Client(base_url=gateway.server.url, headers=headers, timeout=10) as client:
        for name, (_method, path, _body, expected) in V1_CASES.items():
            response = call(client, name, victim_model)
            assert response.status_code < 500, f"{name}: {response.status_code}"
            if expected is not None:
                assert response.status_code == expected, f"{name}: {response.status_code} {response.text[:200]}"
            if "{model}" in path or _body is not None or _method == "MULTIPART":
                # B's model is indistinguishable from one that does not exist (the name echoed is A's input)
                missing = call(client, name, missing_model)
                assert (response.status_code, same_as_missing(response.text, victim_model)) == (
                    missing.status_code,
                    same_as_missing(missing.text, missing_model),
                ), f"{name}: another tenant's model answers differently from a missing one"
            else:
                assert victim_model not in response.text, f"{name} shows another tenant's restricted model"
        # the control: A's own restricted model is listed and answers
        assert own_model in [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert client.get(f"/v1/models/{own_model}").status_code == 200
    assert not gateway.mock.requests


@pytest.mark.integration
def test_v1_stored_responses_of_another_tenant_are_404(gateway):
    """B's stored response (and its items) answer A's key exactly like ids that never existed: GET,
    DELETE, input_items, cancel, and as previous_response_id / item_reference; nothing of B's changes."""
    import httpx

    from conftest import make_tenant
    from proxy.models import StoredItem, StoredResponse
    from proxy.response_store import response_store_save

    # given: B's stored turn (a call and its output in its input), and ids that exist nowhere
    victim = make_tenant(f"Victim {secrets.token_hex(4)}")
    victim_id, missing_id = f"resp_{secrets.token_hex(16)}", f"resp_{secrets.token_hex(16)}"
    call = {"type": "function_call", "id": f"fc_{secrets.token_hex(8)}", "call_id": "call_v", "name": "lookup",
            "arguments": "{}"}  # fmt: skip
    output = {"type": "function_call_output", "id": f"fco_{secrets.token_hex(8)}", "call_id": "call_v",
              "output": f"secret of {victim.org.name}"}  # fmt: skip
    response_store_save(org_id=victim.org.id, api_key_id=victim.api_key.id, request={"model": "gpt-test"},
                        input_items=[{"type": "message", "role": "user", "content": "hi"}, call, output],
                        response={"id": victim_id, "object": "response", "model": "gpt-test", "output": [],
                                  "instructions": f"instructions of {victim.org.name}"})  # fmt: skip

    def rows() -> list:
        return [list(StoredResponse.objects.filter(org=victim.org).values()),
                list(StoredItem.objects.filter(org=victim.org).order_by("item_id").values())]

    before = rows()

    def same(text: str, response_id: str) -> str:
        return re.sub(r'"?req_\w+"?', "REQ", text.replace(response_id, "ID"))

    attacker = {"Authorization": f"Bearer {gateway.tenant.secret}"}
    with httpx.Client(base_url=gateway.server.openai_base_url, headers=attacker, timeout=10) as client:
        # when / then: B's id is a 404 exactly like a missing id, for every operation on it
        for method, path in (("GET", "/responses/{id}"), ("DELETE", "/responses/{id}"),
                             ("GET", "/responses/{id}/input_items"), ("POST", "/responses/{id}/cancel")):  # fmt: skip
            answers = [client.request(method, path.format(id=rid)) for rid in (victim_id, missing_id)]
            assert [a.status_code for a in answers] == [404, 404], f"{method} {path}"
            assert same(answers[0].text, victim_id) == same(answers[1].text, missing_id), f"{method} {path}"
            assert victim.org.name not in answers[0].text
        # as previous_response_id: 400 previous_response_not_found, as for a missing id
        answers = [client.post("/responses/input_tokens", json={"model": "gpt-test", "previous_response_id": rid,
                                                                 "input": "next"}) for rid in (victim_id, missing_id)]  # fmt: skip
        assert [a.status_code for a in answers] == [400, 400]
        assert answers[0].json()["error"]["code"] == "previous_response_not_found"
        assert same(answers[0].text, victim_id) == same(answers[1].text, missing_id)
        # as item_reference (B's call and B's tool output): 404, as for a missing item
        for item in (call, output):
            answers = [client.post("/responses/input_tokens", json={"model": "gpt-test", "input": [
                {"type": "item_reference", "id": item_id}]}) for item_id in (item["id"], "fc_missing")]  # fmt: skip
            assert [a.status_code for a in answers] == [404, 404]
            assert same(answers[0].text, item["id"]) == same(answers[1].text, "fc_missing")
    assert rows() == before, "another tenant's stored response changed"

    # the control: B's own key sees its response and continues from it
    with httpx.Client(base_url=gateway.server.openai_base_url, timeout=10,
                      headers={"Authorization": f"Bearer {victim.secret}"}) as owner:  # fmt: skip
        assert owner.get(f"/responses/{victim_id}").json()["id"] == victim_id
        assert owner.post("/responses/input_tokens", json={"model": "gpt-test", "previous_response_id": victim_id,
                                                           "input": [{"type": "item_reference", "id": call["id"]}]},
                          ).status_code == 200  # fmt: skip
    assert not gateway.mock.requests
