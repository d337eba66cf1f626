"""Client for Anthropic-protocol upstreams. `base_url` as the Anthropic SDK takes it
(https://api.anthropic.com); the client appends /v1/messages."""

from catalog.snapshot import ProviderSpec
from proxy.translate.betas import anthropic_betas_for_upstream
from proxy.translate.usage import UsageBounds, estimate_anthropic_prompt_tokens
from proxy.upstreams import http

ANTHROPIC_VERSION = "2023-06-01"  # always sent upstream, whatever the client sent (PROTOCOLS §0.1)


class AnthropicUpstream:
    protocol = "anthropic"

    def __init__(self, provider: ProviderSpec) -> None:
        self.provider = provider

    def _headers(self, beta: str | None) -> dict[str, str]:
        headers = dict(self.provider.extra_headers)
        headers["anthropic-version"] = ANTHROPIC_VERSION
        api_key = self.provider.next_api_key()  # round-robin over the provider's keys
        if api_key:
            headers["x-api-key"] = api_key
        if beta:
            headers["anthropic-beta"] = beta
        return headers

    async def _post(
        self, path: str, body: dict, beta: str | None, bounds: UsageBounds | None = None
    ) -> http.UpstreamReply:
        # The client's anthropic-beta through the provider's policy (options.betas; proxy/translate/betas.py).
        beta = anthropic_betas_for_upstream(beta, self.provider.options.get("betas"), body=body)
        return await http.post(
            self.provider.id,
            f"{self.provider.base_url}{path}",
            headers=self._headers(beta),
            json=body,
            connect_timeout=self.provider.connect_timeout_s,
            read_timeout=self.provider.read_timeout_s,
            usage_bounds=bounds,
        )

    async def messages(self, body: dict, *, beta: str | None = None) -> http.UpstreamReply:
        cap = body.get("max_tokens")
        bounds = UsageBounds(
            max_output_tokens=cap if type(cap) is int and cap >= 0 else None,
            input_estimate=lambda: estimate_anthropic_prompt_tokens(body),
        )
        return await self._post("/v1/messages", body, beta, bounds)

    async def count_tokens(self, body: dict, *, beta: str | None = None) -> http.UpstreamReply:
        return await self._post("/v1/messages/count_tokens", body, beta)

    async def models(self) -> http.UpstreamReply:
        return await http.get(self.provider.id, f"{self.provider.base_url}/v1/models", headers=self._headers(None))
