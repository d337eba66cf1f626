"""A provider's own model list, fetched through the same upstream clients requests use.

Used by the admin's "test connection" (reachability, key, latency) and "sync models". Error
messages come from the gateway's error mapping, so they never carry the provider's key or URL.
"""

import time
from dataclasses import dataclass, field

from catalog.snapshot import ProviderSpec
from proxy.translate.errors import GatewayError, upstream_http_error
from proxy.upstreams import http, upstream_for

# What the built-in echo provider serves (it has no upstream to ask).
ECHO_MODELS = ("echo-1",)


@dataclass
class ProbeResult:
    ok: bool
    latency_ms: int | None
    model_ids: list[str] = field(default_factory=list)
    error: str = ""


def model_ids_of(kind: str, data: dict) -> list[str]:
    """Model ids from a models list: OpenAI/Anthropic `data[].id`; Gemini `models[].name` that can generate."""
    if kind == "gemini":
        return [
            str(item["name"]).removeprefix("models/")
            for item in data.get("models") or []
            if isinstance(item, dict) and item.get("name")
            and "generateContent" in (item.get("supportedGenerationMethods") or ["generateContent"])
        ]  # fmt: skip
    return [str(item["id"]) for item in data.get("data") or [] if isinstance(item, dict) and item.get("id")]


async def provider_probe(provider: ProviderSpec) -> ProbeResult:
    """List the provider's models once; closes this event loop's pooled sessions afterwards."""
    if provider.kind == "echo":
        return ProbeResult(ok=True, latency_ms=0, model_ids=list(ECHO_MODELS))
    started = time.perf_counter()
    try:
        reply = await upstream_for(provider).models()
        data = await reply.json()
    except GatewayError as exc:
        return ProbeResult(ok=False, latency_ms=int((time.perf_counter() - started) * 1000), error=exc.message)
    finally:
        await http.close_sessions()  # the admin runs this on a short-lived loop
    latency_ms = int((time.perf_counter() - started) * 1000)
    if reply.error is not None:  # the body could not be read (timed out, too large)
        return ProbeResult(ok=False, latency_ms=latency_ms, error=reply.error.message)
    if not reply.ok:
        error = upstream_http_error(reply.status, data, provider.protocol)
        return ProbeResult(ok=False, latency_ms=latency_ms, error=f"HTTP {reply.status}: {error.message}")
    return ProbeResult(ok=True, latency_ms=latency_ms, model_ids=model_ids_of(provider.kind, data or {}))
