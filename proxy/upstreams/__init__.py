"""Upstream clients: one module per upstream protocol; all network I/O of the gateway lives here."""

from catalog.snapshot import ProviderSpec
from proxy.upstreams.anthropic import AnthropicUpstream
from proxy.upstreams.echo import EchoUpstream
from proxy.upstreams.gemini import GeminiUpstream
from proxy.upstreams.openai import OpenAIUpstream
from proxy.upstreams.responses import ResponsesUpstream

_CLIENTS = {
    "openai": OpenAIUpstream, "anthropic": AnthropicUpstream, "gemini": GeminiUpstream,
    "responses": ResponsesUpstream, "echo": EchoUpstream,
}  # fmt: skip


def upstream_for(provider: ProviderSpec):
    """The client for a provider's kind (it holds no connection: pools live in upstreams.http)."""
    return _CLIENTS[provider.kind](provider)
