"""Normalized billing usage (G6), its mapping to both wire shapes (§3.2), and local token estimates."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

# Local estimates are only used when the upstream reports nothing (or before it does, for holds and
# message_start): about 4 UTF-8 bytes per token, and fixed amounts for media that we do not decode.
BYTES_PER_TOKEN = 4
IMAGE_TOKENS = 1000  # between OpenAI's 765 (1024² high detail) and Anthropic's ~1600 (1.15 MP)
DOCUMENT_TOKENS = 3000  # a few PDF pages; audio counts the same
MESSAGE_OVERHEAD_TOKENS = 4  # role and framing tokens per message


@dataclass
class Usage:
    """Normalized billing usage (PROTOCOLS G6); all counts are tokens."""

    input_tokens: int = 0  # uncached input
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0  # includes reasoning
    reasoning_tokens: int = 0  # part of output_tokens
    estimated: bool = False  # counted locally because the upstream gave no usage

    @property
    def prompt_tokens(self) -> int:
        """All input, cached or not: O's prompt_tokens."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        """Prompt plus output."""
        return self.prompt_tokens + self.output_tokens


def _count(value: object) -> int:
    """A token count from a wire field: missing, null or junk count as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_openai(usage: dict | None) -> Usage:
    """Normalize an O usage dict; O prompt_tokens include cached and cache-written tokens (§3.2)."""
    if not usage:
        return Usage()
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    cache_read = _count(prompt_details.get("cached_tokens"))
    cache_write = _count(prompt_details.get("cache_write_tokens"))
    return Usage(
        input_tokens=max(_count(usage.get("prompt_tokens")) - cache_read - cache_write, 0),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=_count(usage.get("completion_tokens")),
        reasoning_tokens=_count(completion_details.get("reasoning_tokens")),
    )


def usage_from_anthropic(usage: dict | None) -> Usage:
    """Normalize an A usage dict; A input_tokens already exclude cache reads and writes (§1.7)."""
    if not usage:
        return Usage()
    return Usage(
        input_tokens=_count(usage.get("input_tokens")),
        cache_read_tokens=_count(usage.get("cache_read_input_tokens")),
        cache_write_tokens=_count(usage.get("cache_creation_input_tokens")),
        output_tokens=_count(usage.get("output_tokens")),
        reasoning_tokens=_count((usage.get("output_tokens_details") or {}).get("thinking_tokens")),
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
    changes = {ours: _count(usage[theirs]) for theirs, ours in fields.items() if usage.get(theirs) is not None}
    thinking = (usage.get("output_tokens_details") or {}).get("thinking_tokens")
    if thinking is not None:
        changes["reasoning_tokens"] = _count(thinking)
    return replace(current, **changes)


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
