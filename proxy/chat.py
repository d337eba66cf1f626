"""The chat pipeline behind POST /v1/chat/completions (O) and POST /v1/messages (A).

auth → parse → resolve model → hold → for each route: convert → upstream → (fall back before any
byte reached the client) → convert back / relay the stream → settle → respond.
"""

import functools
import hashlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from accounts.keycache import KeyContext
from billing.services import HeldFunds
from catalog.snapshot import ModelSpec, RouteSpec
from proxy import metering
from proxy.auth import authenticate
from proxy.catalog import resolve_model, target_for
from proxy.exchange import Exchange
from proxy.relay import AnthropicRelay, OpenAIRelay
from proxy.requests import check_anthropic_messages, check_openai_chat, read_json_body
from proxy.responses import ANTHROPIC, OPENAI, RESPONSES, Call, error_response, json_response, usd_number
from proxy.sse import KEEPALIVE_OPENAI, PING_ANTHROPIC, SSEItem, encode, with_keepalive
from proxy.translate import Conversion, anthropic_request_to_anthropic, openai_request_to_openai
from proxy.translate.envelope import Sealer
from proxy.translate.errors import ErrorKind, GatewayError, anthropic_stream_error, openai_stream_error
from proxy.translate.hub import Turn, adapter_for, hub_request, hub_response, hub_stream
from proxy.translate.usage import (
    Usage,
    estimate_anthropic_prompt_tokens,
    estimate_openai_prompt_tokens,
    estimate_text_tokens,
)
from proxy.upstreams import upstream_for

GEMINI = "gemini"  # upstream only
logger = logging.getLogger(__name__)

# What a same-protocol route forwards: an allowlist, so no client field reaches the upstream
# unless it is a documented field of that protocol (or one the admin allowed per provider).
OPENAI_CHAT_FIELDS = frozenset(
    [
        "messages",
        "max_completion_tokens",
        "max_tokens",
        "temperature",
        "top_p",
        "n",
        "stop",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "metadata",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "service_tier",
        "store",
        "modalities",
        "audio",
        "prediction",
        "verbosity",
        "web_search_options",
        "functions",
        "function_call",
    ]
)
ANTHROPIC_MESSAGES_FIELDS = frozenset(
    [
        "messages",
        "max_tokens",
        "system",
        "stream",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "metadata",
        "service_tier",
        "context_management",
        "mcp_servers",  # the MCP connector (beta mcp-client-*): forwarded as is, its blocks relayed (issue 14)
    ]
)


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def new_tool_id() -> str:
    return "toolu_" + uuid.uuid4().hex[:24]


def _allowed(body: dict, fields: frozenset[str], route: RouteSpec) -> dict:
    extra = route.provider.options.get("extra_fields") or ()
    return {k: v for k, v in body.items() if k in fields or k in extra}


def new_turn_id(prefix: str) -> str:
    """Ids the converters mint (PROTOCOLS-RESPONSES §5.1 for the R ones; the others as before)."""
    if prefix == "chatcmpl":
        return "chatcmpl-" + uuid.uuid4().hex[:24]
    if prefix in ("msg", "toolu"):
        return f"{prefix}_" + uuid.uuid4().hex[:24]
    if prefix == "call":
        return "call_" + uuid.uuid4().hex[:24]
    return f"{prefix}_" + uuid.uuid4().hex  # resp_, rs_, fc_, ctc_ + 32 hex


@functools.lru_cache(maxsize=4)
def envelope_key(secret: str) -> bytes:
    """The reasoning-envelope AEAD key, derived from SECRET_KEY (PROTOCOLS-RESPONSES §5.6)."""
    return hashlib.sha256(b"ruapi reasoning envelope v1\0" + secret.encode()).digest()


# The sender per upstream protocol: all network I/O is in proxy/upstreams/ (one client per protocol).
async def _send_openai(exchange, upstream, route, conversion):
    return await upstream.chat(conversion.body)


async def _send_anthropic(exchange, upstream, route, conversion):
    beta = exchange.call.request.headers.get("anthropic-beta") if exchange.call.protocol == ANTHROPIC else None
    return await upstream.messages(conversion.body, beta=beta)


async def _send_gemini(exchange, upstream, route, conversion):
    return await upstream.generate(route.upstream_model, conversion.body, stream=exchange.stream)


async def _send_responses(exchange, upstream, route, conversion):
    return await upstream.responses(conversion.body)


SENDERS = {OPENAI: _send_openai, ANTHROPIC: _send_anthropic, GEMINI: _send_gemini, RESPONSES: _send_responses}
KEEPALIVES = {OPENAI: KEEPALIVE_OPENAI, ANTHROPIC: PING_ANTHROPIC, RESPONSES: KEEPALIVE_OPENAI}


class ChatExchange(Exchange):
    """One chat request after it was authenticated, validated and held for.

    Every (client protocol, upstream protocol) pair goes through the protocol hub
    (proxy/translate/hub.py) except same-protocol routes, the zero-conversion fast path below.
    """

    def __init__(
        self,
        call: Call,
        key: KeyContext,
        spec: ModelSpec,
        body: dict,
        hold: HeldFunds | metering.PendingHold,
        *,
        input_estimate: int,
    ) -> None:
        super().__init__(call, key, spec, hold)
        self.body = body
        self.stream = self.is_stream = bool(body.get("stream"))
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.input_estimate = input_estimate
        self.client = adapter_for(call.protocol)
        self.turn: Turn | None = None

    def new_turn(self, route: RouteSpec) -> Turn:
        """The converters' context for this route: clock, ids, and envelopes bound to tenant, channel and model."""
        sealer = Sealer(
            key=envelope_key(settings.SECRET_KEY), tenant=self.key.org_id, channel=route.provider.id,
            model=route.upstream_model, new_nonce=os.urandom,
        )  # fmt: skip
        return Turn(model=self.spec.name, now=int(time.time()), new_id=new_turn_id, request=self.body,
                    include_usage=self.include_usage, sealer=sealer)  # fmt: skip

    # -- request side ------------------------------------------------------------------------
    def convert(self, route: RouteSpec) -> Conversion:
        """The upstream body for this route (translation when the protocols differ)."""
        client, upstream = self.call.protocol, route.provider.protocol
        target = target_for(self.spec, route)
        self.turn = self.new_turn(route)
        if client == upstream:
            return self.passthrough_request(route, target)
        return hub_request(client, upstream, self.body, target, self.turn)

    def passthrough_request(self, route: RouteSpec, target) -> Conversion:
        """Same protocol: forwarded as it is but for the allowlist and the gateway rules (G1)."""
        if self.call.protocol == OPENAI:
            if "max_tokens_field" not in route.provider.options:
                # Pass-through (G1): rename the output cap only for providers configured to need it.
                client_field = "max_completion_tokens" if "max_completion_tokens" in self.body else "max_tokens"
                target = replace(target, max_tokens_field=client_field)
            body = _allowed(self.body, OPENAI_CHAT_FIELDS, route)
            return openai_request_to_openai(body, target, input_estimate=self.input_estimate)
        body = _allowed(self.body, ANTHROPIC_MESSAGES_FIELDS, route)
        if isinstance(body.get("metadata"), dict):  # A metadata has one field (§1.5): allowlist it too
            user_id = body["metadata"].get("user_id")
            body["metadata"] = {"user_id": user_id} if isinstance(user_id, str) else {}
        return anthropic_request_to_anthropic(body, target, input_estimate=self.input_estimate)

    async def send(self, route: RouteSpec, conversion: Conversion):
        return await SENDERS[route.provider.protocol](self, upstream_for(route.provider), route, conversion)

    async def respond(self, reply, route: RouteSpec, conversion: Conversion, attempts: int) -> HttpResponse:
        if self.stream:
            return self.stream_response(reply, route, conversion, attempts)
        return await self.complete(reply, route, conversion, attempts)

    # -- non-streaming -------------------------------------------------------------------------
    async def complete(self, reply, route: RouteSpec, conversion: Conversion, attempts: int) -> HttpResponse:
        data = await self.read_json(reply, route, attempts)
        if data is None:  # a 200 with malformed JSON, an error body or no answer is the upstream's fault
            return await self.fail(self.unreadable(reply), route=route, attempts=attempts)

        client, upstream = self.call.protocol, route.provider.protocol
        usage = adapter_for(upstream).usage(data)
        if usage is None:
            produced = orjson.dumps(adapter_for(upstream).produced(data)).decode()
            usage = Usage(
                input_tokens=conversion.input_estimate or self.input_estimate,
                output_tokens=estimate_text_tokens(produced),
                estimated=True,
            )
        if client == upstream:
            out = self.passthrough_response(data)
        else:
            out = hub_response(client, upstream, data, conversion, self.turn)

        cost = metering.usage_cost(usage, self.spec.prices)
        outcome = metering.Outcome(usage=usage, cost_nanos=cost, route=route, attempts=attempts)
        cost = await self.settle(outcome, overlap=True)
        if isinstance(out.get("usage"), dict):
            out["usage"]["cost"] = usd_number(cost)
        self.completed(out)
        response = self.call.headers(json_response(out), cost_nanos=cost)
        response["x-ruapi-upstream-model"] = route.upstream_model
        return response

    def passthrough_response(self, data: dict) -> dict:
        data["model"] = self.spec.name  # G2: echo the client's model id
        return data

    def completed(self, out: dict) -> None:
        """Hook: the client's final answer, after settlement (the R pipeline stores it)."""

    def is_answer(self, data: dict, route: RouteSpec) -> bool:
        return adapter_for(route.provider.protocol).is_answer(data)

    # -- streaming -----------------------------------------------------------------------------
    def stream_machine(self, route: RouteSpec, conversion: Conversion):
        client, upstream = self.call.protocol, route.provider.protocol
        if client == upstream:
            return self.passthrough_stream(conversion)
        return hub_stream(client, upstream, conversion, self.turn)

    def passthrough_stream(self, conversion: Conversion):
        estimate = conversion.input_estimate or self.input_estimate
        if self.call.protocol == OPENAI:
            return OpenAIRelay(model=self.spec.name, include_usage=self.include_usage, input_estimate=estimate)
        return AnthropicRelay(model=self.spec.name, input_estimate=estimate)

    def stream_response(self, reply, route: RouteSpec, conversion: Conversion, attempts: int) -> HttpResponse:
        machine = self.stream_machine(route, conversion)
        response = StreamingHttpResponse(
            self.relay(reply, machine, route, attempts), content_type="text/event-stream; charset=utf-8"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        response["x-ruapi-upstream-model"] = route.upstream_model
        return self.call.headers(response)

    def _fail_item(self, machine, error: GatewayError) -> list[SSEItem]:
        if hasattr(machine, "fail"):
            return machine.fail(error)
        if machine.done:
            return []
        machine.done, machine.error = True, error
        return self._error_item(error, machine)

    def _error_item(self, error: GatewayError, machine=None) -> list[SSEItem]:
        emitter = getattr(machine, "outer", machine)  # a neutral hop renders through its client-side machine
        if self.call.protocol == RESPONSES and hasattr(emitter, "failure"):
            return emitter.failure(error, [], machine.usage)  # error + response.failed (§3)
        if self.call.protocol == ANTHROPIC:
            return [("error", anthropic_stream_error(error))]
        return [(None, openai_stream_error(error))]

    def _carries_usage(self, item: SSEItem) -> bool:
        event, data = item
        if self.call.protocol == ANTHROPIC:
            return event == "message_delta"
        if self.call.protocol == RESPONSES:
            return event in ("response.completed", "response.incomplete", "response.failed")
        return isinstance(data, dict) and isinstance(data.get("usage"), dict)

    def _feed(self, machine, data: bytes, upstream_openai: bool) -> list[SSEItem]:
        """One upstream SSE data payload through the stream machine."""
        if upstream_openai and data.strip() == b"[DONE]":
            return machine.feed_done()
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            return self._fail_item(machine, GatewayError(ErrorKind.UPSTREAM_ERROR, "The upstream sent malformed data."))
        return machine.feed(event)

    async def relay(self, reply, machine, route: RouteSpec, attempts: int) -> AsyncIterator[bytes]:
        """Relay/convert the upstream stream; settle before the stream's last bytes go out.

        Items from the first usage-bearing one on — and everything once the stream is done — are
        held back until the debit is durable, so the cost can be added to them and the client sees
        the end of the stream only after it was billed. If the client goes away, the `finally`
        still bills what the upstream produced. During upstream silence a keep-alive goes out
        (PROTOCOLS G8).
        """
        upstream_openai = route.provider.protocol == OPENAI
        keepalive = KEEPALIVES[self.call.protocol]
        held: list[SSEItem] = []
        settled = False
        first_byte_at: float | None = None
        received = 0
        try:
            try:
                # One batch = the events of one network read: they go out as one write (and the
                # keep-alive timer is armed once per read, not once per event).
                batches = reply.event_batches()
                async for batch in with_keepalive(batches, settings.RUAPI_STREAM_KEEPALIVE_SECONDS):
                    if batch is None:
                        if not held:
                            yield keepalive
                        continue
                    ready: list[SSEItem] = []
                    for _event, data in batch:
                        received += 1
                        items = self._feed(machine, data, upstream_openai)
                        if machine.done:
                            held.extend(items)
                            break
                        ready.extend(self._hold_back(items, held))
                    if ready:
                        first_byte_at = first_byte_at or time.perf_counter()
                        yield b"".join([encode(e, d) for e, d in ready])
                    if machine.done:
                        break
                if not machine.done:
                    held.extend(machine.finish())
            except GatewayError as exc:  # transport failure or stall mid-stream
                held.extend(self._fail_item(machine, exc))
            settled = True
            try:
                cost = await self._settle_stream(machine, route, attempts, first_byte_at, received)
            except Exception:  # e.g. the database is gone: no end marker without a durable debit
                logger.exception(
                    "stream %s could not be settled; its hold waits for the expiry task", self.call.request_id
                )
                error = GatewayError(ErrorKind.API_ERROR, "The request could not be recorded; it was not billed.")
                yield b"".join([encode(e, d) for e, d in self._error_item(error, machine)])
                return
            for item in held:
                usage = self.client.usage_object(item) if self._carries_usage(item) else None
                if usage is not None:
                    usage["cost"] = usd_number(cost)
            if held:
                yield b"".join(encode(e, d) for e, d in held)
            if getattr(machine, "final_response", None) is not None:
                self.completed(machine.final_response)
        finally:
            reply.close()
            if not settled:  # the client disconnected (or the generator was closed) mid-stream
                await self._settle_stream(machine, route, attempts, first_byte_at, received)

    def _hold_back(self, items: list[SSEItem], held: list[SSEItem]) -> list[SSEItem]:
        if held:
            held.extend(items)
            return []
        for position, item in enumerate(items):
            if self._carries_usage(item):
                held.extend(items[position:])
                return items[:position]
        return items

    async def _settle_stream(
        self, machine, route: RouteSpec, attempts: int, first_byte_at: float | None, received: int
    ) -> int:
        # An upstream that answered 200 and then sent nothing, or failed before any content reached
        # the client, produced nothing: it costs nothing, as a failed non-streamed request. Cut
        # after some content: billed for it.
        usage: Usage = machine.usage if received and not _failed_empty(machine) else Usage()
        cost = metering.usage_cost(usage, self.spec.prices)
        error = machine.error
        outcome = metering.Outcome(
            status_code=error.status_for(self.call.protocol) if error else 200,
            error_type=str(error.kind) if error else ("" if machine.done else "client_disconnected"),
            usage=usage,
            cost_nanos=cost,
            route=route,
            attempts=attempts,
            is_stream=True,
            ttfb_ms=int((first_byte_at - self.call.started) * 1000) if first_byte_at else None,
        )
        return await self.settle(outcome)


def _failed_empty(machine) -> bool:
    """The stream failed (upstream error, cut, stall) before producing any text, thinking or tool call."""
    inner = getattr(machine, "inner", machine)  # composite machines keep the output in the inner one
    return machine.error is not None and not any(inner.output_text)


async def chat(request: HttpRequest, protocol: str) -> HttpResponse:
    """Entry point for both chat endpoints."""
    call = Call(request, protocol, endpoint="chat.completions" if protocol == OPENAI else "messages")
    try:
        key = await authenticate(request, allow_x_api_key=protocol == ANTHROPIC)
        body = read_json_body(request)
        max_output = check_openai_chat(body) if protocol == OPENAI else check_anthropic_messages(body)
        spec = await resolve_model(body["model"], key, mode="chat")
        input_estimate = (
            estimate_openai_prompt_tokens(body) if protocol == OPENAI else estimate_anthropic_prompt_tokens(body)
        )
        # The hold covers the worst case (issue 12); the estimate stays for TPM limits and cut streams.
        hold_amount = metering.chat_hold_nanos(
            spec,
            input_tokens=metering.chat_input_bound(spec, body, body_bytes=len(request.body)),
            max_output_tokens=max_output,
            choices=metering.choices_of(body) if protocol == OPENAI else 1,
            thinking_tokens=metering.thinking_budget(body, protocol, spec),
            thinking_in_cap=protocol == ANTHROPIC,
            tools_nanos=metering.server_tools_hold_nanos(spec, body),
        )
        hold = await metering.hold_open(call, key, hold_amount, tokens=input_estimate, optimistic=True)
    except GatewayError as exc:
        return error_response(call, exc)
    return await ChatExchange(call, key, spec, body, hold, input_estimate=input_estimate).run()
