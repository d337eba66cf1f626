"""O upstream stream → A client events (§4.2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..anthropic_to_openai import anthropic_tool_id, openai_reasoning_text
from ..errors import ErrorKind, GatewayError, anthropic_stream_error, upstream_stream_error
from ..models import Conversion, SSEItem
from ..stop_reasons import anthropic_stop
from ..tools import compact_json, sanitize_tool_id
from ..usage import Usage, estimate_text_tokens, usage_from_openai, usage_to_anthropic
from .from_anthropic import STREAM_INCOMPLETE

UNKNOWN_TOOL_NAME = "unknown_tool"  # a call whose name never arrived still needs a start (§4.2 close_open)

ToolKey = tuple[str, object]  # ("index", int) | ("id", str) | ("slot", int)


@dataclass
class _ToolCall:
    """One O tool call of the current tool phase."""

    id: str
    name: str | None = None
    index: int | None = None  # A block index, allocated when the block starts (so indices follow start order)
    pending_args: list[str] = field(default_factory=list)  # fragments that arrived before the name


def anthropic_event(name: str, **data: object) -> SSEItem:
    return name, {"type": name, **data}


class AnthropicTextBlocks:
    """Text and thinking blocks of an A stream (§4.2 `open_block`), shared by the O→A and Gemini→A machines.

    The host class keeps `open_kind`, `open_index`, `next_index`, `output_text` and `_close_open()`.
    """

    def _append_text(self, kind: str, text: str) -> list[SSEItem]:
        """A text or thinking delta, opening a block of that kind first if needed."""
        items: list[SSEItem] = []
        if self.open_kind != kind:
            items += self._close_open()
            self.open_kind, self.open_index = kind, self.next_index
            self.next_index += 1
            block = (
                {"type": "text", "text": ""}
                if kind == "text"
                else {"type": "thinking", "thinking": "", "signature": ""}
            )
            items.append(anthropic_event("content_block_start", index=self.open_index, content_block=block))
        self.output_text.append(text)
        delta = {"type": f"{kind}_delta", kind: text}
        items.append(anthropic_event("content_block_delta", index=self.open_index, delta=delta))
        return items


class OpenAIToAnthropicStream(AnthropicTextBlocks):
    """Feed parsed O chunks, get A events; `new_id()` mints ids for tool calls that came without one."""

    def __init__(self, conv: Conversion, *, model: str, message_id: str, new_id: Callable[[], str]) -> None:
        self.conv = conv
        self.model = model  # the client's model id (G2)
        self.message_id = message_id
        self.new_id = new_id
        self.started = False
        self.next_index = 0
        self.open_kind: str | None = None  # "text" | "thinking" while such a block is open
        self.open_index: int | None = None
        self.tool_phase: dict[ToolKey, _ToolCall] = {}  # the current run of tool calls, in arrival order
        self.tool_keys_by_id: dict[str, ToolKey] = {}
        self.slots = 0
        self.finish_reason: str | None = None
        self.matched_stop: object = None  # vLLM's choices[].stop_reason
        self.upstream_usage: dict | None = None
        self.emitted_tool_use = False
        self.refused = False
        self.done = False
        self.error: GatewayError | None = None
        self.output_text: list[str] = []  # everything emitted, for the local output estimate

    @property
    def usage(self) -> Usage:
        """Usage to bill: the upstream's, else the prompt estimate plus a local count of the emitted output."""
        if self.upstream_usage is not None:
            return usage_from_openai(self.upstream_usage)
        output = estimate_text_tokens("".join(self.output_text))
        return Usage(input_tokens=self.conv.input_estimate, output_tokens=output, estimated=True)

    def _start(self) -> list[SSEItem]:
        if self.started:
            return []
        self.started = True
        # A real-looking input count: a hard-coded 0 breaks Claude Code's context meter (CLIProxyAPI#1700).
        usage = {
            "input_tokens": self.conv.input_estimate,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return [anthropic_event("message_start", message=message), anthropic_event("ping")]

    def _close_text(self) -> list[SSEItem]:
        if self.open_kind is None:
            return []
        items = [anthropic_event("content_block_stop", index=self.open_index)]
        self.open_kind = self.open_index = None
        return items

    def _close_open(self) -> list[SSEItem]:
        """Stop the open text/thinking block and every tool block of the current phase."""
        items = self._close_text()
        for call in self.tool_phase.values():
            if call.index is None:
                items += self._start_tool(call)
        for call in sorted(self.tool_phase.values(), key=lambda call: call.index):
            items.append(anthropic_event("content_block_stop", index=call.index))
        self.tool_phase = {}
        self.tool_keys_by_id = {}
        return items

    def _arguments_delta(self, call: _ToolCall, partial_json: str) -> SSEItem:
        self.output_text.append(partial_json)
        return anthropic_event(
            "content_block_delta", index=call.index, delta={"type": "input_json_delta", "partial_json": partial_json}
        )

    def _start_tool(self, call: _ToolCall) -> list[SSEItem]:
        call.index = self.next_index
        self.next_index += 1
        self.emitted_tool_use = True
        name = self.conv.client_tool_name(call.name or UNKNOWN_TOOL_NAME)
        self.output_text.append(name)
        block = {"type": "tool_use", "id": call.id, "name": name, "input": {}}
        items = [anthropic_event("content_block_start", index=call.index, content_block=block)]
        if call.pending_args:
            # Buffered fragments flushed once, as one delta (edge case 6).
            items.append(self._arguments_delta(call, "".join(call.pending_args)))
            call.pending_args = []
        return items

    def _tool_key(self, call: dict) -> ToolKey:
        index = call.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            key: ToolKey = ("index", index)
        elif isinstance(call.get("id"), str) and call["id"]:
            # Gemini/Ollama omit `index`: distinct ids are distinct calls (openai/openai-python#3246).
            key = self.tool_keys_by_id.get(call["id"], ("id", call["id"]))
        elif self.tool_phase:
            key = next(reversed(self.tool_phase))  # a bare fragment continues the call in flight
        else:
            self.slots += 1
            key = ("slot", self.slots)
        if isinstance(call.get("id"), str) and call["id"]:
            self.tool_keys_by_id.setdefault(call["id"], key)
        return key

    def _tool_delta(self, call: dict) -> list[SSEItem]:
        key = self._tool_key(call)
        items: list[SSEItem] = []
        tool = self.tool_phase.get(key)
        if tool is None:
            items += self._close_text()  # a new call closes text/thinking, not the other calls
            tool = self.tool_phase[key] = _ToolCall(id=anthropic_tool_id(call.get("id"), self.new_id))
        elif tool.index is None and isinstance(call.get("id"), str) and call["id"]:
            tool.id = sanitize_tool_id(call["id"])  # the id came after the first fragment
        function = call.get("function") or {}
        if tool.name is None and isinstance(function.get("name"), str) and function["name"]:
            tool.name = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            arguments = compact_json(arguments)
        was_started = tool.index is not None
        if isinstance(arguments, str) and arguments:  # never an empty partial_json (BerriAI/litellm#31561)
            if was_started:
                items.append(self._arguments_delta(tool, arguments))
            else:
                tool.pending_args.append(arguments)
        if not was_started and tool.name is not None:
            items += self._start_tool(tool)
        return items

    def _finalize(self) -> list[SSEItem]:
        items = self._start() + self._close_open()  # every block stopped before message_delta (new-api#5482)
        stop_reason, stop_sequence = anthropic_stop(
            self.finish_reason,
            matched_stop=self.matched_stop,
            has_tool_use=self.emitted_tool_use,
            refused=self.refused,
        )
        # Exactly one message_delta, carrying the stop reason and the final usage (Gitlawb/openclaude#14).
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        items.append(anthropic_event("message_delta", delta=delta, usage=usage_to_anthropic(self.usage)))
        items.append(anthropic_event("message_stop"))
        self.done = True
        return items

    def _fail(self, error: GatewayError) -> list[SSEItem]:
        # No message_stop after an error: never fake a success (ENTERPILOT/GoModel#1017).
        self.error = error
        self.done = True
        return [("error", anthropic_stream_error(error))]

    def _choice(self, choice: dict) -> list[SSEItem]:
        items: list[SSEItem] = []
        delta = choice.get("delta") or {}
        reasoning = openai_reasoning_text(delta)
        if reasoning:
            items += self._append_text("thinking", reasoning)
        content = delta.get("content")
        if isinstance(content, str) and content:  # "" and null never open a block (edge case 4)
            items += self._append_text("text", content)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self.refused = True
            items += self._append_text("text", refusal)
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                items += self._tool_delta(call)
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
            self.matched_stop = choice.get("stop_reason")
            if self.upstream_usage is not None:
                items += self._finalize()  # usage on the finish chunk: done at once (edge case 9)
        return items

    def feed(self, chunk: dict) -> list[SSEItem]:
        """One parsed upstream O chunk."""
        if self.done:
            return []  # nothing may follow message_stop
        if chunk.get("error"):
            return self._fail(upstream_stream_error(chunk, "openai"))
        items = self._start()
        if chunk.get("usage"):
            self.upstream_usage = chunk["usage"]
        choices = [c for c in chunk.get("choices") or [] if isinstance(c, dict) and c.get("index", 0) == 0]
        if choices:
            items += self._choice(choices[0])
        elif self.upstream_usage is not None and self.finish_reason is not None:
            items += self._finalize()  # the usage-only chunk after the finish chunk
        return items

    def feed_done(self) -> list[SSEItem]:
        """`data: [DONE]`: finalize unless already done."""
        return [] if self.done else self._finalize()

    def finish(self) -> list[SSEItem]:
        """Upstream EOF: finalize if a finish_reason came (some providers omit [DONE]), else an error event."""
        if self.done:
            return []
        if self.finish_reason is not None:
            return self._finalize()
        return self._fail(GatewayError(ErrorKind.UPSTREAM_ERROR, STREAM_INCOMPLETE, code="stream_incomplete"))
