"""The one place a Stripe client is made: the official library, pointed at STRIPE_API_BASE when set
(the local stand-in in tests, stripe-mock, a proxy). No module-level api_key: every call builds its
client from settings, so tests can switch keys and bases per test.
"""

from functools import lru_cache

import stripe
from django.conf import settings

from billing.services.ledger import BillingError


class StripeDisabledError(BillingError):
    """Stripe is not configured (no STRIPE_SECRET_KEY): top-ups and auto-recharge are off."""


STRIPE_OFF_MESSAGE = "Payments are off on this installation: STRIPE_SECRET_KEY is not set. Ask the operator."


def stripe_enabled() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


@lru_cache(maxsize=8)
def _client(api_key: str, api_base: str, retries: int) -> stripe.StripeClient:
    base_addresses = {"api": api_base.rstrip("/")} if api_base else {}
    return stripe.StripeClient(api_key, base_addresses=base_addresses, max_network_retries=retries)


def stripe_client() -> stripe.StripeClient:
    """A client for the configured account, or StripeDisabledError."""
    if not stripe_enabled():
        raise StripeDisabledError(STRIPE_OFF_MESSAGE)
    return _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE or "", settings.STRIPE_MAX_NETWORK_RETRIES)
