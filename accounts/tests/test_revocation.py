"""Revocation reaches the gateway: at once in-process, within ~1 s via Redis, within the TTL otherwise."""

import time

import openai
import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from accounts import keycache, shared_state
from accounts.models import ApiKey
from accounts.services import apikey_disable

pytestmark = [pytest.mark.integration]

MESSAGES = [{"role": "user", "content": "hi"}]


def _ok(client) -> bool:
    try:
        client.chat.completions.create(model="demo-echo", messages=MESSAGES, max_tokens=5)
        return True
    except openai.AuthenticationError:
        return False


def _revoke_behind_the_cache(api_key: ApiKey) -> None:
    """What another process's revocation looks like to this one: the row changes, nothing is invalidated here."""
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at=timezone.now())


def _seconds_until_refused(client, limit_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if not _ok(client):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"key still accepted after {limit_s}s")


@pytest.mark.embedded
def test_revocation_in_this_process_is_immediate(gateway, settings):
    settings.RUAPI_KEY_CACHE_TTL = 60.0
    client = gateway.openai()
    assert _ok(client)
    apikey_disable(org=gateway.tenant.org, api_key=gateway.tenant.api_key)
    assert not _ok(client)


@pytest.mark.embedded
def test_without_redis_another_process_revocation_takes_at_most_the_ttl(gateway, settings):
    # given: a process trusting its cached key for 1.5 s
    settings.RUAPI_KEY_CACHE_TTL = 1.5
    settings.REDIS_URL = ""
    client = gateway.openai()
    assert _ok(client)
    # when
    _revoke_behind_the_cache(gateway.tenant.api_key)
    # then: still served from the cache for a moment, refused within the TTL
    assert _ok(client)
    assert _seconds_until_refused(client, limit_s=3.0) <= 1.5 + 0.5


@pytest.mark.skipif(not django_settings.REDIS_URL, reason="needs REDIS_URL")
def test_with_redis_a_published_revocation_takes_about_a_second(gateway, settings):
    # given: a long cache TTL, so only the Redis version can make the process forget the key
    settings.RUAPI_KEY_CACHE_TTL = 60.0
    client = gateway.openai()
    assert _ok(client)
    _revoke_behind_the_cache(gateway.tenant.api_key)
    time.sleep(1.2)
    assert _ok(client), "without a published change the cached key is still trusted"
    # when: the other process publishes its change (what keycache.publish_change does there)
    shared_state.sync_client().incr(keycache.VERSION_KEY)
    # then
    assert _seconds_until_refused(client, limit_s=3.0) <= django_settings.RUAPI_KEY_VERSION_CHECK_INTERVAL + 0.3


@pytest.mark.skipif(not django_settings.REDIS_URL, reason="needs REDIS_URL")
def test_apikey_disable_publishes_to_redis(transactional_db):
    from accounts.tests.factories import OrgFactory, key_for

    client = shared_state.sync_client()
    before = int(client.get(keycache.VERSION_KEY) or 0)
    issued = key_for(OrgFactory())
    apikey_disable(org=issued.api_key.org, api_key=issued.api_key)
    assert int(client.get(keycache.VERSION_KEY)) == before + 1


@pytest.mark.embedded
def test_requests_racing_an_uncached_key_share_one_lookup(gateway, settings, monkeypatch):
    # given: a key the process has not cached yet, and a lookup we can count
    import asyncio

    from accounts.services import apikey_hash

    settings.RUAPI_KEY_CACHE_TTL = 60.0
    # Catch up with key changes other tests published (a change seen mid-scenario rightly drops the
    # loads in flight), and do not look again during the scenario.
    settings.RUAPI_KEY_VERSION_CHECK_INTERVAL = 60.0
    keycache._version_state["next_check"] = 0.0
    if shared_state.redis_enabled():
        asyncio.run(keycache._follow_remote_changes())
    keycache.invalidate()
    loads = []
    real_load = keycache._load

    def counted_load(key_hash):
        loads.append(key_hash)
        time.sleep(0.05)
        return real_load(key_hash)

    monkeypatch.setattr(keycache, "_load", counted_load)
    key_hash = apikey_hash(gateway.tenant.secret)

    async def scenario():
        return await asyncio.gather(*(keycache.key_context_lookup(key_hash) for _ in range(20)))

    # when
    contexts = asyncio.run(scenario())
    # then: one database lookup served all twenty
    assert loads == [key_hash]
    assert all(c is not None and c.key_id == gateway.tenant.api_key.pk for c in contexts)


@pytest.mark.embedded
def test_a_lookup_that_raced_a_revocation_is_not_cached(gateway, settings, monkeypatch):
    # given: a lookup in flight (it read the key while still active) when the key is revoked here
    import asyncio
    import threading

    from accounts.services import apikey_hash

    settings.RUAPI_KEY_CACHE_TTL = 60.0
    keycache.invalidate()
    read, release = threading.Event(), threading.Event()
    real_load = keycache._load

    def slow_load(key_hash):
        context = real_load(key_hash)
        read.set()
        release.wait(5)
        return context

    monkeypatch.setattr(keycache, "_load", slow_load)
    key_hash = apikey_hash(gateway.tenant.secret)

    async def scenario():
        racing = asyncio.ensure_future(keycache.key_context_lookup(key_hash))
        assert await asyncio.to_thread(read.wait, 5)
        await asyncio.to_thread(_revoke_behind_the_cache, gateway.tenant.api_key)
        keycache.invalidate(key_hash)  # what apikey_disable does in this process
        release.set()
        await racing
        monkeypatch.setattr(keycache, "_load", real_load)
        return await keycache.key_context_lookup(key_hash)

    # when / then: the lookup after the revocation does not get the raced (active) context
    assert asyncio.run(scenario()) is None
