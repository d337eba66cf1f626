"""Stop reason ⇄ finish reason (§3.1)."""

from __future__ import annotations

_ANTHROPIC_TO_OPENAI = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",  # BerriAI/litellm#23899
    "pause_turn": "stop",  # only reachable with server tools
}

_OPENAI_TO_ANTHROPIC = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",  # BerriAI/litellm#40903
}


def anthropic_stop_reason_to_openai(stop_reason: str | None) -> str:
    """Map an A stop_reason to an O finish_reason; null or unknown → "stop"."""
    return _ANTHROPIC_TO_OPENAI.get(stop_reason or "", "stop")


def openai_finish_reason_to_anthropic(finish_reason: str | None) -> str:
    """Map an O finish_reason to an A stop_reason; null or unknown → "end_turn" (never null)."""
    return _OPENAI_TO_ANTHROPIC.get(finish_reason or "", "end_turn")


def anthropic_stop(
    finish_reason: str | None, *, matched_stop: object = None, has_tool_use: bool = False, refused: bool = False
) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an O turn, with the §3.1 overrides applied."""
    stop_reason = openai_finish_reason_to_anthropic(finish_reason)
    if stop_reason == "end_turn" and has_tool_use:
        return "tool_use", None  # Ollama and others end tool turns with "stop" (BerriAI/litellm#34692)
    if stop_reason == "end_turn" and refused:
        return "refusal", None  # an O `refusal` string (§3.1, last line)
    if finish_reason == "stop" and isinstance(matched_stop, str):
        return "stop_sequence", matched_stop  # vLLM's non-standard choices[].stop_reason (vllm#45807)
    return stop_reason, None
