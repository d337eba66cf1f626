"""Management API for usage (issue 6): validate -> one selector -> serialise.

Organisation-scoped views derive from accounts.api.gate.OrgScopedView (membership or management
key, then the permission table); the platform view is for staff sessions only.
"""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from accounts.api.auth import ManagementPrincipal
from accounts.api.gate import OrgScopedView
from accounts.api.serializers import ErrorSerializer
from accounts.models import ApiKey
from accounts.permissions import Perm
from billing.money import nanos_to_usd
from usage import selectors

TAGS = ["usage"]
ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid query (a parameter with a NUL character)"),
    401: OpenApiResponse(ErrorSerializer, description="Not authenticated"),
    403: OpenApiResponse(ErrorSerializer, description="Role lacks the permission"),
    404: OpenApiResponse(ErrorSerializer, description="No such object in this organisation"),
}
FILTERS = [
    OpenApiParameter("range", str, enum=list(selectors.RANGES), description="Default 7d; ignored with start/end"),
    OpenApiParameter("start", str, description="First UTC day, YYYY-MM-DD"),
    OpenApiParameter("end", str, description="Last UTC day (inclusive), YYYY-MM-DD"),
    OpenApiParameter("api_key_id", int), OpenApiParameter("model", str), OpenApiParameter("provider", str),
]


def usd(nanos: int) -> str:
    return f"{nanos_to_usd(nanos).normalize():f}"


def _money(row: dict) -> dict:
    out = {k: v for k, v in row.items() if not k.endswith("_nanos")}
    out["cost_usd"] = usd(row["cost_nanos"])
    return out


class SeriesRowSerializer(serializers.Serializer):
    bucket_start = serializers.DateTimeField()
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cache_read_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    web_search_requests = serializers.IntegerField()
    web_fetch_requests = serializers.IntegerField()
    cost_usd = serializers.CharField()


class SeriesSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    period = serializers.ChoiceField(choices=["hour", "day"])
    results = SeriesRowSerializer(many=True)


class BreakdownRowSerializer(SeriesRowSerializer):
    bucket_start = None
    group = serializers.CharField(allow_null=True, help_text="Model id, API key id or provider name")
    label = serializers.CharField()


class BreakdownSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    by = serializers.CharField()
    results = BreakdownRowSerializer(many=True)


class RequestSerializer(serializers.Serializer):
    request_id = serializers.CharField()
    created_at = serializers.DateTimeField()
    api_key_id = serializers.IntegerField(allow_null=True)
    source = serializers.CharField()
    model = serializers.CharField()
    provider = serializers.CharField()
    endpoint = serializers.CharField()
    status_code = serializers.IntegerField()
    error_type = serializers.CharField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cache_read_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()
    cost_usd = serializers.SerializerMethodField()
    latency_ms = serializers.IntegerField()
    ttfb_ms = serializers.IntegerField(allow_null=True)
    is_estimated = serializers.BooleanField()

    def get_cost_usd(self, event) -> str:
        return usd(event.cost_nanos)


class _UsageView(OrgScopedView):
    required = {"GET": Perm.USAGE_VIEW}

    def filters(self) -> selectors.UsageFilter:
        filters = selectors.usage_filter_from(self.request.query_params)
        if filters.api_key_id:
            get_object_or_404(ApiKey, org=self.org, pk=filters.api_key_id)  # another tenant's key: 404
        return filters


class UsageSeriesView(_UsageView):
    serializer_class = SeriesSerializer

    @extend_schema(tags=TAGS, parameters=FILTERS, responses={200: SeriesSerializer, **ERRORS})
    def get(self, request, org_id: int):
        """Requests, errors, tokens and cost per hour (ranges up to 3 days) or per day, from the rollups."""
        filters = self.filters()
        rows = selectors.usage_series(org=self.org, filters=filters)
        return Response({"start": filters.start, "end": filters.end, "period": filters.period,
                         "results": [_money(r) for r in rows]})  # fmt: skip


class UsageBreakdownView(_UsageView):
    serializer_class = BreakdownSerializer

    @extend_schema(
        tags=TAGS,
        parameters=[*FILTERS, OpenApiParameter("by", str, enum=["model", "api_key", "provider"])],
        responses={200: BreakdownSerializer, **ERRORS},
    )
    def get(self, request, org_id: int):
        """Totals over the range per model, API key or provider, dearest first."""
        by = request.query_params.get("by", "model")
        if by not in ("model", "api_key", "provider"):
            raise exceptions.ValidationError({"by": ["one of model, api_key, provider"]})
        filters = self.filters()
        field = {"model": "model", "api_key": "api_key_id", "provider": "provider"}[by]
        breakdown = selectors.usage_breakdown(org=self.org, filters=filters, by=by)
        rows = [{**_money(r), "group": r[field]} for r in breakdown]
        for row in rows:
            row.pop(field, None)
        return Response({"start": filters.start, "end": filters.end, "by": by, "results": rows})


class UsageRequestListView(_UsageView):
    serializer_class = RequestSerializer

    @extend_schema(
        tags=TAGS,
        parameters=[*FILTERS, OpenApiParameter("search", str, description="Request id, model, key")],
        responses={200: RequestSerializer(many=True), **ERRORS},
    )
    def get(self, request, org_id: int):
        """The request log (raw usage events, kept RUAPI_USAGE_EVENT_RETENTION_DAYS), newest first."""
        events = selectors.usage_event_list(org=self.org, filters=self.filters())
        page = self.paginate_queryset(events)
        return self.get_paginated_response(RequestSerializer(page, many=True).data)


class PlatformUsageView(GenericAPIView):
    """Staff only: platform-wide totals and the top organisations, models and providers."""

    @extend_schema(
        tags=TAGS, parameters=FILTERS[:3], responses={200: OpenApiResponse(description="Overview"), **ERRORS}
    )
    def get(self, request):
        if isinstance(request.user, ManagementPrincipal) or not request.user.is_staff:
            raise exceptions.PermissionDenied("Staff only.")
        filters = selectors.usage_filter_from(request.query_params)
        overview = selectors.unscoped_platform_overview(filters=filters)

        def rows(items):
            return [
                {**_money(r), "provider_cost_usd": usd(r["provider_cost_nanos"]),
                 "margin_usd": usd(r["margin_nanos"]), "error_rate": round(r["error_rate"], 4)}
                for r in items
            ]  # fmt: skip

        return Response({
            "start": filters.start, "end": filters.end, "period": filters.period,
            "active_organisations": overview["active_orgs"], "totals": rows([overview["totals"]])[0],
            "organisations": rows(overview["organisations"]), "models": rows(overview["models"]),
            "providers": rows(overview["providers"]),
        })  # fmt: skip
