"""Shared helpers of the gateway integration suite: catalog prices, the §3.2 usage mapping, billing checks, SSE.

The prices are written out here from conftest.mock_catalog (USD per 1M tokens → nano-USD per 1M tokens) rather
than read back from the database, so a wrong price import or a wrong cost formula makes the tests fail.
"""

import json
import time
from dataclasses import dataclass
from decimal import Decimal

import httpx

NANOS_PER_USD = 1_000_000_000
START_BALANCE_NANOS = 10 * NANOS_PER_USD

# nano-USD per 1M tokens, per the `gateway` fixture's catalog.
TOKEN_PRICES = {
    "gpt-test": {"input": 2_500_000_000, "output": 10_000_000_000, "cache_read": 1_250_000_000, "cache_write": 0},
    "claude-test": {
        "input": 3_000_000_000,
        "output": 15_000_000_000,
        "cache_read": 300_000_000,
        "cache_write": 3_750_000_000,
    },
    "embed-test": {"input": 20_000_000, "output": 0, "cache_read": 0, "cache_write": 0},
    "image-test": {"input": 5_000_000_000, "output": 40_000_000_000, "cache_read": 0, "cache_write": 0},
}
IMAGE_PRICE_NANOS = 10_000_000  # $0.01 per image
AUDIO_MINUTE_NANOS = 6_000_000  # $0.006 per minute
SPEECH_NANOS_PER_MCHAR = 15_000_000_000  # $15 per 1M characters

UPSTREAM_MODEL = {"gpt-test": "gpt-upstream-1", "claude-test": "claude-upstream-1"}
UPSTREAM_PATH = {"gpt-test": "/v1/chat/completions", "claude-test": "/v1/messages"}
OPENAI_PATHS = ("/v1/chat/completions", "/v1/embeddings", "/v1/images/generations", "/v1/audio/speech")

# (case id, client protocol, catalog model): the four client/upstream combinations.
COMBINATIONS = [
    ("O->O", "openai", "gpt-test"),
    ("O->A", "openai", "claude-test"),
    ("A->O", "anthropic", "gpt-test"),
    ("A->A", "anthropic", "claude-test"),
]
COMBINATION_IDS = [case[0] for case in COMBINATIONS]


def words(text: str) -> int:
    """The mock's token count of a text: whitespace-separated words."""
    return len(text.split())


@dataclass(frozen=True)
class Tokens:
    """Normalized usage (PROTOCOLS G6): uncached input, cache read, cache write, output (incl. reasoning)."""

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    @property
    def prompt(self) -> int:
        return self.input + self.cache_read + self.cache_write


def round_half_up_div(numerator: int, denominator: int) -> int:
    return int((Decimal(numerator) / Decimal(denominator)).to_integral_value(rounding="ROUND_HALF_UP"))


def token_cost_nanos(model: str, tokens: Tokens) -> int:
    """Catalog price × tokens, in nano-USD, rounded once half up."""
    prices = TOKEN_PRICES[model]
    total = (
        tokens.input * prices["input"]
        + tokens.output * prices["output"]
        + tokens.cache_read * prices["cache_read"]
        + tokens.cache_write * prices["cache_write"]
    )
    return round_half_up_div(total, 1_000_000)


def usd(nanos: int) -> float:
    """The `usage.cost` JSON number for a cost in nano-USD."""
    return float(Decimal(nanos) / NANOS_PER_USD)


def header_usd(value: str) -> int:
    """nano-USD of an `x-ruapi-cost-usd` header value."""
    return int(Decimal(value) * NANOS_PER_USD)


def upstream_tokens(record) -> Tokens:
    """The normalized counts the mock upstream reported for one recorded request (§3.2)."""
    usage = record.response_usage
    assert usage is not None, f"the mock sent no usage for {record.path}"
    if record.path == "/v1/messages":
        return Tokens(
            input=usage["input_tokens"],
            cache_read=usage.get("cache_read_input_tokens") or 0,
            cache_write=usage.get("cache_creation_input_tokens") or 0,
            output=usage["output_tokens"],
            reasoning=(usage.get("output_tokens_details") or {}).get("thinking_tokens") or 0,
        )
    if record.path == "/v1/responses":  # input_tokens include cached ones (PROTOCOLS-RESPONSES §5.1)
        cached = (usage.get("input_tokens_details") or {}).get("cached_tokens") or 0
        return Tokens(
            input=usage["input_tokens"] - cached,
            cache_read=cached,
            output=usage["output_tokens"],
            reasoning=(usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0,
        )
    details = usage.get("prompt_tokens_details") or {}
    cache_read = details.get("cached_tokens") or 0
    cache_write = details.get("cache_write_tokens") or 0
    return Tokens(
        input=usage["prompt_tokens"] - cache_read - cache_write,
        cache_read=cache_read,
        cache_write=cache_write,
        output=usage["completion_tokens"],
        reasoning=(usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


def openai_usage_numbers(usage) -> Tokens:
    """Normalized counts of an OpenAI SDK usage object (CompletionUsage)."""
    details = usage.prompt_tokens_details
    cache_read = (details.cached_tokens if details else 0) or 0
    cache_write = (details.cache_write_tokens if details else 0) or 0
    reasoning = (usage.completion_tokens_details.reasoning_tokens or 0) if usage.completion_tokens_details else 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    return Tokens(
        input=usage.prompt_tokens - cache_read - cache_write,
        cache_read=cache_read,
        cache_write=cache_write,
        output=usage.completion_tokens,
        reasoning=reasoning,
    )


def anthropic_usage_numbers(usage) -> Tokens:
    """Normalized counts of an Anthropic SDK usage object; both cache fields must be present (§3.2)."""
    assert usage.cache_read_input_tokens is not None
    assert usage.cache_creation_input_tokens is not None
    details = usage.output_tokens_details
    return Tokens(
        input=usage.input_tokens,
        cache_read=usage.cache_read_input_tokens,
        cache_write=usage.cache_creation_input_tokens,
        output=usage.output_tokens,
        reasoning=(details.thinking_tokens if details else 0) or 0,
    )


def cost_of(usage) -> float:
    """`usage.cost`, the gateway's extra field, from an SDK usage object."""
    extra = usage.model_extra or {}
    assert "cost" in extra, f"no usage.cost in {usage!r}"
    return extra["cost"]


# -- billing -------------------------------------------------------------------------------------------------


def usage_events(tenant) -> list:
    from billing.models import UsageEvent

    return list(UsageEvent.objects.filter(org_id=tenant.org.id).order_by("created_at", "id"))


def wait_for_usage_events(tenant, count: int = 1, timeout: float = 3.0) -> list:
    """The tenant's usage events once `count` exist (a stream's settlement may trail the client by a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        events = usage_events(tenant)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


def assert_billed_once(tenant, cost_nanos: int, *, wait: bool = True):
    """Exactly one usage event and one usage ledger entry of −cost; the balance moved by exactly that much."""
    from billing.models import Balance, LedgerEntry

    events = wait_for_usage_events(tenant) if wait else usage_events(tenant)
    assert len(events) == 1, events
    event = events[0]
    assert event.cost_nanos == cost_nanos
    entries = list(
        LedgerEntry.objects.filter(org_id=tenant.org.id, kind="usage").values_list("amount_nanos", "request_id")
    )
    assert entries == [(-cost_nanos, event.request_id)]
    balance = Balance.objects.get(org_id=tenant.org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (START_BALANCE_NANOS - cost_nanos, 0)
    return event


def assert_not_debited(tenant, *, start: int = START_BALANCE_NANOS) -> None:
    """No usage ledger entry, the balance untouched, no money left on hold."""
    from billing.models import Balance, LedgerEntry

    assert not LedgerEntry.objects.filter(org_id=tenant.org.id, kind="usage").exists()
    balance = Balance.objects.get(org_id=tenant.org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (start, 0)


def event_tokens(event) -> Tokens:
    return Tokens(
        input=event.input_tokens,
        cache_read=event.cache_read_tokens,
        cache_write=event.cache_write_tokens,
        output=event.output_tokens,
        reasoning=event.reasoning_tokens,
    )


# -- raw HTTP and SSE ----------------------------------------------------------------------------------------


def raw_client(gateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.server.url, timeout=10)


def bearer(gateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway.tenant.secret}"}


def parse_sse(text: str) -> list[tuple[str | None, object]]:
    """(event name, data) per SSE event; data JSON-decoded except `[DONE]`. Comment lines are returned as
    (":comment", line) so tests can see keep-alives."""
    events: list[tuple[str | None, object]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith(":"):
                events.append((":comment", line))
            elif line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].removeprefix(" "))
        if data:
            payload = "\n".join(data)
            events.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return events


def stream_raw(gateway, path: str, body: dict, headers: dict[str, str] | None = None):
    """POST a streaming request; (response, parsed SSE events). The body is read to EOF."""
    with raw_client(gateway) as client, client.stream("POST", path, json=body, headers=headers or bearer(gateway)) as r:
        text = r.read().decode()
    return r, parse_sse(text)
