"""Management API routes for usage, mounted under /api/ beside accounts.api.urls (which has no router)."""

from django.urls import path

from usage import api

org = "orgs/<int:org_id>/usage/"

urlpatterns = [
    path(org + "series/", api.UsageSeriesView.as_view(), name="api-usage-series"),
    path(org + "breakdown/", api.UsageBreakdownView.as_view(), name="api-usage-breakdown"),
    path(org + "requests/", api.UsageRequestListView.as_view(), name="api-usage-requests"),
    path("usage/platform/", api.PlatformUsageView.as_view(), name="api-usage-platform"),
]
