from django.urls import path

from accounts.api import views
from billing import api as billing_api

org = "orgs/<int:org_id>/"

urlpatterns = [
    path("orgs/", views.OrgListView.as_view(), name="api-orgs"),
    path(org, views.OrgDetailView.as_view(), name="api-org"),
    path(org + "leave/", views.OrgLeaveView.as_view(), name="api-org-leave"),
    path(org + "members/", views.MemberListView.as_view(), name="api-members"),
    path(org + "members/<int:membership_id>/", views.MemberDetailView.as_view(), name="api-member"),
    path(org + "transfer-ownership/", views.OwnershipTransferView.as_view(), name="api-transfer-ownership"),
    path(org + "invitations/", views.InvitationListView.as_view(), name="api-invitations"),
    path(org + "invitations/<int:invitation_id>/", views.InvitationDetailView.as_view(), name="api-invitation"),
    path(org + "keys/", views.ApiKeyListView.as_view(), name="api-keys"),
    path(org + "keys/<int:api_key_id>/", views.ApiKeyDetailView.as_view(), name="api-key"),
    path(org + "keys/<int:api_key_id>/revoke/", views.ApiKeyRevokeView.as_view(), name="api-key-revoke"),
    path(org + "management-keys/", views.ManagementKeyListView.as_view(), name="api-management-keys"),
    path(org + "management-keys/<int:management_key_id>/revoke/", views.ManagementKeyRevokeView.as_view(),
         name="api-management-key-revoke"),
    path(org + "balance/", views.BalanceView.as_view(), name="api-balance"),
    path(org + "usage/", views.UsageView.as_view(), name="api-usage"),
    path(org + "invoices/", billing_api.InvoiceListView.as_view(), name="api-invoices"),
    path(org + "invoices/<int:invoice_id>/pdf/", billing_api.InvoicePdfView.as_view(), name="api-invoice-pdf"),
]
