"""What a converter needs to know about the upstream model, and what a request conversion hands back."""

from __future__ import annotations

from dataclasses import dataclass, field

# One stream output item: (None, chunk dict) or (None, "[DONE]") for an O client; (event name, data) for an A client.
SSEItem = tuple[str | None, dict | str]


@dataclass(frozen=True)
class TargetModel:
    """Upstream model capabilities, filled from the catalog row (never guessed from the model name)."""

    upstream_model: str
    max_output_tokens: int | None = None  # clamp for max_tokens
    default_max_tokens: int | None = None  # O→A when the client gave none (§2.1)
    # None: no reasoning support (an O upstream then never receives reasoning_effort);
    # "budget": thinking {type:"enabled", budget_tokens}; "adaptive": thinking {type:"adaptive"} + effort (§2.6).
    thinking: str | None = None
    structured_output: bool = False  # A upstream accepts output_config.format (§2.1)
    max_tokens_field: str = "max_tokens"  # O upstream: "max_tokens" | "max_completion_tokens" (§2.3)
    image_urls: bool = True  # upstream accepts URL image sources (§2.7)
    stream_usage: bool = True  # O upstream accepts stream_options.include_usage (G5)
    reasons_by_default: bool = False  # O upstream: send reasoning_effort "none" when thinking is off (§2.6)
    requires_user_first: bool = False  # A upstream rejects an assistant-first message list (§2.2 step 7)
    # Additions beyond the lead's list, all defaulting to the permissive choice:
    reasoning_efforts: tuple[str, ...] = ()  # O upstream's accepted reasoning_effort words; () = any (§2.6)
    documents: bool = True  # O upstream accepts PDF `file` parts (§2.4 step 2)
    web_search: bool = False  # O upstream accepts web_search_options (§2.3 server tools)
    # Issue 14 (PROTOCOLS-RESPONSES §6): mid-conversation system messages and automatic caching.
    system_role: str = "system"  # O upstream: role of converted system messages ("system" | "developer")
    mid_system: str = "inline"  # O upstream: "inline" (same position) | "hoist" (into the leading one) | "reject"
    mid_conv_system: bool = False  # A upstream model takes {role:"system"} messages in place (M2)
    auto_cache: bool = False  # A upstream: place prompt-cache breakpoints for O clients (issue 14 item 5)


@dataclass
class Conversion:
    """A converted request plus the state needed to convert its response back."""

    body: dict  # the upstream request body
    tool_names: dict[str, str] = field(default_factory=dict)  # upstream tool name -> client tool name (§2.4 step 5)
    json_tool: str | None = None  # forced tool standing in for response_format json_schema (§2.1)
    input_estimate: int = 0  # estimated prompt tokens of `body`
    # The hub's side channel (proxy/translate/hub.py): what the neutral A form cannot hold travels here
    # from the client adapter to the upstream adapter and back (e.g. R/O-only fields such as
    # text.verbosity, top_logprobs, prompt_cache_key, service_tier, json_object, the R tool namespaces).
    side: dict = field(default_factory=dict)

    def client_tool_name(self, upstream_name: str) -> str:
        """Restore the client's spelling of a tool name the gateway shortened."""
        return self.tool_names.get(upstream_name, upstream_name)
