"""Client for Google's native Gemini API (generateContent / streamGenerateContent).

`base_url` is the API root with its version, e.g. https://generativelanguage.googleapis.com/v1beta;
the model goes in the path (`/models/{model}:generateContent`), the key in `x-goog-api-key`
(never in the `?key=` query string, which ends up in access logs).
"""

from urllib.parse import quote

from catalog.snapshot import ProviderSpec
from proxy.translate.usage import UsageBounds
from proxy.upstreams import http


def model_path(upstream_model: str) -> str:
    """`gemini-2.5-flash` or `models/gemini-2.5-flash` → `models/gemini-2.5-flash` (URL-safe)."""
    name = upstream_model.removeprefix("models/")
    return "models/" + quote(name, safe="-._~")


def output_cap(body: dict) -> int | None:
    """The request's maxOutputTokens (thoughts are reported apart and not held to it)."""
    cap = (body.get("generationConfig") or {}).get("maxOutputTokens")
    return cap if type(cap) is int and cap >= 0 else None


class GeminiUpstream:
    protocol = "gemini"

    def __init__(self, provider: ProviderSpec) -> None:
        self.provider = provider

    def _headers(self) -> dict[str, str]:
        headers = dict(self.provider.extra_headers)
        api_key = self.provider.next_api_key()  # round-robin over the provider's keys
        if api_key:
            headers["x-goog-api-key"] = api_key
        return headers

    async def generate(self, upstream_model: str, body: dict, *, stream: bool) -> http.UpstreamReply:
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        bounds = UsageBounds(max_output_tokens=output_cap(body))
        return await http.post(
            self.provider.id,
            f"{self.provider.base_url}/{model_path(upstream_model)}:{method}",
            headers=self._headers(),
            json=body,
            connect_timeout=self.provider.connect_timeout_s,
            read_timeout=self.provider.read_timeout_s,
            usage_bounds=bounds,
        )

    async def models(self) -> http.UpstreamReply:
        return await http.get(
            self.provider.id, f"{self.provider.base_url}/models?pageSize=1000", headers=self._headers()
        )
