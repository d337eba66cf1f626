"""Billing fixtures: the Stripe stand-in wired into settings, signed webhook delivery, tenants."""

import json
from collections.abc import Iterator

import pytest

from billing.tests.stripe_standin import StripeStandIn, sign

WEBHOOK_SECRET = "whsec_test_standin"


@pytest.fixture(scope="session")
def _stripe_server() -> Iterator[StripeStandIn]:
    with StripeStandIn() as server:
        yield server


@pytest.fixture
def stripe_standin(_stripe_server: StripeStandIn, settings) -> StripeStandIn:
    """The stand-in, reset, with STRIPE_* settings pointing at it and Celery tasks run in-process.

    Eager Celery here tests the webhook's semantics, not Celery (test_worker.py runs a real worker).
    """
    from ruapi.celery import app

    _stripe_server.reset()
    settings.STRIPE_SECRET_KEY = _stripe_server.api_key
    settings.STRIPE_API_BASE = _stripe_server.api_base
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield _stripe_server
    app.conf.task_always_eager = eager


@pytest.fixture
def deliver(client, django_capture_on_commit_callbacks):
    """POST an event to /billing/stripe/webhook/ signed like Stripe; on-commit work runs as in production."""

    def post(event: dict, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None, body: str | None = None):
        payload = body if body is not None else json.dumps(event)
        header = sign(json.dumps(event) if body is not None else payload, secret, timestamp=timestamp)
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(
                "/billing/stripe/webhook/", data=payload, content_type="application/json",
                HTTP_STRIPE_SIGNATURE=header,
            )  # fmt: skip

    return post
