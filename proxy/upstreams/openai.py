"""Client for OpenAI-protocol upstreams (OpenAI, DeepSeek, Groq, Mistral, vLLM, Ollama, OpenRouter, ...).

`base_url` is what the OpenAI SDK takes, e.g. https://api.openai.com/v1.
"""

import aiohttp

from catalog.snapshot import ProviderSpec
from proxy.upstreams import http


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
        return await self._post("/chat/completions", json=body)

    async def embeddings(self, body: dict) -> http.UpstreamReply:
        return await self._post("/embeddings", json=body)

    async def images(self, body: dict) -> http.UpstreamReply:
        return await self._post("/images/generations", json=body)

    async def speech(self, body: dict) -> http.UpstreamReply:
        return await self._post("/audio/speech", json=body)

    async def transcription(self, fields: dict[str, str], file: tuple[str, bytes, str]) -> http.UpstreamReply:
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        filename, content, content_type = file
        form.add_field("file", content, filename=filename, content_type=content_type)
        return await self._post("/audio/transcriptions", data=form)

    async def models(self) -> http.UpstreamReply:
        return await http.get(self.provider.id, f"{self.provider.base_url}/models", headers=self._headers())
