"""The protocol hub: one adapter per protocol, any client protocol to any upstream protocol in ≤ 1 neutral hop.

The neutral form is the Anthropic Messages shape (request, message, stream events): it is the richest of the
three (thinking with signatures, tool_use, system blocks) and Gemini already went through it. Each protocol's
adapter converts between its own wire shape and the neutral one:

    client side    request_to_neutral(body, target, turn) -> Conversion      (client request → A request)
                   response_from_neutral(message, conv, turn) -> dict       (A message → client response)
                   stream_from_neutral(conv, turn) -> machine | None        (A events → client items; None = A)
    upstream side  request_from_neutral(conv, target, turn) -> Conversion   (A request → upstream request)
                   response_to_neutral(data, conv, turn) -> dict            (upstream response → A message)
                   stream_to_neutral(conv, turn) -> machine | None          (upstream events → A events; None = A)
                   usage(data) -> Usage | None, is_answer(data) -> bool, neutral_target(target)
    both           name, error shape (proxy/responses.py by protocol), usage_object(item) for `usage.cost`

What the A form cannot hold travels in `Conversion.side` (see responses_request.py for its keys).
Same-protocol routes never come here: proxy/chat.py keeps them as the zero-conversion fast path (relays
and field allowlists). Some pairs had a specialised converter before the hub (O client → Gemini); an
upstream adapter lists those in `direct` and the hub prefers them, so their behaviour is unchanged.

Pure: no Django, no I/O; the clock and ids come in through `Turn`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .anthropic_to_openai import anthropic_request_to_openai, openai_response_to_anthropic
from .envelope import Sealer
from .gemini import (
    anthropic_request_to_gemini,
    gemini_response_to_anthropic,
    gemini_response_to_openai,
    openai_request_to_gemini,
    usage_from_gemini,
)
from .gemini_stream import GeminiToAnthropicStream, GeminiToOpenAIStream
from .models import Conversion, SSEItem, TargetModel
from .openai_to_anthropic import anthropic_response_to_openai, openai_request_to_anthropic
from .responses_request import anthropic_request_to_responses, responses_request_to_anthropic
from .responses_response import (
    ResponsesTurn,
    anthropic_response_to_responses,
    responses_response_to_anthropic,
    usage_from_responses,
)
from .responses_stream import AnthropicToResponsesStream, ResponsesToAnthropicStream
from .streams import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from .usage import Usage, usage_from_anthropic, usage_from_openai

OPENAI, ANTHROPIC, GEMINI, RESPONSES = "openai", "anthropic", "gemini", "responses"


@dataclass
class Turn:
    """One request's context for the converters: the client's model id, clock and id source, and R state."""

    model: str  # the client's model id (G2)
    now: int  # unix seconds
    new_id: Callable[[str], str]  # prefix -> fresh id: "msg", "toolu", "chatcmpl", "resp", "rs", "fc", "ctc", "call"
    request: dict = field(default_factory=dict)  # the client's body
    include_usage: bool = False  # O client asked for the usage chunk (G5)
    items: list[dict] | None = None  # R client: the expanded input items (§4.1)
    sealer: Sealer | None = None  # reasoning envelopes of this tenant and route (§5.6)
    response_id: str = ""  # R client: the gateway's resp_ id
    _responses: ResponsesTurn | None = None

    def tool_id(self) -> str:
        return self.new_id("toolu")

    def responses(self) -> ResponsesTurn:
        if self._responses is None:
            self._responses = ResponsesTurn(
                model=self.model,
                request=self.request,
                now=self.now,
                new_id=self.new_id,
                response_id=self.response_id,
                sealer=self.sealer,
            )
            self.response_id = self._responses.response_id
        return self._responses


# Side-channel fields an O client sends that the A form has no slot for (for R upstreams, §5.4).
_OPENAI_SIDE = ("prompt_cache_key", "service_tier", "safety_identifier", "user", "verbosity", "metadata")


class OpenAIAdapter:
    """Chat Completions (O): wraps the existing O ⇄ A converters and stream machines."""

    name = OPENAI
    direct: dict = {}

    def request_to_neutral(self, body: dict, target: TargetModel, turn: Turn) -> Conversion:
        conv = openai_request_to_anthropic(body, target)
        side = {k: body[k] for k in _OPENAI_SIDE if body.get(k) is not None}
        if body.get("logprobs") and body.get("top_logprobs") is not None:
            side["top_logprobs"] = body["top_logprobs"]
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_object":
            side["json_object"] = True
        if isinstance(response_format, dict) and isinstance(response_format.get("json_schema"), dict):
            spec = response_format["json_schema"]
            side["json_schema"] = {k: spec[k] for k in ("name", "strict", "description") if k in spec}
        conv.side = {
            "responses": side,
            "output_cap": any(body.get(k) is not None for k in ("max_completion_tokens", "max_tokens")),
        }
        if isinstance(body.get("stop"), (str, list)):
            conv.side["stop"] = [body["stop"]] if isinstance(body["stop"], str) else list(body["stop"])
        return conv

    def response_from_neutral(self, message: dict, conv: Conversion, turn: Turn) -> dict:
        return anthropic_response_to_openai(message, conv, model=turn.model, created=turn.now)

    def stream_from_neutral(self, conv: Conversion, turn: Turn):
        return AnthropicToOpenAIStream(
            conv, model=turn.model, created=turn.now, chunk_id=turn.new_id("chatcmpl"), include_usage=turn.include_usage
        )

    def neutral_target(self, target: TargetModel) -> TargetModel:
        # The A request is only a waypoint: let it carry effort and JSON schemas as such (O decides later).
        return replace(target, thinking="adaptive", structured_output=True, image_urls=True)

    def request_from_neutral(self, conv: Conversion, target: TargetModel, turn: Turn) -> Conversion:
        out = anthropic_request_to_openai(conv.body, target)
        side = conv.side.get("responses") or {}
        body = out.body
        for name in ("prompt_cache_key", "service_tier", "safety_identifier", "user", "verbosity"):
            if side.get(name) is not None:
                body[name] = side[name]
        if side.get("top_logprobs") is not None:
            body["logprobs"], body["top_logprobs"] = True, side["top_logprobs"]
        if side.get("json_object") and "response_format" not in body:
            body["response_format"] = {"type": "json_object"}
        if side.get("json_schema") and isinstance(body.get("response_format"), dict):
            body["response_format"]["json_schema"].update(side["json_schema"])  # the client's name and strict
        if conv.side.get("output_cap") is False:
            body.pop(target.max_tokens_field, None)  # the client set no cap: O's "no cap" (§2.1)
        out.side = conv.side
        out.json_tool = conv.json_tool
        return out

    def response_to_neutral(self, data: dict, conv: Conversion, turn: Turn) -> dict:
        return openai_response_to_anthropic(data, conv, model=turn.model, new_id=turn.tool_id)

    def stream_to_neutral(self, conv: Conversion, turn: Turn):
        return OpenAIToAnthropicStream(conv, model=turn.model, message_id=turn.new_id("msg"), new_id=turn.tool_id)

    def usage(self, data: dict) -> Usage | None:
        return usage_from_openai(data["usage"]) if data.get("usage") else None

    def is_answer(self, data: dict) -> bool:
        return isinstance(data.get("choices"), list) and bool(data["choices"])

    def produced(self, data: dict) -> object:
        return data.get("choices")

    def usage_object(self, item: SSEItem) -> dict | None:
        _event, data = item
        return data["usage"] if isinstance(data, dict) and isinstance(data.get("usage"), dict) else None


class AnthropicAdapter:
    """Messages (A): the neutral form itself, so every conversion is the identity."""

    name = ANTHROPIC
    direct: dict = {}

    def request_to_neutral(self, body: dict, target: TargetModel, turn: Turn) -> Conversion:
        # No estimate here: every upstream adapter estimates the body it builds (one walk, not two: S5).
        return Conversion(body=body)

    def response_from_neutral(self, message: dict, conv: Conversion, turn: Turn) -> dict:
        return message

    def stream_from_neutral(self, conv: Conversion, turn: Turn):
        return None

    def neutral_target(self, target: TargetModel) -> TargetModel:
        return target

    def request_from_neutral(self, conv: Conversion, target: TargetModel, turn: Turn) -> Conversion:
        if conv.side.get("cache_breakpoints"):
            conv.body = anthropic_cache_breakpoints(conv.body)
        return conv

    def response_to_neutral(self, data: dict, conv: Conversion, turn: Turn) -> dict:
        return data

    def stream_to_neutral(self, conv: Conversion, turn: Turn):
        return None

    def usage(self, data: dict) -> Usage | None:
        return usage_from_anthropic(data["usage"]) if data.get("usage") else None

    def is_answer(self, data: dict) -> bool:
        return isinstance(data.get("content"), list)

    def produced(self, data: dict) -> object:
        return data.get("content")

    def usage_object(self, item: SSEItem) -> dict | None:
        event, data = item
        if event == "message_delta" and isinstance(data, dict) and isinstance(data.get("usage"), dict):
            return data["usage"]
        return None


EPHEMERAL = {"type": "ephemeral"}


def anthropic_cache_breakpoints(body: dict) -> dict:
    """Cache breakpoints on the system prompt and the last user turn (PROTOCOLS-RESPONSES §5.3 step 7).

    OpenAI caches prompt prefixes by itself, A only at breakpoints: without them an R client's long
    prompts (Codex resends the whole history each turn) are billed uncached on every turn (gateway choice).
    """
    out = dict(body)
    system = out.get("system")
    if isinstance(system, str) and system:
        out["system"] = [{"type": "text", "text": system, "cache_control": EPHEMERAL}]
    messages = list(out.get("messages") or [])
    for position in range(len(messages) - 1, -1, -1):
        message = messages[position]
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, list) or not content:
            continue
        messages[position] = {**message, "content": [*content[:-1], {**content[-1], "cache_control": EPHEMERAL}]}
        break
    out["messages"] = messages
    return out


class GeminiAdapter:
    """Gemini generateContent: upstream only; O clients keep their specialised converters (`direct`)."""

    name = GEMINI

    def __init__(self) -> None:
        self.direct = {
            OPENAI: (
                lambda body, target, turn: openai_request_to_gemini(body, target),
                lambda data, conv, turn: gemini_response_to_openai(
                    data,
                    conv,
                    model=turn.model,
                    created=turn.now,
                    completion_id=turn.new_id("chatcmpl"),
                    new_id=turn.tool_id,
                ),
                lambda conv, turn: GeminiToOpenAIStream(
                    conv,
                    model=turn.model,
                    created=turn.now,
                    chunk_id=turn.new_id("chatcmpl"),
                    include_usage=turn.include_usage,
                    new_id=turn.tool_id,
                ),
            )
        }

    def neutral_target(self, target: TargetModel) -> TargetModel:
        return replace(target, structured_output=True, image_urls=True)  # Gemini has native JSON schema output

    def request_from_neutral(self, conv: Conversion, target: TargetModel, turn: Turn) -> Conversion:
        out = anthropic_request_to_gemini(conv.body, target)
        if (conv.side.get("responses") or {}).get("json_object"):  # Gemini has a JSON mode (as for O clients)
            out.body.setdefault("generationConfig", {})["responseMimeType"] = "application/json"
        out.side, out.json_tool = conv.side, conv.json_tool
        return out

    def response_to_neutral(self, data: dict, conv: Conversion, turn: Turn) -> dict:
        return gemini_response_to_anthropic(
            data, conv, model=turn.model, message_id=turn.new_id("msg"), new_id=turn.tool_id
        )

    def stream_to_neutral(self, conv: Conversion, turn: Turn):
        return GeminiToAnthropicStream(conv, model=turn.model, message_id=turn.new_id("msg"), new_id=turn.tool_id)

    def usage(self, data: dict) -> Usage | None:
        return usage_from_gemini(data.get("usageMetadata")) if data.get("usageMetadata") else None

    def is_answer(self, data: dict) -> bool:
        return isinstance(data.get("candidates"), list) or isinstance(data.get("promptFeedback"), dict)

    def produced(self, data: dict) -> object:
        return data.get("candidates")


class ResponsesAdapter:
    """OpenAI Responses (R): client and upstream (PROTOCOLS-RESPONSES §5)."""

    name = RESPONSES
    direct: dict = {}

    def request_to_neutral(self, body: dict, target: TargetModel, turn: Turn) -> Conversion:
        items = turn.items if turn.items is not None else []
        return responses_request_to_anthropic(body, items, target, sealer=turn.sealer)

    def response_from_neutral(self, message: dict, conv: Conversion, turn: Turn) -> dict:
        return anthropic_response_to_responses(message, conv, turn.responses())

    def stream_from_neutral(self, conv: Conversion, turn: Turn):
        return AnthropicToResponsesStream(conv, turn.responses())

    def neutral_target(self, target: TargetModel) -> TargetModel:
        return replace(target, thinking="adaptive", structured_output=True, image_urls=True)

    def request_from_neutral(self, conv: Conversion, target: TargetModel, turn: Turn) -> Conversion:
        return anthropic_request_to_responses(conv, target, sealer=turn.sealer)

    def response_to_neutral(self, data: dict, conv: Conversion, turn: Turn) -> dict:
        return responses_response_to_anthropic(
            data, conv, model=turn.model, message_id=turn.new_id("msg"), sealer=turn.sealer
        )

    def stream_to_neutral(self, conv: Conversion, turn: Turn):
        return ResponsesToAnthropicStream(conv, model=turn.model, message_id=turn.new_id("msg"), sealer=turn.sealer)

    def usage(self, data: dict) -> Usage | None:
        return usage_from_responses(data["usage"]) if data.get("usage") else None

    def is_answer(self, data: dict) -> bool:
        return isinstance(data.get("output"), list) and data.get("object", "response") == "response"

    def produced(self, data: dict) -> object:
        return data.get("output")

    def usage_object(self, item: SSEItem) -> dict | None:
        event, data = item
        if event in ("response.completed", "response.incomplete", "response.failed") and isinstance(data, dict):
            usage = (data.get("response") or {}).get("usage")
            return usage if isinstance(usage, dict) else None
        return None


ADAPTERS = {
    OPENAI: OpenAIAdapter(),
    ANTHROPIC: AnthropicAdapter(),
    GEMINI: GeminiAdapter(),
    RESPONSES: ResponsesAdapter(),
}


def adapter_for(protocol: str):
    return ADAPTERS[protocol]


def hub_request(client: str, upstream: str, body: dict, target: TargetModel, turn: Turn) -> Conversion:
    """The upstream request for a client request of another protocol (raises TranslationError)."""
    up = ADAPTERS[upstream]
    if client in up.direct:
        return up.direct[client][0](body, target, turn)
    conv = ADAPTERS[client].request_to_neutral(body, up.neutral_target(target), turn)
    return up.request_from_neutral(conv, target, turn)


def hub_response(client: str, upstream: str, data: dict, conv: Conversion, turn: Turn) -> dict:
    """The client's response for an upstream response of another protocol."""
    up = ADAPTERS[upstream]
    if client in up.direct:
        return up.direct[client][1](data, conv, turn)
    message = up.response_to_neutral(data, conv, turn)
    return ADAPTERS[client].response_from_neutral(message, conv, turn)


def hub_stream(client: str, upstream: str, conv: Conversion, turn: Turn):
    """The stream machine for a converted route: upstream → A → client, composed when neither side is A."""
    up = ADAPTERS[upstream]
    if client in up.direct:
        return up.direct[client][2](conv, turn)
    inner = up.stream_to_neutral(conv, turn)
    outer = ADAPTERS[client].stream_from_neutral(conv, turn)
    if inner is None:
        return outer
    if outer is None:
        return inner
    return NeutralHop(inner, outer)


def _fail(machine, error) -> list[SSEItem]:
    fail = getattr(machine, "fail", None) or machine._fail
    return fail(error)


class NeutralHop:
    """Two machines in a row: upstream events → A events (`inner`) → client items (`outer`).

    Billing reads the inner machine's usage (the upstream's own counts); an inner failure is rendered once,
    by the outer machine, in the client's shape.
    """

    def __init__(self, inner, outer) -> None:
        self.inner = inner
        self.outer = outer

    @property
    def usage(self) -> Usage:
        return self.inner.usage

    @property
    def done(self) -> bool:
        return self.outer.done

    @done.setter
    def done(self, value: bool) -> None:
        self.outer.done = value

    @property
    def error(self):
        return self.inner.error or self.outer.error

    @error.setter
    def error(self, value) -> None:
        self.outer.error = value

    @property
    def output_text(self) -> list[str]:
        return self.inner.output_text

    @property
    def final_response(self) -> dict | None:
        return getattr(self.outer, "final_response", None)

    def _through(self, events: list[SSEItem]) -> list[SSEItem]:
        items: list[SSEItem] = []
        for name, data in events:
            if name == "error":
                items += [] if self.outer.done else _fail(self.outer, self.inner.error)
            elif isinstance(data, dict):
                items += self.outer.feed(data)
        return items

    def feed(self, chunk: dict) -> list[SSEItem]:
        return self._through(self.inner.feed(chunk))

    def feed_done(self) -> list[SSEItem]:
        return self._through(self.inner.feed_done())

    def finish(self) -> list[SSEItem]:
        items = self._through(self.inner.finish())
        return items + (self.outer.finish() if not self.outer.done else [])

    def fail(self, error) -> list[SSEItem]:
        if self.outer.done:
            return []
        if not self.inner.done:
            self.inner.done, self.inner.error = True, error
        return _fail(self.outer, error)
