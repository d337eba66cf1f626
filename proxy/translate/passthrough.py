"""Same-protocol routes: forwarded as they are except for the gateway-wide rules (§0, §3.5, §4.3)."""

from __future__ import annotations

from collections.abc import Callable

from .anthropic_to_openai import anthropic_thinking_filter
from .models import Conversion, TargetModel
from .system_messages import (
    anthropic_hoist_system_messages,
    first_system_index,
    has_system_messages,
    mid_system_not_supported,
)
from .usage import estimate_anthropic_prompt_tokens, estimate_openai_prompt_tokens


def openai_request_to_openai(body: dict, target: TargetModel, *, input_estimate: int | None = None) -> Conversion:
    """O→O: upstream model id, stream usage always requested (G5), max-tokens field the provider knows (§2.3)."""
    out = {**body, "model": target.upstream_model}
    if out.get("stream") and target.stream_usage:
        out["stream_options"] = {**(out.get("stream_options") or {}), "include_usage": True}
    other_field = "max_completion_tokens" if target.max_tokens_field == "max_tokens" else "max_tokens"
    if other_field in out and target.max_tokens_field not in out:
        out[target.max_tokens_field] = out.pop(other_field)
    # The caller usually estimated the same messages already (for the hold): do not walk them twice.
    estimate = estimate_openai_prompt_tokens(out) if input_estimate is None else input_estimate
    return Conversion(body=out, input_estimate=estimate)


def openai_chunk_for_client(chunk: dict, *, include_usage: bool) -> dict | None:
    """O→O relay: None for the usage-only chunk and no `usage` keys when the client did not ask (G5)."""
    if include_usage or chunk.get("error"):
        return chunk
    if "usage" not in chunk:
        return chunk
    if not chunk.get("choices"):
        return None
    return {key: value for key, value in chunk.items() if key != "usage"}


def anthropic_request_to_anthropic(
    body: dict,
    target: TargetModel,
    *,
    accept_signature: Callable[[dict], bool] | None = None,
    input_estimate: int | None = None,
) -> Conversion:
    """A→A: upstream model id and the thinking provenance filter (§3.5); everything else forwarded.

    Mid-conversation system messages go through unchanged to a model flagged `mid_conv_system`; any other
    model gets their text appended to `system` and the tool changes folded (PROTOCOLS-RESPONSES §6 M2, M5).
    """
    if not target.mid_conv_system and has_system_messages(body.get("messages")):
        if target.mid_system == "reject":
            raise mid_system_not_supported(first_system_index(body["messages"]))
        body = anthropic_hoist_system_messages(body)
    out = {**anthropic_thinking_filter(body, accept_signature=accept_signature), "model": target.upstream_model}
    estimate = estimate_anthropic_prompt_tokens(out) if input_estimate is None else input_estimate
    return Conversion(body=out, input_estimate=estimate)
