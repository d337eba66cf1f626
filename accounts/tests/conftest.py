import pytest
from django.conf import settings

from accounts import keycache, shared_state
from proxy import limits


def _clear_redis_counters() -> None:
    if settings.REDIS_URL:
        client = shared_state.sync_client()
        for name in client.scan_iter("ruapi:rl:*"):
            client.delete(name)


@pytest.fixture(autouse=True)
def _fresh_hot_path_state():
    """Keys and limit counters cached in process (or in the test Redis db) must not leak between tests."""
    keycache.invalidate()
    limits.reset()
    _clear_redis_counters()
    yield
    keycache.invalidate()
    limits.reset()
