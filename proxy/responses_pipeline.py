"""POST /v1/responses (OpenAI Responses API, PROTOCOLS-RESPONSES.md): the chat pipeline for R clients.

auth → parse/check → resolve model → expand stored state (only with previous_response_id/item_reference)
→ hold → for each route: convert through the hub (or pass through to an R upstream) → upstream → convert
back / relay the stream → settle → respond → store after the last byte (when `store` is not false).
"""

import logging

from django.http import HttpRequest, HttpResponse

from accounts.keycache import KeyContext
from billing.services import HeldFunds
from catalog.snapshot import ModelSpec, RouteSpec
from proxy import metering
from proxy.auth import authenticate
from proxy.catalog import resolve_model
from proxy.chat import ChatExchange, _allowed, new_turn_id
from proxy.requests import read_json_body
from proxy.response_store import responses_expand, responses_store_later
from proxy.responses import RESPONSES, Call, error_response
from proxy.translate import Conversion
from proxy.translate.envelope import is_envelope
from proxy.translate.errors import GatewayError
from proxy.translate.hub import Turn
from proxy.translate.responses_request import (
    ENCRYPTED_INCLUDE,
    responses_input_items,
    responses_items_check,
    responses_needs_expansion,
    responses_request_check,
)
from proxy.translate.responses_response import responses_with_envelopes
from proxy.translate.responses_stream import ResponsesRelay
from proxy.translate.usage import estimate_responses_prompt_tokens

logger = logging.getLogger(__name__)

# What an R upstream receives from an R client (fast path): documented create fields only (G1, R6).
# Gateway fields (store, previous_response_id, conversation, background) are consumed here, never forwarded.
RESPONSES_FIELDS = frozenset(
    [
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "max_tool_calls",
        "stream",
        "temperature",
        "top_p",
        "top_logprobs",
        "reasoning",
        "text",
        "include",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "user",
        "service_tier",
        "truncation",
        "metadata",
    ]
)


class ResponsesExchange(ChatExchange):
    """One R request: the chat exchange with the R client adapter, the R fast path and the store hook."""

    def __init__(
        self,
        call: Call,
        key: KeyContext,
        spec: ModelSpec,
        body: dict,
        hold: HeldFunds | metering.PendingHold,
        *,
        input_estimate: int,
        items: list[dict],
    ) -> None:
        super().__init__(call, key, spec, body, hold, input_estimate=input_estimate)
        self.items = items
        self.include_usage = False
        self.response_id = new_turn_id("resp")

    def new_turn(self, route: RouteSpec) -> Turn:
        turn = super().new_turn(route)
        turn.items = self.items
        turn.response_id = self.response_id
        return turn

    def passthrough_request(self, route: RouteSpec, target) -> Conversion:
        """R → R: stateless upstream call (R3): the expanded history, store:false, encrypted reasoning back."""
        body = _allowed(self.body, RESPONSES_FIELDS, route)
        body["model"] = target.upstream_model
        # A gateway envelope (reasoning produced on another protocol) never goes to an R upstream (§5.6.5).
        body["input"] = [
            item for item in self.items
            if not (item.get("type") == "reasoning" and is_envelope(item.get("encrypted_content")))
        ]  # fmt: skip
        tools = [t for t in body.get("tools") or [] if not str(t.get("type", "")).startswith("web_search")]
        if len(tools) != len(body.get("tools") or []):
            logger.info("web_search tool dropped: the gateway does not bill hosted tools")
        if "tools" in body:
            body["tools"] = tools
        body["store"] = False
        if body.get("reasoning"):
            include = list(body.get("include") or [])
            if ENCRYPTED_INCLUDE not in include:
                body["include"] = [*include, ENCRYPTED_INCLUDE]
        return Conversion(body=body, input_estimate=self.input_estimate)

    async def send(self, route: RouteSpec, conversion: Conversion):
        reply = await super().send(route, conversion)
        replayed = [i for i in conversion.body.get("input") or [] if i.get("type") == "reasoning"]
        if route.provider.protocol != RESPONSES or reply.status != 400 or not replayed:
            return reply
        data = await reply.json()
        message = str(((data or {}).get("error") or {}).get("message") or "")
        if "encrypted content" not in message.lower():
            return _ReadReply(reply, data)
        # R8: reasoning ciphertext from another organisation/channel (kaitranntt/ccs#1402): once without it.
        logger.info("upstream refused replayed reasoning; retrying once without the %d reasoning items", len(replayed))
        conversion.body["input"] = [i for i in conversion.body["input"] if i.get("type") != "reasoning"]
        return await super().send(route, conversion)

    def passthrough_response(self, data: dict) -> dict:
        data["id"] = self.response_id  # upstream response ids never reach clients (§5.1)
        data["model"] = self.spec.name
        data["store"] = self.body.get("store", True)
        data["previous_response_id"] = self.body.get("previous_response_id")
        return data

    def passthrough_stream(self, conversion: Conversion):
        return ResponsesRelay(self.turn.responses(), input_estimate=conversion.input_estimate or self.input_estimate)

    def completed(self, out: dict) -> None:
        if self.body.get("store") is False or out.get("status") == "failed":
            return
        stored = responses_with_envelopes(out, self.turn.responses().envelopes) if self.turn else out
        try:
            responses_store_later(
                org_id=self.key.org_id,
                api_key_id=self.key.key_id,
                request=self.body,
                input_items=self.items,
                response=stored,
            )
        except Exception:  # storing is best effort: the answer was already billed and sent
            logger.exception("response %s could not be queued for storage", self.response_id)


class _ReadReply:
    """An upstream reply whose JSON body was already read (the retry check looked at it)."""

    def __init__(self, reply, data: dict | None) -> None:
        self._reply = reply
        self._data = data

    def __getattr__(self, name: str):
        return getattr(self._reply, name)

    async def json(self) -> dict | None:
        return self._data


async def responses_create(request: HttpRequest) -> HttpResponse:
    """Entry point for POST /v1/responses."""
    call = Call(request, RESPONSES, endpoint="responses")
    try:
        key = await authenticate(request, allow_x_api_key=False)
        body = read_json_body(request)
        max_output = responses_request_check(body)
        spec = await resolve_model(body["model"], key, mode="chat")
        if responses_needs_expansion(body):
            items = await responses_expand(org_id=key.org_id, body=body)
        else:
            items = responses_input_items(body)
        responses_items_check(items)
        input_estimate = estimate_responses_prompt_tokens(body, items)
        # The hold covers the worst case (issue 12): every byte of the expanded input (a stored
        # previous_response_id chain is not in this body) may be a token; max_output_tokens counts reasoning.
        hold_amount = metering.chat_hold_nanos(
            spec,
            input_tokens=metering.chat_input_bound(spec, {**body, "input": items}),
            max_output_tokens=max_output,
            thinking_in_cap=True,
            tools_nanos=metering.server_tools_hold_nanos(spec, body),
        )
        hold = await metering.hold_open(call, key, hold_amount, tokens=input_estimate, optimistic=True)
    except GatewayError as exc:
        return error_response(call, exc)
    exchange = ResponsesExchange(call, key, spec, body, hold, input_estimate=input_estimate, items=items)
    return await exchange.run()
