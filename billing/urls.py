from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("top-up/", views.topup, name="topup"),
    path("redeem/", views.redeem, name="redeem"),
    path("settings/", views.settings_view, name="settings"),
    path("transactions/", views.transactions, name="transactions"),
    path("invoices/", views.invoices, name="invoices"),
    path("invoices/<int:invoice_id>.<str:fmt>", views.invoice_download, name="invoice_download"),
    path("admin/revenue/", views.admin_revenue, name="admin_revenue"),
    path("stripe/webhook/", views.stripe_webhook, name="stripe_webhook"),
]
