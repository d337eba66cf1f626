"""Every page in a real browser (Playwright driving Debian's Chromium), at desktop and mobile width,
as each role that can see it: a visitor, an organisation's owner, an organisation admin and a staff user.

The pages come from Django's URL resolver: every named route is either a page in PAGES (a builder of
a concrete path and the roles that see it) or a non-page in NOT_PAGES (with why), so a page added
later without an entry fails `test_every_route_is_mapped`. A page fails on:

- any browser console error or uncaught exception;
- any failed network request, or a 4xx/5xx answer to the page or any of its subresources;
- horizontal overflow (the document wider than the viewport);
- overlapping visible form controls (inputs, selects, textareas, buttons, labels).

With RUAPI_SCREENSHOTS=<dir> every page is also saved as <dir>/<role>-<width>/<page>.png
(scripts/screenshots.sh).
"""

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.admin import site as admin_site
from django.test import Client
from django.urls import reverse

from ruapi.tests.isolation import http_routes

pytestmark = [pytest.mark.integration, pytest.mark.browser]

WIDTHS = {"desktop": 1280, "mobile": 390}
ROLES = ("visitor", "owner", "admin", "staff")
MEMBERS = ("owner", "admin", "staff")  # signed in, with an organisation
EVERYONE = ("visitor", *MEMBERS)
STAFF = ("staff",)


@dataclass(frozen=True)
class Page:
    path: Callable[["World"], str]
    roles: tuple[str, ...]
    ready: str = ""  # a selector that shows once the page has finished drawing (script-rendered pages)


def _url(name: str, **kwargs) -> Callable[["World"], str]:
    return lambda world: reverse(name, kwargs=kwargs or None)


def _from(name: str, **builders: Callable) -> Callable[["World"], str]:
    return lambda world: reverse(name, kwargs={k: b(world) for k, b in builders.items()})


# Named routes that are not pages a person looks at, and why.
NOT_PAGES = {
    "healthz": "JSON health check",
    "favicon": "a redirect to the static favicon",
    "schema": "the OpenAPI document (YAML), read by the docs page",
    "billing:stripe_webhook": "Stripe's webhook (POST)",
    "billing:invoice_download": "a PDF/HTML file download",
    "billing:redeem": "POST only (the top-up page's redemption form)",
    "usage:export": "CSV download",
    "account_logout": "POST only (the sign-out button)",
    "account_confirm_login_code": "login by code is off (ACCOUNT_LOGIN_BY_CODE_ENABLED)",
    "account_request_reauthentication_code": "login by code is off",
    "account_confirm_reauthentication_code": "login by code is off",
    "mfa_authenticate": "only inside a sign-in with TOTP pending (covered by accounts' MFA tests)",
    "mfa_reauthenticate": "only with TOTP active (covered by accounts' MFA tests)",
    "mfa_deactivate_totp": "only with TOTP active",
    "mfa_view_recovery_codes": "only with TOTP active",
    "mfa_generate_recovery_codes": "only with TOTP active",
    "mfa_download_recovery_codes": "a text file download",
    "account_set_password": "only for a user without a password (redirects otherwise)",
    "account_inactive": "only after signing in to a deactivated account",
    "dashboard:org_switch": "POST only",
    "dashboard:org_leave": "POST only",
    "dashboard:management_key_create": "POST only (the settings page's form)",
    "dashboard:management_key_revoke": "POST only",
    "dashboard:key_create": "POST only (the keys page's form)",
    "dashboard:key_revoke": "POST only",
    "dashboard:member_role": "POST only",
    "dashboard:member_remove": "POST only",
    "dashboard:ownership_transfer": "POST only",
    "dashboard:invitation_revoke": "POST only",
}
NOT_PAGE_PREFIXES = {
    "v1/": "the gateway API (JSON); its docs page is in PAGES",
    "api/": "the management API (JSON)",
    "admin:": "admin pages are listed from the admin site's registry (ADMIN_PAGES)",
    "admin/": "admin catch-alls",
}

PAGES = {
    "root": Page(_url("root"), EVERYONE),
    "pricing:list": Page(_url("pricing:list"), EVERYONE),
    "pricing:model": Page(lambda w: reverse("pricing:model", kwargs={"name": "gpt-test"}), EVERYONE),
    "swagger-ui": Page(_url("swagger-ui"), EVERYONE, ready=".swagger-ui .opblock"),
    "v1:openapi-view": Page(_url("v1:openapi-view"), EVERYONE, ready=".swagger-ui .opblock"),
    "account_login": Page(_url("account_login"), ("visitor",)),
    "account_signup": Page(_url("account_signup"), ("visitor",)),
    "account_reset_password": Page(_url("account_reset_password"), ("visitor",)),
    "account_reset_password_done": Page(_url("account_reset_password_done"), ("visitor",)),
    "account_reset_password_from_key": Page(lambda w: w.reset_path, ("visitor",)),
    "account_reset_password_from_key_done": Page(_url("account_reset_password_from_key_done"), ("visitor",)),
    "account_email_verification_sent": Page(_url("account_email_verification_sent"), ("visitor",)),
    "account_confirm_email": Page(lambda w: w.confirm_path, ("visitor",)),
    "account_reauthenticate": Page(_url("account_reauthenticate"), MEMBERS),
    "account_email": Page(_url("account_email"), MEMBERS),
    "account_change_password": Page(_url("account_change_password"), MEMBERS),
    "mfa_index": Page(_url("mfa_index"), MEMBERS),
    "mfa_activate_totp": Page(_url("mfa_activate_totp"), MEMBERS),
    "dashboard:overview": Page(_url("dashboard:overview"), MEMBERS),
    "dashboard:org_create": Page(_url("dashboard:org_create"), MEMBERS),
    "dashboard:settings": Page(_url("dashboard:settings"), MEMBERS),
    "dashboard:keys": Page(_url("dashboard:keys"), MEMBERS),
    "dashboard:key_edit": Page(lambda w: reverse("dashboard:key_edit", args=[w.key_id(w.role)]), MEMBERS),
    "dashboard:members": Page(_url("dashboard:members"), MEMBERS),
    "dashboard:invitation_accept": Page(lambda w: w.invitation_path, ("visitor",)),
    "dashboard:quickstart": Page(_url("dashboard:quickstart"), MEMBERS),
    "dashboard:models": Page(_url("dashboard:models"), MEMBERS),
    "usage:usage": Page(_url("usage:usage"), MEMBERS),
    "usage:platform": Page(_url("usage:platform"), STAFF),
    "usage:playground": Page(_url("usage:playground"), MEMBERS),
    "billing:overview": Page(_url("billing:overview"), MEMBERS),
    "billing:topup": Page(_url("billing:topup"), MEMBERS),
    "billing:settings": Page(_url("billing:settings"), MEMBERS),
    "billing:transactions": Page(_url("billing:transactions"), MEMBERS),
    "billing:invoices": Page(_url("billing:invoices"), MEMBERS),
    "billing:admin_revenue": Page(_url("billing:admin_revenue"), STAFF),
}


def admin_pages() -> dict[str, Page]:
    """The admin index and, for every registered model, its list, add and change pages (the change
    page of its first row, when it has one)."""
    pages = {"admin:index": Page(_url("admin:index"), STAFF)}
    for model, model_admin in admin_site._registry.items():
        info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        pages[f"{info}_changelist"] = Page(_url(f"{info}_changelist"), STAFF)
        if model_admin.has_add_permission(_superuser_request()):
            pages[f"{info}_add"] = Page(_url(f"{info}_add"), STAFF)
        pages[f"{info}_change"] = Page(_first_change(model, info), STAFF)
    return pages


def _superuser_request():
    from django.contrib.auth import get_user_model
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = get_user_model()(is_staff=True, is_superuser=True, is_active=True)
    return request


def _first_change(model, info: str) -> Callable[["World"], str | None]:
    def build(world) -> str | None:
        obj = model._default_manager.order_by("pk").first()
        return reverse(f"{info}_change", args=[obj.pk]) if obj is not None else None

    return build


def test_every_route_is_mapped():
    """A named route is a page (PAGES) or a declared non-page: a new page needs an entry here."""
    missing = []
    for route in http_routes():
        name = route.name
        if name in PAGES or name in NOT_PAGES or any(name.startswith(p) or route.route.startswith(p)
                                                     for p in NOT_PAGE_PREFIXES):
            continue
        missing.append(f"{name} ({route.route})")
    assert missing == [], "routes without a browser-tier entry (add to PAGES or NOT_PAGES): " + ", ".join(missing)
    assert set(PAGES) | set(NOT_PAGES) <= {r.name for r in http_routes()}  # no stale entries


# -- the world the pages show ------------------------------------------------------------------------
@dataclass
class World:
    orgs: dict  # role -> its organisation
    users: dict  # role -> user
    keys: dict  # role -> an API key id of its organisation
    invitation_path: str
    confirm_path: str
    reset_path: str
    role: str = ""

    def key_id(self, role: str) -> int:
        return self.keys[role]


def build_world(mock_upstream) -> World:
    from allauth.account.forms import default_token_generator
    from allauth.account.models import EmailAddress, EmailConfirmationHMAC
    from allauth.account.utils import user_pk_to_url_str
    from django.contrib.auth import get_user_model

    from accounts.models import Membership
    from accounts.services import invitation_create
    from accounts.tests.factories import MembershipFactory, UserFactory
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate
    from conftest import mock_catalog
    from ruapi.tests.isolation import build_tenant
    from usage.services import rollups_refresh

    catalog_load(mock_catalog(mock_upstream))
    catalog_invalidate()
    customer = build_tenant("c", victim=False)
    admin = MembershipFactory(org=customer.org, role=Membership.Role.ADMIN,
                              user=UserFactory(email="admin@example.test"))  # fmt: skip
    operator = build_tenant("s", victim=False)
    get_user_model().objects.filter(pk=operator.owner.user_id).update(is_staff=True, is_superuser=True)
    from django.utils import timezone

    rollups_refresh(now=timezone.now())
    invitation = invitation_create(org=customer.org, email="newcomer@example.test", role="viewer",
                                   invited_by=customer.owner.user, actor_role="owner",
                                   base_url="http://testserver")  # fmt: skip
    pending = UserFactory(email="pending@example.test")
    address = EmailAddress.objects.get(user=pending, email=pending.email)
    EmailAddress.objects.filter(pk=address.pk).update(verified=False)
    confirm_key = EmailConfirmationHMAC(address).key
    reset_path = reverse("account_reset_password_from_key",
                         kwargs={"uidb36": user_pk_to_url_str(pending), "key": default_token_generator.make_token(pending)})  # fmt: skip
    users = {"owner": customer.owner.user, "admin": admin.user, "staff": get_user_model().objects.get(pk=operator.owner.user_id)}
    return World(
        orgs={"owner": customer.org, "admin": customer.org, "staff": operator.org},
        users=users,
        keys={"owner": customer.api_key.id, "admin": customer.api_key.id, "staff": operator.api_key.id},
        invitation_path=reverse("dashboard:invitation_accept", kwargs={"token": invitation.token}),
        confirm_path=reverse("account_confirm_email", kwargs={"key": confirm_key}),
        reset_path=reset_path,
    )


# -- the checks ------------------------------------------------------------------------------------
LAYOUT_PROBE = r"""() => {
  const out = {overflow: null, overlaps: []};
  const doc = document.documentElement;
  const positioned = s => ['absolute', 'fixed'].includes(s.position);
  // The ancestors that clip an element: those with overflow other than visible on its containing-block
  // chain (an absolutely positioned element escapes a scroller that is not positioned).
  const clippers = e => {
    const out = [];
    let abs = positioned(getComputedStyle(e));
    for (let p = e.parentElement; p && p !== document.body && p !== doc; p = p.parentElement) {
      const s = getComputedStyle(p);
      if (!abs || s.position !== 'static') {
        if (s.overflowX !== 'visible' || s.overflowY !== 'visible') out.push(p);
        abs = positioned(s);
      }
    }
    return out;
  };
  const cut = (r, c) => ({left: Math.max(r.left, c.left), right: Math.min(r.right, c.right),
                          top: Math.max(r.top, c.top), bottom: Math.min(r.bottom, c.bottom)});
  const shown = rects => rects.filter(r => r.right - r.left > 2 && r.bottom - r.top > 2);
  // What of an element can be seen: its line boxes (an inline link wrapping over two lines is two boxes),
  // each cut to its clipping ancestors.
  const visibleRects = e => {
    const clips = clippers(e).map(p => p.getBoundingClientRect());
    return shown([...e.getClientRects()].map(r => clips.reduce(cut, {left: r.left, right: r.right, top: r.top, bottom: r.bottom})));
  };
  const label = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
    (e.className && typeof e.className === 'string' && e.className.trim() ? '.' + e.className.trim().split(/\s+/).join('.') : '');
  if (doc.scrollWidth > window.innerWidth) {
    // the culprits: elements past the right edge that no clipping ancestor contains
    const wide = [...document.querySelectorAll('body *')].filter(e => {
      const r = e.getBoundingClientRect();
      return r.right > window.innerWidth + 1 && clippers(e).length === 0;
    });
    const leaves = wide.filter(e => !wide.some(o => o !== e && e.contains(o))).slice(0, 4);
    out.overflow = `scrollWidth ${doc.scrollWidth} > ${window.innerWidth}: ` +
      leaves.map(e => `${label(e.parentElement)} > ${label(e)} "${(e.textContent || '').trim().slice(0, 30)}"`).join(', ');
  }
  const visible = e => {
    const s = getComputedStyle(e);
    return s.visibility !== 'hidden' && s.display !== 'none' &&
      !e.closest('[hidden], dialog:not([open]), details:not([open]) > :not(summary)');
  };
  // form controls, their labels and links (a form drawn over the page's tab bar covers its links)
  const els = [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button, label, a[href]')]
    .filter(visible).map(e => ({e, rects: visibleRects(e)})).filter(x => x.rects.length);
  const name = e => e.tagName.toLowerCase() + (e.name ? `[name=${e.name}]` : '') + (e.id ? '#' + e.id : '') +
    (['LABEL', 'BUTTON', 'A'].includes(e.tagName) ? ` "${e.textContent.trim().slice(0, 30)}"` : '');
  const meet = (ra, rb) => Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left) > 2 &&
                           Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top) > 2;
  for (let i = 0; i < els.length; i++) {
    for (let j = i + 1; j < els.length; j++) {
      const a = els[i], b = els[j];
      if (a.e.contains(b.e) || b.e.contains(a.e)) continue;  // a label wrapping its input
      if (a.rects.some(ra => b.rects.some(rb => meet(ra, rb)))) out.overlaps.push(`${name(a.e)} overlaps ${name(b.e)}`);
    }
  }
  // ... and no control or link drawn under something else (an inline card's padding over a tab bar)
  const x0 = window.scrollX, y0 = window.scrollY;
  const outside = r => r.top < 0 || r.left < 0 || r.bottom > window.innerHeight || r.right > window.innerWidth;
  for (const {e} of els) {
    let r = visibleRects(e)[0];  // measured now: an earlier scrollIntoView may have moved it
    if (r && outside(r)) { e.scrollIntoView({block: 'center', inline: 'nearest'}); r = visibleRects(e)[0]; }
    if (!r) continue;
    const top = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
    if (top && !e.contains(top) && !top.contains(e) && !(top.tagName === 'LABEL' && top.control === e) &&
        !(e.tagName === 'LABEL' && e.control === top)) {
      out.overlaps.push(`${name(e)} is covered by ${label(top)}`);
    }
  }
  window.scrollTo(x0, y0);
  return out;
}"""


@pytest.fixture(scope="module")
def browser():
    from playwright import sync_api

    from conftest import CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (apt-get install -y chromium)")
    # Playwright's sync API runs an event loop in this thread for the module; the ORM calls stay sync.
    with pytest.MonkeyPatch.context() as mp, sync_api.sync_playwright() as playwright:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield launched
        launched.close()


def _session_cookie(user, base: str) -> dict:
    client = Client()
    client.force_login(user, backend="allauth.account.auth_backends.AuthenticationBackend")
    return {"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
            "url": base}  # fmt: skip


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root"


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("role", ROLES)
def test_every_page(role, width, browser, gateway):
    world = build_world(gateway.mock)
    world.role = role
    base = gateway.server.url
    context = browser.new_context(viewport={"width": WIDTHS[width], "height": 900}, base_url=base)
    context.set_default_timeout(15_000)
    if role != "visitor":
        context.add_cookies([_session_cookie(world.users[role], base)])
    shots = os.environ.get("RUAPI_SCREENSHOTS")
    shot_dir = Path(shots) / f"{role}-{width}" if shots else None
    if shot_dir:
        shot_dir.mkdir(parents=True, exist_ok=True)
    problems: dict[str, list[str]] = {}
    pages = {**PAGES, **admin_pages()}
    visited = 0
    page = context.new_page()
    log: list[str] = []
    page.on("console", lambda m: m.type == "error" and log.append(f"console error: {m.text} ({m.location.get('url')})"))
    page.on("pageerror", lambda exc: log.append(f"uncaught exception: {exc}"))
    page.on("requestfailed", lambda r: log.append(f"request failed: {r.method} {r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and log.append(f"HTTP {r.status}: {r.request.method} {r.url}"))
    try:
        for name, spec in pages.items():
            if role not in spec.roles:
                continue
            path = spec.path(world)
            if path is None:
                continue
            page.goto("about:blank")  # the last page's requests end here, not in the next page's log
            log.clear()
            page.goto(path, wait_until="networkidle")
            if spec.ready:
                page.wait_for_selector(spec.ready)
                page.wait_for_load_state("networkidle")
            visited += 1
            found = list(log)
            probe = page.evaluate(LAYOUT_PROBE)
            if probe["overflow"]:
                found.append("horizontal overflow: " + probe["overflow"])
            found += [f"overlapping controls: {o}" for o in probe["overlaps"][:5]]
            if found:
                problems[f"{name} {path}"] = found
            if shot_dir:
                page.screenshot(path=str(shot_dir / f"{_slug(name)}.png"), full_page=True)
    finally:
        context.close()
    assert visited > 5
    assert problems == {}, "\n" + "\n".join(f"{p}:\n  " + "\n  ".join(v) for p, v in problems.items())


BROKEN = """<!DOCTYPE html><html><head><style>
  body { margin: 0; font: 16px/1.5 sans-serif; } .filters { display: flex; gap: .6rem; }
  .card { background: #fff; border: 1px solid #ccc; padding: 1.1rem 1.2rem; } .inline { display: inline; }
  .wide { width: 600px; } .on-top { position: relative; top: -1.4rem; }
</style></head><body>
<nav class="filters"><a href="#a">Balance</a><a href="#b">Transactions</a></nav>
<form class="card inline"><label>Kind <select><option>All</option></select></label><button>Filter</button></form>
<p><button class="wide">wider than a phone</button></p>
<p><label>Name <input></label><button class="on-top">Save</button></p>
</body></html>"""


def test_layout_probe_sees_what_broke_the_pages(browser):
    """The checks fail on the markup that broke /billing/transactions/ (an inline card over the tab bar),
    on a control wider than the viewport and on a button drawn over another control."""
    context = browser.new_context(viewport={"width": 390, "height": 900})
    page = context.new_page()
    page.set_content(BROKEN)
    probe = page.evaluate(LAYOUT_PROBE)
    context.close()
    assert probe["overflow"].startswith("scrollWidth 600 > 390: p > button.wide")
    assert 'a "Balance" is covered by form.card.inline' in probe["overlaps"]
    assert any("overlaps" in o and 'button "Save"' in o for o in probe["overlaps"]), probe["overlaps"]
