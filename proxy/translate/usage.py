"""Normalized billing usage (G6), its mapping to both wire shapes (§3.2), and local token estimates.

Token counts an upstream reports are bounded where they enter (issue 8): every `Usage` checks its
counts when it is built, so OpenAI, Anthropic, Gemini and media usage all pass the same gate. A
count that is not a non-negative integer (negative, fractional, NaN, a string) or that is absurd —
above MAX_REPORTED_TOKENS, or output far above the upstream request's own output cap — is replaced
by a bounded figure (see `Usage.__post_init__`), the usage is marked `estimated` (the usage event's
`is_estimated`) and a warning names the field and the number, nothing else.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace

logger = logging.getLogger(__name__)

# Local estimates are only used when the upstream reports nothing (or before it does, for holds and
# message_start): about 4 UTF-8 bytes per token, and fixed amounts for media that we do not decode.
BYTES_PER_TOKEN = 4
IMAGE_TOKENS = 1000  # between OpenAI's 765 (1024² high detail) and Anthropic's ~1600 (1.15 MP)
DOCUMENT_TOKENS = 3000  # a few PDF pages; audio counts the same
MESSAGE_OVERHEAD_TOKENS = 4  # role and framing tokens per message

# Upper bounds for holds (issue 12): what a request's prompt can cost at most, whatever its text.
# Byte-level BPE tokenizers (OpenAI, Anthropic) and SentencePiece with byte fallback (Gemini, Llama)
# never produce more tokens than the UTF-8 bytes they read, so the bytes of the request's JSON (every
# text field plus the syntax around it, which outweighs the few role/framing tokens per message) bound
# its text tokens. Media are counted apart, at a fixed bound each, and the model's context window (an
# upstream refuses a longer prompt) caps the sum when the catalog knows it.
IMAGE_TOKENS_BOUND = 6000  # largest per-image cost of the providers served: OpenAI patch models ≈ 2.5k-4k,
# gpt-4o high detail 768×2048 = 1445, Claude ≈ 1.6k (1.15 MP; ≈ 4.8k for its largest high-resolution tier)
DOCUMENT_TOKENS_BOUND = 100_000  # a PDF, file or audio part: a PDF's compressed text can beat its byte size
TOOLS_PROMPT_TOKENS_BOUND = 1024  # the system prompt a provider adds when tools are present (Anthropic ≈ 350)
_MEDIA_PART_TYPES = frozenset({"image_url", "image", "input_image", "input_audio", "file", "input_file"})

# Bounds on reported counts. No model reads more than ~10M tokens of context today: ten times that
# in one count is a broken upstream, not a bill. Output other than reported reasoning may exceed the
# request's cap a little (providers count framing loosely) but never "by far": 2 × cap + OUTPUT_SLACK_TOKENS.
# Reasoning is left out of that check: some providers (DeepSeek's reasoner) do not count it in the cap.
MAX_REPORTED_TOKENS = 100_000_000
OUTPUT_SLACK_TOKENS = 1024
# Server tools run inside one request: a few dozen at most (max_uses caps them). Beyond this: a broken upstream.
MAX_SERVER_TOOL_REQUESTS = 1_000
_COUNT_FIELDS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


@dataclass
class UsageBounds:
    """What the upstream request being answered allows; set per attempt by the upstream client.

    `max_output_tokens`: the output cap the upstream was sent (None: none was sent).
    `input_estimate`: the gateway's estimate of the prompt, computed only if a count needs replacing.
    """

    max_output_tokens: int | None = None
    input_estimate: Callable[[], int] | None = None
    logged: set[str] = field(default_factory=set)
    choices: int = 1  # O `n` / Gemini candidateCount: each choice may produce up to the cap

    @property
    def output_ceiling(self) -> int | None:
        """The most non-reasoning output tokens billed as reported; above it the cap is billed."""
        cap = self.max_output_tokens
        return None if cap is None else self.choices * (2 * cap + OUTPUT_SLACK_TOKENS)

    @property
    def output_replacement(self) -> int | None:
        """What absurd output is billed as: the cap of every choice (what the hold covered)."""
        cap = self.max_output_tokens
        return None if cap is None else self.choices * cap


# The bounds of the current request's latest upstream attempt. A context variable because usage is
# parsed deep inside the protocol converters, which know nothing about the request; each request runs
# in its own task, so one request's bounds never reach another.
_bounds: ContextVar[UsageBounds | None] = ContextVar("ruapi_usage_bounds", default=None)


def expect_usage(bounds: UsageBounds | None) -> None:
    """Bound the usage parsed from now on in this task (None: only the absolute bounds apply)."""
    _bounds.set(bounds)


def current_usage_bounds() -> UsageBounds | None:
    return _bounds.get()


def _report(problems: list[str]) -> None:
    """One warning per distinct problem and request: field names and numbers only, never payloads."""
    bounds = _bounds.get()
    if bounds is not None:
        problems = [problem for problem in problems if problem not in bounds.logged]
        bounds.logged.update(problems)
    if problems:
        logger.warning("upstream usage out of bounds, billed a bounded estimate: %s", "; ".join(problems))


def _wire_count(value: object, name: str, problems: list[str]) -> int:
    """A token count from a wire field. Missing/null: 0. A non-negative integer (or integral float) as
    sent — even a huge one, which `Usage` bounds. Anything else is recorded as a problem: fractional
    counts round up; negative, NaN, infinite and non-numbers count 0."""
    if type(value) is int:
        if value >= 0:
            return value
        problems.append(f"{name}={value} is negative")
        return 0
    if value is None:
        return 0
    if isinstance(value, float) and not isinstance(value, bool):
        if math.isfinite(value) and value >= 0:
            if value.is_integer():
                return int(value)
            problems.append(f"{name}={value!r} is fractional")
            return math.ceil(value)
        problems.append(f"{name}={value!r} is not a count")
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:  # an int subclass
        return int(value)
    problems.append(f"{name} is a {type(value).__name__}, not a count")
    return 0


@dataclass
class Usage:
    """Normalized billing usage (PROTOCOLS G6); all counts are tokens, each bounded when built."""

    input_tokens: int = 0  # uncached input
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0  # includes reasoning
    reasoning_tokens: int = 0  # part of output_tokens
    # Server tools the upstream ran and charges per use (A usage.server_tool_use, issue 14); parsed through
    # _wire_count like the token counts, so a malformed value counts 0 and is logged.
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    estimated: bool = False  # counted locally: the upstream gave no usage, or counts out of bounds were replaced

    def __post_init__(self) -> None:
        # The common case costs a handful of comparisons: in-range ints and output within the cap.
        limit = MAX_REPORTED_TOKENS
        output, reasoning = self.output_tokens, self.reasoning_tokens
        if (
            type(self.input_tokens) is int and 0 <= self.input_tokens <= limit
            and type(self.cache_read_tokens) is int and 0 <= self.cache_read_tokens <= limit
            and type(self.cache_write_tokens) is int and 0 <= self.cache_write_tokens <= limit
            and type(output) is int and 0 <= output <= limit
            and type(reasoning) is int and reasoning >= 0
        ):  # fmt: skip
            bounds = _bounds.get()
            ceiling = None if bounds is None else bounds.output_ceiling
            if ceiling is None or output - min(reasoning, output) <= ceiling:
                if reasoning > output:
                    self.reasoning_tokens = output  # reasoning is part of output, never more
                return
        self._bound()

    def _bound(self) -> None:
        """Replace out-of-bounds counts. Absurd input counts become the gateway's own input estimate (what
        the hold was made from) when known, cache counts 0; absurd output becomes the request's output
        cap when it had one (what the hold covered), else 0."""
        problems: list[str] = []
        counts = {name: _wire_count(getattr(self, name), name, problems) for name in _COUNT_FIELDS}
        bounds = _bounds.get()
        for name, count in counts.items():
            if count <= MAX_REPORTED_TOKENS or name == "reasoning_tokens":
                continue
            problems.append(f"{name}={count} is above {MAX_REPORTED_TOKENS}")
            if name == "input_tokens" and bounds is not None and bounds.input_estimate is not None:
                counts[name] = bounds.input_estimate()
            elif name == "output_tokens" and bounds is not None and bounds.max_output_tokens is not None:
                counts[name] = bounds.output_replacement
            else:
                counts[name] = 0
        counts["reasoning_tokens"] = min(counts["reasoning_tokens"], counts["output_tokens"])
        ceiling = None if bounds is None else bounds.output_ceiling
        visible = counts["output_tokens"] - counts["reasoning_tokens"]
        if ceiling is not None and visible > ceiling:
            problems.append(
                f"output_tokens={counts['output_tokens']} is far above the request's max tokens "
                f"{bounds.max_output_tokens}"
            )
            counts["output_tokens"] = counts["reasoning_tokens"] + bounds.output_replacement
        for name, count in counts.items():
            setattr(self, name, count)
        if problems:
            self.estimated = True
            _report(problems)

    @property
    def prompt_tokens(self) -> int:
        """All input, cached or not: O's prompt_tokens."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        """Prompt plus output."""
        return self.prompt_tokens + self.output_tokens


def _details(usage: dict, key: str) -> dict:
    value = usage.get(key)
    return value if isinstance(value, dict) else {}


def _parsed(problems: list[str], **counts: int) -> Usage:
    if problems:
        _report(problems)
    return Usage(**counts, estimated=bool(problems))


def usage_from_openai(usage: dict | None) -> Usage:
    """Normalize an O usage dict; O prompt_tokens include cached and cache-written tokens (§3.2)."""
    if not usage or not isinstance(usage, dict):
        return Usage()
    return usage_cached_in_prompt(usage, prompt="prompt_tokens", output="completion_tokens")


def usage_cached_in_prompt(usage: dict, *, prompt: str, output: str) -> Usage:
    """OpenAI-style usage, whose prompt count includes cached and cache-written tokens: Chat Completions
    (prompt_tokens / completion_tokens) and the Responses API (input_tokens / output_tokens), each count
    with its `<name>_details`."""
    problems: list[str] = []
    prompt_details = _details(usage, f"{prompt}_details")
    output_details = _details(usage, f"{output}_details")
    cache_read = _wire_count(prompt_details.get("cached_tokens"), "cached_tokens", problems)
    cache_write = _wire_count(prompt_details.get("cache_write_tokens"), "cache_write_tokens", problems)
    prompt_count = _wire_count(usage.get(prompt), prompt, problems)
    return _parsed(
        problems,
        input_tokens=max(prompt_count - cache_read - cache_write, 0),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=_wire_count(usage.get(output), output, problems),
        reasoning_tokens=_wire_count(output_details.get("reasoning_tokens"), "reasoning_tokens", problems),
    )


def _server_tool_counts(usage: dict, problems: list[str]) -> dict[str, int]:
    """Counts of A `usage.server_tool_use` (web_search_requests, web_fetch_requests) that are present."""
    server = _details(usage, "server_tool_use")
    counts = {}
    for name in ("web_search_requests", "web_fetch_requests"):
        if server.get(name) is not None:
            count = _wire_count(server[name], name, problems)
            if count > MAX_SERVER_TOOL_REQUESTS:
                problems.append(f"{name}={count} is above {MAX_SERVER_TOOL_REQUESTS}")
                count = MAX_SERVER_TOOL_REQUESTS
            counts[name] = count
    return counts


def usage_from_anthropic(usage: dict | None) -> Usage:
    """Normalize an A usage dict; A input_tokens already exclude cache reads and writes (§1.7)."""
    if not usage or not isinstance(usage, dict):
        return Usage()
    problems: list[str] = []
    return _parsed(
        problems,
        **_server_tool_counts(usage, problems),
        input_tokens=_wire_count(usage.get("input_tokens"), "input_tokens", problems),
        cache_read_tokens=_wire_count(usage.get("cache_read_input_tokens"), "cache_read_input_tokens", problems),
        cache_write_tokens=_wire_count(
            usage.get("cache_creation_input_tokens"), "cache_creation_input_tokens", problems
        ),
        output_tokens=_wire_count(usage.get("output_tokens"), "output_tokens", problems),
        reasoning_tokens=_wire_count(
            _details(usage, "output_tokens_details").get("thinking_tokens"), "thinking_tokens", problems
        ),
    )


def usage_merge_anthropic(current: Usage, usage: dict) -> Usage:
    """Apply a message_delta usage: values are cumulative, so overwrite, never add (§4.1, tensorzero#5481)."""
    # Same rule as the Anthropic SDK accumulator: output always, input/cache fields only when non-null.
    fields = {
        "input_tokens": "input_tokens",
        "cache_read_input_tokens": "cache_read_tokens",
        "cache_creation_input_tokens": "cache_write_tokens",
        "output_tokens": "output_tokens",
    }
    problems: list[str] = []
    changes = {
        ours: _wire_count(usage[theirs], theirs, problems)
        for theirs, ours in fields.items()
        if usage.get(theirs) is not None
    }
    thinking = _details(usage, "output_tokens_details").get("thinking_tokens")
    if thinking is not None:
        changes["reasoning_tokens"] = _wire_count(thinking, "thinking_tokens", problems)
    changes |= _server_tool_counts(usage, problems)  # cumulative like the rest
    if problems:
        _report(problems)
    return replace(current, **changes, estimated=current.estimated or bool(problems))


def usage_to_openai(usage: Usage) -> dict:
    """Render O usage (§1.3, §3.2): cache_write_tokens and reasoning details only when non-zero."""
    prompt_details: dict[str, int] = {"cached_tokens": usage.cache_read_tokens}
    if usage.cache_write_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens
    rendered: dict = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt_details,
    }
    if usage.reasoning_tokens:
        rendered["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return rendered


def usage_to_anthropic(usage: Usage) -> dict:
    """Render A usage; both cache fields always present because Claude Code reads them (§3.2)."""
    rendered: dict = {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens,
    }
    if usage.reasoning_tokens:
        rendered["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return rendered


def estimate_text_tokens(text: str) -> int:
    """Estimate tokens as ceil(UTF-8 bytes / 4): never 0 for non-empty text."""
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


def _estimate_json(value: object) -> int:
    return estimate_text_tokens(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def _estimate_str(value: object) -> int:
    return estimate_text_tokens(value) if isinstance(value, str) else 0


def _openai_content_tokens(content: object) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            total += _estimate_str(part.get("text"))
        elif kind == "refusal":
            total += _estimate_str(part.get("refusal"))
        elif kind == "image_url":
            total += IMAGE_TOKENS
        elif kind in ("file", "input_audio"):
            total += DOCUMENT_TOKENS
    return total


def estimate_openai_prompt_tokens(body: dict) -> int:
    """Estimate an O request's prompt: message texts, tool calls and tool definitions, media at fixed rates."""
    total = 0
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        total += MESSAGE_OVERHEAD_TOKENS + _openai_content_tokens(message.get("content"))
        for call in message.get("tool_calls") or []:
            function = (call.get("function") if isinstance(call, dict) else None) or {}
            total += _estimate_str(function.get("name")) + _estimate_str(function.get("arguments"))
    if body.get("tools"):
        total += _estimate_json(body["tools"])
    return total


def _anthropic_content_tokens(content: object) -> int:
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            total += _estimate_str(block.get("text"))
        elif kind == "thinking":
            total += _estimate_str(block.get("thinking"))
        elif kind == "image":
            total += IMAGE_TOKENS
        elif kind == "document":
            source = block.get("source") or {}
            if source.get("type") == "text":
                total += _estimate_str(source.get("data"))
            elif source.get("type") == "content":
                total += _anthropic_content_tokens(source.get("content"))
            else:
                total += DOCUMENT_TOKENS
        elif kind == "tool_use":
            total += _estimate_str(block.get("name")) + _estimate_json(block.get("input") or {})
        elif kind in ("tool_result", "search_result"):
            total += _anthropic_content_tokens(block.get("content"))
    return total


def estimate_anthropic_prompt_tokens(body: dict) -> int:
    """Estimate an A request's prompt: system, message blocks and tool definitions, media at fixed rates."""
    total = _anthropic_content_tokens(body.get("system"))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            total += MESSAGE_OVERHEAD_TOKENS + _anthropic_content_tokens(message.get("content"))
    if body.get("tools"):
        total += _estimate_json(body["tools"])
    return total


def _responses_content_tokens(content: object) -> int:
    if isinstance(content, str):
        return _estimate_str(content)
    total = 0
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "summary_text", "reasoning_text"):
            total += _estimate_str(part.get("text"))
        elif kind == "refusal":
            total += _estimate_str(part.get("refusal"))
        elif kind == "input_image":
            total += IMAGE_TOKENS
        elif kind == "input_file":
            total += DOCUMENT_TOKENS
    return total


def estimate_responses_prompt_tokens(body: dict, items: list[dict]) -> int:
    """Estimate an R request's prompt: instructions, its items (expanded from the store) and tool
    definitions, media at fixed rates; a reasoning item counts its readable parts, not the ciphertext."""
    total = _estimate_str(body.get("instructions"))
    for item in items:
        kind = item.get("type")
        if kind == "message":
            total += MESSAGE_OVERHEAD_TOKENS + _responses_content_tokens(item.get("content"))
        elif kind == "function_call":
            total += _estimate_str(item.get("name")) + _estimate_str(item.get("arguments"))
        elif kind == "custom_tool_call":
            total += _estimate_str(item.get("name")) + _estimate_str(item.get("input"))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            total += _responses_content_tokens(item.get("output"))
        elif kind == "reasoning":
            total += _responses_content_tokens(item.get("summary")) + _responses_content_tokens(item.get("content"))
        else:
            total += _estimate_json(item)
    if body.get("tools"):
        total += _estimate_json(body["tools"])
    return total


def _openai_output_text(message: dict) -> str:
    parts = [message.get(key) for key in ("content", "refusal", "reasoning_content", "reasoning")]
    for call in message.get("tool_calls") or []:
        function = (call.get("function") if isinstance(call, dict) else None) or {}
        parts += [function.get("name"), function.get("arguments")]
    return "".join(part for part in parts if isinstance(part, str))


def openai_response_usage(resp: dict, input_estimate: int) -> Usage:
    """Usage of an O response; estimated from `input_estimate` and the output text when the upstream sent none."""
    if resp.get("usage"):
        return usage_from_openai(resp["usage"])
    choices = resp.get("choices") or [{}]
    output = _openai_output_text(choices[0].get("message") or {})
    return Usage(input_tokens=input_estimate, output_tokens=estimate_text_tokens(output), estimated=True)


def anthropic_response_usage(resp: dict, input_estimate: int) -> Usage:
    """Usage of an A response; estimated from `input_estimate` and the content when the upstream sent none."""
    if resp.get("usage"):
        return usage_from_anthropic(resp["usage"])
    output = _anthropic_content_tokens(resp.get("content"))
    return Usage(input_tokens=input_estimate, output_tokens=output, estimated=True)


# -- upper bounds for holds (issue 12) -------------------------------------------------------------------


def bound_text_tokens(text: str) -> int:
    """Most tokens `text` can be: its UTF-8 bytes (no BPE tokenizer makes more tokens than bytes)."""
    return len(text.encode("utf-8"))


def _is_media(part: dict) -> bool:
    kind = part.get("type")
    if kind == "document":  # A: text and content documents are text (counted as bytes), others are media
        source = part.get("source")
        return not (isinstance(source, dict) and source.get("type") in ("text", "content"))
    return kind in _MEDIA_PART_TYPES


def _media_bound(value: object) -> tuple[int, int]:
    """(JSON bytes of the media parts inside `value`, their token bound): media are priced apart."""
    if isinstance(value, list):
        pairs = [_media_bound(item) for item in value]
        return sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    if not isinstance(value, dict):
        return 0, 0
    if _is_media(value):
        bound = (
            IMAGE_TOKENS_BOUND
            if value.get("type") in ("image_url", "image", "input_image")
            else (DOCUMENT_TOKENS_BOUND)
        )
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()), bound
    pairs = [_media_bound(item) for item in value.values() if isinstance(item, (dict, list))]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def bound_prompt_tokens(body: dict, *, body_bytes: int | None = None) -> int:
    """Most input tokens a chat request (either protocol) can be billed, before the context window cap.

    The UTF-8 bytes of the whole JSON body — every text field, tool definition, schema and the syntax
    around them — except media parts, which count IMAGE_TOKENS_BOUND / DOCUMENT_TOKENS_BOUND each;
    plus TOOLS_PROMPT_TOKENS_BOUND when tools are declared. `body_bytes`: the body's size when known.
    """
    if body_bytes is None:
        body_bytes = len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    media_bytes, media_tokens = _media_bound([body.get("messages"), body.get("system")])
    tools = TOOLS_PROMPT_TOKENS_BOUND if body.get("tools") or body.get("functions") else 0
    return max(body_bytes - media_bytes, 0) + media_tokens + tools
