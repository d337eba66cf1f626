"""A real local HTTP server that speaks the OpenAI and Anthropic upstream wire formats, for integration tests.

Shapes follow shared/PROTOCOLS.md §1.3-1.4 (OpenAI chat), §1.7-1.8 (Anthropic messages), §1.9 and §5 (errors).
Unscripted replies are deterministic, so tests can predict every byte that matters:

* Reply text is ``"Echo: " + <user text>``, where the user text is the text of the last message the user wrote
  (OpenAI: last ``user`` message; Anthropic: last ``user`` message that is not only ``tool_result`` blocks),
  text parts joined with one space.
* Tools: when ``tools`` is non-empty, ``tool_choice`` is not "none" and the turn does not answer tool results
  (no ``tool`` message / ``tool_result`` block after the last assistant message), the reply is a single call
  to the forced tool (else the first one) with arguments ``{"city": "Paris"}`` instead of text.
* Reasoning: OpenAI ``reasoning_effort`` other than "none"/"minimal", or Anthropic ``thinking.type`` "enabled" /
  "adaptive", adds the reasoning text "Thinking about it." (Anthropic: a signed thinking block, placed first).
* Stop sequences cut the text before the first match; then a word limit (``max_completion_tokens`` ??
  ``max_tokens``) smaller than the text's word count keeps that many words and ends with "length"/"max_tokens".
* Tokens are whitespace-separated words. Prompt tokens = words of every text in the prompt (system, text parts
  and blocks, tool results; not images, tool arguments, tool definitions or reasoning) + 10 per message, where an
  Anthropic top-level ``system`` counts as one message. Output tokens = reply words + reasoning words + 5 per tool
  call. Cache: OpenAI reports ``cached_tokens`` = prompt // 2 when the request has ``prompt_cache_key``;
  Anthropic reports ``cache_read_input_tokens`` = prompt // 2 when any block, tool or the request carries
  ``cache_control``, and ``input_tokens`` = the rest.
* Ids come from per-prefix counters reset by ``reset()``: "chatcmpl-mock1", "call_1", "msg_mock1", "toolu_mock1".
* Gemini (``/v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``, key in
  ``x-goog-api-key``): the same reply plan. The user text is the last ``user`` content that is not only
  ``functionResponse`` parts; tools are called when ``tools`` declares functions, ``toolConfig`` mode is not
  NONE (ANY with ``allowedFunctionNames`` forces the first listed) and the turn does not answer function
  responses; reasoning when ``thinkingConfig.includeThoughts`` and ``thinkingBudget`` is not 0 (a thought part);
  ``stopSequences`` / ``maxOutputTokens`` as above (finishReason STOP / MAX_TOKENS). Prompt tokens count like
  Anthropic's (``systemInstruction`` is one message); ``cachedContentTokenCount`` = prompt // 2 when the request
  names ``cachedContent``; ``candidatesTokenCount`` = reply words + 5 per call, ``thoughtsTokenCount`` = reasoning
  words. A stream sends the thought, then the text word by word (each chunk with running usageMetadata), and
  the last chunk carries finishReason and the final usageMetadata; no end marker. Function-call ids: "fc_mock1".

* ``n`` (Chat Completions, 1..128 as OpenAI accepts): that many choices, each the same reply with its own
  ``index`` (streamed interleaved); ``completion_tokens`` counts every choice.
* ``worst_case_tokens = True`` (issue 12): the usage an adversarial prompt gets from a real provider at
  most. Prompt tokens are the UTF-8 bytes of every text (a BPE tokenizer never makes more tokens than bytes)
  plus TOKENS_PER_MESSAGE each, images count WORST_CASE_IMAGE_TOKENS, and every choice's answer fills its
  output cap (WORST_CASE_UNCAPPED_WORDS words without one).
* Images (``/v1/images/generations``): ``n`` 1..10, ``size`` and ``quality`` among what OpenAI accepts, else 400.
  Transcriptions report the duration the audio container states (mutagen), else bytes / 16000.
* Claude Code additions (issue 14, PROTOCOLS-RESPONSES §6): ``{role:"system"}`` messages are accepted only for
  the models in ``MID_CONV_SYSTEM_MODELS`` and only where Anthropic allows them (not first, after a user message,
  never two in a row, followed by an assistant message or nothing); other models answer 400 "messages.N.role:
  role 'system' is not supported on this model".
* Server tools: a ``web_search_*`` tool makes the reply start with ``max_uses`` (default 1, at most 3) searches —
  a ``server_tool_use`` + ``web_search_tool_result`` block each — and the usage carries
  ``server_tool_use.web_search_requests``. ``mcp_servers`` needs an ``mcp-client-*`` beta (else 400) and makes the
  reply start with an ``mcp_tool_use`` + ``mcp_tool_result`` pair for the first server.
* Strict prompt caching, when ``prompt_caching`` is set (off by default, then the rule above applies): a prefix is
  cached only at a ``cache_control`` breakpoint (at most 4, else 400; a top-level ``cache_control`` marks the last
  block) and only from ``min_cacheable_tokens`` (1024) tokens on. A request reads the longest of its breakpoint
  prefixes written before (``cache_read_input_tokens``) and writes its last breakpoint's prefix beyond that
  (``cache_creation_input_tokens``); no breakpoint, no cache. Prefix order is tools, system, messages; tokens count
  as above (tool definitions 0).

A ``Script`` queued with ``enqueue()`` replaces all of that (auth included) for the next request to its path.

Agent loops: directives in the user's text (``[[shell …]]``, ``[[call …]]``, ``[[say …]]``, see mock_agent.py) replace
the reply plan of any generation endpoint with a scripted tool call or answer, so real agent programs can be driven.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import math
import re
import struct
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from email import policy
from email.parser import BytesParser
from typing import Any, Literal, Self

from aiohttp import web

from proxy.tests import mock_agent

Provider = Literal["openai", "anthropic", "gemini"]
SSEEvent = tuple[str | None, dict[str, Any] | str]
"""One SSE event: the ``event:`` name (None for none) and its data; a dict is JSON-encoded, a str sent verbatim."""

ECHO_PREFIX = "Echo: "
REASONING_TEXT = "Thinking about it."
THINKING_SIGNATURE = "sig_mock_thinking_signature"
TOOL_ARGUMENTS = {"city": "Paris"}
TOKENS_PER_MESSAGE = 10
TOKENS_PER_TOOL_CALL = 5
AUDIO_BYTES_PER_SECOND = 16000
SPEECH_BYTES_PER_CHARACTER = 100
IMAGE_OUTPUT_TOKENS = 272
WORST_CASE_IMAGE_TOKENS = 1600  # a large image at Anthropic's 1.15 MP (OpenAI's gpt-4o high detail: 1445 at most)
WORST_CASE_UNCAPPED_WORDS = 5000  # the answer to a request without an output cap in worst-case mode
IMAGE_SIZES = ("auto", "256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "1792x1024", "1024x1792")
IMAGE_QUALITIES = ("auto", "low", "medium", "high", "standard", "hd")
GEMINI_MODELS = {"gemini-2.5-flash": "Gemini 2.5 Flash", "gemini-2.5-pro": "Gemini 2.5 Pro"}
GEMINI_PATH_PREFIX = "/v1beta/models/"
OPENAI_MODELS = ("gpt-4o-mini", "gpt-4.1", "o4-mini", "text-embedding-3-small", "gpt-image-1", "whisper-1")
ANTHROPIC_MODELS = {"claude-sonnet-4-5": "Claude Sonnet 4.5", "claude-haiku-4-5": "Claude Haiku 4.5"}
MID_CONV_SYSTEM_MODELS = frozenset({"claude-opus-4-8"})  # GA on Opus 4.8+ (PROTOCOLS-RESPONSES §6)
MAX_CACHE_BREAKPOINTS = 4
MAX_MOCK_SEARCHES = 3
# A valid 1x1 transparent PNG.
TINY_PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAAC0lEQVR4nGNgAAIAAAUAAXpeqz8AAAAASUVORK5CYII="

_ANTHROPIC_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
_OPENAI_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/images/generations",
        "/v1/audio/transcriptions",
        "/v1/audio/speech",
        "/v1/responses",
    }
)
# Error `type` per status, §5.2; other statuses fall back to invalid_request_error / server-side types.
_OPENAI_ERROR_TYPES = {402: "insufficient_quota", 403: "permission_error", 429: "rate_limit_error"}
_ANTHROPIC_ERROR_TYPES = {
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# google.rpc.Code names Gemini puts in error.status.
_GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_AUDIO_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
_RAW_CHUNK_BYTES = 1024
_SHUTDOWN_TIMEOUT_SECONDS = 0.1
_DROP_GRACE_SECONDS = 0.3


@dataclass(frozen=True)
class Delay:
    """A pause inside ``Script.sse``; it is not counted as an event."""

    seconds: float


@dataclass
class Script:
    """A canned answer for one request. Body: ``sse``, else ``raw``, else ``json``, else empty."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)  # added to / overriding the body's default headers
    json: dict[str, Any] | None = None
    raw: bytes | None = None  # sent as application/json unless headers say otherwise, in 1 KiB chunks
    sse: list[SSEEvent | Delay] | None = None  # text/event-stream
    chunk_delay: float = 0.0  # between SSE events (or raw chunks)
    first_byte_delay: float = 0.0  # before the status line
    drop_after: int | None = None  # SSE: close the socket mid-body after this many events
    stall_after: int | None = None  # SSE: after this many events go silent for stall_seconds, then carry on
    stall_seconds: float = 30.0
    drop_grace: float | None = None  # SSE drop: pause before closing (None: _DROP_GRACE_SECONDS; 0: close at once)

    @classmethod
    def error(
        cls,
        status: int,
        *,
        provider: Provider = "openai",
        message: str = "Mock upstream error",
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> Script:
        """A provider-shaped error body (§5.1); ``type`` defaults from the status (§5.2)."""
        if provider == "gemini":
            status_name = type or _GEMINI_STATUSES.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
            body = {"error": {"code": status, "message": message, "status": status_name}}
            headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
            return cls(status=status, headers=headers, json=body)
        if provider == "anthropic":
            error_type = type or _ANTHROPIC_ERROR_TYPES.get(
                status, "api_error" if status >= 500 else "invalid_request_error"
            )
            body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
        else:
            error_type = type or _OPENAI_ERROR_TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            )
            body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return cls(status=status, headers=headers, json=body)


@dataclass
class RecordedRequest:
    """One request as the mock received it, plus what became of the answer."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: dict[str, Any] | None = None
    form: dict[str, str | bytes] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    response_usage: dict[str, Any] | None = None
    disconnected: bool = False
    completed: bool = False


class _InvalidRequestError(Exception):
    """The request breaks a rule the real provider enforces; answered with a 400 in the provider's shape."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
        self.status = status


@dataclass(frozen=True)
class _ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class _Reply:
    """A protocol-neutral assistant turn, rendered by the OpenAI and Anthropic writers below."""

    text: str
    reasoning: str | None
    tool_call: _ToolCall | None
    stop: Literal["end", "stop_sequence", "length", "tool"]
    stop_sequence: str | None
    prompt_tokens: int
    cached_tokens: int
    cache_write_tokens: int = 0
    server_blocks: tuple[dict[str, Any], ...] = ()  # Anthropic server tool / MCP blocks placed before the text
    server_tool_use: dict[str, int] | None = None

    @property
    def output_tokens(self) -> int:
        tool_tokens = TOKENS_PER_TOOL_CALL if self.tool_call else 0
        return _words(self.text) + _words(self.reasoning or "") + tool_tokens


class MockUpstream:
    """An aiohttp server on a background thread with its own event loop, emulating OpenAI and Anthropic."""

    def __init__(self, *, api_key: str = "sk-upstream-test", host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.prompt_caching = False  # strict Anthropic prompt-cache emulation (see the module docstring)
        self.min_cacheable_tokens = 1024
        self._cache: set[str] = set()  # prefix hashes written
        self.requests: list[RecordedRequest] = []
        self.worst_case_tokens = False  # see the module docstring
        self._lock = threading.Lock()
        self._scripts: defaultdict[str, deque[Script]] = defaultdict(deque)
        self._ids: Counter[str] = Counter()
        self._disconnected = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._routes: dict[tuple[str, str], Callable[[RecordedRequest], Script]] = {
            ("POST", "/v1/chat/completions"): self._chat_completions,
            ("POST", "/v1/responses"): self._responses,
            ("POST", "/v1/messages"): self._messages,
            ("POST", "/v1/messages/count_tokens"): self._count_tokens,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("POST", "/v1/images/generations"): self._image_generations,
            ("POST", "/v1/audio/transcriptions"): self._transcriptions,
            ("POST", "/v1/audio/speech"): self._speech,
            ("GET", "/v1/models"): self._models,
        }

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving; returns once the socket is listening (``port`` then holds the bound port)."""
        if self._thread is not None:
            raise RuntimeError("MockUpstream is already running")
        started: Future[None] = Future()
        self._thread = threading.Thread(target=self._serve, args=(started,), name="mock-upstream", daemon=True)
        self._thread.start()
        try:
            started.result(timeout=10)
        except (OSError, TimeoutError):
            self._thread.join()
            self._thread = None
            raise
        return self

    def stop(self) -> None:
        """Stop serving. Handlers still running after a short grace period are cancelled (records: disconnected)."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None
        self._loop = None

    def __enter__(self) -> Self:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, started: Future[None]) -> None:
        # Its own loop on its own thread, so sync tests and async tests (which own a running loop) can both use it.
        loop = asyncio.new_event_loop()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that goes away cancels its handler, even mid-sleep; that is how
        # disconnects during delays and stalls are observed.
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_TIMEOUT_SECONDS, access_log=None
        )
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port)
            loop.run_until_complete(site.start())
        except OSError as exc:  # address in use, unknown host
            loop.run_until_complete(runner.cleanup())
            loop.close()
            started.set_exception(exc)
            return
        self.port = runner.addresses[0][1]
        self._loop = loop
        started.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    # -- test-facing controls ----------------------------------------------------------------------------------

    def enqueue(self, path: str, script: Script) -> None:
        """Answer the next request to ``path`` with ``script``; scripts for one path are used in FIFO order."""
        with self._lock:
            self._scripts[path].append(script)

    def reset(self) -> None:
        """Forget recorded requests, queued scripts, id counters and observed disconnects."""
        with self._lock:
            self.requests.clear()
            self._scripts.clear()
            self._ids.clear()
            self._cache.clear()
            self._disconnected.clear()

    def wait_for_disconnect(self, timeout: float) -> bool:
        """True once a response observed its client going away (since the last ``reset()``)."""
        return self._disconnected.wait(timeout)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """True once no request is being handled, so every record's ``completed``/``disconnected`` is final."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    # -- request handling --------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        with self._idle:
            self._in_flight += 1
        try:
            record = await _record_request(request)
            with self._lock:
                self.requests.append(record)
                queue = self._scripts.get(request.path)
                script = queue.popleft() if queue else None
            return await self._respond(request, record, script or self._default_script(record))
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _default_script(self, record: RecordedRequest) -> Script:
        provider = _provider_for(record)
        if not self._is_authorized(record, provider):
            if provider == "anthropic":
                return Script.error(401, provider=provider, message="invalid x-api-key")
            return Script.error(401, message="Incorrect API key provided.", code="invalid_api_key")
        route = self._routes.get((record.method, record.path))
        if provider == "gemini":
            route = self._gemini_route(record)
        if route is None:
            return Script.error(404, provider=provider, message=f"Unknown endpoint: {record.method} {record.path}")
        try:
            return route(record)
        except _InvalidRequestError as exc:
            return Script.error(exc.status, provider=provider, message=str(exc), param=exc.param, code=exc.code)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            # A body of the wrong shape: a real provider answers 400 to it, not 500.
            return Script.error(400, provider=provider, message=f"Malformed request body: {exc!r}")

    def _is_authorized(self, record: RecordedRequest, provider: Provider) -> bool:
        if provider == "gemini":
            return record.headers.get("x-goog-api-key") == self.api_key
        bearer_ok = record.headers.get("authorization") == f"Bearer {self.api_key}"
        api_key = record.headers.get("x-api-key")
        if provider == "anthropic" and api_key is not None:
            return api_key == self.api_key
        return bearer_ok

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            self._ids[prefix] += 1
            return f"{prefix}{self._ids[prefix]}"

    def _tool_call(self, prefix: str, name: str | None) -> _ToolCall | None:
        return None if name is None else _ToolCall(self._new_id(prefix), name, json.dumps(TOOL_ARGUMENTS))

    def _scripted(self, reply: _Reply, conversation: mock_agent.Conversation, prefix: str) -> _Reply:
        """``reply``, or the scripted agent turn when the conversation carries directives (mock_agent.py)."""
        planned = mock_agent.plan(conversation)
        if planned is None:
            return reply
        if planned.tool is None:
            return replace(reply, text=planned.text, tool_call=None, stop="end", stop_sequence=None)
        call_id = reply.tool_call.id if reply.tool_call else self._new_id(prefix)
        call = _ToolCall(call_id, planned.tool, planned.arguments)
        return replace(reply, text="", tool_call=call, stop="tool", stop_sequence=None)

    # -- default endpoints -------------------------------------------------------------------------------------

    def _chat_completions(self, record: RecordedRequest) -> Script:
        body = _json_body(record, "model")
        _openai_validate_messages(body.get("messages"))
        choices = body.get("n", 1) if body.get("n") is not None else 1
        if isinstance(choices, bool) or not isinstance(choices, int) or not 1 <= choices <= 128:
            raise _InvalidRequestError(f"Invalid 'n': {choices!r}. Expected a value between 1 and 128.", param="n")
        prompt_tokens = _openai_prompt_tokens(body["messages"])
        stop = body.get("stop") or []
        limit = body.get("max_completion_tokens")
        user_text = _openai_user_text(body["messages"])
        if self.worst_case_tokens:
            prompt_tokens = _worst_prompt_tokens(body["messages"])
            user_text = _filler(body.get("max_tokens") if limit is None else limit)
        reply = _plan_reply(
            user_text=user_text,
            tool_call=self._tool_call("call_", _openai_tool_to_call(body)),
            reasoning=body.get("reasoning_effort") not in (None, "none", "minimal"),
            stop_sequences=[stop] if isinstance(stop, str) else stop,
            max_words=body.get("max_tokens") if limit is None else limit,
            prompt_tokens=prompt_tokens,
            cached_tokens=prompt_tokens // 2 if body.get("prompt_cache_key") else 0,
        )
        reply = self._scripted(reply, mock_agent.openai_view(body), "call_")
        completion_id, model, created = self._new_id("chatcmpl-mock"), body["model"], int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = _openai_chunks(
                reply,
                completion_id=completion_id,
                model=model,
                created=created,
                include_usage=include_usage,
                choices=choices,
            )
            return Script(sse=chunks)
        return Script(
            json=_openai_completion(reply, completion_id=completion_id, model=model, created=created, choices=choices)
        )

    def _responses(self, record: RecordedRequest) -> Script:
        """OpenAI Responses (PROTOCOLS-RESPONSES §1): validated as strictly as the API; stateless (store is
        accepted, nothing is kept: previous_response_id and id-only items are unknown)."""
        body = _json_body(record, "model")
        items = _responses_validate(body)
        prompt_tokens = _responses_prompt_tokens(body, items)
        reasoning = (body.get("reasoning") or {}).get("effort") not in (None, "none", "minimal")
        reply = _plan_reply(
            user_text=_responses_user_text(items),
            tool_call=self._tool_call("call_mock", _responses_tool_to_call(body, items)),
            reasoning=reasoning,
            stop_sequences=[],
            max_words=body.get("max_output_tokens"),
            prompt_tokens=prompt_tokens,
            cached_tokens=prompt_tokens // 2 if body.get("prompt_cache_key") else 0,
        )
        reply = self._scripted(reply, mock_agent.responses_view(body), "call_mock")
        response = _responses_object(
            reply, body, response_id=self._new_id("resp_mock"), new_id=self._new_id, created=int(time.time())
        )
        if body.get("stream"):
            return Script(sse=_responses_events(response))
        return Script(json=response)

    def _messages(self, record: RecordedRequest) -> Script:
        body = _json_body(record, "model", "max_tokens", "messages")
        _anthropic_validate(body)
        prompt_tokens = _anthropic_prompt_tokens(body)
        user_text = _anthropic_user_text(body["messages"])
        if self.worst_case_tokens:
            system = body.get("system")
            prompt_tokens = _worst_prompt_tokens([{"content": system}] if system else []) + _worst_prompt_tokens(
                body["messages"]
            )
            user_text = _filler(body["max_tokens"])
        if self.prompt_caching:
            cached, written = self._prompt_cache(body)
        else:
            cached, written = (prompt_tokens // 2 if _anthropic_has_cache_control(body) else 0), 0
        server_blocks, server_use = self._server_blocks(body, record)
        reply = _plan_reply(
            user_text=user_text,
            tool_call=self._tool_call("toolu_mock", _anthropic_tool_to_call(body)),
            reasoning=(body.get("thinking") or {}).get("type") in ("enabled", "adaptive"),
            stop_sequences=body.get("stop_sequences") or [],
            max_words=body["max_tokens"],
            prompt_tokens=prompt_tokens,
            cached_tokens=cached,
        )
        reply = replace(reply, cache_write_tokens=written, server_blocks=server_blocks, server_tool_use=server_use)
        reply = self._scripted(reply, mock_agent.anthropic_view(body), "toolu_mock")
        message_id = self._new_id("msg_mock")
        if body.get("stream"):
            return Script(sse=_anthropic_events(reply, message_id=message_id, model=body["model"]))
        return Script(json=_anthropic_message(reply, message_id=message_id, model=body["model"]))

    def _prompt_cache(self, body: dict[str, Any]) -> tuple[int, int]:
        """(cache_read_input_tokens, cache_creation_input_tokens) under the strict rule of the module docstring."""
        items = _anthropic_cache_items(body)
        breakpoints = [index for index, (_, _, marked) in enumerate(items) if marked]
        if "cache_control" in body and items and (len(items) - 1) not in breakpoints:
            breakpoints.append(len(items) - 1)
        if len(breakpoints) > MAX_CACHE_BREAKPOINTS:
            raise _InvalidRequestError(
                f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
                f"Found {len(breakpoints)}."
            )
        prefixes = []
        for index in breakpoints:
            digest = hashlib.sha256(json.dumps([body["model"], [i[0] for i in items[: index + 1]]]).encode())
            prefixes.append((digest.hexdigest(), sum(i[1] for i in items[: index + 1])))
        prefixes = [(digest, tokens) for digest, tokens in prefixes if tokens >= self.min_cacheable_tokens]
        with self._lock:
            read = max((tokens for digest, tokens in prefixes if digest in self._cache), default=0)
            written = max(prefixes[-1][1] - read, 0) if prefixes and prefixes[-1][0] not in self._cache else 0
            self._cache.update(digest for digest, _ in prefixes)
        return read, written

    def _server_blocks(
        self, body: dict[str, Any], record: RecordedRequest
    ) -> tuple[tuple[dict[str, Any], ...], dict[str, int] | None]:
        """The server tool / MCP blocks the upstream would run before answering, and the usage they add."""
        blocks: list[dict[str, Any]] = []
        user_text = _anthropic_user_text(body["messages"])
        if body.get("mcp_servers"):
            betas = record.headers.get("anthropic-beta") or ""
            if "mcp-client-" not in betas:
                raise _InvalidRequestError(
                    "mcp_servers: the MCP connector requires the beta header mcp-client-2025-11-20"
                )
            server = body["mcp_servers"][0]
            call_id = self._new_id("mcptoolu_mock")
            blocks.append(
                {
                    "type": "mcp_tool_use",
                    "id": call_id,
                    "name": "echo",
                    "server_name": server["name"],
                    "input": {"text": user_text},
                }
            )
            blocks.append(
                {
                    "type": "mcp_tool_result",
                    "tool_use_id": call_id,
                    "is_error": False,
                    "content": [{"type": "text", "text": "mcp: " + user_text}],
                }
            )
        search = next((t for t in body.get("tools") or [] if str(t.get("type", "")).startswith("web_search_")), None)
        if search is None:
            return tuple(blocks), None
        searches = min(search.get("max_uses") or 1, MAX_MOCK_SEARCHES)
        for number in range(1, searches + 1):
            call_id = self._new_id("srvtoolu_mock")
            blocks.append(
                {
                    "type": "server_tool_use",
                    "id": call_id,
                    "name": search.get("name", "web_search"),
                    "input": {"query": f"{user_text} {number}"},
                }
            )
            blocks.append(
                {
                    "type": "web_search_tool_result",
                    "tool_use_id": call_id,
                    "content": [
                        {
                            "type": "web_search_result",
                            "url": f"https://example.test/{number}",
                            "title": f"Result {number}",
                            "encrypted_content": "ZW5j",
                            "page_age": None,
                        }
                    ],
                }
            )
        return tuple(blocks), {"web_search_requests": searches, "web_fetch_requests": 0}

    def _count_tokens(self, record: RecordedRequest) -> Script:
        body = _json_body(record, "model", "messages")
        _anthropic_validate(body)
        return Script(json={"input_tokens": _anthropic_prompt_tokens(body)})

    def _embeddings(self, record: RecordedRequest) -> Script:
        body = _json_body(record, "model", "input")
        given = body["input"]
        # One input is a string or a token array; a list of either is a batch.
        inputs = [given] if isinstance(given, str) or (given and isinstance(given[0], int)) else given
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise _InvalidRequestError(f"Invalid encoding_format: {encoding!r}", param="encoding_format")
        data = [
            {"object": "embedding", "index": index, "embedding": _embedding(item, encoding=encoding)}
            for index, item in enumerate(inputs)
        ]
        tokens = sum(_words(item) if isinstance(item, str) else len(item) for item in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return Script(json={"object": "list", "data": data, "model": body["model"], "usage": usage})

    def _image_generations(self, record: RecordedRequest) -> Script:
        body = _json_body(record, "prompt")
        count = body.get("n") if body.get("n") is not None else 1
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10:
            raise _InvalidRequestError(f"Invalid 'n': {count!r}. Expected a value between 1 and 10.", param="n")
        for name, accepted in (("size", IMAGE_SIZES), ("quality", IMAGE_QUALITIES)):
            if body.get(name) is not None and body[name] not in accepted:
                raise _InvalidRequestError(
                    f"Invalid value: {body[name]!r}. Supported values are: {', '.join(map(repr, accepted))}.",
                    param=name,
                )
        input_tokens = _words(body["prompt"])
        output_tokens = IMAGE_OUTPUT_TOKENS * count
        usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"text_tokens": input_tokens, "image_tokens": 0},
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
        images = [{"b64_json": TINY_PNG_BASE64, "revised_prompt": body["prompt"]} for _ in range(count)]
        return Script(json={"created": int(time.time()), "data": images, "usage": usage})

    def _transcriptions(self, record: RecordedRequest) -> Script:
        audio = record.form.get("file")
        if not isinstance(audio, bytes) or "model" not in record.form:
            raise _InvalidRequestError("file and model are required multipart fields", param="file")
        text = f"transcribed {len(audio)} bytes"
        seconds = _audio_duration(audio)
        if seconds is None:
            seconds = len(audio) / AUDIO_BYTES_PER_SECOND
        usage = {"type": "duration", "seconds": max(1, math.ceil(seconds))}
        response_format = record.form.get("response_format", "json")
        if response_format == "text":
            return Script(raw=text.encode(), headers={"Content-Type": "text/plain; charset=utf-8"})
        if response_format == "verbose_json":
            verbose = {"task": "transcribe", "language": "english", "duration": float(usage["seconds"])}
            return Script(json={**verbose, "text": text, "segments": [], "usage": usage})
        if response_format == "json":
            return Script(json={"text": text, "usage": usage})
        raise _InvalidRequestError(f"Unsupported response_format: {response_format!r}", param="response_format")

    def _speech(self, record: RecordedRequest) -> Script:
        body = _json_body(record, "model", "input", "voice")
        content_type = _AUDIO_CONTENT_TYPES.get(body.get("response_format", "mp3"), "audio/mpeg")
        audio = bytes(index % 256 for index in range(SPEECH_BYTES_PER_CHARACTER * len(body["input"])))
        return Script(raw=audio, headers={"Content-Type": content_type})

    def _models(self, record: RecordedRequest) -> Script:
        if _provider_for(record) == "gemini":
            return self._gemini_models(record)
        if _provider_for(record) == "anthropic":
            models = [
                {"type": "model", "id": model_id, "display_name": name, "created_at": "2025-09-29T00:00:00Z"}
                for model_id, name in ANTHROPIC_MODELS.items()
            ]
            page = {"first_id": models[0]["id"], "last_id": models[-1]["id"], "has_more": False}
            return Script(json={"data": models, **page})
        models = [
            {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "mock-upstream"}
            for model_id in OPENAI_MODELS
        ]
        return Script(json={"object": "list", "data": models})

    # -- Gemini ------------------------------------------------------------------------------------------------

    def _gemini_route(self, record: RecordedRequest) -> Callable[[RecordedRequest], Script] | None:
        if record.method == "GET" and record.path == GEMINI_PATH_PREFIX.rstrip("/"):
            return self._gemini_models
        method = record.path.rpartition(":")[2]
        if record.method == "POST" and method in ("generateContent", "streamGenerateContent"):
            return self._gemini_generate
        return None

    def _gemini_models(self, record: RecordedRequest) -> Script:
        models = [
            {"name": f"models/{model_id}", "displayName": name, "inputTokenLimit": 1_048_576,
             "outputTokenLimit": 65_536, "supportedGenerationMethods": ["generateContent", "countTokens"]}
            for model_id, name in GEMINI_MODELS.items()
        ]  # fmt: skip
        return Script(json={"models": models})

    def _gemini_generate(self, record: RecordedRequest) -> Script:
        body = _json_body(record, "contents")
        _gemini_validate(body)
        model = record.path[len(GEMINI_PATH_PREFIX) :].rpartition(":")[0]
        config = body.get("generationConfig") or {}
        thinking = config.get("thinkingConfig") or {}
        prompt_tokens = _gemini_prompt_tokens(body)
        reply = _plan_reply(
            user_text=_gemini_user_text(body["contents"]),
            tool_call=self._tool_call("fc_mock", _gemini_tool_to_call(body)),
            reasoning=bool(thinking.get("includeThoughts")) and thinking.get("thinkingBudget") != 0,
            stop_sequences=config.get("stopSequences") or [],
            max_words=config.get("maxOutputTokens"),
            prompt_tokens=prompt_tokens,
            cached_tokens=prompt_tokens // 2 if body.get("cachedContent") else 0,
        )
        reply = self._scripted(reply, mock_agent.gemini_view(body), "fc_mock")
        response_id = self._new_id("resp_mock")
        if record.path.endswith(":streamGenerateContent"):
            if record.query.get("alt") != "sse":
                raise _InvalidRequestError("this mock only streams with alt=sse")
            return Script(sse=_gemini_chunks(reply, model=model, response_id=response_id))
        return Script(json=_gemini_response(reply, model=model, response_id=response_id))

    # -- response writing --------------------------------------------------------------------------------------

    async def _respond(self, request: web.Request, record: RecordedRequest, script: Script) -> web.StreamResponse:
        response = web.StreamResponse(status=script.status)
        try:
            if script.first_byte_delay:
                await asyncio.sleep(script.first_byte_delay)
            if script.sse is not None:
                await _write_sse(request, response, record, script)
            elif script.raw is not None:
                await _write_raw(request, response, record, script)
            else:
                await _write_json(request, response, record, script)
        except (ConnectionResetError, asyncio.CancelledError) as exc:
            record.completed = False
            record.disconnected = True
            self._disconnected.set()
            if isinstance(exc, asyncio.CancelledError):
                raise
        return response


async def _write_sse(
    request: web.Request, response: web.StreamResponse, record: RecordedRequest, script: Script
) -> None:
    assert script.sse is not None
    response.headers.update({"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    response.headers.update(script.headers)
    await response.prepare(request)
    sent = 0
    # The trailing None marks the end of the stream, so a drop or a stall can also follow the last event.
    for item in [*script.sse, None]:
        if isinstance(item, Delay):
            await asyncio.sleep(item.seconds)
            continue
        if sent == script.drop_after:
            # Close the socket with no terminating chunk, like an upstream process that crashed
            # mid-stream (its kernel sends FIN). Not abort(): an RST can make the client's kernel
            # discard bytes it received but the gateway had not read yet, which makes tests racy.
            # The pause lets the events already written reach the gateway first: aiohttp's reader
            # raises a payload error as soon as it sees the broken body and drops what it had
            # buffered, so without it the test would race the gateway's reads.
            grace = _DROP_GRACE_SECONDS if script.drop_grace is None else script.drop_grace
            if grace:
                await asyncio.sleep(grace)
            if request.transport is not None:
                request.transport.close()
            return
        if sent == script.stall_after:
            await asyncio.sleep(script.stall_seconds)
        if item is None:
            break
        if sent and script.chunk_delay:
            await asyncio.sleep(script.chunk_delay)
        event, data = item
        await response.write(_encode_sse(event, data))
        sent += 1
        record.response_usage = _merge_usage(record.response_usage, data)
    record.completed = True  # set before the last write, so a client that has read to EOF already sees it
    await response.write_eof()


async def _write_json(
    request: web.Request, response: web.StreamResponse, record: RecordedRequest, script: Script
) -> None:
    body = b"" if script.json is None else json.dumps(script.json).encode()
    if script.json is not None:
        response.content_type = "application/json"
        record.response_usage = _merge_usage(None, script.json)
    response.headers.update(script.headers)
    response.content_length = len(body)
    await response.prepare(request)
    record.completed = True
    await response.write_eof(body)


async def _write_raw(
    request: web.Request, response: web.StreamResponse, record: RecordedRequest, script: Script
) -> None:
    assert script.raw is not None
    response.content_type = "application/json"
    response.headers.update(script.headers)
    await response.prepare(request)
    for offset in range(0, len(script.raw), _RAW_CHUNK_BYTES):
        if offset and script.chunk_delay:
            await asyncio.sleep(script.chunk_delay)
        await response.write(script.raw[offset : offset + _RAW_CHUNK_BYTES])
    record.completed = True
    await response.write_eof()


def _encode_sse(event: str | None, data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {payload}\n\n".encode()


def _merge_usage(usage: dict[str, Any] | None, data: dict[str, Any] | str) -> dict[str, Any] | None:
    """Fold the usage carried by one body/event into what was sent so far, as the SDK accumulators do (§1.8)."""
    if not isinstance(data, dict):
        return usage
    message = data.get("message")
    if not isinstance(message, dict) and isinstance(data.get("response"), dict):
        message = data["response"]  # OpenAI Responses lifecycle events carry the response (usage on the terminal one)
    found = message.get("usage") if isinstance(message, dict) else data.get("usage")
    if found is None:
        found = data.get("usageMetadata")  # Gemini: cumulative, the last chunk's is final
    if not isinstance(found, dict):
        return usage
    return {**(usage or {}), **{key: value for key, value in found.items() if value is not None}}


async def _record_request(request: web.Request) -> RecordedRequest:
    body = await request.read()
    headers = {name.lower(): value for name, value in request.headers.items()}
    record = RecordedRequest(
        method=request.method, path=request.path, headers=headers, body=body, query=dict(request.query)
    )
    if request.content_type == "multipart/form-data":
        record.form = _parse_multipart(headers["content-type"], body)
    elif body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        record.json = parsed if isinstance(parsed, dict) else None
    return record


def _parse_multipart(content_type: str, body: bytes) -> dict[str, str | bytes]:
    """Multipart fields by name: file parts as bytes, the others as str."""
    message = BytesParser(policy=policy.HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    form: dict[str, str | bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        form[str(name)] = payload if part.get_filename() is not None else payload.decode()
    return form


def _provider_for(record: RecordedRequest) -> Provider:
    """Which provider's shape answers this request: by endpoint, else by the anthropic-version header (§5.1)."""
    if record.path in _ANTHROPIC_PATHS:
        return "anthropic"
    if record.path.startswith(GEMINI_PATH_PREFIX.rstrip("/")):
        return "gemini"
    if record.path in _OPENAI_PATHS:
        return "openai"
    return "anthropic" if "anthropic-version" in record.headers else "openai"


def _json_body(record: RecordedRequest, *required: str) -> dict[str, Any]:
    if record.json is None:
        raise _InvalidRequestError("The request body is not a valid JSON object.")
    missing = [name for name in required if record.json.get(name) is None]
    if missing:
        raise _InvalidRequestError(f"{missing[0]}: Field required", param=missing[0])
    return record.json


# -- reply planning (protocol-neutral) -------------------------------------------------------------------------


def _words(text: str) -> int:
    return len(text.split())


def _worst_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Worst-case mode: the UTF-8 bytes of every text part (a BPE tokenizer's most), images at
    WORST_CASE_IMAGE_TOKENS, TOKENS_PER_MESSAGE each."""
    total = 0
    for message in messages:
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if part.get("type") == "text":
                total += len(part["text"].encode("utf-8"))
            elif part.get("type") in ("image_url", "image"):
                total += WORST_CASE_IMAGE_TOKENS
        total += TOKENS_PER_MESSAGE
    return total


def _filler(words: int | None) -> str:
    """A user text whose echo fills `words` output tokens (the echo prefix is one of them)."""
    return " ".join(["word"] * (words or WORST_CASE_UNCAPPED_WORDS))


def _audio_duration(audio: bytes) -> float | None:
    """The duration a real provider would bill: what the container states (it decodes the audio)."""
    try:
        import mutagen

        parsed = mutagen.File(io.BytesIO(audio))
    except Exception:
        return None
    length = getattr(getattr(parsed, "info", None), "length", None)
    return float(length) if isinstance(length, (int, float)) and length > 0 else None


def _word_pieces(text: str) -> list[str]:
    """Split into words that keep their trailing whitespace, so the pieces concatenate back to ``text``."""
    return re.findall(r"\s*\S+\s*", text)


def _halves(text: str) -> list[str]:
    middle = len(text) // 2
    return [text[:middle], text[middle:]]


def _embedding(item: str | list[int], *, encoding: str) -> list[float] | str:
    """8 floats from a hash of the input; each is k/128 - 1, exact in float32, so base64 decodes back equal."""
    source = item if isinstance(item, str) else json.dumps(item)
    vector = [(byte - 128) / 128 for byte in hashlib.sha256(source.encode()).digest()[:8]]
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def _plan_reply(
    *,
    user_text: str,
    tool_call: _ToolCall | None,
    reasoning: bool,
    stop_sequences: list[str],
    max_words: int | None,
    prompt_tokens: int,
    cached_tokens: int,
) -> _Reply:
    reasoning_text = REASONING_TEXT if reasoning else None
    if tool_call is not None:
        return _Reply("", reasoning_text, tool_call, "tool", None, prompt_tokens, cached_tokens)
    text = ECHO_PREFIX + user_text
    matches = [(text.find(sequence), sequence) for sequence in stop_sequences if sequence and sequence in text]
    stop: Literal["end", "stop_sequence", "length"] = "end"
    stop_sequence = None
    if matches:
        position, stop_sequence = min(matches)
        text, stop = text[:position], "stop_sequence"
    if max_words is not None and _words(text) > max_words:
        text, stop, stop_sequence = "".join(_word_pieces(text)[:max_words]).rstrip(), "length", None
    return _Reply(text, reasoning_text, None, stop, stop_sequence, prompt_tokens, cached_tokens)


# -- OpenAI Chat Completions (§1.1-1.4) -------------------------------------------------------------------------

_FINISH_REASONS = {"end": "stop", "stop_sequence": "stop", "length": "length", "tool": "tool_calls"}


def _openai_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part["text"] for part in content if part.get("type") == "text")
    return ""


def _openai_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(_words(_openai_text(message.get("content"))) + TOKENS_PER_MESSAGE for message in messages)


def _openai_validate_messages(messages: Any) -> None:
    """OpenAI's own checks: a non-empty list, and every tool message answers a call of the assistant before it."""
    if not isinstance(messages, list) or not messages:
        raise _InvalidRequestError("[] is too short - 'messages'", param="messages")
    unanswered: set[str] = set()
    for index, message in enumerate(messages):
        if message.get("role") == "tool":
            if message.get("tool_call_id") not in unanswered:
                raise _InvalidRequestError(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceding message "
                    "with 'tool_calls'.",
                    param=f"messages.[{index}].role",
                )
            unanswered.discard(message["tool_call_id"])
            continue
        if unanswered:
            raise _unanswered_tool_calls_error(unanswered)
        if message.get("role") == "assistant":
            unanswered = {call["id"] for call in message.get("tool_calls") or []}
    if unanswered:
        raise _unanswered_tool_calls_error(unanswered)


def _unanswered_tool_calls_error(unanswered: set[str]) -> _InvalidRequestError:
    return _InvalidRequestError(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        "'tool_call_id'. The following tool_call_ids did not have response messages: " + ", ".join(sorted(unanswered)),
        param="messages",
    )


def _openai_user_text(messages: list[dict[str, Any]]) -> str:
    return next((_openai_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")


def _openai_tool_to_call(body: dict[str, Any]) -> str | None:
    tools = [tool for tool in body.get("tools") or [] if tool.get("type") == "function"]
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none" or _openai_answers_tool_results(body["messages"]):
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        return str(choice["function"]["name"])
    return str(tools[0]["function"]["name"])


def _openai_answers_tool_results(messages: list[dict[str, Any]]) -> bool:
    for message in reversed(messages):
        if message.get("role") == "assistant":
            return False
        if message.get("role") == "tool":
            return True
    return False


def _openai_usage(reply: _Reply, choices: int = 1) -> dict[str, Any]:
    output = reply.output_tokens * choices
    usage: dict[str, Any] = {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": output,
        "total_tokens": reply.prompt_tokens + output,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
    }
    if reply.reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": _words(reply.reasoning) * choices}
    return usage


def _openai_completion(
    reply: _Reply, *, completion_id: str, model: str, created: int, choices: int = 1
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if reply.tool_call else reply.text,
        "refusal": None,
    }
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_call:
        call = reply.tool_call
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": index, "message": message, "finish_reason": _FINISH_REASONS[reply.stop], "logprobs": None}
            for index in range(choices)
        ],
        "usage": _openai_usage(reply, choices),
        "system_fingerprint": None,
    }


def _openai_chunks(
    reply: _Reply, *, completion_id: str, model: str, created: int, include_usage: bool, choices: int = 1
) -> list[SSEEvent | Delay]:
    """The §1.4 chunk sequence: role, reasoning and content word by word, tool call, finish, usage, [DONE];
    with ``n`` > 1 each delta once per choice, in index order."""
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}

    def chunks(delta: dict[str, Any], finish_reason: str | None = None) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        for index in range(choices):
            data: dict[str, Any] = {
                **head,
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                data["usage"] = None
            out.append((None, data))
        return out

    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"reasoning_content": piece} for piece in _word_pieces(reply.reasoning or "")]
    deltas += [{"content": piece} for piece in _word_pieces(reply.text)]
    if reply.tool_call:
        call = reply.tool_call
        opening = {"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        deltas.append({"tool_calls": [opening]})
        fragments = _halves(call.arguments)
        deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": part}}]} for part in fragments]
    events: list[SSEEvent | Delay] = [event for delta in deltas for event in chunks(delta)]
    events += chunks({}, _FINISH_REASONS[reply.stop])
    if include_usage:
        events.append((None, {**head, "choices": [], "usage": _openai_usage(reply, choices)}))
    events.append((None, "[DONE]"))
    return events


# -- Anthropic Messages (§1.5-1.8) ------------------------------------------------------------------------------

_STOP_REASONS = {"end": "end_turn", "stop_sequence": "stop_sequence", "length": "max_tokens", "tool": "tool_use"}


def _anthropic_blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _anthropic_texts(content: Any) -> list[str]:
    """Every text of a content value, tool_result contents included."""
    texts: list[str] = []
    for block in _anthropic_blocks(content):
        if block.get("type") == "text":
            texts.append(block["text"])
        elif block.get("type") == "tool_result":
            texts += _anthropic_texts(block.get("content", []))
    return texts


def _anthropic_prompt_tokens(body: dict[str, Any]) -> int:
    system = body.get("system")
    parts = [system] if system else []
    parts += [message["content"] for message in body["messages"]]
    return sum(sum(_words(text) for text in _anthropic_texts(part)) + TOKENS_PER_MESSAGE for part in parts)


def _anthropic_has_cache_control(body: dict[str, Any]) -> bool:
    system = body.get("system")
    blocks = [*(_anthropic_blocks(system) if system else []), *(body.get("tools") or [])]
    for message in body["messages"]:
        blocks += _anthropic_blocks(message["content"])
    return "cache_control" in body or any("cache_control" in block for block in blocks)


def _anthropic_validate(body: dict[str, Any]) -> None:
    """The Messages API checks gateways most often trip over (§1.6)."""
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise _InvalidRequestError("messages: at least one message is required")
    system = body.get("system")
    _anthropic_validate_texts("system", _anthropic_blocks(system) if system else [])
    for index, message in enumerate(messages):
        if message.get("role") == "system":
            _anthropic_validate_system_message(body, index)
        elif message.get("role") not in ("user", "assistant"):
            raise _InvalidRequestError(
                f"messages.{index}.role: Input should be 'user' or 'assistant', got {message.get('role')!r}"
            )
        blocks = _anthropic_blocks(message["content"])
        is_final_assistant = index == len(messages) - 1 and message["role"] == "assistant"
        if not is_final_assistant and message["content"] in ("", []):
            raise _InvalidRequestError(
                f"messages.{index}: all messages must have non-empty content except for the optional final "
                "assistant message"
            )
        _anthropic_validate_texts("messages", blocks)
        if not body.get("tools") and any(block.get("type") in ("tool_use", "tool_result") for block in blocks):
            raise _InvalidRequestError("Requests which include `tool_use` or `tool_result` blocks must define tools.")


def _anthropic_validate_system_message(body: dict[str, Any], index: int) -> None:
    """Mid-conversation system messages: only some models, only where Anthropic's placement rules allow."""
    if body["model"] not in MID_CONV_SYSTEM_MODELS:
        raise _InvalidRequestError(f"messages.{index}.role: role 'system' is not supported on this model")
    messages = body["messages"]
    before = messages[index - 1] if index else None
    after = messages[index + 1] if index + 1 < len(messages) else None
    if before is None or before.get("role") != "user":
        raise _InvalidRequestError(f"messages.{index}: a system message must follow a user message")
    if after is not None and after.get("role") != "assistant":
        raise _InvalidRequestError(f"messages.{index}: a system message must precede an assistant message or be last")


def _anthropic_cache_items(body: dict[str, Any]) -> list[tuple[Any, int, bool]]:
    """The prompt in Anthropic's cache order (tools, system, messages): (block sans cache_control, tokens,
    carries a breakpoint) each; a part's first block carries its TOKENS_PER_MESSAGE."""
    items: list[tuple[Any, int, bool]] = []

    def add(role: str, content: Any) -> None:
        for position, block in enumerate(_anthropic_blocks(content)):
            tokens = sum(_words(text) for text in _anthropic_texts([block]))
            plain = {key: value for key, value in block.items() if key != "cache_control"}
            items.append(
                ([role, plain], tokens + (TOKENS_PER_MESSAGE if position == 0 else 0), "cache_control" in block)
            )

    for tool in body.get("tools") or []:
        items.append((["tool", {k: v for k, v in tool.items() if k != "cache_control"}], 0, "cache_control" in tool))
    if body.get("system"):
        add("system", body["system"])
    for message in body["messages"]:
        add(message["role"], message["content"])
    return items


def _anthropic_validate_texts(where: str, blocks: list[dict[str, Any]]) -> None:
    for block in blocks:
        if block.get("type") == "tool_result":
            _anthropic_validate_texts(where, _anthropic_blocks(block.get("content", [])))
        elif block.get("type") == "text" and block["text"] == "":
            raise _InvalidRequestError(f"{where}: text content blocks must be non-empty")
        elif block.get("type") == "text" and not block["text"].strip():
            raise _InvalidRequestError(f"{where}: text content blocks must contain non-whitespace text")


def _anthropic_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        blocks = _anthropic_blocks(message["content"])
        if message["role"] == "user" and not all(block.get("type") == "tool_result" for block in blocks):
            return " ".join(block["text"] for block in blocks if block.get("type") == "text")
    return ""


def _anthropic_answers_tool_results(messages: list[dict[str, Any]]) -> bool:
    for message in reversed(messages):
        if message["role"] == "assistant":
            return False
        if any(block.get("type") == "tool_result" for block in _anthropic_blocks(message["content"])):
            return True
    return False


def _anthropic_tool_to_call(body: dict[str, Any]) -> str | None:
    tools = [tool for tool in body.get("tools") or [] if tool.get("type") in (None, "custom")]  # not server tools
    choice = body.get("tool_choice") or {"type": "auto"}
    if not tools or choice["type"] == "none" or _anthropic_answers_tool_results(body["messages"]):
        return None
    return str(choice["name"] if choice["type"] == "tool" else tools[0]["name"])


def _anthropic_usage(reply: _Reply) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": reply.prompt_tokens - reply.cached_tokens - reply.cache_write_tokens,
        "output_tokens": reply.output_tokens,
        "cache_creation_input_tokens": reply.cache_write_tokens,
        "cache_read_input_tokens": reply.cached_tokens,
    }
    if reply.server_tool_use is not None:
        usage["server_tool_use"] = dict(reply.server_tool_use)
    return usage


def _anthropic_content(reply: _Reply) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if reply.reasoning:
        content.append({"type": "thinking", "thinking": reply.reasoning, "signature": THINKING_SIGNATURE})
    content += [dict(block) for block in reply.server_blocks]
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    if reply.tool_call:
        call = reply.tool_call
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": json.loads(call.arguments)})
    return content


def _anthropic_message(reply: _Reply, *, message_id: str, model: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _anthropic_content(reply),
        "stop_reason": _STOP_REASONS[reply.stop],
        "stop_sequence": reply.stop_sequence,
        "usage": _anthropic_usage(reply),
    }


def _anthropic_event(name: str, **fields: Any) -> SSEEvent:
    return name, {"type": name, **fields}


def _anthropic_block_stream(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A block's ``content_block_start`` payload and its deltas."""
    if block["type"] == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": piece} for piece in _word_pieces(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
        return {"type": "thinking", "thinking": "", "signature": ""}, deltas
    if block["type"] == "text":
        deltas = [{"type": "text_delta", "text": piece} for piece in _word_pieces(block["text"])]
        return {"type": "text", "text": ""}, deltas
    if block["type"] in ("web_search_tool_result", "mcp_tool_result"):
        return block, []  # results arrive whole in content_block_start
    # The real API opens tool input with an empty fragment; converters must not forward it (§4.1).
    fragments = ["", *_halves(json.dumps(block["input"]))]
    return {**block, "input": {}}, [{"type": "input_json_delta", "partial_json": part} for part in fragments]


def _anthropic_events(reply: _Reply, *, message_id: str, model: str) -> list[SSEEvent | Delay]:
    """The §1.8 event sequence; ``message_delta`` carries the cumulative usage."""
    message = _anthropic_message(reply, message_id=message_id, model=model)
    usage = message["usage"]
    opening = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events: list[SSEEvent | Delay] = [_anthropic_event("message_start", message=opening), _anthropic_event("ping")]
    for index, block in enumerate(message["content"]):
        start, deltas = _anthropic_block_stream(block)
        events.append(_anthropic_event("content_block_start", index=index, content_block=start))
        events += [_anthropic_event("content_block_delta", index=index, delta=delta) for delta in deltas]
        events.append(_anthropic_event("content_block_stop", index=index))
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append(_anthropic_event("message_delta", delta=delta, usage=usage))
    events.append(_anthropic_event("message_stop"))
    return events


# -- Gemini generateContent (generativelanguage v1beta) ---------------------------------------------------------

_GEMINI_FINISH_REASONS = {"end": "STOP", "stop_sequence": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}


def _gemini_parts(content: dict[str, Any]) -> list[dict[str, Any]]:
    return list(content.get("parts") or [])


def _gemini_texts(parts: list[dict[str, Any]]) -> list[str]:
    texts = [part["text"] for part in parts if isinstance(part.get("text"), str) and not part.get("thought")]
    for part in parts:
        response = (part.get("functionResponse") or {}).get("response") or {}
        texts += [value for value in response.values() if isinstance(value, str)]
    return texts


def _gemini_prompt_tokens(body: dict[str, Any]) -> int:
    system = body.get("systemInstruction")
    contents = ([system] if system else []) + body["contents"]
    return sum(sum(_words(text) for text in _gemini_texts(_gemini_parts(c))) + TOKENS_PER_MESSAGE for c in contents)


def _gemini_validate(body: dict[str, Any]) -> None:
    """The checks gateways trip over: roles, empty parts, function responses without a matching call."""
    contents = body["contents"]
    if not isinstance(contents, list) or not contents:
        raise _InvalidRequestError("* GenerateContentRequest.contents: contents is not specified")
    called: set[str] = set()
    for index, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            raise _InvalidRequestError(f"Please use a valid role: user, model. (contents[{index}])")
        parts = _gemini_parts(content)
        if not parts:
            raise _InvalidRequestError(
                f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not be empty."
            )
        for part in parts:
            if "functionCall" in part:
                called.add(part["functionCall"]["name"])
            if "functionResponse" in part and part["functionResponse"]["name"] not in called:
                raise _InvalidRequestError(
                    f"* GenerateContentRequest.contents[{index}]: functionResponse has no preceding functionCall"
                )
            if "text" in part and not isinstance(part["text"], str):
                raise _InvalidRequestError(f"* GenerateContentRequest.contents[{index}].parts: text must be a string")


def _gemini_user_text(contents: list[dict[str, Any]]) -> str:
    for content in reversed(contents):
        parts = _gemini_parts(content)
        if content["role"] == "user" and not all("functionResponse" in part for part in parts):
            return " ".join(part["text"] for part in parts if isinstance(part.get("text"), str))
    return ""


def _gemini_tool_to_call(body: dict[str, Any]) -> str | None:
    declarations = [d for tool in body.get("tools") or [] for d in tool.get("functionDeclarations") or []]
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if not declarations or config.get("mode") == "NONE":
        return None
    last = body["contents"][-1]
    if last["role"] == "user" and any("functionResponse" in part for part in _gemini_parts(last)):
        return None
    allowed = config.get("allowedFunctionNames") or []
    return str(allowed[0] if config.get("mode") == "ANY" and allowed else declarations[0]["name"])


def _gemini_usage(reply: _Reply, *, final: bool = True, text_words: int | None = None) -> dict[str, Any]:
    candidates = (_words(reply.text) if text_words is None else text_words) + (
        TOKENS_PER_TOOL_CALL if reply.tool_call and final else 0
    )
    thoughts = _words(reply.reasoning or "")
    usage: dict[str, Any] = {"promptTokenCount": reply.prompt_tokens, "candidatesTokenCount": candidates}
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    if reply.cached_tokens:
        usage["cachedContentTokenCount"] = reply.cached_tokens
    usage["totalTokenCount"] = reply.prompt_tokens + candidates + thoughts
    return usage


def _gemini_reply_parts(reply: _Reply) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if reply.reasoning:
        parts.append({"text": reply.reasoning, "thought": True})
    if reply.text:
        parts.append({"text": reply.text})
    if reply.tool_call:
        call = reply.tool_call
        parts.append({
            "functionCall": {"id": call.id, "name": call.name, "args": json.loads(call.arguments)},
            "thoughtSignature": "c2lnX21vY2tfZ2VtaW5p",
        })  # fmt: skip
    return parts


def _gemini_response(reply: _Reply, *, model: str, response_id: str) -> dict[str, Any]:
    candidate = {
        "content": {"role": "model", "parts": _gemini_reply_parts(reply)},
        "finishReason": _GEMINI_FINISH_REASONS[reply.stop],
        "index": 0,
    }
    return {
        "candidates": [candidate],
        "usageMetadata": _gemini_usage(reply),
        "modelVersion": model,
        "responseId": response_id,
    }


def _gemini_chunks(reply: _Reply, *, model: str, response_id: str) -> list[SSEEvent | Delay]:
    """Thought, then text word by word, each chunk with running usage; the last one adds finishReason."""
    head = {"modelVersion": model, "responseId": response_id}

    def chunk(parts: list[dict[str, Any]], usage: dict[str, Any], finish: str | None = None) -> SSEEvent:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return None, {"candidates": [candidate], "usageMetadata": usage, **head}

    events: list[SSEEvent | Delay] = []
    if reply.reasoning:
        events.append(
            chunk([{"text": reply.reasoning, "thought": True}], _gemini_usage(reply, final=False, text_words=0))
        )
    pieces = _word_pieces(reply.text)
    for position, piece in enumerate(pieces[:-1] if not reply.tool_call else pieces, start=1):
        events.append(chunk([{"text": piece}], _gemini_usage(reply, final=False, text_words=position)))
    last_parts = [part for part in _gemini_reply_parts(reply) if "functionCall" in part]
    if pieces and not reply.tool_call:
        last_parts = [{"text": pieces[-1]}]
    events.append(chunk(last_parts, _gemini_usage(reply), _GEMINI_FINISH_REASONS[reply.stop]))
    return events


# -- OpenAI Responses (PROTOCOLS-RESPONSES §1, §2) ------------------------------------------------------------------

RESPONSES_ENCRYPTED_PREFIX = "enc_mock_"  # the mock's own "ciphertext": anything else fails verification
_RESPONSES_FIELDS = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "max_output_tokens",
        "max_tool_calls", "stream", "stream_options", "temperature", "top_p", "top_logprobs", "reasoning", "text",
        "include", "store", "previous_response_id", "prompt_cache_key", "prompt_cache_retention",
        "safety_identifier", "user", "service_tier", "truncation", "metadata", "background", "conversation",
        "prompt", "context_management", "client_metadata",
    }
)  # fmt: skip
_RESPONSES_MOVED = {
    "messages": "input", "max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort", "response_format": "text.format", "functions": "tools",
    "function_call": "tool_choice", "system": "instructions", "stop": None, "stop_sequences": None, "n": None,
    "thinking": None,
}  # fmt: skip
_RESPONSES_TOOL_TYPES = ("function", "custom", "namespace", "web_search", "web_search_preview")


def _responses_validate(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The API's checks: moved/unknown fields, max_output_tokens ≥ 16, item shapes, outputs after their calls."""
    for name in body:
        if name in _RESPONSES_MOVED:
            moved = _RESPONSES_MOVED[name]
            hint = f" In the Responses API, this parameter has moved to '{moved}'." if moved else ""
            raise _InvalidRequestError(f"Unsupported parameter: '{name}'.{hint}", param=name,
                                       code="unsupported_parameter")  # fmt: skip
        if name not in _RESPONSES_FIELDS:
            raise _InvalidRequestError(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    cap = body.get("max_output_tokens")
    if cap is not None and (not isinstance(cap, int) or cap < 16):
        raise _InvalidRequestError(
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got {cap} "
            "instead.", param="max_output_tokens", code="integer_below_min_value",
        )  # fmt: skip
    if body.get("previous_response_id"):
        raise _InvalidRequestError(f"Previous response with id '{body['previous_response_id']}' not found.",
                                   param="previous_response_id", code="previous_response_not_found")  # fmt: skip
    for index, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or tool.get("type") not in _RESPONSES_TOOL_TYPES:
            raise _InvalidRequestError(f"Invalid value for 'tools[{index}].type'.", param=f"tools[{index}].type",
                                       code="invalid_value")  # fmt: skip
        if tool["type"] in ("function", "custom") and not tool.get("name"):
            raise _InvalidRequestError("Missing required parameter: 'tools[{index}].name'.",
                                       param=f"tools[{index}].name", code="missing_required_parameter")  # fmt: skip
        if tool["type"] == "function" and "input_schema" in tool:
            raise _InvalidRequestError(f"Unknown parameter: 'tools[{index}].input_schema'.",
                                       param=f"tools[{index}].input_schema", code="unknown_parameter")  # fmt: skip
    source = body.get("input")
    if source is None:
        raise _InvalidRequestError("Missing required parameter: 'input'.", param="input",
                                   code="missing_required_parameter")  # fmt: skip
    items = [{"type": "message", "role": "user", "content": source}] if isinstance(source, str) else source
    if not isinstance(items, list):
        raise _InvalidRequestError("Invalid type for 'input'.", param="input", code="invalid_type")
    calls: set[str] = set()
    for index, item in enumerate(items):
        where = f"input[{index}]"
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            if item.get("role") not in ("user", "assistant", "system", "developer"):
                raise _InvalidRequestError(f"Invalid value for '{where}.role'.", param=f"{where}.role",
                                           code="invalid_value")  # fmt: skip
            content = item.get("content")
            if not isinstance(content, (str, list)):
                raise _InvalidRequestError(f"Invalid type for '{where}.content'.", param=f"{where}.content",
                                           code="invalid_type")  # fmt: skip
            allowed = ("output_text", "refusal") if item["role"] == "assistant" else (
                "input_text", "input_image", "input_file")  # fmt: skip
            for part in content if isinstance(content, list) else []:
                if part.get("type") not in allowed:
                    raise _InvalidRequestError(
                        f"Invalid value: '{part.get('type')}'. Supported values are: "
                        + " and ".join(f"'{kind}'" for kind in allowed) + ".",
                        param=f"{where}.content", code="invalid_value",
                    )  # fmt: skip
        elif kind in ("function_call", "custom_tool_call"):
            field_name = "arguments" if kind == "function_call" else "input"
            for name in ("call_id", "name", field_name):
                if not isinstance(item.get(name), str):
                    raise _InvalidRequestError(f"Missing required parameter: '{where}.{name}'.",
                                               param=f"{where}.{name}", code="missing_required_parameter")  # fmt: skip
            calls.add(item["call_id"])
        elif kind in ("function_call_output", "custom_tool_call_output"):
            if item.get("call_id") not in calls:
                raise _InvalidRequestError(
                    f"No tool call found for function call output with call_id {item.get('call_id')}.",
                    param="input",
                )
        elif kind == "reasoning":
            if not item.get("id") or not isinstance(item.get("summary"), list):
                raise _InvalidRequestError(f"Missing required parameter: '{where}.summary'.",
                                           param=f"{where}.summary", code="missing_required_parameter")  # fmt: skip
            encrypted = item.get("encrypted_content")
            if encrypted is None:
                raise _InvalidRequestError(
                    f"Item with id '{item['id']}' not found. Items are not persisted when `store` is set to false. "
                    "Try again with `store` set to true, or remove this item from your input.",
                    param="input", status=404,
                )
            if not str(encrypted).startswith(RESPONSES_ENCRYPTED_PREFIX):
                raise _InvalidRequestError("The encrypted content could not be verified.", param="input",
                                           code="invalid_encrypted_content")  # fmt: skip
        else:
            raise _InvalidRequestError(f"Invalid value for '{where}.type': {kind!r}.", param=f"{where}.type",
                                       code="invalid_value")  # fmt: skip
    return items


def _responses_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(part.get("text") or "" for part in content or [] if part.get("type") in ("input_text", "output_text"))


def _responses_prompt_tokens(body: dict[str, Any], items: list[dict[str, Any]]) -> int:
    words = _words(body.get("instructions") or "")
    for item in items:
        if item.get("type", "message") == "message":
            words += _words(_responses_text(item.get("content"))) + TOKENS_PER_MESSAGE
        elif item.get("type") == "function_call_output":
            words += _words(str(item.get("output"))) + TOKENS_PER_MESSAGE
    return words


def _responses_user_text(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        if item.get("type", "message") == "message" and item.get("role") == "user":
            return _responses_text(item.get("content"))
    return ""


def _responses_tool_to_call(body: dict[str, Any], items: list[dict[str, Any]]) -> str | None:
    tools = [tool for tool in body.get("tools") or [] if tool.get("type") == "function"]
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    for item in reversed(items):
        if item.get("type") in ("function_call_output", "custom_tool_call_output"):
            return None
        if item.get("type", "message") == "message":
            break
    if isinstance(choice, dict) and choice.get("type") == "function":
        return str(choice["name"])
    return str(tools[0]["name"])


def _responses_usage(reply: _Reply) -> dict[str, Any]:
    reasoning = _words(reply.reasoning or "")
    return {
        "input_tokens": reply.prompt_tokens,
        "input_tokens_details": {"cached_tokens": reply.cached_tokens},
        "output_tokens": reply.output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": reply.prompt_tokens + reply.output_tokens,
    }


def _responses_object(
    reply: _Reply, body: dict[str, Any], *, response_id: str, new_id: Callable[[str], str], created: int
) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if reply.reasoning:
        item: dict[str, Any] = {"id": new_id("rs_mock"), "type": "reasoning", "summary": []}
        if (body.get("reasoning") or {}).get("summary"):
            item["summary"] = [{"type": "summary_text", "text": reply.reasoning}]
        if "reasoning.encrypted_content" in (body.get("include") or []):
            item["encrypted_content"] = RESPONSES_ENCRYPTED_PREFIX + item["id"]
        output.append(item)
    incomplete = reply.stop == "length"
    if reply.text:
        output.append({
            "id": new_id("msg_mock"), "type": "message", "role": "assistant",
            "status": "incomplete" if incomplete else "completed",
            "content": [{"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}],
        })  # fmt: skip
    if reply.tool_call:
        call = reply.tool_call
        output.append({"id": new_id("fc_mock"), "type": "function_call", "status": "completed", "call_id": call.id,
                       "name": call.name, "arguments": call.arguments})  # fmt: skip
    return {
        "id": response_id, "object": "response", "created_at": created,
        "status": "incomplete" if incomplete else "completed",
        "error": None, "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.get("instructions"), "model": body["model"], "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True), "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [], "store": body.get("store", True), "usage": _responses_usage(reply),
    }  # fmt: skip


def _responses_events(response: dict[str, Any]) -> list[SSEEvent | Delay]:
    """The §2.2 grammar: created, in_progress, each item added → deltas → done, then the terminal event."""
    events: list[SSEEvent | Delay] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append((kind, {"type": kind, "sequence_number": len(events), **fields}))

    opening = {**response, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    emit("response.created", response=opening)
    emit("response.in_progress", response=opening)
    for index, item in enumerate(response["output"]):
        kind, item_id = item["type"], item["id"]
        skeleton = {**item, "status": "in_progress"} if "status" in item else dict(item)
        if kind == "message":
            skeleton["content"] = []
        elif kind == "reasoning":
            skeleton["summary"] = []
            skeleton.pop("encrypted_content", None)
        elif kind == "function_call":
            skeleton["arguments"] = ""
        emit("response.output_item.added", output_index=index, item=skeleton)
        if kind == "message":
            text = item["content"][0]["text"]
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            emit("response.content_part.added", item_id=item_id, output_index=index, content_index=0, part=empty)
            for piece in _word_pieces(text):
                emit("response.output_text.delta", item_id=item_id, output_index=index, content_index=0, delta=piece,
                     logprobs=[])  # fmt: skip
            emit("response.output_text.done", item_id=item_id, output_index=index, content_index=0, text=text,
                 logprobs=[])  # fmt: skip
            emit("response.content_part.done", item_id=item_id, output_index=index, content_index=0,
                 part=item["content"][0])  # fmt: skip
        elif kind == "reasoning":
            for summary_index, part in enumerate(item["summary"]):
                emit("response.reasoning_summary_part.added", item_id=item_id, output_index=index,
                     summary_index=summary_index, part={"type": "summary_text", "text": ""})  # fmt: skip
                for piece in _word_pieces(part["text"]):
                    emit("response.reasoning_summary_text.delta", item_id=item_id, output_index=index,
                         summary_index=summary_index, delta=piece)  # fmt: skip
                emit("response.reasoning_summary_text.done", item_id=item_id, output_index=index,
                     summary_index=summary_index, text=part["text"])  # fmt: skip
                emit("response.reasoning_summary_part.done", item_id=item_id, output_index=index,
                     summary_index=summary_index, part=part)  # fmt: skip
        elif kind == "function_call":
            for piece in _halves(item["arguments"]):
                emit("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=piece)
            emit("response.function_call_arguments.done", item_id=item_id, output_index=index,
                 arguments=item["arguments"], name=item["name"])  # fmt: skip
        emit("response.output_item.done", output_index=index, item=item)
    emit(f"response.{response['status']}", response=response)
    return events
