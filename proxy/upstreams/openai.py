"""Client for OpenAI-protocol upstreams (OpenAI, DeepSeek, Groq, Mistral, vLLM, Ollama, OpenRouter, ...).

`base_url` is what the OpenAI SDK takes, e.g. https://api.openai.com/v1.
"""

import aiohttp
from django.conf import settings

from catalog.snapshot import ProviderSpec
from proxy.translate.usage import UsageBounds, estimate_openai_prompt_tokens
from proxy.upstreams import http


def output_cap(body: dict) -> int | None:
    """The output cap an O chat request sends (max_completion_tokens wins over max_tokens)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if type(value) is int and value >= 0:
            return value
    return None


class OpenAIUpstream:
    protocol = "openai"

    def __init__(self, provider: ProviderSpec) -> None:
        self.provider = provider

    def _headers(self) -> dict[str, str]:
        headers = dict(self.provider.extra_headers)
        api_key = self.provider.next_api_key()  # round-robin over the provider's keys
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    async def _post(self, path: str, **kwargs) -> http.UpstreamReply:
        return await http.post(
            self.provider.id,
            f"{self.provider.base_url}{path}",
            headers=self._headers(),
            connect_timeout=self.provider.connect_timeout_s,
            read_timeout=self.provider.read_timeout_s,
            **kwargs,
        )

    async def chat(self, body: dict) -> http.UpstreamReply:
        n = body.get("n")
        bounds = UsageBounds(
            max_output_tokens=output_cap(body),
            input_estimate=lambda: estimate_openai_prompt_tokens(body),
            choices=n if type(n) is int and n > 0 else 1,  # every choice may reach the cap (issue 12)
        )
        return await self._post("/chat/completions", json=body, usage_bounds=bounds)

    async def embeddings(self, body: dict) -> http.UpstreamReply:
        return await self._post("/embeddings", json=body)

    async def images(self, body: dict) -> http.UpstreamReply:
        # Base64 images can be large: the media cap, not the JSON one.
        return await self._post("/images/generations", json=body, max_body=settings.RUAPI_MAX_UPSTREAM_RESPONSE_BYTES)

    async def speech(self, body: dict) -> http.UpstreamReply:
        return await self._post("/audio/speech", json=body, max_body=settings.RUAPI_MAX_UPSTREAM_RESPONSE_BYTES)

    async def transcription(self, fields: dict[str, str], file: tuple[str, bytes, str]) -> http.UpstreamReply:
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        filename, content, content_type = file
        form.add_field("file", content, filename=filename, content_type=content_type)
        return await self._post("/audio/transcriptions", data=form, max_body=settings.RUAPI_MAX_UPSTREAM_RESPONSE_BYTES)

    async def models(self) -> http.UpstreamReply:
        return await http.get(self.provider.id, f"{self.provider.base_url}/models", headers=self._headers())
