"""WebSocket consumers through the real ASGI stack (origin check, session auth, URL routing): the
live feed and the playground admit only members of the URL's organisation with the permission."""

from types import SimpleNamespace

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from accounts.models import Membership
from accounts.tests.factories import MembershipFactory, OrgFactory, UserFactory
from usage.consumers import REFUSED
from usage.live import usage_event_publish
from usage.tests.conftest import make_event, session_cookie, ws_headers

pytestmark = [pytest.mark.embedded, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def people():
    org, other = OrgFactory(), OrgFactory()
    viewer = MembershipFactory(org=org, role=Membership.Role.VIEWER).user
    outsider = MembershipFactory(org=other, role=Membership.Role.OWNER).user
    loner = UserFactory()
    return SimpleNamespace(
        org=org, other=other, viewer=session_cookie(viewer), outsider=session_cookie(outsider),
        loner=session_cookie(loner),
    )  # fmt: skip


@pytest.mark.asyncio
async def test_feed_delivers_the_organisations_requests_only(ws_app, people):
    # given: a member subscribed to her organisation's feed
    feed = WebsocketCommunicator(ws_app, f"/ws/orgs/{people.org.id}/usage/live/", headers=ws_headers(people.viewer))
    connected, _ = await feed.connect()
    assert connected
    # when: a request of hers and one of another organisation complete
    mine = await database_sync_to_async(make_event)(people.org, timezone.now(), request_id="req_mine", ttfb_ms=12,
                                                    is_stream=True, cost_nanos=1_500_000)  # fmt: skip
    theirs = await database_sync_to_async(make_event)(people.other, timezone.now(), request_id="req_theirs")
    usage_event_publish(theirs, key_prefix="sk-ru-zzz")
    usage_event_publish(mine, key_prefix="sk-ru-abc")
    # then: only hers arrives, whole
    message = await feed.receive_json_from(timeout=5)
    assert message == {"type": "request", "request": {
        "request_id": "req_mine", "created_at": mine.created_at.isoformat(), "api_key_id": None, "key": "sk-ru-abc",
        "source": "api", "user_id": None, "model": "gpt-test", "provider": "mock-openai", "endpoint": "chat.completions",
        "status_code": 200, "error_type": "", "input_tokens": 10, "output_tokens": 20, "cache_read_tokens": 0,
        "cache_write_tokens": 0, "cost_usd": "0.0015", "latency_ms": 100, "ttfb_ms": 12, "is_stream": True,
    }}  # fmt: skip
    assert await feed.receive_nothing(timeout=0.3)
    await feed.disconnect()


@pytest.mark.asyncio
async def test_a_burst_of_requests_reaches_the_feed_whole_and_in_order(ws_app, people):
    # given
    feed = WebsocketCommunicator(ws_app, f"/ws/orgs/{people.org.id}/usage/live/", headers=ws_headers(people.viewer))
    assert (await feed.connect())[0]
    events = [
        await database_sync_to_async(make_event)(people.org, timezone.now(), request_id=f"req_{n}") for n in range(5)
    ]
    # when: they complete together (published as one message to the group)
    for event in events:
        usage_event_publish(event)
    # then: one feed message per request, in completion order
    received = [(await feed.receive_json_from(timeout=5))["request"]["request_id"] for _ in events]
    assert received == [f"req_{n}" for n in range(5)]
    assert await feed.receive_nothing(timeout=0.3)
    await feed.disconnect()


@pytest.mark.parametrize(
    ("_case", "who", "path"),
    [
        ("anonymous, feed", None, "/ws/orgs/{org}/usage/live/"),
        ("member of another organisation, feed", "outsider", "/ws/orgs/{org}/usage/live/"),
        ("user without an organisation, feed", "loner", "/ws/orgs/{org}/usage/live/"),
        ("anonymous, playground", None, "/ws/orgs/{org}/playground/"),
        ("member of another organisation, playground", "outsider", "/ws/orgs/{org}/playground/"),
        ("viewer role cannot spend, playground", "viewer", "/ws/orgs/{org}/playground/"),
    ],
)
@pytest.mark.asyncio
async def test_refused_before_the_handshake(ws_app, people, _case, who, path):
    cookie = getattr(people, who) if who else None
    communicator = WebsocketCommunicator(ws_app, path.format(org=people.org.id), headers=ws_headers(cookie))
    connected, code = await communicator.connect()
    assert not connected
    assert code == REFUSED


@pytest.mark.asyncio
async def test_foreign_origin_is_refused(ws_app, people):
    headers = [(b"origin", b"http://evil.example"), (b"host", b"testserver"),
               (b"cookie", f"sessionid={people.viewer}".encode())]  # fmt: skip
    communicator = WebsocketCommunicator(ws_app, f"/ws/orgs/{people.org.id}/usage/live/", headers=headers)
    connected, _ = await communicator.connect()
    assert not connected
