"""Query strings with NUL bytes are refused before a view or the database sees them."""

import pytest

from accounts.tests.factories import MembershipFactory

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.mark.parametrize("query", ["search=a%00b", "status=revoked&search=%F0%AF%95%98%00x", "search=%00"])
def test_nul_in_a_management_api_filter_is_a_400_not_a_500(client, query):
    membership = MembershipFactory()
    client.force_login(membership.user)
    response = client.get(f"/api/orgs/{membership.org_id}/keys/?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and "NUL" in error["message"] and list(error["fields"]) == ["search"]


def test_nul_in_a_dashboard_query_is_a_plain_400(client):
    response = client.get("/accounts/login/?next=%00")
    assert response.status_code == 400 and response["content-type"].startswith("text/plain")


def test_ordinary_filters_still_reach_the_view(client):
    membership = MembershipFactory()
    client.force_login(membership.user)
    response = client.get(f"/api/orgs/{membership.org_id}/keys/?search=abc%2500")  # a literal "%00" text
    assert response.status_code == 200
