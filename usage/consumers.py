"""WebSocket consumers (issue 6): the live usage feed and the playground.

Both sit behind AllowedHostsOriginValidator(AuthMiddlewareStack(...)) (ruapi/asgi.py): the user
comes from the dashboard session. The organisation is in the URL and `connect` checks membership
and the role's permission in the one table (accounts/permissions.py) — an anonymous user, a
non-member or a role without the permission is refused before the handshake completes (403).
"""

import asyncio
import contextlib
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from accounts.models import Membership, Organization
from accounts.permissions import Perm, role_has
from accounts.selectors import membership_for
from billing.models import UsageEvent
from usage.live import event_payload, org_group
from usage.playground import ChatSettings, PlaygroundRun, playground_key_context

logger = logging.getLogger(__name__)

# Playground requests spend the organisation's money like an API key does: the roles that may
# create keys may use it (developers and up).
PLAYGROUND_PERM = Perm.KEYS_MANAGE
STOP_GRACE_SECONDS = 10.0
REFUSED = 4403


def _membership_with(org_id: int, user, perm: Perm) -> Membership | None:
    if user is None or not user.is_authenticated:
        return None
    membership = membership_for(org_id=org_id, user=user)
    if membership is None or not membership.org.is_active or not role_has(membership.role, perm):
        return None
    return membership


class OrgConsumer(AsyncJsonWebsocketConsumer):
    """Accepts only members of the URL's organisation whose role has `perm`."""

    perm: Perm = Perm.USAGE_VIEW
    org: Organization

    async def connect(self) -> None:
        org_id = self.scope["url_route"]["kwargs"]["org_id"]
        membership = await database_sync_to_async(_membership_with)(org_id, self.scope.get("user"), self.perm)
        if membership is None:
            await self.close(code=REFUSED)  # before accept: the server refuses the handshake (HTTP 403)
            return
        self.org = membership.org
        await self.joined()
        await self.accept()

    async def joined(self) -> None:
        pass


class UsageFeedConsumer(OrgConsumer):
    """Pushes each completed request of the organisation (usage.live publishes after the commit)."""

    perm = Perm.USAGE_VIEW

    async def joined(self) -> None:
        self.group = org_group(self.org.id)
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def disconnect(self, code) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def usage_events(self, message: dict) -> None:
        for event in message["events"]:
            await self.send_json({"type": "request", "request": event})

    async def receive_json(self, content, **kwargs) -> None:
        pass  # the feed is one-way


def _billed(request_id: str, org_id: int) -> dict | None:
    event = UsageEvent.objects.filter(request_id=request_id, org_id=org_id).first()
    return event_payload(event) if event else None


class PlaygroundConsumer(OrgConsumer):
    """Browser → {"type": "chat", protocol, model, messages, system, temperature, max_tokens} | {"type": "stop"}.
    Server → {"type": "start"}, {"type": "delta", "text"}…, {"type": "done", request_id, stopped, usage,
    billed}, or {"type": "error", "message"}. One request at a time per socket."""

    perm = PLAYGROUND_PERM
    run: PlaygroundRun | None = None
    task: asyncio.Task | None = None

    async def joined(self) -> None:
        self.context = await database_sync_to_async(playground_key_context)(org=self.org)

    async def receive_json(self, content, **kwargs) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "stop":
            if self.run is not None:
                self.run.stop()
            return
        if kind != "chat":
            await self.send_json({"type": "error", "message": "unknown message type"})
            return
        if self.task is not None and not self.task.done():
            await self.send_json({"type": "error", "message": "a reply is still streaming: stop it first"})
            return
        try:
            chat = ChatSettings.from_message(content)
        except ValueError as exc:
            await self.send_json({"type": "error", "message": str(exc)})
            return
        headers = dict(self.scope.get("headers") or [])
        self.run = PlaygroundRun(
            context=self.context, user_id=self.scope["user"].id, chat=chat, on_delta=self._delta,
            client=self.scope.get("client"), host=headers.get(b"host", b"localhost"),
        )  # fmt: skip
        # Its own task: this consumer must keep receiving (a Stop) while the reply streams.
        self.task = asyncio.create_task(self._chat(self.run))

    async def _delta(self, text: str) -> None:
        await self.send_json({"type": "delta", "text": text})

    async def _chat(self, run: PlaygroundRun) -> None:
        try:
            await self.send_json({"type": "start", "protocol": run.chat.protocol, "model": run.chat.model})
            reply = await run.run()
            billed = await database_sync_to_async(_billed)(reply.request_id, self.org.id) if reply.request_id else None
            if reply.error and not reply.text:
                await self.send_json({"type": "error", "message": reply.error, "request_id": reply.request_id,
                                      "billed": billed})  # fmt: skip
                return
            await self.send_json({
                "type": "done", "request_id": reply.request_id, "stopped": reply.stopped, "error": reply.error,
                "usage": reply.usage, "billed": billed,
            })  # fmt: skip
        except Exception:
            logger.exception("playground request failed")
            with contextlib.suppress(Exception):  # the socket may be gone too
                await self.send_json({"type": "error", "message": "The playground request failed."})

    async def disconnect(self, code) -> None:
        # The browser left mid-reply: hang up on the proxy (it bills what was produced) and let it finish.
        if self.task is not None and not self.task.done():
            if self.run is not None:
                self.run.stop()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self.task), STOP_GRACE_SECONDS)
