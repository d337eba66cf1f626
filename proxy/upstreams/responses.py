"""Client for OpenAI Responses upstreams (`kind: responses`): POST {base_url}/responses.

`base_url` is what the OpenAI SDK takes, e.g. https://api.openai.com/v1 (model listing as for OpenAI).
"""

from proxy.translate.usage import UsageBounds, estimate_responses_prompt_tokens
from proxy.upstreams import http
from proxy.upstreams.openai import OpenAIUpstream


class ResponsesUpstream(OpenAIUpstream):
    protocol = "responses"

    async def responses(self, body: dict) -> http.UpstreamReply:
        cap = body.get("max_output_tokens")
        bounds = UsageBounds(
            max_output_tokens=cap if type(cap) is int and cap >= 0 else None,
            input_estimate=lambda: estimate_responses_prompt_tokens(body, _items(body.get("input"))),
        )
        return await self._post("/responses", json=body, usage_bounds=bounds)


def _items(source: object) -> list:
    return source if isinstance(source, list) else [{"content": source}]
