"""The hot path's catalog snapshot: visibility, aliases, scheduled prices, invalidation across processes."""

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.models import Model
from catalog.services import catalog_load, price_set
from catalog.snapshot import CatalogCache, catalog_build

pytestmark = [pytest.mark.django_db(transaction=True)]

CATALOG = {
    "providers": [{"name": "p", "kind": "openai", "base_url": "http://upstream.test/v1", "api_key": "k"}],
    "models": [{"name": "m", "aliases": ["m-alias"], "provider": "p", "input": 1, "output": 2}],
}


@pytest.mark.embedded
def test_aliases_visibility_and_disabled():
    from conftest import make_tenant

    catalog_load(CATALOG)
    tenant = make_tenant("Vis")
    model = Model.objects.get(name="m")
    snapshot = catalog_build()
    assert snapshot.get("m-alias") is snapshot.get("m")
    assert snapshot.get("m").visible_to(None)
    model.visibility = Model.Visibility.RESTRICTED
    model.save()
    model.organizations.set([tenant.org])
    spec = catalog_build().get("m")
    assert spec.visible_to(tenant.org.id) and not spec.visible_to(tenant.org.id + 1000)
    Model.objects.filter(pk=model.pk).update(is_enabled=False)
    snapshot = catalog_build()
    assert snapshot.get("m") is None and snapshot.is_disabled("m") and snapshot.is_disabled("m-alias")


@pytest.mark.embedded
def test_a_scheduled_price_applies_from_its_start_without_a_rebuild():
    catalog_load(CATALOG)
    start = timezone.now() + timedelta(seconds=30)
    later = price_set(model=Model.objects.get(name="m"), nanos={"input_nanos_per_mtok": 7}, effective_from=start)
    spec = catalog_build().get("m")
    before = spec.priced_at(start.timestamp() - 1)
    after = spec.priced_at(start.timestamp())
    assert before.prices.input_nanos_per_mtok == 1_000_000_000 and before.price_id != later.id
    assert (after.prices.input_nanos_per_mtok, after.price_id) == (7, later.id)


@pytest.mark.embedded
def test_without_redis_the_ttl_bounds_staleness(settings):
    settings.REDIS_URL = ""
    settings.RUAPI_CATALOG_CACHE_TTL = 0.2
    catalog_load(CATALOG)
    other = CatalogCache()  # another process
    assert asyncio.run(other.get()).get("m").prices.input_nanos_per_mtok == 1_000_000_000
    price_set(model=Model.objects.get(name="m"), nanos={"input_nanos_per_mtok": 5})
    assert asyncio.run(other.get()).get("m").prices.input_nanos_per_mtok == 1_000_000_000  # still cached
    time.sleep(0.25)
    assert asyncio.run(other.get()).get("m").prices.input_nanos_per_mtok == 5


def test_with_redis_a_write_reaches_another_process_within_the_check_interval(settings):
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    from accounts import shared_state

    settings.RUAPI_CATALOG_CACHE_TTL = 3600  # only the version key may trigger the rebuild
    settings.RUAPI_CATALOG_VERSION_CHECK_INTERVAL = 0.2
    shared_state.reset_clients()
    catalog_load(CATALOG)

    async def scenario():
        first, second = CatalogCache(), CatalogCache()  # two processes
        assert (await first.get()).get("m").prices.input_nanos_per_mtok == 1_000_000_000
        await second.get()
        from asgiref.sync import sync_to_async

        await sync_to_async(price_set)(model=await Model.objects.aget(name="m"), nanos={"input_nanos_per_mtok": 9})
        await asyncio.sleep(0.25)
        return (await first.get()).get("m").prices.input_nanos_per_mtok, (await second.get()).get("m")

    seen, spec = asyncio.run(scenario())
    assert seen == 9 and spec.prices.input_nanos_per_mtok == 9
    shared_state.reset_clients()


@pytest.mark.embedded
def test_requests_racing_an_expired_snapshot_share_one_build(settings, monkeypatch):
    # given: a cached catalog whose TTL has run out, and a build we can count
    from catalog import snapshot

    settings.REDIS_URL = ""
    settings.RUAPI_CATALOG_CACHE_TTL = 3600
    catalog_load(CATALOG)
    builds = []

    def counted_build():
        builds.append(1)
        time.sleep(0.05)  # a build takes a while: the other requests arrive meanwhile
        return catalog_build()

    monkeypatch.setattr(snapshot, "catalog_build", counted_build)
    cache = CatalogCache()

    async def scenario():
        # when: 30 requests need the snapshot at once, twice (cold, then after an invalidation)
        first = await asyncio.gather(*(cache.get() for _ in range(30)))
        cache.invalidate()
        second = await asyncio.gather(*(cache.get() for _ in range(30)))
        return first, second

    first, second = asyncio.run(scenario())
    # then: one build each time, shared by every request
    assert len(builds) == 2
    assert len({id(s) for s in first}) == 1 and len({id(s) for s in second}) == 1
    assert first[0] is not second[0]


@pytest.mark.embedded
def test_a_build_that_started_before_an_invalidation_is_not_kept(settings, monkeypatch):
    # given: a build in flight while the catalog changes and the cache is invalidated
    from catalog import snapshot

    settings.REDIS_URL = ""
    settings.RUAPI_CATALOG_CACHE_TTL = 3600
    catalog_load(CATALOG)
    cache = CatalogCache()
    started = threading.Event()

    def slow_build():
        started.set()
        result = catalog_build()  # reads the old price
        time.sleep(0.1)
        return result

    monkeypatch.setattr(snapshot, "catalog_build", slow_build)

    async def scenario():
        from asgiref.sync import sync_to_async

        old = asyncio.ensure_future(cache.get())
        assert await asyncio.to_thread(started.wait, 5)
        await sync_to_async(price_set)(model=await Model.objects.aget(name="m"), nanos={"input_nanos_per_mtok": 7})
        cache.invalidate()
        await old
        return await cache.get()

    # when / then: the request after the invalidation sees the new price
    assert asyncio.run(scenario()).get("m").prices.input_nanos_per_mtok == 7
