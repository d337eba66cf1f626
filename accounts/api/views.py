"""Management API: validate -> one service/selector -> serialise (HackSoft's APIView style).

Organisation-scoped views derive from OrgScopedView (accounts/api/gate.py), which resolves the
URL's org_id against the caller and checks `required[method]` in the one permission table.
"""

from datetime import timedelta

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from accounts import selectors, services
from accounts.api import serializers as s
from accounts.api.auth import ManagementPrincipal
from accounts.api.gate import OrgScopedView
from accounts.models import ApiKey, Invitation, ManagementKey, Membership
from accounts.permissions import Perm
from accounts.spend import apikey_usage, spend_month_nanos, usage_summary
from billing.money import nanos_to_usd
from billing.services import balance_get

ERRORS = {
    400: OpenApiResponse(s.ErrorSerializer, description="Invalid input"),
    401: OpenApiResponse(s.ErrorSerializer, description="Not authenticated"),
    403: OpenApiResponse(s.ErrorSerializer, description="Role lacks the permission"),
    404: OpenApiResponse(s.ErrorSerializer, description="No such object in this organisation"),
}
TAG_ORGS, TAG_MEMBERS, TAG_KEYS, TAG_BILLING = ["organisations"], ["members"], ["api keys"], ["balance and usage"]


def _usd(nanos: int) -> str:
    return f"{nanos_to_usd(nanos).normalize():f}"


def _key_limits(data: dict, current: ApiKey | None = None) -> services.KeyLimits:
    def pick(name, attr=None):
        if name in data:
            return data[name]
        return getattr(current, attr or name) if current else None

    return services.KeyLimits(
        allowed_models=pick("allowed_models") or [],
        ip_allowlist=pick("ip_allowlist") or [],
        rpm_limit=pick("rpm_limit"),
        tpm_limit=pick("tpm_limit"),
        monthly_spend_cap_nanos=pick("monthly_spend_cap_usd", "monthly_spend_cap_nanos"),
    )


def _base_url(request) -> str:
    return (settings.RUAPI_PUBLIC_BASE_URL or request.build_absolute_uri("/")).rstrip("/")


# -- organisations ---------------------------------------------------------------------------------
class OrgListView(GenericAPIView):
    serializer_class = s.OrganizationSerializer

    @extend_schema(tags=TAG_ORGS, responses={200: s.OrganizationSerializer(many=True), **ERRORS})
    def get(self, request):
        """Organisations the caller can act in: a token's own, or the signed-in user's."""
        if isinstance(request.user, ManagementPrincipal):
            key = request.user.management_key
            orgs, roles = [key.org], {key.org_id: key.role}
        else:
            orgs = list(selectors.org_list_for_user(user=request.user))
            roles = dict(Membership.objects.filter(user=request.user).values_list("org_id", "role"))
        page = self.paginate_queryset(orgs)
        return self.get_paginated_response(s.OrganizationSerializer(page, many=True, context={"roles": roles}).data)

    @extend_schema(tags=TAG_ORGS, request=s.OrganizationCreateSerializer,
                   responses={201: s.OrganizationSerializer, **ERRORS})  # fmt: skip
    def post(self, request):
        """Create an organisation owned by the signed-in user (session only)."""
        if isinstance(request.user, ManagementPrincipal):
            raise exceptions.PermissionDenied("Management tokens act in one organisation; sign in to create one.")
        data = _valid(s.OrganizationCreateSerializer, request.data)
        org = services.org_create(name=data["name"], owner=request.user)
        body = s.OrganizationSerializer(org, context={"roles": {org.id: Membership.Role.OWNER}}).data
        return Response(body, status=status.HTTP_201_CREATED)


def _valid(serializer_class, data, **kwargs) -> dict:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class OrgDetailView(OrgScopedView):
    required = {"GET": Perm.ORG_VIEW, "PATCH": Perm.ORG_MANAGE}
    serializer_class = s.OrganizationSerializer

    def _out(self):
        return s.OrganizationSerializer(self.org, context={"roles": {self.org.id: self.role}}).data

    @extend_schema(tags=TAG_ORGS, responses={200: s.OrganizationSerializer, **ERRORS})
    def get(self, request, org_id: int):
        return Response(self._out())

    @extend_schema(tags=TAG_ORGS, request=s.OrganizationUpdateSerializer,
                   responses={200: s.OrganizationSerializer, **ERRORS})  # fmt: skip
    def patch(self, request, org_id: int):
        """Rename and/or set organisation-level limits (omitted limits keep their value; null removes)."""
        data = _valid(s.OrganizationUpdateSerializer, request.data)
        limit_fields = {"rpm_limit", "tpm_limit", "monthly_spend_cap_usd"}
        set_limits = bool(limit_fields & data.keys())
        org = self.org
        services.org_update(
            org=org, name=data.get("name"), set_limits=set_limits,
            rpm_limit=data.get("rpm_limit", org.rpm_limit), tpm_limit=data.get("tpm_limit", org.tpm_limit),
            monthly_spend_cap_nanos=data.get("monthly_spend_cap_usd", org.monthly_spend_cap_nanos),
        )  # fmt: skip
        return Response(self._out())


class OrgLeaveView(OrgScopedView):
    required = {"POST": Perm.ORG_VIEW}
    serializer_class = None

    @extend_schema(tags=TAG_ORGS, request=None, responses={204: None, **ERRORS})
    def post(self, request, org_id: int):
        """Leave the organisation (session only; the owner must transfer ownership first)."""
        if not self.is_session:
            raise exceptions.PermissionDenied("Only a signed-in member can leave.")
        services.membership_leave(org=self.org, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- members and invitations -----------------------------------------------------------------------
class MemberListView(OrgScopedView):
    required = {"GET": Perm.MEMBERS_VIEW}
    serializer_class = s.MemberSerializer

    @extend_schema(tags=TAG_MEMBERS, parameters=[OpenApiParameter("role", str, enum=Membership.Role.values)],
                   responses={200: s.MemberSerializer(many=True), **ERRORS})  # fmt: skip
    def get(self, request, org_id: int):
        members = selectors.member_list(org=self.org, role=request.query_params.get("role") or None)
        page = self.paginate_queryset(members)
        return self.get_paginated_response(s.MemberSerializer(page, many=True).data)


class MemberDetailView(OrgScopedView):
    required = {"PATCH": Perm.MEMBERS_MANAGE, "DELETE": Perm.MEMBERS_MANAGE}
    serializer_class = s.MemberSerializer

    def _member(self, membership_id: int) -> Membership:
        try:
            return selectors.member_get(org=self.org, membership_id=membership_id)
        except Membership.DoesNotExist as exc:
            raise exceptions.NotFound("No such member.") from exc

    @extend_schema(tags=TAG_MEMBERS, request=s.MemberUpdateSerializer, responses={200: s.MemberSerializer, **ERRORS})
    def patch(self, request, org_id: int, membership_id: int):
        data = _valid(s.MemberUpdateSerializer, request.data)
        membership = services.membership_change_role(
            org=self.org, membership=self._member(membership_id), role=data["role"], actor_role=self.role
        )
        return Response(s.MemberSerializer(membership).data)

    @extend_schema(tags=TAG_MEMBERS, responses={204: None, **ERRORS})
    def delete(self, request, org_id: int, membership_id: int):
        services.membership_remove(org=self.org, membership=self._member(membership_id), actor_role=self.role)
        return Response(status=status.HTTP_204_NO_CONTENT)


class OwnershipTransferView(OrgScopedView):
    required = {"POST": Perm.OWNERSHIP_TRANSFER}
    serializer_class = s.TransferOwnershipSerializer

    @extend_schema(tags=TAG_MEMBERS, request=s.TransferOwnershipSerializer,
                   responses={200: s.MemberSerializer, **ERRORS})  # fmt: skip
    def post(self, request, org_id: int):
        """Make another member the owner; the caller becomes an admin."""
        data = _valid(s.TransferOwnershipSerializer, request.data)
        try:
            target = selectors.member_get(org=self.org, membership_id=data["membership_id"])
        except Membership.DoesNotExist as exc:
            raise exceptions.NotFound("No such member.") from exc
        membership = services.ownership_transfer(org=self.org, from_user=request.user, to_membership=target)
        return Response(s.MemberSerializer(membership).data)


class InvitationListView(OrgScopedView):
    required = {"GET": Perm.MEMBERS_MANAGE, "POST": Perm.MEMBERS_MANAGE}
    serializer_class = s.InvitationSerializer

    @extend_schema(tags=TAG_MEMBERS, responses={200: s.InvitationSerializer(many=True), **ERRORS})
    def get(self, request, org_id: int):
        """Pending invitations."""
        page = self.paginate_queryset(selectors.invitation_list(org=self.org))
        return self.get_paginated_response(s.InvitationSerializer(page, many=True).data)

    @extend_schema(tags=TAG_MEMBERS, request=s.InvitationCreateSerializer,
                   responses={201: s.InvitationCreatedSerializer, **ERRORS})  # fmt: skip
    def post(self, request, org_id: int):
        """Invite by email; the link is emailed (and returned, for automation)."""
        data = _valid(s.InvitationCreateSerializer, request.data)
        inviter = None if isinstance(request.user, ManagementPrincipal) else request.user
        issued = services.invitation_create(org=self.org, email=data["email"], role=data["role"], invited_by=inviter,
                                            actor_role=self.role, base_url=_base_url(request))  # fmt: skip
        body = {**s.InvitationSerializer(issued.invitation).data, "accept_url": issued.accept_url}
        return Response(body, status=status.HTTP_201_CREATED)


class InvitationDetailView(OrgScopedView):
    required = {"DELETE": Perm.MEMBERS_MANAGE}
    serializer_class = s.InvitationSerializer

    @extend_schema(tags=TAG_MEMBERS, responses={204: None, **ERRORS})
    def delete(self, request, org_id: int, invitation_id: int):
        try:
            invitation = selectors.invitation_get(org=self.org, invitation_id=invitation_id)
        except Invitation.DoesNotExist as exc:
            raise exceptions.NotFound("No such invitation.") from exc
        services.invitation_revoke(org=self.org, invitation=invitation)
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- API keys --------------------------------------------------------------------------------------
def _keys_out(org, keys, serializer_class=s.ApiKeySerializer, **kwargs):
    keys = list(keys)
    usage = apikey_usage(org_id=org.id, api_key_ids=[k.id for k in keys])
    return serializer_class(keys, context={"usage": usage}, **kwargs).data


class ApiKeyListView(OrgScopedView):
    required = {"GET": Perm.KEYS_VIEW, "POST": Perm.KEYS_MANAGE}
    serializer_class = s.ApiKeySerializer

    @extend_schema(
        tags=TAG_KEYS,
        parameters=[OpenApiParameter("status", str, enum=["active", "revoked"]),
                    OpenApiParameter("search", str, description="Name contains, or prefix starts with")],
        responses={200: s.ApiKeySerializer(many=True), **ERRORS},
    )  # fmt: skip
    def get(self, request, org_id: int):
        keys = selectors.apikey_list(org=self.org, status=request.query_params.get("status"),
                                     search=request.query_params.get("search"))  # fmt: skip
        page = self.paginate_queryset(keys)
        return self.get_paginated_response(_keys_out(self.org, page, many=True))

    @extend_schema(tags=TAG_KEYS, request=s.ApiKeyWriteSerializer, responses={201: s.ApiKeyCreatedSerializer, **ERRORS})
    def post(self, request, org_id: int):
        """Create a key. The response carries the secret, the only time it is ever shown."""
        data = _valid(s.ApiKeyWriteSerializer, request.data)
        issued = services.apikey_issue(
            org=self.org, name=data.get("name", ""), expires_at=data.get("expires_at"), limits=_key_limits(data),
            created_by=None if isinstance(request.user, ManagementPrincipal) else request.user,
        )  # fmt: skip
        body = {**_keys_out(self.org, [issued.api_key], many=True)[0], "secret": issued.secret}
        return Response(body, status=status.HTTP_201_CREATED)


class ApiKeyDetailView(OrgScopedView):
    required = {"GET": Perm.KEYS_VIEW, "PATCH": Perm.KEYS_MANAGE}
    serializer_class = s.ApiKeySerializer

    def _key(self, api_key_id: int) -> ApiKey:
        try:
            return selectors.apikey_get(org=self.org, api_key_id=api_key_id)
        except ApiKey.DoesNotExist as exc:
            raise exceptions.NotFound("No such API key.") from exc

    @extend_schema(tags=TAG_KEYS, responses={200: s.ApiKeySerializer, **ERRORS})
    def get(self, request, org_id: int, api_key_id: int):
        return Response(_keys_out(self.org, [self._key(api_key_id)], many=True)[0])

    @extend_schema(tags=TAG_KEYS, request=s.ApiKeyWriteSerializer, responses={200: s.ApiKeySerializer, **ERRORS})
    def patch(self, request, org_id: int, api_key_id: int):
        """Rename, change expiry or limits (omitted fields keep their value; null removes a limit)."""
        api_key = self._key(api_key_id)
        data = _valid(s.ApiKeyWriteSerializer, request.data)
        kwargs = {"expires_at": data["expires_at"]} if "expires_at" in data else {}
        limit_fields = {"allowed_models", "ip_allowlist", "rpm_limit", "tpm_limit", "monthly_spend_cap_usd"}
        services.apikey_update(org=self.org, api_key=api_key, name=data.get("name"),
                               limits=_key_limits(data, api_key) if limit_fields & data.keys() else None, **kwargs)
        return Response(_keys_out(self.org, [api_key], many=True)[0])


class ApiKeyRevokeView(ApiKeyDetailView):
    required = {"POST": Perm.KEYS_MANAGE}

    @extend_schema(tags=TAG_KEYS, request=None, responses={200: s.ApiKeySerializer, **ERRORS})
    def post(self, request, org_id: int, api_key_id: int):
        """Revoke: refused by every gateway process within ~1 s (Redis) or RUAPI_KEY_CACHE_TTL."""
        api_key = services.apikey_disable(org=self.org, api_key=self._key(api_key_id))
        return Response(_keys_out(self.org, [api_key], many=True)[0])


class ManagementKeyListView(OrgScopedView):
    required = {"GET": Perm.MANAGEMENT_KEYS_MANAGE, "POST": Perm.MANAGEMENT_KEYS_MANAGE}
    serializer_class = s.ManagementKeySerializer

    @extend_schema(tags=TAG_KEYS, responses={200: s.ManagementKeySerializer(many=True), **ERRORS})
    def get(self, request, org_id: int):
        page = self.paginate_queryset(selectors.managementkey_list(org=self.org))
        return self.get_paginated_response(s.ManagementKeySerializer(page, many=True).data)

    @extend_schema(tags=TAG_KEYS, request=s.ManagementKeyCreateSerializer,
                   responses={201: s.ManagementKeyCreatedSerializer, **ERRORS})  # fmt: skip
    def post(self, request, org_id: int):
        data = _valid(s.ManagementKeyCreateSerializer, request.data)
        issued = services.managementkey_issue(
            org=self.org, name=data.get("name", ""), role=data["role"], actor_role=self.role,
            created_by=None if isinstance(request.user, ManagementPrincipal) else request.user,
        )  # fmt: skip
        body = {**s.ManagementKeySerializer(issued.management_key).data, "secret": issued.secret}
        return Response(body, status=status.HTTP_201_CREATED)


class ManagementKeyRevokeView(OrgScopedView):
    required = {"POST": Perm.MANAGEMENT_KEYS_MANAGE}
    serializer_class = s.ManagementKeySerializer

    @extend_schema(tags=TAG_KEYS, request=None, responses={200: s.ManagementKeySerializer, **ERRORS})
    def post(self, request, org_id: int, management_key_id: int):
        try:
            key = selectors.managementkey_get(org=self.org, management_key_id=management_key_id)
        except ManagementKey.DoesNotExist as exc:
            raise exceptions.NotFound("No such management key.") from exc
        return Response(s.ManagementKeySerializer(services.managementkey_revoke(org=self.org, management_key=key)).data)


# -- balance and usage -----------------------------------------------------------------------------
class BalanceView(OrgScopedView):
    required = {"GET": Perm.BILLING_VIEW}
    serializer_class = s.BalanceSerializer

    @extend_schema(tags=TAG_BILLING, responses={200: s.BalanceSerializer, **ERRORS})
    def get(self, request, org_id: int):
        balance = balance_get(org_id=self.org.id)
        return Response({
            "balance_usd": _usd(balance.balance_nanos), "held_usd": _usd(balance.held_nanos),
            "available_usd": _usd(balance.available_nanos),
            "spend_month_usd": _usd(spend_month_nanos(org_id=self.org.id)),
        })  # fmt: skip


class UsageView(OrgScopedView):
    required = {"GET": Perm.USAGE_VIEW}
    serializer_class = s.UsageSummarySerializer

    @extend_schema(tags=TAG_BILLING, parameters=[s.UsageQuerySerializer],
                   responses={200: s.UsageSummarySerializer, **ERRORS})  # fmt: skip
    def get(self, request, org_id: int):
        """Requests, tokens and cost, grouped by day, model or API key."""
        query = _valid(s.UsageQuerySerializer, request.query_params)
        end = query.get("end") or timezone.now()
        start = query.get("start") or end - timedelta(days=30)
        if start >= end:
            raise exceptions.ValidationError({"start": ["must be before end"]})
        if "api_key_id" in query:
            get_object_or_404(ApiKey, org=self.org, pk=query["api_key_id"])  # another tenant's key: 404
        rows = usage_summary(org_id=self.org.id, start=start, end=end, group_by=query["group_by"],
                             api_key_id=query.get("api_key_id"), model=query.get("model"))  # fmt: skip
        results = [{**{k: v for k, v in r.items() if k != "cost_nanos"}, "cost_usd": _usd(r["cost_nanos"])}
                   for r in rows]  # fmt: skip
        return Response({"start": start, "end": end, "group_by": query["group_by"], "results": results})
