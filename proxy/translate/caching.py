"""Automatic prompt-cache breakpoints for converted requests to an Anthropic upstream (issue 14 item 5).

OpenAI caches a prompt's prefix by itself; Anthropic caches only up to the blocks marked `cache_control`, at most
four per request. A client of another protocol (O, R) cannot mark them, so for a model with the catalog flag
`auto_cache` the gateway places them, in this order of importance:

1. the last block of the last message — the whole prompt is written, so the next turn, which repeats it, reads it;
2. the last system block — stable across the whole conversation;
3. the last tool definition — tools come first in Anthropic's prefix order (tools, system, messages);
4. the last block of the user message before the last one — what the previous turn wrote, read back now.

Breakpoints the request already has count against the four; a block type that cannot carry one (thinking,
empty text) is skipped for the nearest earlier block of the same message. Prefixes shorter than the model's
minimum (about 1024 tokens) are simply not cached by Anthropic: a breakpoint never costs more than the write.
"""

from __future__ import annotations

MAX_BREAKPOINTS = 4  # Anthropic refuses more
EPHEMERAL = {"type": "ephemeral"}
_CACHEABLE = ("text", "image", "document", "tool_use", "tool_result", "search_result")


def _count_breakpoints(body: dict) -> int:
    count = 1 if isinstance(body.get("cache_control"), dict) else 0
    blocks = list(body.get("tools") or [])
    if isinstance(body.get("system"), list):
        blocks += body["system"]
    for message in body.get("messages") or []:
        if isinstance(message.get("content"), list):
            blocks += message["content"]
    return count + sum(1 for block in blocks if isinstance(block, dict) and "cache_control" in block)


def _cacheable(block: object) -> bool:
    if not isinstance(block, dict) or block.get("type") not in _CACHEABLE:
        return False
    return block.get("type") != "text" or bool((block.get("text") or "").strip())


def _mark_last(blocks: list) -> tuple[list, bool]:
    """(blocks with the last cacheable one marked, whether one was marked); already marked counts as marked."""
    for index in range(len(blocks) - 1, -1, -1):
        block = blocks[index]
        if _cacheable(block):
            if "cache_control" in block:
                return blocks, False
            return [*blocks[:index], {**block, "cache_control": dict(EPHEMERAL)}, *blocks[index + 1 :]], True
    return blocks, False


def _as_blocks(content: object) -> list:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content.strip() else []
    return list(content) if isinstance(content, list) else []


def anthropic_auto_cache(body: dict) -> dict:
    """`body` (an A request) with up to four cache breakpoints placed as the module describes; a new dict."""
    budget = MAX_BREAKPOINTS - _count_breakpoints(body)
    out = dict(body)
    messages = list(out.get("messages") or [])
    user_positions = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"]
    targets: list[tuple[str, int]] = []
    if messages:
        targets.append(("message", len(messages) - 1))
    targets += [("system", 0), ("tools", 0)]
    earlier_users = [i for i in user_positions if i < len(messages) - 1]
    if earlier_users:
        targets.append(("message", earlier_users[-1]))
    for kind, index in targets:
        if budget <= 0:
            break
        marked = False
        if kind == "message":
            message = messages[index]
            blocks, marked = _mark_last(_as_blocks(message.get("content")))
            if marked:
                messages[index] = {**message, "content": blocks}
        elif kind == "system":
            blocks, marked = _mark_last(_as_blocks(out.get("system")))
            if marked:
                out["system"] = blocks
        else:
            tools = list(out.get("tools") or [])
            if tools and isinstance(tools[-1], dict) and "cache_control" not in tools[-1]:
                tools[-1] = {**tools[-1], "cache_control": dict(EPHEMERAL)}
                out["tools"], marked = tools, True
        if marked:
            budget -= 1
    out["messages"] = messages
    return out
