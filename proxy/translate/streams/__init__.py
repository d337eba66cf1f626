"""Stream conversion state machines (§4) and stream aggregation for stream-only providers (§4.3)."""

from .aggregate import anthropic_stream_to_response, openai_stream_to_response
from .from_anthropic import AnthropicToOpenAIStream
from .from_openai import OpenAIToAnthropicStream

__all__ = [
    "AnthropicToOpenAIStream",
    "OpenAIToAnthropicStream",
    "anthropic_stream_to_response",
    "openai_stream_to_response",
]
