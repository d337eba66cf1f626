from django.urls import path

from dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("orgs/new/", views.org_create, name="org_create"),
    path("orgs/switch/", views.org_switch, name="org_switch"),
    path("orgs/leave/", views.org_leave, name="org_leave"),
    path("settings/", views.org_settings, name="settings"),
    path("settings/tokens/", views.management_key_create, name="management_key_create"),
    path("settings/tokens/<int:management_key_id>/revoke/", views.management_key_revoke, name="management_key_revoke"),
    path("keys/", views.keys, name="keys"),
    path("keys/new/", views.key_create, name="key_create"),
    path("keys/<int:api_key_id>/", views.key_edit, name="key_edit"),
    path("keys/<int:api_key_id>/revoke/", views.key_revoke, name="key_revoke"),
    path("members/", views.members, name="members"),
    path("members/<int:membership_id>/role/", views.member_role, name="member_role"),
    path("members/<int:membership_id>/remove/", views.member_remove, name="member_remove"),
    path("members/<int:membership_id>/make-owner/", views.ownership_transfer, name="ownership_transfer"),
    path("invitations/<int:invitation_id>/revoke/", views.invitation_revoke, name="invitation_revoke"),
    path("invite/<str:token>/", views.invitation_accept, name="invitation_accept"),
    path("quickstart/", views.quickstart, name="quickstart"),
    path("models/", views.models, name="models"),
]
