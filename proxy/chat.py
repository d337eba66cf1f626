"""The chat pipeline behind POST /v1/chat/completions (O) and POST /v1/messages (A).

auth → parse → resolve model → hold → for each route: convert → upstream → (fall back before any
byte reached the client) → convert back / relay the stream → settle → respond.
"""

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from accounts.keycache import KeyContext
from billing.models import Hold
from catalog.snapshot import ModelSpec, RouteSpec
from proxy import metering
from proxy.auth import authenticate
from proxy.catalog import resolve_model, target_for
from proxy.exchange import Exchange
from proxy.relay import AnthropicRelay, OpenAIRelay
from proxy.requests import check_anthropic_messages, check_openai_chat, read_json_body
from proxy.responses import ANTHROPIC, OPENAI, Call, error_response, json_response, usd_number
from proxy.sse import KEEPALIVE_OPENAI, PING_ANTHROPIC, SSEItem, encode, with_keepalive
from proxy.translate import (
    AnthropicToOpenAIStream,
    Conversion,
    OpenAIToAnthropicStream,
    anthropic_request_to_anthropic,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
    openai_request_to_openai,
    openai_response_to_anthropic,
)
from proxy.translate.errors import ErrorKind, GatewayError, anthropic_stream_error, openai_stream_error
from proxy.translate.gemini import (
    anthropic_request_to_gemini,
    gemini_response_to_anthropic,
    gemini_response_to_openai,
    openai_request_to_gemini,
    usage_from_gemini,
)
from proxy.translate.gemini_stream import GeminiToAnthropicStream, GeminiToOpenAIStream
from proxy.translate.usage import (
    Usage,
    estimate_anthropic_prompt_tokens,
    estimate_openai_prompt_tokens,
    estimate_text_tokens,
    usage_from_anthropic,
    usage_from_openai,
)
from proxy.upstreams import upstream_for

GEMINI = "gemini"
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


class ChatExchange(Exchange):
    """One chat request after it was authenticated, validated and held for."""

    def __init__(
        self, call: Call, key: KeyContext, spec: ModelSpec, body: dict, hold: Hold, *, input_estimate: int
    ) -> None:
        super().__init__(call, key, spec, hold)
        self.body = body
        self.stream = self.is_stream = bool(body.get("stream"))
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.input_estimate = input_estimate

    # -- request side ------------------------------------------------------------------------
    def convert(self, route: RouteSpec) -> Conversion:
        """The upstream body for this route (translation when the protocols differ)."""
        client, upstream = self.call.protocol, route.provider.protocol
        target = target_for(self.spec, route)
        if upstream == GEMINI:
            return (openai_request_to_gemini if client == OPENAI else anthropic_request_to_gemini)(self.body, target)
        if client == OPENAI and upstream == OPENAI:
            if "max_tokens_field" not in route.provider.options:
                # Pass-through (G1): rename the output cap only for providers configured to need it.
                client_field = "max_completion_tokens" if "max_completion_tokens" in self.body else "max_tokens"
                target = replace(target, max_tokens_field=client_field)
            body = _allowed(self.body, OPENAI_CHAT_FIELDS, route)
            return openai_request_to_openai(body, target, input_estimate=self.input_estimate)
        if client == ANTHROPIC and upstream == ANTHROPIC:
            body = _allowed(self.body, ANTHROPIC_MESSAGES_FIELDS, route)
            if isinstance(body.get("metadata"), dict):  # A metadata has one field (§1.5): allowlist it too
                user_id = body["metadata"].get("user_id")
                body["metadata"] = {"user_id": user_id} if isinstance(user_id, str) else {}
            return anthropic_request_to_anthropic(body, target, input_estimate=self.input_estimate)
        if client == OPENAI:
            return openai_request_to_anthropic(self.body, target)
        return anthropic_request_to_openai(self.body, target)

    async def send(self, route: RouteSpec, conversion: Conversion):
        upstream = upstream_for(route.provider)
        if route.provider.protocol == GEMINI:
            return await upstream.generate(route.upstream_model, conversion.body, stream=self.stream)
        if route.provider.protocol == ANTHROPIC:
            beta = self.call.request.headers.get("anthropic-beta") if self.call.protocol == ANTHROPIC else None
            return await upstream.messages(conversion.body, beta=beta)
        return await upstream.chat(conversion.body)

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
        if upstream == GEMINI:
            usage = usage_from_gemini(data.get("usageMetadata"))
        elif upstream == OPENAI:
            usage = usage_from_openai(data.get("usage"))
        else:
            usage = usage_from_anthropic(data.get("usage"))
        if not data.get("usage") and not data.get("usageMetadata"):
            produced = orjson.dumps(data.get("choices") or data.get("content")).decode()
            usage = Usage(
                input_tokens=conversion.input_estimate or self.input_estimate,
                output_tokens=estimate_text_tokens(produced),
                estimated=True,
            )
        if upstream == GEMINI and client == OPENAI:
            out = gemini_response_to_openai(
                data, conversion, model=self.spec.name, created=int(time.time()),
                completion_id="chatcmpl-" + uuid.uuid4().hex[:24], new_id=new_tool_id,
            )  # fmt: skip
        elif upstream == GEMINI:
            out = gemini_response_to_anthropic(
                data, conversion, model=self.spec.name, message_id=new_message_id(), new_id=new_tool_id
            )
        elif client == upstream:
            out = data
            out["model"] = self.spec.name  # G2: echo the client's model id
        elif client == OPENAI:
            out = anthropic_response_to_openai(data, conversion, model=self.spec.name, created=int(time.time()))
        else:
            out = openai_response_to_anthropic(data, conversion, model=self.spec.name, new_id=new_tool_id)

        cost = metering.usage_cost(usage, self.spec.prices)
        await self.settle(metering.Outcome(usage=usage, cost_nanos=cost, route=route, attempts=attempts))
        if isinstance(out.get("usage"), dict):
            out["usage"]["cost"] = usd_number(cost)
        response = self.call.headers(json_response(out), cost_nanos=cost)
        response["x-ruapi-upstream-model"] = route.upstream_model
        return response

    def is_answer(self, data: dict, route: RouteSpec) -> bool:
        protocol = route.provider.protocol
        if protocol == OPENAI:
            return isinstance(data.get("choices"), list) and bool(data["choices"])
        if protocol == ANTHROPIC:
            return isinstance(data.get("content"), list)
        return isinstance(data.get("candidates"), list) or isinstance(data.get("promptFeedback"), dict)

    # -- streaming -----------------------------------------------------------------------------
    def stream_machine(self, route: RouteSpec, conversion: Conversion):
        client, upstream = self.call.protocol, route.provider.protocol
        estimate = conversion.input_estimate or self.input_estimate
        if upstream == GEMINI and client == OPENAI:
            return GeminiToOpenAIStream(
                conversion, model=self.spec.name, created=int(time.time()),
                chunk_id="chatcmpl-" + uuid.uuid4().hex[:24], include_usage=self.include_usage, new_id=new_tool_id,
            )  # fmt: skip
        if upstream == GEMINI:
            return GeminiToAnthropicStream(
                conversion, model=self.spec.name, message_id=new_message_id(), new_id=new_tool_id
            )
        if client == OPENAI and upstream == OPENAI:
            return OpenAIRelay(model=self.spec.name, include_usage=self.include_usage, input_estimate=estimate)
        if client == ANTHROPIC and upstream == ANTHROPIC:
            return AnthropicRelay(model=self.spec.name, input_estimate=estimate)
        if client == OPENAI:
            return AnthropicToOpenAIStream(
                conversion, model=self.spec.name, created=int(time.time()),
                chunk_id="chatcmpl-" + uuid.uuid4().hex[:24], include_usage=self.include_usage,
            )  # fmt: skip
        return OpenAIToAnthropicStream(
            conversion, model=self.spec.name, message_id=new_message_id(), new_id=new_tool_id
        )

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
        return self._error_item(error)

    def _error_item(self, error: GatewayError) -> list[SSEItem]:
        if self.call.protocol == OPENAI:
            return [(None, openai_stream_error(error))]
        return [("error", anthropic_stream_error(error))]

    def _carries_usage(self, item: SSEItem) -> bool:
        event, data = item
        if self.call.protocol == OPENAI:
            return isinstance(data, dict) and isinstance(data.get("usage"), dict)
        return event == "message_delta"

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
        keepalive = KEEPALIVE_OPENAI if self.call.protocol == OPENAI else PING_ANTHROPIC
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
                yield b"".join([encode(e, d) for e, d in self._error_item(error)])
                return
            for event, data in held:
                if self._carries_usage((event, data)) and isinstance(data.get("usage"), dict):
                    data["usage"]["cost"] = usd_number(cost)
            if held:
                yield b"".join(encode(e, d) for e, d in held)
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
        await self.settle(outcome)
        return cost


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
        hold_amount = metering.chat_hold_nanos(spec, input_tokens=input_estimate, max_output_tokens=max_output)
        hold_amount += metering.server_tool_hold_nanos(spec, body)  # web search / fetch uses (issue 14)
        hold = await metering.hold_open(call, key, hold_amount, tokens=input_estimate)
    except GatewayError as exc:
        return error_response(call, exc)
    return await ChatExchange(call, key, spec, body, hold, input_estimate=input_estimate).run()
