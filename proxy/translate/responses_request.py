"""OpenAI Responses (R) requests: checks (PROTOCOLS-RESPONSES §1, §3) and R ⇄ A request conversion (§5.3, §5.5).

A is the hub's neutral form (proxy/translate/hub.py): an R client reaches an O or Gemini upstream through
`responses_request_to_anthropic`, and an O or A client reaches an R upstream through
`anthropic_request_to_responses`. What A cannot hold travels in `Conversion.side`:

    side["responses"]         the R client's fields A has no slot for (text.verbosity, top_logprobs,
                              prompt_cache_key, service_tier, safety_identifier, user, json_object, include)
    side["output_cap"]        False when the client set no output cap (an O/R upstream then gets none)
    side["namespaces"]        upstream tool name -> [namespace, name] (R `namespace` tools flattened, §1.3)
    side["custom_tools"]      names of R/O custom (freeform) tools sent as functions (§5.7)
    side["summary"]           the R client asked for reasoning summaries
    side["include_encrypted"] the R client included reasoning.encrypted_content
    side["stop"]              stop sequences for an R upstream, which has none (§5.8)
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace

from .envelope import Sealer
from .errors import ErrorKind, GatewayError, TranslationError
from .models import Conversion, TargetModel
from .openai_to_anthropic import FALLBACK_MAX_TOKENS, _response_format
from .reasoning import EFFORT_LEVELS, anthropic_thinking_to_effort, effort_to_anthropic_thinking, fit_thinking_budget
from .tools import JSON_TOOL_NAME, ToolIds, compact_json, tool_input_from_arguments
from .usage import estimate_anthropic_prompt_tokens, estimate_responses_prompt_tokens

logger = logging.getLogger(__name__)

MIN_OUTPUT_TOKENS = 16  # the API refuses less (vectorize-io/hindsight#58)
MAX_OUTPUT_TOKENS = 10_000_000
NAMESPACE_SEPARATOR = "__"
ENCRYPTED_INCLUDE = "reasoning.encrypted_content"

# §1.1: fields of the other protocols the API answers with "unsupported_parameter" (+ where they moved).
MOVED_FIELDS = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort",
    "response_format": "text.format",
    "functions": "tools",
    "function_call": "tool_choice",
    "system": "instructions",
    "thinking": "reasoning",
    "stop": None,
    "stop_sequences": None,
    "n": None,
}
REFUSED_FIELDS = ("conversation", "background", "prompt")  # gateway: no hosted state/prompts (§1.1)
HOSTED_TOOLS = (
    "file_search",
    "code_interpreter",
    "image_generation",
    "mcp",
    "tool_search",
    "programmatic_tool_calling",
    "local_shell",
    "shell",
    "apply_patch",
    "computer",
    "computer_use",
    "computer_use_preview",
)
CUSTOM_TOOL_PARAMETERS = {
    "type": "object",
    "properties": {"input": {"type": "string"}},
    "required": ["input"],
    "additionalProperties": False,
}  # Codex's own function-form apply_patch shape (§5.7)
SIDE_FIELDS = ("prompt_cache_key", "service_tier", "safety_identifier", "user", "top_logprobs", "metadata")


def _invalid(message: str, param: str | None = None, code: str | None = "invalid_value") -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param, code=code)


# --- checks -------------------------------------------------------------------------------------------------


KNOWN_FIELDS = frozenset(
    [
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "max_tool_calls",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "top_logprobs",
        "reasoning",
        "text",
        "include",
        "store",
        "previous_response_id",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "safety_identifier",
        "user",
        "service_tier",
        "truncation",
        "metadata",
        "context_management",
        "moderation",
        "personality",
        "client_metadata",
    ]
)


def responses_request_check(body: dict) -> int | None:
    """Validate an R create body as the API does (§1.1, §3); returns max_output_tokens if given."""
    unknown = sorted(name for name in body if name not in KNOWN_FIELDS and name not in MOVED_FIELDS)
    if unknown:
        logger.info("R request fields ignored: %s", ", ".join(unknown[:10]))  # R6: names only, never values
    for name, moved_to in MOVED_FIELDS.items():
        if name in body:
            hint = f" In the Responses API, this parameter has moved to '{moved_to}'." if moved_to else ""
            raise _invalid(f"Unsupported parameter: '{name}'.{hint}", name, "unsupported_parameter")
    for name in REFUSED_FIELDS:
        if body.get(name) not in (None, False):
            raise _invalid(
                f"Unsupported parameter: '{name}' is not supported by this gateway.", name, "unsupported_parameter"
            )
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    source = body.get("input")
    if source is None and not body.get("previous_response_id"):
        raise _invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if source is not None and not isinstance(source, (str, list)):
        raise _invalid(
            "Invalid type for 'input': expected a string or an array of input items.", "input", "invalid_type"
        )
    for name in ("instructions", "previous_response_id", "prompt_cache_key", "safety_identifier", "user"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise _invalid(f"Invalid type for '{name}': expected a string.", name, "invalid_type")
    if isinstance(body.get("safety_identifier"), str) and len(body["safety_identifier"]) > 64:
        raise _invalid(
            "'safety_identifier' is longer than 64 characters.", "safety_identifier", "string_above_max_length"
        )
    for name in ("stream", "store", "parallel_tool_calls"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise _invalid(f"Invalid type for '{name}': expected a boolean.", name, "invalid_type")
    cap = body.get("max_output_tokens")
    if cap is not None:
        if isinstance(cap, bool) or not isinstance(cap, int):
            raise _invalid(
                "Invalid type for 'max_output_tokens': expected an integer.", "max_output_tokens", "invalid_type"
            )
        if cap < MIN_OUTPUT_TOKENS:
            raise _invalid(
                f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= {MIN_OUTPUT_TOKENS}, "
                f"but got {cap} instead.",
                "max_output_tokens",
                "integer_below_min_value",
            )
        if cap > MAX_OUTPUT_TOKENS:
            raise _invalid("Invalid 'max_output_tokens': too large.", "max_output_tokens", "integer_above_max_value")
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "top_logprobs", 0, 20)
    for name, value in (("reasoning", body.get("reasoning")), ("text", body.get("text"))):
        if value is not None and not isinstance(value, dict):
            raise _invalid(f"Invalid type for '{name}': expected an object.", name, "invalid_type")
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None and effort not in EFFORT_LEVELS:
        raise _invalid(f"Invalid value for 'reasoning.effort': {effort!r}.", "reasoning.effort")
    if body.get("tools") is not None and not isinstance(body["tools"], list):
        raise _invalid("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    for index, tool in enumerate(body.get("tools") or []):
        _tool_check(tool, f"tools[{index}]")
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") not in ("function", "custom", "allowed_tools"):
        raise _invalid(
            f"tool_choice of type {choice.get('type')!r} is not supported by this gateway.",
            "tool_choice",
            "unsupported_tool",
        )
    if choice is not None and not isinstance(choice, dict) and choice not in ("none", "auto", "required"):
        raise _invalid(f"Invalid value for 'tool_choice': {choice!r}.", "tool_choice")
    return cap


def _number(body: dict, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(f"Invalid type for '{name}': expected a number.", name, "invalid_type")
    if not low <= value <= high:
        raise _invalid(f"Invalid '{name}': expected a value between {low} and {high}.", name)


def _tool_check(tool: object, param: str) -> None:
    if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
        raise _invalid("Each tool must be an object with a 'type'.", param, "invalid_type")
    kind = tool["type"]
    if kind in ("function", "custom"):
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _invalid("Missing required parameter: 'name'.", f"{param}.name", "missing_required_parameter")
    elif kind == "namespace":
        for index, inner in enumerate(tool.get("tools") or []):
            _tool_check(inner, f"{param}.tools[{index}]")
    elif not kind.startswith("web_search"):
        raise _invalid(f"The tool type {kind!r} is not supported by this gateway.", param, "unsupported_tool")


def responses_input_items(body: dict) -> list[dict]:
    """The request's `input` as a list of items (a string is one user message; `type` defaults to message)."""
    source = body.get("input")
    if source is None:
        return []
    if isinstance(source, str):
        return [{"type": "message", "role": "user", "content": source}]
    items = []
    for index, item in enumerate(source):
        if not isinstance(item, dict):
            raise _invalid(f"Invalid type for 'input[{index}]': expected an object.", f"input[{index}]", "invalid_type")
        if "type" not in item and "role" in item:
            item = {"type": "message", **item}  # the AI SDK sends message items without a type
        items.append(item)
    return items


def responses_items_check(items: list[dict]) -> None:
    """Item rules the API enforces (§1.2): outputs need an earlier call; assistant text is output_text."""
    calls: set[str] = set()
    for index, item in enumerate(items):
        kind = item.get("type")
        param = f"input[{index}]"
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _invalid(f"Invalid value for '{param}.role': {role!r}.", f"{param}.role")
            content = item.get("content")
            if not isinstance(content, (str, list)):
                raise _invalid(f"Invalid type for '{param}.content'.", f"{param}.content", "invalid_type")
            if role == "assistant" and isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and part.get("type") == "input_text":
                        raise _invalid(
                            "Invalid value: 'input_text'. Supported values are: 'output_text' and 'refusal'.",
                            f"{param}.content",
                        )
        elif kind in ("function_call", "custom_tool_call"):
            if not isinstance(item.get("call_id"), str) or not item["call_id"]:
                raise _invalid(
                    "Missing required parameter: 'call_id'.", f"{param}.call_id", "missing_required_parameter"
                )
            calls.add(item["call_id"])
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = item.get("call_id")
            if call_id not in calls:
                raise _invalid(f"No tool call found for function call output with call_id {call_id}.", f"{param}")
        elif kind == "reasoning" and not isinstance(item.get("summary", []), list):
            raise _invalid("Invalid type for 'summary'.", f"{param}.summary", "invalid_type")


def responses_needs_expansion(body: dict) -> bool:
    """previous_response_id, an item_reference or an id-only reasoning item: the store must be read (§4.1)."""
    if body.get("previous_response_id"):
        return True
    source = body.get("input")
    return isinstance(source, list) and any(
        isinstance(i, dict)
        and (i.get("type") == "item_reference" or (i.get("type") == "reasoning" and not i.get("encrypted_content")))
        for i in source
    )


# --- R → A (the neutral form) -------------------------------------------------------------------------------


def _text_of(content: object, kinds: tuple[str, ...] = ("input_text", "output_text", "text")) -> str:
    if isinstance(content, str):
        return content
    return "".join(
        part.get("text") or ""
        for part in content or []
        if isinstance(part, dict) and part.get("type") in kinds and isinstance(part.get("text"), str)
    )


def _data_url(url: str) -> tuple[str, str] | None:
    if not url.startswith("data:") or ";base64," not in url:
        return None
    head, data = url[5:].split(";base64,", 1)
    return head or "application/octet-stream", data


def _user_blocks(content: object, param: str) -> list[dict]:
    """R user-side content → A blocks (§5.3 step 2)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict] = []
    for index, part in enumerate(content or []):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        where = f"{param}.content[{index}]"
        if kind in ("input_text", "output_text", "text"):
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise TranslationError("Images by file_id are not supported by this gateway.", param=where)
            inline = _data_url(url)
            source = (
                {"type": "base64", "media_type": inline[0], "data": inline[1]}
                if inline
                else {"type": "url", "url": url}
            )
            blocks.append({"type": "image", "source": source})
        elif kind == "input_file":
            inline = _data_url(part.get("file_data") or "") if isinstance(part.get("file_data"), str) else None
            if inline is None or inline[0] != "application/pdf":
                raise TranslationError("Only PDF files given as file_data are supported on this model.", param=where)
            blocks.append(
                {"type": "document", "source": {"type": "base64", "media_type": inline[0], "data": inline[1]}}
            )
        elif kind == "refusal":
            if part.get("refusal"):
                blocks.append({"type": "text", "text": part["refusal"]})
        else:
            raise TranslationError(f"Unsupported content part type {kind!r}.", param=where, code="invalid_value")
    return blocks


def _output_blocks(output: object, param: str) -> str | list[dict]:
    if isinstance(output, str):
        return output
    return _user_blocks(output, param) if isinstance(output, list) else ""


def _tool_result(call_id: str, output: object, param: str) -> dict:
    content = _output_blocks(output, param)
    return {"type": "tool_result", "tool_use_id": call_id, "content": content}


def _reasoning_block(item: dict, sealer: Sealer | None) -> dict | None:
    """The A thinking block an R reasoning item carries in an envelope of this tenant/channel/model (§5.6)."""
    if sealer is None:
        return None
    payload = sealer.open("a", item.get("encrypted_content"))
    if payload is None or payload.get("type") not in ("thinking", "redacted_thinking"):
        if item.get("encrypted_content"):
            logger.info("reasoning item dropped: its envelope is not for this route")
        return None
    return payload


class _Turns:
    """Builds A messages: one user message per run of user-side items, one assistant message per run of
    reasoning/assistant/call items (§5.3 steps 3–4)."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.role: str | None = None
        self.results: list[dict] = []
        self.blocks: list[dict] = []

    def flush(self) -> None:
        if self.role == "user" and (self.results or self.blocks):
            self.messages.append({"role": "user", "content": self.results + self.blocks})
        elif self.role == "assistant" and self.blocks:
            self.messages.append({"role": "assistant", "content": self.blocks})
        self.role, self.results, self.blocks = None, [], []

    def add(self, role: str, block: dict, *, result: bool = False) -> None:
        if self.role != role:
            self.flush()
            self.role = role
        (self.results if result else self.blocks).append(block)

    def system(self, text: str) -> None:
        self.flush()
        self.messages.append({"role": "system", "content": text})


def _tools_to_anthropic(tools: list, side: dict) -> list[dict]:
    out: list[dict] = []
    for tool in tools:
        kind = tool.get("type")
        if kind == "namespace":
            for inner in tool.get("tools") or []:
                flat = f"{tool.get('name')}{NAMESPACE_SEPARATOR}{inner.get('name')}"
                side.setdefault("namespaces", {})[flat] = [tool.get("name"), inner.get("name")]
                out += _tools_to_anthropic([{**inner, "name": flat}], side)
        elif kind == "function":
            spec = {
                "name": tool["name"],
                "input_schema": tool.get("parameters") or {"type": "object", "properties": {}},
            }
            if tool.get("description"):
                spec["description"] = tool["description"]
            out.append(spec)
        elif kind == "custom":
            side.setdefault("custom_tools", []).append(tool["name"])
            description = tool.get("description") or ""
            fmt = tool.get("format") or {}
            if fmt.get("type") == "grammar":
                description += f"\nInput grammar ({fmt.get('syntax')}): {fmt.get('definition')}"
            out.append(
                {"name": tool["name"], "description": description.strip(), "input_schema": CUSTOM_TOOL_PARAMETERS}
            )
        elif isinstance(kind, str) and kind.startswith("web_search"):
            logger.info("R tool %s dropped on a converted route", kind)  # Codex always declares it (§1.3)
    return out


def _tool_choice_to_anthropic(
    choice: object, tools: list[dict], parallel: object, side: dict
) -> tuple[dict | None, list[dict]]:
    picked: dict | None
    if choice in (None, "auto"):
        picked = {"type": "auto"}
    elif choice == "none":
        picked = {"type": "none"}
    elif choice == "required":
        picked = {"type": "any"}
    elif choice.get("type") == "allowed_tools":
        names = {t.get("name") for t in choice.get("tools") or []}
        tools = [
            t
            for t in tools
            if t["name"] in names or side.get("namespaces", {}).get(t["name"], [None, None])[1] in names
        ]
        picked = {"type": "any" if choice.get("mode") == "required" else "auto"}
    else:
        picked = {"type": "tool", "name": choice.get("name")}
    if parallel is False and picked["type"] != "none":
        picked["disable_parallel_tool_use"] = True
    return picked, tools


def _upstream_tool_name(item: dict) -> str:
    name = item.get("name") or ""
    return f"{item['namespace']}{NAMESPACE_SEPARATOR}{name}" if item.get("namespace") else name


def responses_request_to_anthropic(
    body: dict, items: list[dict], target: TargetModel, *, sealer: Sealer | None = None
) -> Conversion:
    """Convert an R request (with its expanded input items) into an A Messages request for `target` (§5.3)."""
    side: dict = {"responses": {k: body[k] for k in SIDE_FIELDS if body.get(k) is not None}}
    text = body.get("text") or {}
    fmt = text.get("format") if isinstance(text.get("format"), dict) else {}
    if text.get("verbosity"):
        side["responses"]["verbosity"] = text["verbosity"]
    if fmt.get("type") == "json_object":
        side["responses"]["json_object"] = True
    if fmt.get("type") == "json_schema":  # A's output_config.format has no name/strict: keep them aside
        side["responses"]["json_schema"] = {k: fmt[k] for k in ("name", "strict", "description") if k in fmt}
    include = body.get("include") or []
    side["include_encrypted"] = ENCRYPTED_INCLUDE in include or body.get("store") is False
    reasoning = body.get("reasoning") or {}
    side["summary"] = bool(reasoning.get("summary"))
    side["output_cap"] = body.get("max_output_tokens") is not None
    side["cache_breakpoints"] = True  # an A upstream gets §5.3 step 7 breakpoints (proxy/translate/hub.py)

    system: list[str] = [body["instructions"]] if body.get("instructions") else []
    turns = _Turns()
    ids = ToolIds()
    for index, item in enumerate(items):
        kind = item.get("type")
        param = f"input[{index}]"
        if kind == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                text_value = _text_of(item.get("content"))
                if text_value:
                    # Later system items: appended to `system` (no mid_conv_system flag in the catalog yet, §5.1).
                    system.append(text_value)
                continue
            if role == "assistant":
                content = item.get("content")
                text_value = (
                    _text_of(content, ("output_text", "text", "refusal")) if isinstance(content, list) else content
                )
                if isinstance(content, list):
                    text_value = "".join(
                        (p.get("text") if p.get("type") != "refusal" else p.get("refusal")) or ""
                        for p in content
                        if isinstance(p, dict)
                    )
                if text_value:
                    turns.add("assistant", {"type": "text", "text": text_value})
            else:
                for block in _user_blocks(item.get("content"), param):
                    turns.add("user", block)
        elif kind == "reasoning":
            block = _reasoning_block(item, sealer)
            if block is not None:
                turns.add("assistant", block)
        elif kind == "function_call":
            turns.add(
                "assistant",
                {
                    "type": "tool_use",
                    "id": ids.get(item.get("call_id")),
                    "name": _upstream_tool_name(item),
                    "input": tool_input_from_arguments(item.get("arguments")),
                },
            )
        elif kind == "custom_tool_call":
            turns.add(
                "assistant",
                {
                    "type": "tool_use",
                    "id": ids.get(item.get("call_id")),
                    "name": _upstream_tool_name(item),
                    "input": {"input": item.get("input") if isinstance(item.get("input"), str) else ""},
                },
            )
        elif kind in ("function_call_output", "custom_tool_call_output"):
            turns.add("user", _tool_result(ids.get(item.get("call_id")), item.get("output"), param), result=True)
        elif kind == "web_search_call":
            continue
        else:
            raise TranslationError(
                f"Input items of type {kind!r} are not supported on this model.", param=param, code="invalid_value"
            )
    turns.flush()
    messages = [m for m in turns.messages if m["role"] != "system"]

    out: dict = {"model": target.upstream_model}
    cap = body.get("max_output_tokens") or target.default_max_tokens or target.max_output_tokens or FALLBACK_MAX_TOKENS
    max_tokens = min(cap, target.max_output_tokens) if target.max_output_tokens else cap
    thinking, effort = effort_to_anthropic_thinking(reasoning.get("effort"), target)
    if thinking is not None:
        thinking, max_tokens = fit_thinking_budget(thinking, max_tokens, target.max_output_tokens)
    out["max_tokens"] = max_tokens

    tools = _tools_to_anthropic(body.get("tools") or [], side)
    tool_choice = None
    if tools:
        tool_choice, tools = _tool_choice_to_anthropic(
            body.get("tool_choice"), tools, body.get("parallel_tool_calls"), side
        )
    output_format, json_tool, instruction = (None, None, None)
    if fmt.get("type") == "json_schema":
        output_format, json_tool, instruction = _response_format(
            {"response_format": {"type": "json_schema", "json_schema": {k: v for k, v in fmt.items() if k != "type"}}},
            target,
        )
    elif fmt.get("type") == "json_object":
        output_format, json_tool, instruction = _response_format({"response_format": {"type": "json_object"}}, target)
    if instruction:
        system.append(instruction)
    thinking_on = thinking is not None and thinking.get("type") != "disabled"
    if json_tool is not None:
        tools.append(json_tool)
        if not thinking_on and (tool_choice is None or tool_choice["type"] == "auto"):
            tool_choice = {"type": "tool", "name": JSON_TOOL_NAME}
    if thinking_on and messages and messages[-1]["role"] == "user":
        # The unchanged-thinking rule (§5.3 step 5): A needs the last assistant turn with tool_use to start
        # with its (restored) thinking block; without one, this request goes without thinking.
        last = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
        if (
            last
            and any(b.get("type") == "tool_use" for b in last["content"])
            and last["content"][0].get("type")
            not in (
                "thinking",
                "redacted_thinking",
            )
        ):
            logger.info("thinking omitted: the last tool turn has no restorable thinking block")
            thinking = None
            thinking_on = False
            effort = None

    if system:
        out["system"] = "\n\n".join(system)
    out["messages"] = messages
    if tools:
        out["tools"] = tools
        if tool_choice is not None:
            out["tool_choice"] = tool_choice
    if thinking is not None:
        out["thinking"] = thinking
    output_config = {"format": output_format, "effort": effort}
    if any(value is not None for value in output_config.values()):
        out["output_config"] = {key: value for key, value in output_config.items() if value is not None}
    if not thinking_on:
        temperature = body.get("temperature")
        if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
            out["temperature"] = min(max(float(temperature), 0.0), 1.0)  # A's range is [0, 1]
        if body.get("top_p") is not None:
            out["top_p"] = body["top_p"]
    user_id = body.get("safety_identifier") or body.get("user")
    if isinstance(user_id, str) and user_id:
        out["metadata"] = {"user_id": user_id}
    if "stream" in body:
        out["stream"] = bool(body["stream"])
    return Conversion(
        body=out,
        json_tool=JSON_TOOL_NAME if json_tool is not None else None,
        input_estimate=estimate_anthropic_prompt_tokens(out),
        side=side,
    )


# --- A (the neutral form) → R -------------------------------------------------------------------------------


def _system_text(system: object) -> str:
    if isinstance(system, str):
        return system
    return "\n\n".join(b.get("text") or "" for b in system or [] if isinstance(b, dict) and b.get("text"))


def _image_part(source: dict) -> dict | None:
    if source.get("type") == "base64":
        return {
            "type": "input_image",
            "image_url": f"data:{source.get('media_type')};base64,{source.get('data')}",
            "detail": "auto",
        }
    if source.get("type") == "url":
        return {"type": "input_image", "image_url": source.get("url"), "detail": "auto"}
    return None


def _input_parts(content: object) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}] if content else []
    parts: list[dict] = []
    for block in content or []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            parts.append({"type": "input_text", "text": block["text"]})
        elif kind == "image":
            part = _image_part(block.get("source") or {})
            if part:
                parts.append(part)
        elif kind == "document":
            source = block.get("source") or {}
            if source.get("type") == "base64":
                parts.append(
                    {
                        "type": "input_file",
                        "filename": block.get("title") or "document.pdf",
                        "file_data": f"data:{source.get('media_type')};base64,{source.get('data')}",
                    }
                )
    return parts


def _tool_output(block: dict) -> str | list[dict]:
    content = block.get("content")
    prefix = "Error: " if block.get("is_error") else ""
    if isinstance(content, str) or content is None:
        return prefix + (content or "")
    parts = _input_parts(content)
    if all(p["type"] == "input_text" for p in parts):
        return prefix + "".join(p["text"] for p in parts)
    if prefix:
        parts.insert(0, {"type": "input_text", "text": prefix})
    return parts


def _reasoning_item(block: dict, sealer: Sealer | None) -> dict | None:
    """An A thinking block whose signature is an R-kind envelope → the R reasoning item it carries (§5.5 step 3)."""
    if block.get("type") != "thinking" or sealer is None:
        return None
    payload = sealer.open("r", block.get("signature"))
    if payload is None or not payload.get("encrypted_content"):
        return None
    summary = [{"type": "summary_text", "text": block["thinking"]}] if block.get("thinking") else []
    return {
        "type": "reasoning",
        "id": payload.get("id"),
        "summary": summary,
        "encrypted_content": payload["encrypted_content"],
    }


def _user_id_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()  # 64 hex chars: R's safety_identifier limit (§6 M10)


def anthropic_request_to_responses(
    conv: Conversion, target: TargetModel, *, sealer: Sealer | None = None
) -> Conversion:
    """Convert the neutral A request of `conv` into a stateless R request for an R upstream (§5.4, §5.5)."""
    body, side = conv.body, conv.side
    custom = set(side.get("custom_tools") or ())
    namespaces = side.get("namespaces") or {}
    out: dict = {"model": target.upstream_model}
    instructions = _system_text(body.get("system"))
    if instructions:
        out["instructions"] = instructions
    items: list[dict] = []
    custom_calls: set[str] = set()
    for message in body.get("messages") or []:
        role, content = message.get("role"), message.get("content")
        if role == "system":  # a mid-conversation system message → developer item in place (§6 M4)
            text = _system_text(content) if isinstance(content, list) else (content or "")
            if text:
                items.append(
                    {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": text}]}
                )
            continue
        if role == "user":
            blocks = [content] if isinstance(content, str) else content or []
            for block in blocks:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    call_id = block.get("tool_use_id")
                    kind = "custom_tool_call_output" if call_id in custom_calls else "function_call_output"
                    items.append({"type": kind, "call_id": call_id, "output": _tool_output(block)})
            rest = [b for b in blocks if not (isinstance(b, dict) and b.get("type") == "tool_result")]
            parts = _input_parts(rest if not isinstance(content, str) else content)
            if parts:
                items.append({"type": "message", "role": "user", "content": parts})
            continue
        texts: list[str] = []

        def flush_text(texts: list[str] = texts) -> None:
            if texts:
                items.append(
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": "".join(texts), "annotations": []}],
                    }
                )
                texts.clear()

        for block in [content] if isinstance(content, str) else content or []:
            if isinstance(block, str):
                texts.append(block)
                continue
            kind = block.get("type")
            if kind == "text":
                texts.append(block.get("text") or "")
            elif kind == "thinking":
                item = _reasoning_item(block, sealer)
                if item is not None:
                    flush_text()
                    items.append(item)
            elif kind == "tool_use":
                flush_text()
                name = block.get("name") or ""
                call: dict
                if name in custom:
                    custom_calls.add(block.get("id"))
                    value = (block.get("input") or {}).get("input")
                    call = {
                        "type": "custom_tool_call",
                        "call_id": block.get("id"),
                        "name": name,
                        "input": value if isinstance(value, str) else compact_json(block.get("input") or {}),
                    }
                else:
                    call = {
                        "type": "function_call",
                        "call_id": block.get("id"),
                        "name": name,
                        "arguments": compact_json(block.get("input") or {}),
                    }
                if name in namespaces:
                    call["namespace"], call["name"] = namespaces[name]
                items.append(call)
        flush_text()
    out["input"] = items

    responses_side = side.get("responses") or {}
    if side.get("output_cap", True):
        cap = body.get("max_tokens")
        if isinstance(cap, int) and not isinstance(cap, bool):
            out["max_output_tokens"] = max(cap, MIN_OUTPUT_TOKENS)
    reasoning_target = replace(target, thinking=target.thinking or "adaptive")
    effort = anthropic_thinking_to_effort(body.get("thinking"), body.get("output_config"), reasoning_target)
    if effort is not None and target.thinking is not None:
        thinking = body.get("thinking") or {}
        out["reasoning"] = {"effort": effort}
        if thinking.get("display") != "omitted":
            out["reasoning"]["summary"] = "auto"
        out["include"] = [ENCRYPTED_INCLUDE]
    fmt = (body.get("output_config") or {}).get("format")
    text: dict = {}
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        text["format"] = {
            "type": "json_schema",
            "name": "structured_output",
            "schema": fmt.get("schema") or {},
            "strict": False,
            **(responses_side.get("json_schema") or {}),
        }
    elif responses_side.get("json_object"):
        text["format"] = {"type": "json_object"}
    if responses_side.get("verbosity"):
        text["verbosity"] = responses_side["verbosity"]
    if text:
        out["text"] = text

    tools: list[dict] = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict) or "name" not in tool or tool.get("type") not in (None, "custom"):
            continue  # A server tools have no R counterpart here
        name = tool["name"]
        if name in custom:
            tools.append({"type": "custom", "name": name, "description": tool.get("description") or ""})
        else:
            spec = {
                "type": "function",
                "name": name,
                "parameters": tool.get("input_schema") or {"type": "object"},
                "strict": False,
            }
            if tool.get("description"):
                spec["description"] = tool["description"]
            tools.append(spec)
    choice = body.get("tool_choice") or {}
    if tools and choice.get("type") != "none":
        out["tools"] = tools
        kind = choice.get("type")
        if kind == "any":
            out["tool_choice"] = "required"
        elif kind == "tool":
            out["tool_choice"] = {
                "type": "custom" if choice.get("name") in custom else "function",
                "name": choice.get("name"),
            }
        else:
            out["tool_choice"] = "auto"
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    for name in ("prompt_cache_key", "service_tier", "top_logprobs"):
        if responses_side.get(name) is not None:
            out[name] = responses_side[name]
    for name in ("safety_identifier", "user"):  # an O/R client's own fields, as they were (§5.4)
        if responses_side.get(name):
            out[name] = responses_side[name]
    if not any(responses_side.get(name) for name in ("safety_identifier", "user")):
        user_id = (body.get("metadata") or {}).get("user_id") if isinstance(body.get("metadata"), dict) else None
        if isinstance(user_id, str) and user_id:
            out["safety_identifier"] = _user_id_hash(user_id)
    stops = body.get("stop_sequences")
    if stops:
        side["stop"] = [s for s in stops if isinstance(s, str) and s]
    out["store"] = False  # upstream R calls are stateless (R3)
    if "stream" in body:
        out["stream"] = bool(body["stream"])
    return Conversion(
        body=out,
        tool_names=conv.tool_names,
        json_tool=conv.json_tool,
        input_estimate=estimate_responses_prompt_tokens(out, items),
        side=side,
    )
