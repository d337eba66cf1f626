"""Rollups: a bucket is recomputed from raw events and replaced; re-runs converge; purge keeps rollups."""

from datetime import UTC, timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from accounts.tests.factories import OrgFactory, key_for
from billing.models import UsageEvent
from catalog.models import Model, Price
from usage.models import RollupCursor, UsageRollup
from usage.services import (
    percentile_cont,
    rollup_bucket_rebuild,
    rollups_rebuild,
    rollups_refresh,
    usage_events_purge,
)
from usage.tests.conftest import make_event

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

NOW = timezone.now().astimezone(UTC).replace(minute=30, second=0, microsecond=0) - timedelta(days=2)
HOUR = NOW.replace(minute=0)


@pytest.mark.parametrize(
    ("_case", "values", "fraction", "expected"),
    [
        ("empty", [], 0.5, None),
        ("one", [7], 0.95, 7.0),
        ("median of even", [10, 20, 30, 40], 0.5, 25.0),
        ("p95 interpolates", list(range(1, 101)), 0.95, 95.05),
    ],
)
def test_percentile_cont_matches_postgres_definition(_case, values, fraction, expected):
    assert percentile_cont(values, fraction) == (pytest.approx(expected) if expected is not None else None)


def test_bucket_rebuild_sums_by_dimension_and_is_idempotent():
    # given: two orgs, two keys, events inside and just outside the hour
    org, other = OrgFactory(), OrgFactory()
    key_a, key_b = key_for(org, name="a").api_key, key_for(org, name="b").api_key
    make_event(org, HOUR + timedelta(minutes=1), api_key=key_a, latency_ms=100, ttfb_ms=10, is_stream=True)
    make_event(org, HOUR + timedelta(minutes=2), api_key=key_a, latency_ms=300, ttfb_ms=30, is_stream=True,
               input_tokens=5, output_tokens=1, cache_read_tokens=4, cost_nanos=7)
    make_event(org, HOUR + timedelta(minutes=3), api_key=key_a, status_code=502, error_type="upstream_error",
               input_tokens=0, output_tokens=0, cost_nanos=0, latency_ms=200)
    make_event(org, HOUR + timedelta(minutes=59, seconds=59), api_key=key_b, model="claude-test", provider="mock-anthropic")
    make_event(other, HOUR + timedelta(minutes=5))
    make_event(org, HOUR + timedelta(hours=1), api_key=key_a)  # next bucket
    make_event(org, HOUR - timedelta(seconds=1), api_key=key_a)  # previous bucket

    # when: rebuilt twice
    assert rollup_bucket_rebuild(period="hour", bucket_start=HOUR + timedelta(minutes=17)) == 3
    assert rollup_bucket_rebuild(period="hour", bucket_start=HOUR) == 3

    # then
    rows = {(r.org_id, r.api_key_id, r.model): r for r in UsageRollup.objects.filter(period="hour", bucket_start=HOUR)}
    assert set(rows) == {(org.id, key_a.id, "gpt-test"), (org.id, key_b.id, "claude-test"), (other.id, None, "gpt-test")}
    a = rows[(org.id, key_a.id, "gpt-test")]
    assert (a.requests, a.errors, a.input_tokens, a.output_tokens, a.cache_read_tokens, a.cost_nanos) == (3, 1, 15, 21, 4, 1007)
    assert (a.latency_p50_ms, a.latency_p95_ms, a.ttft_p50_ms, a.ttft_p95_ms) == (200, 290, 20, 29)
    assert rows[(org.id, key_b.id, "claude-test")].provider == "mock-anthropic"
    assert rows[(org.id, key_b.id, "claude-test")].ttft_p50_ms is None


def test_rebuild_replaces_stale_rows_never_increments():
    org = OrgFactory()
    make_event(org, HOUR + timedelta(minutes=1))
    UsageRollup.objects.create(period="hour", bucket_start=HOUR, org=org, model="gone", requests=99)
    UsageRollup.objects.create(period="hour", bucket_start=HOUR, org=org, model="gpt-test", provider="mock-openai",
                               requests=50, cost_nanos=10**9)

    rollup_bucket_rebuild(period="hour", bucket_start=HOUR)

    assert list(UsageRollup.objects.filter(bucket_start=HOUR).values_list("model", "requests", "cost_nanos")) == [
        ("gpt-test", 1, 1000)
    ]


def test_provider_cost_from_the_events_price_row_rounded_per_event():
    org = OrgFactory()
    model = Model.objects.create(name="priced")
    price = Price.objects.create(model=model, input_nanos_per_mtok=3_000_000_000, output_nanos_per_mtok=15_000_000_000,
                                 cost_input_nanos_per_mtok=1_000_000_000, cost_output_nanos_per_mtok=5_000_000_001,
                                 cost_cache_read_nanos_per_mtok=100_000_000)
    # 1*1000 + 1*5000.000001 + 3*100 -> 6300.000001 nanos -> 6300 (each event rounded half up)
    make_event(org, HOUR + timedelta(minutes=1), model="priced", price=price, input_tokens=1, output_tokens=1,
               cache_read_tokens=3)
    make_event(org, HOUR + timedelta(minutes=2), model="priced", price=price, input_tokens=1, output_tokens=1,
               cache_read_tokens=3)
    make_event(org, HOUR + timedelta(minutes=3), model="priced", price=None, input_tokens=1000, output_tokens=1000)

    rollup_bucket_rebuild(period="hour", bucket_start=HOUR)

    row = UsageRollup.objects.get(bucket_start=HOUR, model="priced")
    assert row.provider_cost_nanos == 2 * 6300
    assert row.margin_nanos == row.cost_nanos - 12600


def test_rebuild_range_covers_hours_and_days():
    org = OrgFactory()
    day = HOUR.replace(hour=0)
    for hours in (0, 5, 23, 24):
        make_event(org, day + timedelta(hours=hours, minutes=10))

    written = rollups_rebuild(start=day, end=day + timedelta(days=1))

    assert written == 3 + 1  # three hour rows and one day row
    assert UsageRollup.objects.get(period="day", bucket_start=day).requests == 3
    assert sorted(UsageRollup.objects.filter(period="hour").values_list("bucket_start", flat=True)) == [
        day, day + timedelta(hours=5), day + timedelta(hours=23)
    ]


def test_refresh_catches_up_from_its_cursor_and_advances_it():
    org = OrgFactory()
    make_event(org, HOUR - timedelta(hours=5))
    make_event(org, HOUR + timedelta(minutes=5))

    rollups_refresh(now=HOUR + timedelta(minutes=40))

    assert UsageRollup.objects.filter(period="hour").count() == 2
    assert RollupCursor.objects.get().position == HOUR
    # the next run starts an hour before the cursor, and a late event in the previous hour is counted
    make_event(org, HOUR - timedelta(minutes=1))
    rollups_refresh(now=HOUR + timedelta(hours=1, minutes=1))
    assert UsageRollup.objects.get(period="hour", bucket_start=HOUR - timedelta(hours=1)).requests == 1


@override_settings(RUAPI_USAGE_EVENT_RETENTION_DAYS=30)
def test_purge_deletes_old_raw_events_keeps_rollups_and_never_rebuilds_past_retention():
    org = OrgFactory()
    old_day = (timezone.now() - timedelta(days=40)).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    old = make_event(org, old_day + timedelta(hours=1))
    recent = make_event(org, HOUR)
    UsageRollup.objects.create(period="day", bucket_start=old_day, org=org, model="gpt-test", requests=1)
    assert usage_events_purge() == 0  # nothing aggregated yet (no refresh cursor): nothing is purged

    rollups_refresh()
    assert usage_events_purge() == 1

    assert list(UsageEvent.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not UsageEvent.objects.filter(pk=old.pk).exists()
    assert rollups_rebuild(start=old_day, end=old_day + timedelta(days=1)) == 0
    assert UsageRollup.objects.get(period="day", bucket_start=old_day).requests == 1


def test_rollups_sum_server_tool_requests():
    # given: two events with web searches / fetches in one bucket, one in another org
    org, other = OrgFactory(), OrgFactory()
    make_event(org, HOUR + timedelta(minutes=1), web_search_requests=2, web_fetch_requests=1)
    make_event(org, HOUR + timedelta(minutes=2), web_search_requests=3)
    make_event(other, HOUR + timedelta(minutes=3), web_search_requests=7)
    # when
    rollup_bucket_rebuild(period="hour", bucket_start=HOUR)
    # then
    rows = UsageRollup.objects.filter(period="hour", bucket_start=HOUR).order_by("org_id")
    assert [(r.org_id, r.requests, r.web_search_requests, r.web_fetch_requests) for r in rows] == [
        (org.id, 2, 5, 1), (other.id, 1, 7, 0),
    ]  # fmt: skip
