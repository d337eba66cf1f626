from django.urls import path

from usage import views

app_name = "usage"

urlpatterns = [
    path("usage/", views.usage, name="usage"),
    path("usage/export.csv", views.usage_export, name="export"),
    path("usage/platform/", views.platform, name="platform"),
    path("playground/", views.playground, name="playground"),
]
