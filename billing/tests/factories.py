from django.contrib.auth import get_user_model

from accounts.models import Membership
from accounts.services import org_create
from billing.money import usd_to_nanos
from billing.services import balance_credit


def org_with(name: str, *, usd: str = "0", owner_email: str | None = None, role: str = Membership.Role.OWNER):
    org = org_create(name=name)
    if usd != "0":
        balance_credit(org_id=org.id, amount_nanos=usd_to_nanos(usd), kind="promo", description="test credit")
    if owner_email:
        user = get_user_model().objects.create_user(username=owner_email, email=owner_email, password="pw-123456")
        Membership.objects.create(org=org, user=user, role=role)
    return org
