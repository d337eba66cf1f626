from django.contrib import admin
from django.http import JsonResponse
from django.urls import path

from proxy.api import api


def healthz(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("v1/", api.urls),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
]
