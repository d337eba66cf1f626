"""Mid-conversation system messages and tool changes from Claude Code (PROTOCOLS-RESPONSES.md §6, M1–M7, M11).

An A request may carry `{role:"system"}` messages inside `messages` (and `mid_conv_system` content blocks, which
mean the same), whose content is text plus `tool_addition` / `tool_removal` blocks. This module is the one place
that reads them; each converter asks it for the parts it needs:

* `anthropic_split_mid_conv_blocks`: `mid_conv_system` blocks become system messages at their position (M1).
* `anthropic_system_text`: a system content as one string, blocks joined "\\n\\n", `cache_control`, empty texts,
  tool changes and (for non-A upstreams) the `x-anthropic-billing-header:` block dropped (M3, M11).
* `anthropic_tool_fold`: the tool changes folded in order over the declared tools (M6).
* `anthropic_hoist_system_messages`: an A body without system messages — their text appended to the top-level
  `system` in order, the tools folded (M5, M6): what an A model without the feature accepts.
* `mid_system_not_supported`: the 400 Claude Code recognises and falls back from (M7).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import TranslationError

MID_SYSTEM_ERROR_CODE = "mid_conversation_system_not_supported"
MID_CONVERSATION_BETA_PREFIXES = ("mid-conversation-system-", "mid-conversation-tool-changes-")
BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"  # Claude Code's per-version system block (M11)
TOOL_CHANGE_TYPES = ("tool_addition", "tool_removal")


def first_system_index(messages: object) -> int:
    """Index (in the client's list) of the first system message or message with a `mid_conv_system` block."""
    for index, message in enumerate(messages if isinstance(messages, list) else []):
        if has_system_messages([message]):
            return index
    return 0


def mid_system_not_supported(index: int) -> TranslationError:
    """M7: the wording and code both of Claude Code's matchers accept (it then folds the text into a user turn)."""
    error = TranslationError(
        f"messages.{index}.role: role 'system' is not supported on this model",
        param=f"messages.{index}.role",
        code=MID_SYSTEM_ERROR_CODE,
    )
    error.details = {"error_code": MID_SYSTEM_ERROR_CODE}
    return error


def _blocks(content: object) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [block for block in content if isinstance(block, dict)] if isinstance(content, list) else []


def _expired(messages: list, index: int) -> bool:
    """A system message with `clear_at: "next_user_message"` is no longer shown once a later user message exists
    (SDK BetaSystemMessageParam): the converters drop it as the upstream would hide it."""
    message = messages[index]
    if not is_system_message(message) or message.get("clear_at") != "next_user_message":
        return False
    return any(isinstance(m, dict) and m.get("role") == "user" for m in messages[index + 1 :])


def anthropic_split_mid_conv_blocks(messages: object) -> object:
    """`messages` with each `mid_conv_system` block moved into a system message at its place and expired
    `clear_at: "next_user_message"` system messages left out (the same list object when neither applies)."""
    if isinstance(messages, list) and any(_expired(messages, i) for i in range(len(messages))):
        messages = [m for i, m in enumerate(messages) if not _expired(messages, i)]
    if not isinstance(messages, list) or not any(
        isinstance(m, dict) and isinstance(m.get("content"), list)
        and any(isinstance(b, dict) and b.get("type") == "mid_conv_system" for b in m["content"])
        for m in messages
    ):  # fmt: skip
        return messages
    out: list = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list) or message.get("role") == "system":
            out.append(message)
            continue
        run: list = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "mid_conv_system":
                if run:
                    out.append({**message, "content": run})
                    run = []
                out.append({"role": "system", "content": block.get("content") or ""})
            else:
                run.append(block)
        if run:
            out.append({**message, "content": run})
    return out


def is_system_message(message: object) -> bool:
    return isinstance(message, dict) and message.get("role") == "system"


def has_system_messages(messages: object) -> bool:
    """Whether `messages` carries any mid-conversation system message or `mid_conv_system` block."""
    if not isinstance(messages, list):
        return False
    for message in messages:
        if is_system_message(message):
            return True
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "mid_conv_system" for b in content
        ):
            return True
    return False


def anthropic_system_text(content: object, *, drop_billing_header: bool = True) -> str:
    """One string for an A system content (top-level or a message): text blocks joined "\\n\\n" (M3)."""
    texts = []
    for block in _blocks(content):
        kind = block.get("type")
        if kind == "mid_conv_system":
            text = anthropic_system_text(block.get("content"), drop_billing_header=drop_billing_header)
        elif kind == "text" and isinstance(block.get("text"), str):
            text = block["text"]
        else:
            continue  # tool_addition / tool_removal: folded separately (M6); cache_control dropped with the block
        if drop_billing_header and text.startswith(BILLING_HEADER_PREFIX):
            continue  # M11: changes with every Claude Code version and would break the upstream's prefix cache
        if text.strip():
            texts.append(text)
    return "\n\n".join(texts)


@dataclass
class ToolChange:
    """One `tool_addition` / `tool_removal` of a plain tool (MCP references are ignored, M6)."""

    kind: str  # "tool_addition" | "tool_removal"
    name: str
    definition: dict | None = None  # an inline `tool_definition` (its `definition` is a `tools` entry)


def anthropic_tool_changes(content: object) -> list[ToolChange]:
    """The plain-tool changes of one system message's content, in order."""
    changes = []
    for block in _blocks(content):
        if block.get("type") not in TOOL_CHANGE_TYPES:
            continue
        tool = block.get("tool") if isinstance(block.get("tool"), dict) else {}
        if tool.get("type") == "tool_reference" and isinstance(tool.get("name"), str):
            changes.append(ToolChange(block["type"], tool["name"]))
        elif tool.get("type") == "tool_definition" and isinstance(tool.get("definition"), dict):
            definition = tool["definition"]
            if isinstance(definition.get("name"), str):
                changes.append(ToolChange(block["type"], definition["name"], definition))
        # mcp_tool_reference / mcp_toolset_reference: only the A upstream's MCP connector knows them (M6)
    return changes


def tool_change_note(changes: list[ToolChange]) -> str:
    """The one-line note a non-A upstream gets where the tools changed (M6, gateway choice)."""
    added = [c.name for c in changes if c.kind == "tool_addition"]
    removed = [c.name for c in changes if c.kind == "tool_removal"]
    parts = []
    if added:
        parts.append("now available: " + ", ".join(added))
    if removed:
        parts.append("no longer available: " + ", ".join(removed))
    return f"(Tools {'; '.join(parts)}.)" if parts else ""


@dataclass
class ToolFold:
    """The declared tools after every change, in order (M6)."""

    active: list[str] = field(default_factory=list)  # names offered to the model for this turn
    added: dict[str, dict] = field(default_factory=dict)  # inline definitions that were not declared
    explicitly_added: set[str] = field(default_factory=set)
    changed: bool = False


def anthropic_tool_fold(tools: object, messages: object) -> ToolFold:
    """Fold every system message's tool changes over the declared tools, as the SDK tool runner does (M6)."""
    declared = (
        [t.get("name") for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]
        if (isinstance(tools, list))
        else []
    )
    fold = ToolFold(active=list(declared))
    for message in messages if isinstance(messages, list) else []:
        if not is_system_message(message):
            continue
        for change in anthropic_tool_changes(message.get("content")):
            fold.changed = True
            if change.kind == "tool_removal":
                fold.active = [name for name in fold.active if name != change.name]
                fold.explicitly_added.discard(change.name)
                continue
            if change.name not in fold.active:
                fold.active.append(change.name)
            fold.explicitly_added.add(change.name)
            if change.definition is not None and change.name not in declared:
                fold.added[change.name] = change.definition
    return fold


def anthropic_hoist_system_messages(body: dict) -> dict:
    """M5 + M6 for an A model without mid-conversation system messages: their texts appended to `system` in
    order (valid everywhere; it changes the cache prefix), the tools folded. `body` itself when there is none."""
    messages = anthropic_split_mid_conv_blocks(body.get("messages"))
    if messages is body.get("messages") and not has_system_messages(messages):
        return body
    fold = anthropic_tool_fold(body.get("tools"), messages)
    system = body.get("system")
    blocks: list = (
        [{"type": "text", "text": system}]
        if isinstance(system, str) and system
        else (list(system) if isinstance(system, list) else [])
    )
    kept: list = []
    hoisted: list = []
    for message in messages:
        if not is_system_message(message):
            kept.append(message)
            continue
        for block in _blocks(message.get("content")):
            if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"].strip():
                hoisted.append(block)  # a block keeps its own cache_control: the breakpoint count is unchanged
    out = {**body, "messages": kept}
    if hoisted:
        out["system"] = blocks + hoisted
    if fold.changed:
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("name") in fold.active]
        tools += [fold.added[name] for name in fold.active if name in fold.added]
        # A tool loaded by a tool_addition is offered outright: this upstream cannot load it later.
        out["tools"] = [
            {k: v for k, v in t.items() if k != "defer_loading"} if t.get("name") in fold.explicitly_added else t
            for t in tools
        ]
        if not out["tools"]:
            del out["tools"]
            out.pop("tool_choice", None)
    return out


def without_mid_conversation_betas(betas: list[str]) -> list[str]:
    """The beta list without the mid-conversation ones (M2: they go only with messages that use them)."""
    return [beta for beta in betas if not beta.startswith(MID_CONVERSATION_BETA_PREFIXES)]
