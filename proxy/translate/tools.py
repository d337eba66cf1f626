"""Tool definitions, tool_choice, tool-call ids, names and arguments in both directions (§2.2 step 3, §2.4, §2.5)."""

from __future__ import annotations

import hashlib
import json
import re

from .errors import TranslationError

JSON_TOOL_NAME = "json_tool_call"  # forced tool standing in for response_format json_schema (§2.1)
OPENAI_TOOL_NAME_MAX = 64
_SHORT_NAME_PREFIX = 55  # 55 chars + "_" + 8 hex = 64 (§2.4 step 5, LiteLLM's adapter)
_NOT_TOOL_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_EMPTY_SCHEMA = {"type": "object", "properties": {}}


def compact_json(value: object) -> str:
    """JSON text without spaces, non-ASCII kept (tool arguments, §2.4 step 3)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def tool_input_from_arguments(arguments: object) -> dict:
    """Parse O tool-call arguments into an A tool_use input: "" or invalid JSON → {}, non-object → {"value": …}."""
    if isinstance(arguments, dict):  # a few O-compatible servers send the object itself
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return {}  # never drop the tool_use: its tool_result would be orphaned (§2.2 step 3)
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def sanitize_tool_id(raw: str) -> str:
    """Make an id match A's ^[a-zA-Z0-9_-]+$ (e.g. Kimi's "functions.Bash:0" → "functions_Bash_0")."""
    return _NOT_TOOL_ID_CHARS.sub("_", raw)


class ToolIds:
    """Per-request map from O tool-call ids to A tool_use ids, so a tool_result gets its call's id (§2.2 step 3)."""

    def __init__(self) -> None:
        self._by_original: dict[str, str] = {}
        self._taken: set[str] = set()

    def _claim(self, candidate: str) -> str:
        unique, suffix = candidate, 1
        while unique in self._taken:  # "a.b" and "a:b" must not collide
            suffix += 1
            unique = f"{candidate}_{suffix}"
        self._taken.add(unique)
        return unique

    def get(self, original: object) -> str:
        """The A id for the client's id `original`: stable within the request, distinct for distinct originals."""
        if not isinstance(original, str) or not original:
            return self.new()
        if original not in self._by_original:
            self._by_original[original] = self._claim(sanitize_tool_id(original))
        return self._by_original[original]

    def new(self) -> str:
        """A fresh id for a call the client sent without one (legacy function_call)."""
        return self._claim(f"call_{len(self._taken) + 1}")


def openai_tool_name(name: str) -> str:
    """Shorten an A tool name (≤128 chars) to O's 64 with a stable hash suffix (§2.4 step 5)."""
    if len(name) <= OPENAI_TOOL_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{name[:_SHORT_NAME_PREFIX]}_{digest}"


# --- O → A ---------------------------------------------------------------------------------------


def openai_tool_to_anthropic(tool: object, param: str) -> dict:
    """One O tool definition → an A tool (§2.5)."""
    if not isinstance(tool, dict):
        raise TranslationError("Each tool must be an object.", param=param, code="invalid_type")
    if tool.get("type") != "function":
        raise TranslationError(
            f"Tools of type {tool.get('type')!r} are not supported for this model; use function tools.",
            param=f"{param}.type",
            code="unsupported_parameter",
        )
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise TranslationError("A function tool needs function.name.", param=f"{param}.function.name")
    converted: dict = {"name": function["name"]}
    if function.get("description"):
        converted["description"] = function["description"]
    converted["input_schema"] = function.get("parameters") or dict(_EMPTY_SCHEMA)
    if function.get("strict") is not None:
        converted["strict"] = function["strict"]
    return converted


def openai_tool_choice_to_anthropic(
    tool_choice: object, parallel_tool_calls: object, tools: list[dict]
) -> tuple[dict | None, list[dict]]:
    """(A tool_choice, tools left after allowed_tools filtering) for O tool_choice + parallel_tool_calls (§2.5)."""
    choice: dict | None
    if tool_choice is None:
        choice = None
    elif tool_choice in ("auto", "none"):
        choice = {"type": tool_choice}
    elif tool_choice == "required":
        choice = {"type": "any"}
    elif isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = (tool_choice.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError("tool_choice.function.name is required.", param="tool_choice.function.name")
        choice = {"type": "tool", "name": name}
    elif isinstance(tool_choice, dict) and tool_choice.get("type") == "allowed_tools":
        allowed = tool_choice.get("allowed_tools") or {}
        names = {
            (entry.get("function") or {}).get("name") for entry in allowed.get("tools") or [] if isinstance(entry, dict)
        }
        tools = [tool for tool in tools if tool["name"] in names]
        choice = {"type": "any" if allowed.get("mode") == "required" else "auto"}
    else:
        raise TranslationError("Unsupported tool_choice for this model.", param="tool_choice", code="unsupported_value")
    if parallel_tool_calls is False and (choice is None or choice["type"] != "none"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    return choice, tools


def history_tools(messages: list[dict]) -> list[dict]:
    """Minimal tool definitions for the tool names used in A history (§2.2 step 8)."""
    names: list[str] = []
    for message in messages:
        for block in message["content"] if isinstance(message["content"], list) else []:
            if block.get("type") == "tool_use" and block["name"] not in names:
                names.append(block["name"])
    return [{"name": name, "input_schema": {"type": "object"}} for name in names]


# --- A → O ---------------------------------------------------------------------------------------


def anthropic_tool_to_openai(tool: dict, tool_names: dict[str, str]) -> dict:
    """One A client tool → an O function tool; only the schema is copied, never A-only keys (litellm#30557)."""
    alias = openai_tool_name(tool["name"])
    if alias != tool["name"]:
        tool_names[alias] = tool["name"]
    function: dict = {"name": alias}
    if tool.get("description"):
        function["description"] = tool["description"]
    function["parameters"] = tool.get("input_schema") or dict(_EMPTY_SCHEMA)
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def anthropic_tool_choice_to_openai(tool_choice: object, has_tools: bool) -> dict:
    """O `tool_choice` / `parallel_tool_calls` fields for an A tool_choice (§2.5); {} when there are no tools."""
    if not isinstance(tool_choice, dict) or not has_tools:
        return {}  # O rejects tool_choice and parallel_tool_calls without tools (edge case 39)
    kind = tool_choice.get("type")
    fields: dict = {}
    if kind in ("auto", "none"):
        fields["tool_choice"] = kind
    elif kind == "any":
        fields["tool_choice"] = "required"
    elif kind == "tool":
        fields["tool_choice"] = {"type": "function", "function": {"name": openai_tool_name(tool_choice["name"])}}
    else:
        raise TranslationError("Unsupported tool_choice type.", param="tool_choice.type", code="unsupported_value")
    if tool_choice.get("disable_parallel_tool_use") is True and kind != "none":
        fields["parallel_tool_calls"] = False
    return fields
