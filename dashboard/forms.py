"""Dashboard forms: parse and validate input, then the views call one service."""

from decimal import Decimal, InvalidOperation

from django import forms

from accounts.models import Membership
from accounts.services import KeyLimits
from billing.money import MoneyError, format_usd, usd_to_nanos

ASSIGNABLE_ROLES = [(r.value, r.label) for r in Membership.Role if r != Membership.Role.OWNER]


class UsdField(forms.CharField):
    """A USD amount as text (exact, never a float) -> nano-USD int or None."""

    def to_python(self, value):
        value = (value or "").strip().lstrip("$")
        if not value:
            return None
        try:
            nanos = usd_to_nanos(Decimal(value))
        except (InvalidOperation, MoneyError) as exc:
            raise forms.ValidationError("Enter an amount in USD, e.g. 25 or 12.50") from exc
        if nanos < 0:
            raise forms.ValidationError("The amount cannot be negative")
        return nanos


class LimitsForm(forms.Form):
    rpm_limit = forms.IntegerField(label="Requests per minute", required=False, min_value=0)
    tpm_limit = forms.IntegerField(label="Tokens per minute", required=False, min_value=0)
    monthly_spend_cap = UsdField(label="Monthly spend cap (USD)", required=False)

    @staticmethod
    def initial_for(obj) -> dict:
        cap = obj.monthly_spend_cap_nanos
        return {"rpm_limit": obj.rpm_limit, "tpm_limit": obj.tpm_limit,
                "monthly_spend_cap": format_usd(cap) if cap is not None else ""}  # fmt: skip


class ApiKeyForm(LimitsForm):
    name = forms.CharField(max_length=200, required=False, help_text="A label, e.g. the app or environment.")
    expires_at = forms.DateTimeField(
        label="Expires", required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Leave empty for a key that does not expire.",
    )  # fmt: skip
    allowed_models = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple,
        help_text="None selected: every model.",
    )  # fmt: skip
    ip_allowlist = forms.CharField(
        label="IP allowlist", required=False, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One address or CIDR network per line or comma-separated; empty: any address.",
    )  # fmt: skip
    field_order = ["name", "expires_at", "allowed_models", "rpm_limit", "tpm_limit", "monthly_spend_cap",
                   "ip_allowlist"]  # fmt: skip

    def __init__(self, *args, model_names: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["allowed_models"].choices = [(n, n) for n in model_names]

    def limits(self) -> KeyLimits:
        data = self.cleaned_data
        return KeyLimits(
            allowed_models=list(data["allowed_models"]),
            ip_allowlist=[p for p in data["ip_allowlist"].replace(",", "\n").split() if p],
            rpm_limit=data["rpm_limit"],
            tpm_limit=data["tpm_limit"],
            monthly_spend_cap_nanos=data["monthly_spend_cap"],
        )

    @staticmethod
    def initial_for(api_key) -> dict:
        return {
            **LimitsForm.initial_for(api_key),
            "name": api_key.name,
            "expires_at": api_key.expires_at,
            "allowed_models": api_key.allowed_models,
            "ip_allowlist": "\n".join(api_key.ip_allowlist),
        }


class OrgForm(forms.Form):
    name = forms.CharField(max_length=200, label="Organisation name")


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=ASSIGNABLE_ROLES, initial=Membership.Role.DEVELOPER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=ASSIGNABLE_ROLES)


class ManagementKeyForm(forms.Form):
    name = forms.CharField(max_length=200, required=False)
    role = forms.ChoiceField(choices=ASSIGNABLE_ROLES, initial=Membership.Role.ADMIN)
