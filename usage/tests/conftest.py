"""Usage test helpers: raw usage events at chosen times, and session cookies for WebSocket tests."""

import itertools
from datetime import datetime

import pytest
from django.test import Client

from billing.models import UsageEvent

_ids = itertools.count(1)


def make_event(org, at: datetime, **fields) -> UsageEvent:
    """A raw usage event recorded at `at` (created_at is auto_now_add: set it afterwards)."""
    values = {
        "request_id": f"req_test{next(_ids)}", "org": org, "endpoint": "chat.completions", "model": "gpt-test",
        "provider": "mock-openai", "client_protocol": "openai", "status_code": 200, "input_tokens": 10,
        "output_tokens": 20, "cost_nanos": 1000, "latency_ms": 100,
    } | fields  # fmt: skip
    event = UsageEvent.objects.create(**values)
    UsageEvent.objects.filter(pk=event.pk).update(created_at=at)
    event.created_at = at
    return event


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def ws_headers(cookie: str | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return headers


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """One channel layer per test: a Redis layer binds its receive loop to one event loop, and every
    async test runs on a new loop."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def ws_app():
    from ruapi.asgi import application

    return application
