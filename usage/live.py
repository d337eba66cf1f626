"""The live request feed (issue 6): one channel-layer group per organisation.

`usage_event_publish` is called by proxy.metering.settle after the usage event committed. It
never blocks the request: events are collected per organisation for PUBLISH_DELAY seconds and sent
as one `usage.events` message per organisation by a background task (a group_send is one or two
Redis round trips: per request it was a visible share of the gateway's CPU under load). A failure
(Redis down, a full channel) is logged and dropped — the feed is a convenience, the event itself
is durable.
"""

import asyncio
import logging

from channels.layers import get_channel_layer

from billing.models import UsageEvent
from billing.money import nanos_to_usd

logger = logging.getLogger(__name__)

_pending: set[asyncio.Task] = set()  # strong references until each send finished


def org_group(org_id: int) -> str:
    return f"usage-org-{org_id}"


def event_payload(event, *, key_prefix: str = "", key_name: str = "", created_at=None) -> dict:
    """A usage event (a UsageEvent, or the UsageRecord it was written from and its `created_at`) as
    the dashboard's request table shows it (JSON-safe)."""
    return {
        "request_id": event.request_id,
        "created_at": (created_at or event.created_at).isoformat(),
        "api_key_id": event.api_key_id,
        "key": key_name or key_prefix or ("playground" if event.source == UsageEvent.Source.PLAYGROUND else ""),
        "source": event.source,
        "user_id": event.user_id,
        "model": event.model,
        "provider": event.provider,
        "endpoint": event.endpoint,
        "status_code": event.status_code,
        "error_type": event.error_type,
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "cache_read_tokens": event.cache_read_tokens,
        "cache_write_tokens": event.cache_write_tokens,
        "cost_usd": f"{nanos_to_usd(event.cost_nanos).normalize():f}",
        "latency_ms": event.latency_ms,
        "ttfb_ms": event.ttfb_ms,
        "is_stream": event.is_stream,
    }


async def _send(group: str, message: dict) -> None:
    try:
        layer = get_channel_layer()
        if layer is not None:
            await layer.group_send(group, message)
    except Exception:
        logger.warning("live usage feed: publishing to %s failed", group, exc_info=True)


PUBLISH_DELAY = 0.05  # seconds an event waits for others of its organisation to go in one message
MAX_EVENTS_PER_MESSAGE = 200
_batches: dict[int, dict[int, list[dict]]] = {}  # event loop id -> org id -> payloads waiting


def usage_event_publish(event, *, key_prefix: str = "", created_at=None) -> None:
    """Queue the event (a UsageEvent, or a UsageRecord and its `created_at`) for its organisation's
    feed (must run inside an event loop). Its payload is made when the batch is sent, off the
    request's path."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        logger.warning("live usage feed: could not queue the event", exc_info=True)
        return
    waiting = _batches.get(id(loop))
    if waiting is None:
        waiting = _batches[id(loop)] = {}
        task = loop.create_task(_flush_after_delay(id(loop)))
        _pending.add(task)
        task.add_done_callback(_pending.discard)
    waiting.setdefault(event.org_id, []).append((event, key_prefix, created_at))


async def _flush_after_delay(loop_id: int) -> None:
    await asyncio.sleep(PUBLISH_DELAY)
    queued = _batches.pop(loop_id, {})
    waiting = {}
    for org_id, events in queued.items():
        try:
            waiting[org_id] = [event_payload(e, key_prefix=prefix, created_at=at) for e, prefix, at in events]
        except Exception:
            logger.warning("live usage feed: could not build the events of organisation %s", org_id, exc_info=True)
    for org_id, payloads in waiting.items():
        for start in range(0, len(payloads), MAX_EVENTS_PER_MESSAGE):
            chunk = payloads[start : start + MAX_EVENTS_PER_MESSAGE]
            await _send(org_group(org_id), {"type": "usage.events", "events": chunk})
