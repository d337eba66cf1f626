"""Admin writes reach every gateway process like the CLI's and the API's (issue 12 item 5).

A second gateway process (uvicorn, its own key cache, RUAPI_KEY_CACHE_TTL = 60 s so only a published
change can make it forget a key) serves the tenant's key; a staff user then revokes the key or
deactivates the organisation in the Django admin — change form, action or deletion — and that other
process must refuse the key within the version-check interval (~1 s), not after its cache TTL.
"""

import time

import openai
import pytest
from django.conf import settings
from django.utils import timezone

from accounts.models import ApiKey, Organization
from proxy.tests.reliability.faults import GatewayProcess, database_url

pytestmark = [pytest.mark.integration]

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def other_process(django_db_setup, django_db_blocker, tmp_path_factory):
    if not settings.REDIS_URL:
        pytest.skip("propagation between processes needs REDIS_URL")
    with django_db_blocker.unblock():
        url = database_url()
    process = GatewayProcess(
        tmp_path_factory.mktemp("admin-propagation") / "gateway.log",
        env={"DATABASE_URL": url, "REDIS_URL": settings.REDIS_URL, "RUAPI_KEY_CACHE_TTL": "60"},
    ).wait_ready()
    yield process
    process.kill()


@pytest.fixture
def staff_client(client, transactional_db):
    from django.contrib.auth import get_user_model

    admin_user = get_user_model().objects.create_superuser("root", "root@example.test", "pw-root-123")
    client.force_login(admin_user)
    return client


def _new_versions_for_this_test() -> None:
    """Each test's cache.clear() empties the Redis db, so the version keys restart at 1 and a
    long-lived process could mistake this test's first bump for the previous test's: start them
    at a value no earlier test used (production never resets them)."""
    from accounts import keycache, shared_state
    from catalog import snapshot

    for name in (keycache.VERSION_KEY, snapshot.VERSION_KEY):
        shared_state.sync_client().set(name, time.time_ns())


def _served(client) -> bool:
    try:
        client.chat.completions.create(model="demo-echo", messages=MESSAGES, max_tokens=5)
        return True
    except (openai.AuthenticationError, openai.PermissionDeniedError):  # revoked / no longer allowed
        return False


def _seconds_until_refused(client, limit_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if not _served(client):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"the other process still accepted the key after {limit_s}s")


def _key_form(api_key: ApiKey, **changes) -> dict:
    local = timezone.localtime(timezone.now())
    form = {
        "name": api_key.name, "expires_at_0": "", "expires_at_1": "", "revoked_at_0": "", "revoked_at_1": "",
        "allowed_models": "[]", "ip_allowlist": "[]", "rpm_limit": "", "tpm_limit": "",
        "monthly_spend_cap_nanos": "",
    }  # fmt: skip
    if changes.pop("revoke", False):
        form.update({"revoked_at_0": local.strftime("%Y-%m-%d"), "revoked_at_1": local.strftime("%H:%M:%S")})
    form.update(changes)
    return form


def _org_form(org: Organization, **changes) -> dict:
    form = {
        "name": org.name, "slug": org.slug, "rpm_limit": "", "tpm_limit": "", "monthly_spend_cap_nanos": "",
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0", "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }  # fmt: skip
    if org.is_active:
        form["is_active"] = "on"
    form.update(changes)
    return {k: v for k, v in form.items() if v is not None}


def revoke_in_key_change_form(client, tenant):
    return client.post(f"/admin/accounts/apikey/{tenant.api_key.pk}/change/", _key_form(tenant.api_key, revoke=True))


def limit_models_in_key_change_form(client, tenant):
    return client.post(
        f"/admin/accounts/apikey/{tenant.api_key.pk}/change/", _key_form(tenant.api_key, allowed_models='["gpt-test"]')
    )


def revoke_action(client, tenant):
    return client.post("/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [tenant.api_key.pk]})


def deactivate_in_org_change_form(client, tenant):
    return client.post(f"/admin/accounts/organization/{tenant.org.pk}/change/", _org_form(tenant.org, is_active=None))


def deactivate_action(client, tenant):
    return client.post("/admin/accounts/organization/", {"action": "deactivate", "_selected_action": [tenant.org.pk]})


@pytest.mark.parametrize(
    "write",
    [
        revoke_in_key_change_form,
        limit_models_in_key_change_form,
        revoke_action,
        deactivate_in_org_change_form,
        deactivate_action,
    ],
    ids=lambda f: f.__name__,
)
def test_an_admin_write_reaches_another_gateway_process_within_a_second(gateway, staff_client, other_process, write):
    # given: the other process has the key cached (and would trust it for 60 s)
    client = openai.OpenAI(base_url=f"{other_process.url}/v1", api_key=gateway.tenant.secret, max_retries=0)
    _new_versions_for_this_test()
    time.sleep(settings.RUAPI_CATALOG_VERSION_CHECK_INTERVAL + 0.1)  # it has followed this test's catalog load
    assert _served(client)
    time.sleep(settings.RUAPI_KEY_VERSION_CHECK_INTERVAL + 0.1)  # its version check has seen the current version
    assert _served(client)
    # when: staff change the key or the organisation in the admin
    response = write(staff_client, gateway.tenant)
    assert response.status_code == 302, response.content.decode()[:2000]
    # then: the other process refuses the key within the version-check interval
    elapsed = _seconds_until_refused(client, limit_s=4.0)
    assert elapsed <= settings.RUAPI_KEY_VERSION_CHECK_INTERVAL + 0.5, elapsed
    # and the write did what it said, nothing else
    api_key = ApiKey.objects.filter(pk=gateway.tenant.api_key.pk).first()
    org = Organization.objects.get(pk=gateway.tenant.org.pk)
    if write in (revoke_in_key_change_form, revoke_action):
        assert api_key.revoked_at is not None and org.is_active
    elif write is limit_models_in_key_change_form:
        assert api_key.revoked_at is None and api_key.allowed_models == ["gpt-test"] and org.is_active
    else:
        assert not org.is_active and api_key.revoked_at is None
    client.close()


def test_keys_cannot_be_deleted_in_the_admin_only_revoked(staff_client, transactional_db):
    # Usage events name their key; a deletion racing a request admitted from a key cache would fail
    # that request's usage record. The admin offers revocation instead.
    from accounts.tests.factories import OrgFactory, key_for

    issued = key_for(OrgFactory())
    assert staff_client.get(f"/admin/accounts/apikey/{issued.api_key.pk}/delete/").status_code == 403
    response = staff_client.post(
        "/admin/accounts/apikey/", {"action": "delete_selected", "_selected_action": [issued.api_key.pk], "post": "yes"}
    )
    assert ApiKey.objects.filter(pk=issued.api_key.pk, revoked_at__isnull=True).exists()
    assert response.status_code in (200, 302)
