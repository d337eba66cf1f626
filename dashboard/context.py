"""Template context for every page: the current organisation, the user's others, and permissions."""

from django.conf import settings

from accounts.permissions import Perm
from accounts.selectors import org_list_for_user
from dashboard.gate import current_tenant


def dashboard(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or request.path.startswith("/api/"):
        return {}
    tenant = getattr(request, "tenant", None) or current_tenant(request)
    return {
        "tenant": tenant,
        "user_orgs": list(org_list_for_user(user=user)) if tenant else [],
        "can": {p.name: tenant.can(p) for p in Perm} if tenant else {},
    }


def site(request) -> dict:
    """The product's name and public address, for pages and e-mails (allauth renders its e-mail bodies
    with the request, so its templates get these too)."""
    base = settings.RUAPI_PUBLIC_BASE_URL or (request.build_absolute_uri("/") if request is not None else "")
    return {"site_name": settings.RUAPI_SITE_NAME, "site_url": base.rstrip("/")}
