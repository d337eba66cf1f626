from django.contrib import admin
from django.http import HttpResponsePermanentRedirect, JsonResponse
from django.templatetags.static import static
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from dashboard.views import root
from proxy.api import api


def favicon(request):
    """Browsers ask for /favicon.ico on pages without an icon link (the admin, the API docs)."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))


def healthz(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("v1/", api.urls),
    path("admin/", admin.site.urls),
    path("billing/", include("billing.urls")),
    path("healthz", healthz, name="healthz"),
    path("favicon.ico", favicon, name="favicon"),
    path("pricing/", include("catalog.urls")),  # public model and pricing pages (issue 3)
    # Issue 4: accounts (allauth), the dashboard and the management API.
    path("", root, name="root"),
    path("accounts/", include("allauth.urls")),
    path("dashboard/", include("dashboard.urls")),
    path("dashboard/", include("usage.urls")),  # usage analytics, export, platform view, playground (issue 6)
    path("api/", include("accounts.api.urls")),
    path("api/", include("usage.api_urls")),  # usage series, breakdowns, request log (issue 6)
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]
