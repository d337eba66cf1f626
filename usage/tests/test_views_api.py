"""Usage pages, CSV export and the management API: tenant-scoped (another organisation's data stays
invisible), staff-only platform view."""

import csv
import io
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Membership
from accounts.tests.factories import MembershipFactory, OrgFactory, UserFactory, key_for
from usage.services import rollups_refresh
from usage.tests.conftest import make_event

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture
def world():
    org, other = OrgFactory(name="Acme"), OrgFactory(name="Other")
    viewer = MembershipFactory(org=org, role=Membership.Role.VIEWER).user
    key = key_for(org, name="ci").api_key
    now = timezone.now()
    make_event(org, now - timedelta(minutes=5), api_key=key, request_id="req_acme1", cost_nanos=2_000_000_000)
    make_event(org, now - timedelta(minutes=4), request_id="req_acme2", model="claude-test", status_code=500,
               cost_nanos=0, source="playground", user=viewer)  # fmt: skip
    make_event(other, now - timedelta(minutes=3), request_id="req_other1", model="secret-model", cost_nanos=9)
    rollups_refresh()
    client = Client()
    client.force_login(viewer)
    return org, other, key, client


def test_usage_page_shows_own_requests_and_totals_only(world):
    org, _other, _key, client = world
    response = client.get("/dashboard/usage/?range=24h")
    html = response.content.decode()
    assert response.status_code == 200
    assert "req_acme1" in html and "req_acme2" in html and "req_other1" not in html and "secret-model" not in html
    assert response.context["totals"]["requests"] == 2 and response.context["totals"]["cost"] == "2.00"
    assert f"/ws/orgs/{org.id}/usage/live/" in html


def test_usage_search_and_csv_export(world):
    _org, _other, key, client = world
    response = client.get("/dashboard/usage/export.csv?range=24h&q=req_acme1")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert response["Content-Type"].startswith("text/csv")
    assert [(r["request_id"], r["key"], r["model"], r["cost_usd"], r["status"]) for r in rows] == [
        ("req_acme1", f"ci ({key.prefix}…)", "gpt-test", "2", "200")
    ]


def test_api_series_breakdown_and_requests_are_tenant_scoped(world):
    org, other, _key, client = world
    series = client.get(f"/api/orgs/{org.id}/usage/series/?range=24h").json()
    assert series["period"] == "hour" and sum(r["requests"] for r in series["results"]) == 2
    assert sum(r["errors"] for r in series["results"]) == 1
    breakdown = client.get(f"/api/orgs/{org.id}/usage/breakdown/?range=24h&by=model").json()
    assert [(r["group"], r["requests"], r["cost_usd"]) for r in breakdown["results"]] == [
        ("gpt-test", 1, "2"), ("claude-test", 1, "0")
    ]
    requests = client.get(f"/api/orgs/{org.id}/usage/requests/?range=24h&search=claude").json()
    assert [(r["request_id"], r["source"], r["status_code"]) for r in requests["results"]] == [
        ("req_acme2", "playground", 500)
    ]
    # another organisation's data: 404, exactly like an id that does not exist
    assert client.get(f"/api/orgs/{other.id}/usage/series/").status_code == 404
    assert client.get(f"/api/orgs/{other.id}/usage/requests/").status_code == 404
    other_key = key_for(other, name="theirs").api_key
    assert client.get(f"/api/orgs/{org.id}/usage/requests/?api_key_id={other_key.id}").status_code == 404


def test_platform_view_is_staff_only(world):
    org, other, _key, client = world
    assert client.get("/dashboard/usage/platform/").status_code == 403
    assert client.get("/api/usage/platform/").status_code == 403
    staff = UserFactory(is_staff=True)
    admin = Client()
    admin.force_login(staff)
    data = admin.get("/api/usage/platform/?range=24h").json()
    assert data["active_organisations"] == 2 and data["totals"]["requests"] == 3
    assert [(o["org_id"], o["requests"], o["error_rate"]) for o in data["organisations"]] == [
        (org.id, 2, 0.5), (other.id, 1, 0.0)
    ]
    page = admin.get("/dashboard/usage/platform/?range=24h")
    assert page.status_code == 200 and "Acme" in page.content.decode() and "Other" in page.content.decode()
