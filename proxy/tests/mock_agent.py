"""Scripted agent behaviour for the mock upstream: directives in the prompt make it act like a model in a tool loop.

Real agent programs (Claude Code, Codex, the Agents SDK, the AI SDK) declare their own tools and loop until the
model answers with text. The mock's default plan (call the first declared tool with ``{"city": "Paris"}``) cannot
drive them, so a prompt may carry directives, written in the user's text:

* ``[[shell COMMAND]]`` — call the client's shell tool with COMMAND. The tool is the first declared one of
  ``SHELL_TOOLS``; its arguments follow its schema: the property ``cmd`` if declared, else ``command``; an array
  property gets ``["bash", "-lc", COMMAND]``, a string property COMMAND. Claude Code's ``Bash`` also gets a
  ``description``.
* ``[[call NAME JSON]]`` — call the declared tool NAME with the JSON object as its arguments.
* ``[[say TEXT]]`` — the final answer is TEXT (with no call directive: answered at once, even with tools declared).

Calls run in order, one per model turn: after k rounds of tool results (assistant turns with calls after the
directive's message) the (k+1)-th call is made. After the last one the answer is the ``say`` text, else
``FINAL_PREFIX`` + the last round's tool outputs (so a test finds the tool's output in the client's final answer).
A call directive whose tool the request does not declare is answered with text naming the missing tool, so a
client that never offered it fails visibly instead of looping. Requests without directives keep the default plan.

The decision is protocol-neutral; ``*_view`` functions read each wire format (Chat Completions, Messages, Gemini,
Responses) into a ``Conversation``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

SHELL_TOOLS = ("Bash", "exec_command", "shell_command", "shell", "run_shell_command")
FINAL_PREFIX = "Done. Tool output: "
MISSING_TOOL_PREFIX = "The requested tool is not declared: "
_DIRECTIVE = re.compile(r"\[\[(shell|call|say)\s+(.*?)\]\]", re.DOTALL)
_MAX_OUTPUT_CHARS = 2000


@dataclass
class Turn:
    """One message of the conversation in neutral form."""

    role: str  # "user" (user/system/developer text), "assistant", "tool" (tool results)
    text: str = ""
    calls: int = 0  # assistant: how many tool calls it made


@dataclass
class Conversation:
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> JSON schema of its arguments
    turns: list[Turn] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """What the scripted model answers: a tool call (name + JSON arguments) or text."""

    text: str = ""
    tool: str | None = None
    arguments: str = ""


def plan(conversation: Conversation) -> Plan | None:
    """The scripted answer to a conversation, or None when no user text carries a directive."""
    for index in range(len(conversation.turns) - 1, -1, -1):
        turn = conversation.turns[index]
        if turn.role == "user" and _DIRECTIVE.search(turn.text):
            return _plan_from(conversation, turn.text, conversation.turns[index + 1 :])
    return None


def _plan_from(conversation: Conversation, directive_text: str, later: list[Turn]) -> Plan:
    steps = [(kind, value.strip()) for kind, value in _DIRECTIVE.findall(directive_text)]
    calls = [(kind, value) for kind, value in steps if kind != "say"]
    said = next((value for kind, value in steps if kind == "say"), None)
    rounds = sum(1 for turn in later if turn.role == "assistant" and turn.calls)
    if rounds < len(calls) and conversation.tools:
        kind, value = calls[rounds]
        return _call(conversation.tools, kind, value)
    if said is not None:
        return Plan(text=said)
    last_assistant = max((i for i, turn in enumerate(later) if turn.role == "assistant"), default=-1)
    outputs = [turn.text for turn in later[last_assistant + 1 :] if turn.role == "tool"]
    return Plan(text=FINAL_PREFIX + "\n".join(outputs).strip()[:_MAX_OUTPUT_CHARS])


def _call(tools: dict[str, dict[str, Any]], kind: str, value: str) -> Plan:
    if kind == "call":
        name, _, arguments = value.partition(" ")
        if name not in tools:
            return Plan(text=MISSING_TOOL_PREFIX + name)
        return Plan(tool=name, arguments=json.dumps(json.loads(arguments or "{}")))
    name = next((candidate for candidate in SHELL_TOOLS if candidate in tools), None)
    if name is None:
        return Plan(text=MISSING_TOOL_PREFIX + "shell (declared: " + ", ".join(sorted(tools)) + ")")
    properties = (tools[name] or {}).get("properties") or {}
    key = "cmd" if "cmd" in properties else "command"
    arguments: dict[str, Any] = {key: ["bash", "-lc", value] if _is_array(properties.get(key)) else value}
    if name == "Bash":
        arguments["description"] = "Run the requested command"
    return Plan(tool=name, arguments=json.dumps(arguments))


def _is_array(schema: Any) -> bool:
    kind = (schema or {}).get("type") if isinstance(schema, dict) else None
    return kind == "array" or (isinstance(kind, list) and "array" in kind)


def _text_of(value: Any) -> str:
    """Every text in a content value of any of the wire formats (strings, parts, blocks, nested results)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(text for text in (_text_of(item) for item in value) if text)
    if isinstance(value, dict):
        for key in ("text", "content", "output"):
            if key in value:
                return _text_of(value[key])
        return json.dumps(value)
    return ""


# -- wire formats -----------------------------------------------------------------------------------------------


def openai_view(body: dict[str, Any]) -> Conversation:
    """Chat Completions: ``messages`` and function tools."""
    tools = {
        tool["function"]["name"]: tool["function"].get("parameters") or {}
        for tool in body.get("tools") or []
        if tool.get("type") == "function"
    }
    turns = []
    for message in body.get("messages") or []:
        role = message.get("role")
        if role == "assistant":
            turns.append(Turn("assistant", _text_of(message.get("content")), len(message.get("tool_calls") or [])))
        elif role in ("tool", "function"):
            turns.append(Turn("tool", _text_of(message.get("content"))))
        else:
            turns.append(Turn("user", _text_of(message.get("content"))))
    return Conversation(tools, turns)


def anthropic_view(body: dict[str, Any]) -> Conversation:
    """Messages: ``messages`` (text, tool_use and tool_result blocks) and custom tools."""
    tools = {tool["name"]: tool.get("input_schema") or {} for tool in body.get("tools") or [] if "name" in tool}
    turns = []
    for message in body.get("messages") or []:
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        if message.get("role") == "assistant":
            calls = sum(1 for block in blocks if block.get("type") == "tool_use")
            turns.append(Turn("assistant", _text_of([b for b in blocks if b.get("type") == "text"]), calls))
            continue
        results = [block for block in blocks if block.get("type") == "tool_result"]
        if results:
            turns.append(Turn("tool", _text_of([block.get("content", "") for block in results])))
        texts = [block for block in blocks if block.get("type") == "text"]
        if texts:
            turns.append(Turn("user", _text_of(texts)))
    return Conversation(tools, turns)


def gemini_view(body: dict[str, Any]) -> Conversation:
    """generateContent: ``contents`` (text, functionCall, functionResponse parts) and function declarations."""
    tools = {
        declaration["name"]: declaration.get("parameters") or declaration.get("parametersJsonSchema") or {}
        for tool in body.get("tools") or []
        for declaration in tool.get("functionDeclarations") or []
    }
    turns = []
    for content in body.get("contents") or []:
        parts = content.get("parts") or []
        texts = "\n".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))
        if content.get("role") == "model":
            turns.append(Turn("assistant", texts, sum(1 for part in parts if "functionCall" in part)))
            continue
        responses = [part["functionResponse"].get("response") for part in parts if "functionResponse" in part]
        if responses:
            turns.append(Turn("tool", "\n".join(_text_of(response) for response in responses)))
        if texts:
            turns.append(Turn("user", texts))
    return Conversation(tools, turns)


def responses_view(body: dict[str, Any]) -> Conversation:
    """Responses: ``input`` items (messages, function/custom calls and their outputs) and function/custom tools."""
    tools: dict[str, dict[str, Any]] = {}
    for tool in body.get("tools") or []:
        if tool.get("type") == "function":
            tools[tool["name"]] = tool.get("parameters") or {}
        elif tool.get("type") == "custom":
            tools[tool["name"]] = {"type": "object", "properties": {"input": {"type": "string"}}}
    given = body.get("input")
    items = [{"type": "message", "role": "user", "content": given}] if isinstance(given, str) else list(given or [])
    turns: list[Turn] = []
    for item in items:
        kind = item.get("type", "message")
        if kind in ("function_call", "custom_tool_call"):
            if turns and turns[-1].role == "assistant":
                turns[-1].calls += 1
            else:
                turns.append(Turn("assistant", "", 1))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            turns.append(Turn("tool", _text_of(item.get("output"))))
        elif kind == "message" and item.get("role") == "assistant":
            turns.append(Turn("assistant", _text_of(item.get("content"))))
        elif kind == "message":
            turns.append(Turn("user", _text_of(item.get("content"))))
    return Conversation(tools, turns)
