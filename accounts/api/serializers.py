"""Management API shapes. Money is a decimal string of USD (exact), converted at this edge only."""

from decimal import Decimal

from rest_framework import serializers

from accounts.models import ApiKey, Invitation, ManagementKey, Membership, Organization
from billing.money import MoneyError, nanos_to_usd, usd_to_nanos

ASSIGNABLE = [r.value for r in Membership.Role if r != Membership.Role.OWNER]
INT_MAX = 2_147_483_647  # the largest integer/PositiveIntegerField value (and id) every backend stores


MAX_USD = Decimal(1_000_000_000)


class UsdField(serializers.DecimalField):
    """USD as a decimal string in JSON, nano-USD int inside."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_digits", 20)
        kwargs.setdefault("decimal_places", 9)
        kwargs.setdefault("min_value", Decimal(0))
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        # nano-USD live in a 64-bit column: a billion dollars is beyond any cap and still fits.
        # (Checked here, not with max_value: DRF runs validators on the returned nano-USD.)
        if value > MAX_USD:
            raise serializers.ValidationError(f"Ensure this value is at most {MAX_USD}.")
        try:
            return usd_to_nanos(value)
        except MoneyError as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def to_representation(self, value):
        return None if value is None else f"{nanos_to_usd(value).normalize():f}"


class OrganizationSerializer(serializers.ModelSerializer):
    monthly_spend_cap_usd = UsdField(source="monthly_spend_cap_nanos", read_only=True, allow_null=True)
    role = serializers.SerializerMethodField()

    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "role", "rpm_limit", "tpm_limit", "monthly_spend_cap_usd", "created_at"]

    def get_role(self, org) -> str | None:
        return self.context.get("roles", {}).get(org.id)


class OrganizationCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)


class OrganizationUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    rpm_limit = serializers.IntegerField(min_value=0, max_value=INT_MAX, allow_null=True, required=False)
    tpm_limit = serializers.IntegerField(min_value=0, max_value=INT_MAX, allow_null=True, required=False)
    monthly_spend_cap_usd = UsdField(allow_null=True, required=False)


class MemberSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "user_id", "email", "role", "created_at"]


class MemberUpdateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ASSIGNABLE)


class TransferOwnershipSerializer(serializers.Serializer):
    membership_id = serializers.IntegerField(min_value=1, max_value=INT_MAX)


class InvitationSerializer(serializers.ModelSerializer):
    is_pending = serializers.BooleanField(read_only=True)

    class Meta:
        model = Invitation
        fields = ["id", "email", "role", "created_at", "expires_at", "accepted_at", "revoked_at", "is_pending"]


class InvitationCreateSerializer(serializers.Serializer):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=ASSIGNABLE, default=Membership.Role.DEVELOPER)


class InvitationCreatedSerializer(InvitationSerializer):
    accept_url = serializers.CharField(read_only=True)

    class Meta(InvitationSerializer.Meta):
        fields = [*InvitationSerializer.Meta.fields, "accept_url"]


class ApiKeySerializer(serializers.ModelSerializer):
    monthly_spend_cap_usd = UsdField(source="monthly_spend_cap_nanos", read_only=True, allow_null=True)
    is_active = serializers.BooleanField(read_only=True)
    last_used_at = serializers.SerializerMethodField()
    spend_month_usd = serializers.SerializerMethodField()
    requests_month = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = [
            "id", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at", "is_active",
            "spend_month_usd", "requests_month", "allowed_models", "ip_allowlist", "rpm_limit", "tpm_limit",
            "monthly_spend_cap_usd",
        ]  # fmt: skip

    def _usage(self, key):
        return self.context["usage"][key.id]

    def get_last_used_at(self, key) -> str | None:
        last = self._usage(key).last_used_at
        return last.isoformat() if last else None

    def get_spend_month_usd(self, key) -> str:
        return f"{nanos_to_usd(self._usage(key).spend_month_nanos).normalize():f}"

    def get_requests_month(self, key) -> int:
        return self._usage(key).requests_month


class ApiKeyWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    allowed_models = serializers.ListField(child=serializers.CharField(max_length=200), required=False)
    ip_allowlist = serializers.ListField(child=serializers.CharField(max_length=64), required=False)
    rpm_limit = serializers.IntegerField(min_value=0, max_value=INT_MAX, allow_null=True, required=False)
    tpm_limit = serializers.IntegerField(min_value=0, max_value=INT_MAX, allow_null=True, required=False)
    monthly_spend_cap_usd = UsdField(allow_null=True, required=False)


class ApiKeyCreatedSerializer(ApiKeySerializer):
    secret = serializers.CharField(read_only=True, help_text="Shown once; store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "secret"]


class BalanceSerializer(serializers.Serializer):
    balance_usd = serializers.CharField()
    held_usd = serializers.CharField()
    available_usd = serializers.CharField()
    spend_month_usd = serializers.CharField()


class UsageQuerySerializer(serializers.Serializer):
    start = serializers.DateTimeField(required=False, help_text="Inclusive; default: 30 days ago.")
    end = serializers.DateTimeField(required=False, help_text="Exclusive; default: now.")
    group_by = serializers.ChoiceField(choices=["day", "model", "api_key"], default="day")
    api_key_id = serializers.IntegerField(min_value=1, max_value=INT_MAX, required=False)
    model = serializers.CharField(required=False)


class UsageRowSerializer(serializers.Serializer):
    group = serializers.CharField(allow_null=True, help_text="The day (YYYY-MM-DD), model id or API key id.")
    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost_usd = serializers.CharField()


class UsageSummarySerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    group_by = serializers.CharField()
    results = UsageRowSerializer(many=True)


class ManagementKeySerializer(serializers.ModelSerializer):
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ManagementKey
        fields = ["id", "name", "prefix", "role", "created_at", "last_used_at", "revoked_at", "is_active"]


class ManagementKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    role = serializers.ChoiceField(choices=ASSIGNABLE, default=Membership.Role.ADMIN)


class ManagementKeyCreatedSerializer(ManagementKeySerializer):
    secret = serializers.CharField(read_only=True)

    class Meta(ManagementKeySerializer.Meta):
        fields = [*ManagementKeySerializer.Meta.fields, "secret"]


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()
