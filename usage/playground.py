"""The playground's request runner: one chat request through the public API's own ASGI app, in process.

It builds an HTTP scope for POST /v1/chat/completions (OpenAI) or /v1/messages (Anthropic), puts
the organisation's KeyContext in scope["ruapi.key_context"] (proxy.auth trusts only the scope, which
no network client can write) and marks the usage as the user's playground request. So routing,
limits, holds, metering, billing and the usage event are exactly the public API's.

Back-pressure: the app's `send` awaits the WebSocket send of each delta, so a slow browser slows
the relay, which stops reading the upstream. Stop: `stop()` answers the app's `receive` with
`http.disconnect` — what a network client's hang-up looks like — and Django cancels the response,
whose `finally` (proxy/chat.py) closes the upstream and bills what was produced.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from accounts.keycache import KeyContext
from accounts.models import Organization
from billing.models import UsageEvent
from proxy.sse import SSEDecoder

logger = logging.getLogger(__name__)

OPENAI, ANTHROPIC = "openai", "anthropic"
DEFAULT_MAX_TOKENS = 1024  # Anthropic requires max_tokens; the playground's default
ANTHROPIC_VERSION = "2023-06-01"


def playground_key_context(*, org: Organization) -> KeyContext:
    """The organisation's identity for playground requests: no key (key_id None), the organisation's
    own limits and spend cap still apply."""
    limits = (org.rpm_limit, org.tpm_limit, org.monthly_spend_cap_nanos)
    return KeyContext(
        key_id=None,  # type: ignore[arg-type]  # the usage event's api_key is nullable: playground
        key_prefix="playground",
        org_id=org.id,
        org_slug=org.slug,
        expires_at=None,
        org_rpm=limits[0],
        org_tpm=limits[1],
        org_spend_cap_nanos=limits[2],
        has_limits=any(limit is not None for limit in limits),
    )


@dataclass
class ChatSettings:
    protocol: str
    model: str
    messages: list[dict]
    system: str = ""
    temperature: float | None = None
    max_tokens: int | None = None

    @classmethod
    def from_message(cls, content: dict) -> "ChatSettings":
        """Validate the browser's message; ValueError with a readable reason otherwise."""
        protocol = content.get("protocol", OPENAI)
        if protocol not in (OPENAI, ANTHROPIC):
            raise ValueError("protocol must be openai or anthropic")
        model = content.get("model")
        if not isinstance(model, str) or not model:
            raise ValueError("choose a model")
        messages = content.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("write a message")
        clean = []
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                raise ValueError("messages are user or assistant turns")
            if not isinstance(message.get("content"), str):
                raise ValueError("message content must be text")
            clean.append({"role": message["role"], "content": message["content"]})
        temperature = content.get("temperature")
        max_tokens = content.get("max_tokens")
        try:
            temperature = None if temperature in (None, "") else float(temperature)
            max_tokens = None if max_tokens in (None, "") else int(max_tokens)
        except (TypeError, ValueError) as exc:
            raise ValueError("temperature and max tokens must be numbers") from exc
        system = content.get("system") or ""
        if not isinstance(system, str):
            raise ValueError("the system prompt must be text")
        return cls(protocol, model, clean, system, temperature, max_tokens)

    def request(self) -> tuple[str, list[tuple[bytes, bytes]], dict]:
        """Path, extra headers and body of the equivalent public API request (always streamed)."""
        body: dict = {"model": self.model, "stream": True}
        if self.protocol == OPENAI:
            system = [{"role": "system", "content": self.system}] if self.system else []
            body["messages"] = system + self.messages
            body["stream_options"] = {"include_usage": True}  # the final chunk carries usage.cost
            if self.max_tokens is not None:
                body["max_tokens"] = self.max_tokens
            path, headers = "/v1/chat/completions", []
        else:
            body["messages"] = self.messages
            body["max_tokens"] = self.max_tokens or DEFAULT_MAX_TOKENS
            if self.system:
                body["system"] = self.system
            path, headers = "/v1/messages", [(b"anthropic-version", ANTHROPIC_VERSION.encode())]
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return path, headers, body


@dataclass
class Reply:
    """What one playground request produced, as the browser is told at the end."""

    request_id: str = ""
    status: int = 0
    text: str = ""
    stopped: bool = False
    error: str = ""
    usage: dict = field(default_factory=dict)  # from the stream's final usage (cost included)


class PlaygroundRun:
    """One request through `ruapi.asgi.api_app`; `on_delta(text)` is awaited for every text delta."""

    def __init__(
        self, *, context: KeyContext, user_id: int, chat: ChatSettings, on_delta: Callable[[str], Awaitable[None]],
        client: tuple[str, int] | None = None, host: bytes = b"localhost",
    ) -> None:
        self.context, self.user_id, self.chat, self.on_delta = context, user_id, chat, on_delta
        self.client, self.host = client, host
        self.reply = Reply()
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._decoder = SSEDecoder()
        self._error_body = b""
        self._streaming = False

    def scope(self, path: str, headers: list[tuple[bytes, bytes]], length: int) -> dict:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", self.host), (b"content-type", b"application/json"),
                (b"content-length", str(length).encode()), *headers,
            ],
            "client": self.client,
            "server": None,
            "ruapi.key_context": self.context,
            "ruapi.usage_source": UsageEvent.Source.PLAYGROUND,
            "ruapi.user_id": self.user_id,
        }

    def stop(self) -> None:
        """Hang up like a network client: the proxy cancels the upstream and bills what was produced."""
        self.reply.stopped = True
        self._inbox.put_nowait({"type": "http.disconnect"})

    async def run(self) -> Reply:
        from ruapi.asgi import api_app  # the ASGI module imports this app's consumers

        path, headers, body = self.chat.request()
        payload = orjson.dumps(body)
        self._inbox.put_nowait({"type": "http.request", "body": payload, "more_body": False})
        await api_app(self.scope(path, headers, len(payload)), self._inbox.get, self._send)
        if self._error_body:
            self.reply.error = _error_message(self._error_body)
        return self.reply

    async def _send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.reply.status = message["status"]
            headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
            self.reply.request_id = headers.get("x-request-id", "")
            self._streaming = self.reply.status == 200 and headers.get("content-type", "").startswith(
                "text/event-stream"
            )
            return
        if message["type"] != "http.response.body":
            return
        chunk = message.get("body", b"")
        if not self._streaming:
            self._error_body += chunk
            return
        for event, data in self._decoder.feed(chunk):
            await self._event(event, data)

    async def _event(self, event: str | None, data: bytes) -> None:
        if data.strip() == b"[DONE]":
            return
        try:
            item = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(item, dict):
            return
        text = ""
        if self.chat.protocol == OPENAI:
            if isinstance(item.get("error"), dict):
                self.reply.error = item["error"].get("message") or "The upstream failed."
            for choice in item.get("choices") or []:
                text += ((choice or {}).get("delta") or {}).get("content") or ""
            if isinstance(item.get("usage"), dict):
                usage = item["usage"]
                self.reply.usage = {
                    "input_tokens": usage.get("prompt_tokens", 0),
                    "output_tokens": usage.get("completion_tokens", 0),
                    "cost": usage.get("cost"),
                }
        else:
            kind = item.get("type") or event
            if kind == "content_block_delta" and (item.get("delta") or {}).get("type") == "text_delta":
                text = item["delta"].get("text") or ""
            elif kind == "message_start":
                usage = (item.get("message") or {}).get("usage") or {}
                self.reply.usage["input_tokens"] = usage.get("input_tokens", 0)
            elif kind == "message_delta" and isinstance(item.get("usage"), dict):
                usage = item["usage"]
                self.reply.usage["output_tokens"] = usage.get("output_tokens", 0)
                self.reply.usage["cost"] = usage.get("cost")
            elif kind == "error":
                self.reply.error = (item.get("error") or {}).get("message") or "The upstream failed."
        if text:
            self.reply.text += text
            try:
                await self.on_delta(text)
            except Exception:  # the browser went away: stop paying for a reply nobody reads
                logger.info("playground: delivering a delta failed; stopping the request", exc_info=True)
                self.stop()


def _error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")[:500] or "The request failed."
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(data)[:500]
