"""Dashboard pages. Thin: gate (dashboard.gate) -> form -> one service or selector -> template.

htmx requests get partials (request.htmx, django-htmx); the same URLs work without JavaScript.
"""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import trigger_client_event

from accounts import selectors, services
from accounts.models import ApiKey, Invitation, ManagementKey, Membership
from accounts.permissions import Perm, role_can_assign, role_can_manage_member
from accounts.spend import apikey_usage, spend_month_nanos, usage_daily
from billing.money import format_usd, nanos_to_usd
from billing.services import balance_get
from catalog.snapshot import catalog_build
from dashboard.forms import ApiKeyForm, InviteForm, LimitsForm, ManagementKeyForm, OrgForm, RoleForm
from dashboard.gate import SESSION_ORG, tenant_view


def public_base_url(request) -> str:
    """The gateway's base URL as clients should use it: the configured one, else this host."""
    return (settings.RUAPI_PUBLIC_BASE_URL or request.build_absolute_uri("/")).rstrip("/")


def root(request):
    """`/`: the dashboard for a signed-in user, the product's landing page otherwise."""
    if request.user.is_authenticated:
        return redirect("dashboard:overview")
    from catalog.selectors import public_models

    models = public_models()
    example = next((m.name for m in models if m.mode == "chat"), "MODEL")
    return render(request, "landing.html", {
        "base_url": public_base_url(request), "model_count": len(models), "example_model": example,
    })  # fmt: skip


def _visible_specs(org) -> list:
    """The catalog models this organisation may use: a model restricted to other organisations is
    not shown (nor offered in a key's allowed models), as /v1/models does not list it."""
    return sorted((s for s in catalog_build().models.values() if s.visible_to(org.id)), key=lambda s: s.name)


def _model_names(org) -> list[str]:
    return [s.name for s in _visible_specs(org)]


def _service_error(request, exc: services.AccountsError, form=None):
    if form is not None and exc.field and exc.field in form.fields:
        form.add_error(exc.field, exc.message)
    elif form is not None:
        form.add_error(None, exc.message)
    else:
        messages.error(request, exc.message)


# -- organisations ---------------------------------------------------------------------------------
@login_required
def org_create(request):
    form = OrgForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            org = services.org_create(name=form.cleaned_data["name"], owner=request.user)
        except services.AccountsError as exc:
            _service_error(request, exc, form)
        else:
            request.session[SESSION_ORG] = org.id
            messages.success(request, f"Created {org.name}. Next: create an API key.")
            return redirect("dashboard:overview")
    return render(request, "dashboard/org_create.html", {"form": form})


@login_required
@require_POST
def org_switch(request):
    org_id = request.POST.get("org_id", "")
    if not org_id.isdigit() or selectors.membership_for(org_id=int(org_id), user=request.user) is None:
        raise Http404("No such organisation")
    request.session[SESSION_ORG] = int(org_id)
    return redirect(request.POST.get("next") or "dashboard:overview")


@tenant_view(Perm.ORG_VIEW)
def overview(request):
    tenant = request.tenant
    org = tenant.org
    days = usage_daily(org_id=org.id, days=30)
    context = {
        "spend_month_nanos": spend_month_nanos(org_id=org.id),
        "requests_month": sum(d.requests for d in days if d.day.month == days[-1].day.month),
        "requests_total_30d": sum(d.requests for d in days),
        "chart": {
            "labels": [d.day.isoformat() for d in days],
            "requests": [d.requests for d in days],
            "spend": [float(format_usd(d.cost_nanos)) for d in days],
        },
        "key_count": selectors.apikey_list(org=org, status="active").count(),
    }
    if tenant.can(Perm.BILLING_VIEW):
        balance = balance_get(org_id=org.id)
        context["balance"] = balance.balance_nanos
        context["available"] = balance.available_nanos
    return render(request, "dashboard/overview.html", context)


@tenant_view(Perm.ORG_MANAGE)
def org_settings(request):
    org = request.tenant.org
    name_form = OrgForm(initial={"name": org.name}, prefix="org")
    limits_form = LimitsForm(initial=LimitsForm.initial_for(org), prefix="limits")
    if request.method == "POST":
        if "org-name" in request.POST:
            name_form = OrgForm(request.POST, prefix="org")
            if name_form.is_valid():
                try:
                    services.org_update(org=org, name=name_form.cleaned_data["name"])
                except services.AccountsError as exc:
                    _service_error(request, exc, name_form)
                else:
                    messages.success(request, "Organisation renamed.")
                    return redirect("dashboard:settings")
        else:
            limits_form = LimitsForm(request.POST, prefix="limits")
            if limits_form.is_valid():
                data = limits_form.cleaned_data
                services.org_update(org=org, set_limits=True, rpm_limit=data["rpm_limit"],
                                    tpm_limit=data["tpm_limit"], monthly_spend_cap_nanos=data["monthly_spend_cap"])
                messages.success(request, "Organisation limits saved; they apply to every key within seconds.")
                return redirect("dashboard:settings")
    context = {
        "name_form": name_form,
        "limits_form": limits_form,
        "management_keys": selectors.managementkey_list(org=org),
        "management_key_form": ManagementKeyForm(),
    }
    return render(request, "dashboard/settings.html", context)


@tenant_view(Perm.MANAGEMENT_KEYS_MANAGE)
@require_POST
def management_key_create(request):
    tenant = request.tenant
    form = ManagementKeyForm(request.POST)
    if form.is_valid():
        try:
            issued = services.managementkey_issue(org=tenant.org, name=form.cleaned_data["name"],
                                                  role=form.cleaned_data["role"], created_by=request.user,
                                                  actor_role=tenant.role)  # fmt: skip
        except services.AccountsError as exc:
            messages.error(request, exc.message)
        else:
            return render(request, "dashboard/secret_once.html", {
                "title": "Management token created", "secret": issued.secret,
                "hint": "Send it as Authorization: Bearer … to the management API (/api/docs/).",
                "back": reverse("dashboard:settings"),
            })  # fmt: skip
    else:
        messages.error(request, "Check the token's name and role.")
    return redirect("dashboard:settings")


@tenant_view(Perm.MANAGEMENT_KEYS_MANAGE)
@require_POST
def management_key_revoke(request, management_key_id: int):
    org = request.tenant.org
    try:
        key = selectors.managementkey_get(org=org, management_key_id=management_key_id)
    except ManagementKey.DoesNotExist as exc:
        raise Http404("No such token") from exc
    services.managementkey_revoke(org=org, management_key=key)
    messages.success(request, f"Revoked token {key.prefix}…")
    return redirect("dashboard:settings")


# -- API keys --------------------------------------------------------------------------------------
def _key_rows(org, keys) -> list[dict]:
    keys = list(keys)
    usage = apikey_usage(org_id=org.id, api_key_ids=[k.id for k in keys])
    return [{"key": k, "usage": usage[k.id], "spend_month_nanos": usage[k.id].spend_month_nanos,
             "cap_nanos": k.monthly_spend_cap_nanos}
            for k in keys]  # fmt: skip


@tenant_view(Perm.KEYS_VIEW)
def keys(request):
    org = request.tenant.org
    status = request.GET.get("status") or None
    rows = _key_rows(org, selectors.apikey_list(org=org, status=status))
    if request.htmx and request.GET.get("fragment") == "table":
        return render(request, "dashboard/partials/key_table.html", {"rows": rows})
    context = {"rows": rows, "form": ApiKeyForm(model_names=_model_names(org)), "status": status or ""}
    return render(request, "dashboard/keys.html", context)


@tenant_view(Perm.KEYS_MANAGE)
@require_POST
def key_create(request):
    org = request.tenant.org
    form = ApiKeyForm(request.POST, model_names=_model_names(org))
    issued = None
    if form.is_valid():
        try:
            issued = services.apikey_issue(org=org, name=form.cleaned_data["name"], created_by=request.user,
                                           expires_at=form.cleaned_data["expires_at"], limits=form.limits())
        except services.AccountsError as exc:
            _service_error(request, exc, form)
    if request.htmx:
        fresh = ApiKeyForm(model_names=_model_names(org)) if issued else form
        response = render(request, "dashboard/partials/key_create.html", {"form": fresh, "issued": issued})
        if issued:
            trigger_client_event(response, "keys-changed")
        return response
    if issued:
        rows = _key_rows(org, selectors.apikey_list(org=org))
        context = {"rows": rows, "form": ApiKeyForm(model_names=_model_names(org)), "issued": issued}
        return render(request, "dashboard/keys.html", context)
    rows = _key_rows(org, selectors.apikey_list(org=org))
    return render(request, "dashboard/keys.html", {"rows": rows, "form": form}, status=400)


def _tenant_key(request, api_key_id: int) -> ApiKey:
    try:
        return selectors.apikey_get(org=request.tenant.org, api_key_id=api_key_id)
    except ApiKey.DoesNotExist as exc:
        raise Http404("No such API key") from exc


@tenant_view(Perm.KEYS_MANAGE)
def key_edit(request, api_key_id: int):
    api_key = _tenant_key(request, api_key_id)
    if request.method == "POST":
        form = ApiKeyForm(request.POST, model_names=_model_names(request.tenant.org))
        if form.is_valid():
            try:
                services.apikey_update(org=request.tenant.org, api_key=api_key, name=form.cleaned_data["name"],
                                       limits=form.limits(), expires_at=form.cleaned_data["expires_at"])
            except services.AccountsError as exc:
                _service_error(request, exc, form)
            else:
                messages.success(request, f"Saved {api_key.prefix}…; the gateway applies it within seconds.")
                return redirect("dashboard:keys")
    else:
        form = ApiKeyForm(initial=ApiKeyForm.initial_for(api_key), model_names=_model_names(request.tenant.org))
    return render(request, "dashboard/key_edit.html", {"form": form, "api_key": api_key})


@tenant_view(Perm.KEYS_MANAGE)
@require_POST
def key_revoke(request, api_key_id: int):
    api_key = services.apikey_disable(org=request.tenant.org, api_key=_tenant_key(request, api_key_id))
    if request.htmx:
        row = _key_rows(request.tenant.org, [api_key])[0]
        return render(request, "dashboard/partials/key_row.html", {"row": row})
    messages.success(request, f"Revoked {api_key.prefix}…")
    return redirect("dashboard:keys")


# -- members ---------------------------------------------------------------------------------------
@tenant_view(Perm.MEMBERS_VIEW)
def members(request):
    tenant = request.tenant
    org = tenant.org
    invite_form = InviteForm(request.POST or None)
    if request.method == "POST":
        if not tenant.can(Perm.MEMBERS_MANAGE):
            return HttpResponse("Your role cannot invite members.", status=403)
        if invite_form.is_valid():
            try:
                issued = services.invitation_create(
                    org=org, email=invite_form.cleaned_data["email"], role=invite_form.cleaned_data["role"],
                    invited_by=request.user, actor_role=tenant.role, base_url=public_base_url(request),
                )  # fmt: skip
            except services.AccountsError as exc:
                _service_error(request, exc, invite_form)
            else:
                messages.success(request, f"Invitation sent to {issued.invitation.email}.")
                return redirect("dashboard:members")
    rows = [
        {"m": m, "can_manage": role_can_manage_member(tenant.role, m.role) and m.user_id != request.user.id}
        for m in selectors.member_list(org=org)
    ]
    context = {
        "rows": rows,
        "invitations": selectors.invitation_list(org=org) if tenant.can(Perm.MEMBERS_MANAGE) else [],
        "invite_form": invite_form,
        "role_choices": [c for c in RoleForm.base_fields["role"].choices if role_can_assign(tenant.role, c[0])],
    }
    return render(request, "dashboard/members.html", context)


def _tenant_member(request, membership_id: int) -> Membership:
    try:
        return selectors.member_get(org=request.tenant.org, membership_id=membership_id)
    except Membership.DoesNotExist as exc:
        raise Http404("No such member") from exc


@tenant_view(Perm.MEMBERS_MANAGE)
@require_POST
def member_role(request, membership_id: int):
    membership = _tenant_member(request, membership_id)
    form = RoleForm(request.POST)
    if form.is_valid():
        try:
            services.membership_change_role(org=request.tenant.org, membership=membership,
                                            role=form.cleaned_data["role"], actor_role=request.tenant.role)
        except services.AccountsError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"{membership.user.email} is now {membership.get_role_display()}.")
    return redirect("dashboard:members")


@tenant_view(Perm.MEMBERS_MANAGE)
@require_POST
def member_remove(request, membership_id: int):
    membership = _tenant_member(request, membership_id)
    try:
        services.membership_remove(org=request.tenant.org, membership=membership, actor_role=request.tenant.role)
    except services.AccountsError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Removed {membership.user.email}.")
    return redirect("dashboard:members")


@tenant_view(Perm.OWNERSHIP_TRANSFER)
@require_POST
def ownership_transfer(request, membership_id: int):
    membership = _tenant_member(request, membership_id)
    try:
        services.ownership_transfer(org=request.tenant.org, from_user=request.user, to_membership=membership)
    except services.AccountsError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{membership.user.email} is now the owner; you are an admin.")
    return redirect("dashboard:members")


@tenant_view(Perm.ORG_VIEW)
@require_POST
def org_leave(request):
    org = request.tenant.org
    try:
        services.membership_leave(org=org, user=request.user)
    except services.AccountsError as exc:
        messages.error(request, exc.message)
        return redirect("dashboard:members")
    request.session.pop(SESSION_ORG, None)
    messages.success(request, f"You left {org.name}.")
    return redirect("dashboard:overview")


@tenant_view(Perm.MEMBERS_MANAGE)
@require_POST
def invitation_revoke(request, invitation_id: int):
    try:
        invitation = selectors.invitation_get(org=request.tenant.org, invitation_id=invitation_id)
    except Invitation.DoesNotExist as exc:
        raise Http404("No such invitation") from exc
    services.invitation_revoke(org=request.tenant.org, invitation=invitation)
    messages.success(request, f"Invitation for {invitation.email} revoked.")
    return redirect("dashboard:members")


@login_required
def invitation_accept(request, token: str):
    invitation = selectors.unscoped_invitation_by_token(token=token)
    if invitation is None:
        raise Http404("This invitation link is not valid.")
    error = None
    if request.method == "POST":
        try:
            membership = services.invitation_accept(invitation=invitation, user=request.user)
        except services.AccountsError as exc:
            error = exc.message
        else:
            request.session[SESSION_ORG] = membership.org_id
            messages.success(request, f"Welcome to {membership.org.name}.")
            return redirect("dashboard:overview")
    return render(request, "dashboard/invitation.html", {"invitation": invitation, "error": error})


# -- quickstart and models -------------------------------------------------------------------------
@tenant_view(Perm.ORG_VIEW)
def quickstart(request):
    base = public_base_url(request)
    specs = _visible_specs(request.tenant.org)
    names = [s.name for s in specs]
    chat_models = [s.name for s in specs if s.mode == "chat"]
    model = "demo-echo" if "demo-echo" in chat_models else (sorted(chat_models) or ["MODEL"])[0]
    return render(request, "dashboard/quickstart.html", {"base_url": base, "model": model, "has_models": bool(names)})


@tenant_view(Perm.ORG_VIEW)
def models(request):
    specs = _visible_specs(request.tenant.org)
    rows = [{"spec": s, "input": nanos_to_usd(s.prices.input_nanos_per_mtok).normalize(),
             "output": nanos_to_usd(s.prices.output_nanos_per_mtok).normalize()} for s in specs]  # fmt: skip
    return render(request, "dashboard/models.html", {"rows": rows})
