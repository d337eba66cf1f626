from django.urls import path

from catalog import views

app_name = "pricing"

urlpatterns = [
    path("", views.pricing, name="list"),
    path("<path:name>/", views.pricing_model, name="model"),
]
