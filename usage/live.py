"""The live request feed (issue 6): one channel-layer group per organisation.

`usage_event_publish` is called by proxy.metering.settle after the usage event committed. It
never blocks the request: the group_send runs as its own task, and a failure (Redis down, a full
channel) is logged and dropped — the feed is a convenience, the event itself is durable.
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


def event_payload(event: UsageEvent, *, key_prefix: str = "", key_name: str = "") -> dict:
    """A usage event as the dashboard's request table shows it (JSON-safe)."""
    return {
        "request_id": event.request_id,
        "created_at": event.created_at.isoformat(),
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


def usage_event_publish(event: UsageEvent, *, key_prefix: str = "") -> None:
    """Send the event to its organisation's feed in the background (must run inside an event loop)."""
    try:
        message = {"type": "usage.event", "event": event_payload(event, key_prefix=key_prefix)}
        task = asyncio.get_running_loop().create_task(_send(org_group(event.org_id), message))
    except Exception:
        logger.warning("live usage feed: could not schedule the publish", exc_info=True)
        return
    _pending.add(task)
    task.add_done_callback(_pending.discard)
