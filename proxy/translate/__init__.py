"""Pure OpenAI Chat Completions ⇄ Anthropic Messages translation (PROTOCOLS.md): dicts in, dicts out, no I/O."""

from .anthropic_to_openai import (
    anthropic_request_to_openai,
    anthropic_thinking_filter,
    openai_response_to_anthropic,
)
from .errors import (
    ErrorKind,
    GatewayError,
    TranslationError,
    anthropic_error_body,
    anthropic_stream_error,
    openai_error_body,
    openai_stream_error,
    upstream_http_error,
    upstream_stream_error,
)
from .media import InlineImages, anthropic_image_urls, openai_image_urls
from .models import Conversion, SSEItem, TargetModel
from .openai_to_anthropic import anthropic_response_to_openai, openai_request_to_anthropic
from .passthrough import anthropic_request_to_anthropic, openai_chunk_for_client, openai_request_to_openai
from .stop_reasons import anthropic_stop_reason_to_openai, openai_finish_reason_to_anthropic
from .streams import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    anthropic_stream_to_response,
    openai_stream_to_response,
)
from .usage import (
    Usage,
    anthropic_response_usage,
    estimate_anthropic_prompt_tokens,
    estimate_openai_prompt_tokens,
    estimate_text_tokens,
    openai_response_usage,
    usage_from_anthropic,
    usage_from_openai,
    usage_merge_anthropic,
    usage_to_anthropic,
    usage_to_openai,
)

__all__ = [
    "AnthropicToOpenAIStream",
    "Conversion",
    "ErrorKind",
    "GatewayError",
    "InlineImages",
    "OpenAIToAnthropicStream",
    "SSEItem",
    "TargetModel",
    "TranslationError",
    "Usage",
    "anthropic_error_body",
    "anthropic_image_urls",
    "anthropic_request_to_anthropic",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "anthropic_response_usage",
    "anthropic_stop_reason_to_openai",
    "anthropic_stream_error",
    "anthropic_stream_to_response",
    "anthropic_thinking_filter",
    "estimate_anthropic_prompt_tokens",
    "estimate_openai_prompt_tokens",
    "estimate_text_tokens",
    "openai_chunk_for_client",
    "openai_error_body",
    "openai_finish_reason_to_anthropic",
    "openai_image_urls",
    "openai_request_to_anthropic",
    "openai_request_to_openai",
    "openai_response_to_anthropic",
    "openai_response_usage",
    "openai_stream_error",
    "openai_stream_to_response",
    "upstream_http_error",
    "upstream_stream_error",
    "usage_from_anthropic",
    "usage_from_openai",
    "usage_merge_anthropic",
    "usage_to_anthropic",
    "usage_to_openai",
]
