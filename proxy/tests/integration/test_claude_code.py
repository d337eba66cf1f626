"""Issue 14 through the real gateway and official SDKs: what Claude Code sends on every upstream protocol
(PROTOCOLS-RESPONSES §6), the anthropic-beta policy, the MCP connector, server tools billed, automatic caching."""

import copy
import hashlib
import json

import httpx
import pytest

from billing.models import UsageEvent
from proxy.tests.integration.helpers import (
    START_BALANCE_NANOS,
    Tokens,
    assert_billed_once,
    header_usd,
    round_half_up_div,
    token_cost_nanos,
    upstream_tokens,
    wait_for_usage_events,
)

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

CLAUDE_CODE_BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
    "mid-conversation-tool-changes-2026-07-01,thinking-token-count-2026-05-13,advanced-tool-use-2025-11-20,"
    "effort-2025-11-24"
)
USER_ID = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": "0b6c1f7e-2f4c-4d1e-9a8b-1f2e3d4c5b6a"})
BILLING = "x-anthropic-billing-header: cc_version=2.1.328.abc; cc_entrypoint=sdk-cli; cch=00000;"
CACHE = {"type": "ephemeral"}
REMINDER = "<system-reminder>Today is 2026-12-03.</system-reminder>"
SEARCH_PRICE_NANOS = 10_000_000  # web_search: 10 USD per 1,000 requests


def _tool(name: str, **extra) -> dict:
    schema = {"type": "object", "properties": {"command": {"type": "string"}}}
    return {"name": name, "description": f"The {name} tool", "input_schema": schema, **extra}


def claude_code_body() -> dict:
    """Modelled on PROTOCOLS-RESPONSES §6 "Observed" (Claude Code 2.1.328)."""
    return {
        "max_tokens": 32000,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": USER_ID},
        "system": [
            {"type": "text", "text": BILLING},
            {"type": "text", "text": "You are Claude Code.", "cache_control": CACHE},
            {"type": "text", "text": "Environment: linux.", "cache_control": CACHE},
        ],
        "tools": [_tool("Bash"), _tool("Read"), _tool("WebFetch", defer_loading=True)],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
            {"role": "system", "content": [{"type": "text", "text": REMINDER, "cache_control": CACHE}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
            {"role": "user", "content": "list files"},
        ],
    }


def _send(gateway, model: str, body: dict, *, betas: str = CLAUDE_CODE_BETAS, stream: bool = False):
    """POST /v1/messages?beta=true with the anthropic SDK, as Claude Code does."""
    client = gateway.anthropic()
    fields = {k: v for k, v in body.items() if k not in ("max_tokens", "messages")}
    kwargs = {
        "model": model, "max_tokens": body["max_tokens"], "messages": body["messages"], "extra_body": fields,
        "extra_headers": {"anthropic-beta": betas}, "extra_query": {"beta": "true"}, "timeout": 30,
    }  # fmt: skip
    if stream:
        with client.messages.stream(**kwargs) as events:
            return events.get_final_message()
    return client.messages.create(**kwargs)


@pytest.fixture
def routes(gateway):
    """Besides gpt-test (O) and claude-test (A, no mid_conv_system flag): Gemini, a flagged A model, priced
    server tools, automatic caching, and a provider with a beta allowlist."""
    from catalog.services import catalog_load

    mock = gateway.mock
    catalog_load({
        "providers": [
            {"name": "mock-gemini", "kind": "gemini", "base_url": f"{mock.url}/v1beta", "api_key": mock.api_key},
            {"name": "mock-bedrockish", "kind": "anthropic", "base_url": mock.anthropic_base_url,
             "api_key": mock.api_key,
             "options": {"betas": {"mode": "allow", "allow": ["interleaved-thinking-2025-05-14", "effort-*"],
                                   "rename": {"effort-2025-11-24": "effort-v2"}}}},
        ],
        "models": [
            {"name": "gemini-test", "provider": "mock-gemini", "upstream_model": "gemini-2.5-flash",
             "input": "0.30", "output": "2.50", "thinking": "budget"},
            {"name": "claude-mid", "provider": "mock-anthropic", "upstream_model": "claude-opus-4-8",
             "input": "5", "output": "25", "thinking": "adaptive", "mid_conv_system": True},
            {"name": "claude-search", "provider": "mock-anthropic", "upstream_model": "claude-upstream-1",
             "input": "3", "output": "15", "web_search": "10", "web_fetch": "0"},
            {"name": "claude-cache", "provider": "mock-anthropic", "upstream_model": "claude-upstream-1",
             "input": "3", "output": "15", "cache_read": "0.30", "cache_write": "3.75", "auto_cache": True},
            {"name": "claude-strict", "provider": "mock-bedrockish", "upstream_model": "claude-upstream-1",
             "input": "3", "output": "15"},
        ],
    })  # fmt: skip
    return gateway


# --- item 1: the Claude Code body on every upstream protocol -----------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_route(routes, stream):
    # when Claude Code's body goes to a model served by an OpenAI-protocol upstream
    message = _send(routes, "gpt-test", claude_code_body(), stream=stream)

    # then: answered (no "Unsupported message role"), the system message placed, Claude Code's extras mapped
    assert message.stop_reason == "tool_use" and message.content[-1].name == "Bash"
    upstream = routes.mock.requests[-1]
    assert upstream.path == "/v1/chat/completions"
    assert "anthropic-beta" not in upstream.headers
    sent = upstream.json
    assert sent["messages"] == [
        {"role": "system", "content": "You are Claude Code.\n\nEnvironment: linux."},
        {"role": "user", "content": "hello"},
        {"role": "system", "content": REMINDER},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "list files"},
    ]
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["Bash", "Read", "WebFetch"]
    assert sent["user"] == hashlib.sha256(USER_ID.encode()).hexdigest()
    assert sent["reasoning_effort"] == "high"
    assert "context_management" not in sent and "metadata" not in sent and "thinking" not in sent


@pytest.mark.parametrize("model", ["gpt-test", "gemini-test", "claude-test", "claude-mid"])
def test_tool_loop_second_turn(routes, model):
    # given the first turn's tool call, answered, with a system reminder after the user's prompt
    body = claude_code_body()
    body["messages"] = [
        {"role": "user", "content": "list files"},
        {"role": "system", "content": REMINDER},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "Bash",
                                           "input": {"command": "ls"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "a.txt"}]},
    ]  # fmt: skip
    # when
    message = _send(routes, model, body, stream=True)
    # then: the model answers in text; the upstream saw the call and its result
    assert message.stop_reason == "end_turn"
    assert message.content[-1].text == "Echo: list files"
    sent = json.dumps(routes.mock.requests[-1].json)
    assert "a.txt" in sent and REMINDER in sent


def test_openai_route_tool_removal(routes):
    body = claude_code_body()
    body["messages"][1]["content"].append({"type": "tool_removal", "tool": {"type": "tool_reference", "name": "Bash"}})
    _send(routes, "gpt-test", body)
    sent = routes.mock.requests[-1].json
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["Bash", "Read", "WebFetch"]
    assert sent["tool_choice"] == {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
        {"type": "function", "function": {"name": "Read"}}, {"type": "function", "function": {"name": "WebFetch"}}]}}
    assert sent["messages"][2] == {"role": "system", "content": REMINDER + "\n(Tools no longer available: Bash.)"}


def test_gemini_route(routes):
    message = _send(routes, "gemini-test", claude_code_body())
    assert message.stop_reason == "tool_use"
    upstream = routes.mock.requests[-1]
    assert upstream.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert "anthropic-beta" not in upstream.headers
    assert upstream.json["systemInstruction"] == {
        "parts": [{"text": "You are Claude Code."}, {"text": "Environment: linux."}, {"text": REMINDER}]
    }
    assert [c["role"] for c in upstream.json["contents"]] == ["user", "model", "user"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_anthropic_route_without_flag(routes, stream):
    # when the model lacks the catalog flag mid_conv_system (the mock refuses system messages for it)
    message = _send(routes, "claude-test", claude_code_body(), stream=stream)

    # then: folded into `system` (M5), the mid-conversation beta removed, every other beta and field kept
    assert message.stop_reason == "tool_use"
    upstream = routes.mock.requests[-1]
    sent = upstream.json
    expected = claude_code_body()
    assert sent["system"] == [*expected["system"], {"type": "text", "text": REMINDER, "cache_control": CACHE}]
    assert sent["messages"] == [expected["messages"][0], *expected["messages"][2:]]
    assert upstream.headers["anthropic-beta"] == CLAUDE_CODE_BETAS.replace(
        "mid-conversation-tool-changes-2026-07-01,", ""
    ).replace(",", ", ")
    for field in ("thinking", "output_config", "context_management", "metadata", "tools", "max_tokens"):
        assert sent[field] == expected[field], field
    assert "beta" not in upstream.query  # ?beta=true is the client's URL, not the upstream's


def test_anthropic_route_with_flag(routes):
    # when the model has the flag: forwarded unchanged, betas too
    body = claude_code_body()
    message = _send(routes, "claude-mid", copy.deepcopy(body))
    assert message.stop_reason == "tool_use"
    upstream = routes.mock.requests[-1]
    assert upstream.json == {**body, "model": "claude-opus-4-8"}
    assert upstream.headers["anthropic-beta"] == CLAUDE_CODE_BETAS.replace(",", ", ")


def test_count_tokens_without_flag(routes):
    body = claude_code_body()
    result = routes.anthropic().messages.count_tokens(
        model="claude-test", messages=body["messages"], system=body["system"], tools=body["tools"]
    )
    upstream = routes.mock.requests[-1]
    assert upstream.path == "/v1/messages/count_tokens"
    assert [m["role"] for m in upstream.json["messages"]] == ["user", "assistant", "user"]
    # the mock's count: words of every text + 10 per part (system, three messages)
    assert result.input_tokens == (len(BILLING.split()) + 4 + 2 + 10) + (1 + 10) + (1 + 10) + (2 + 10) + len(
        REMINDER.split()
    )


def test_beta_allowlist_provider(routes):
    _send(routes, "claude-strict", {"max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})
    assert routes.mock.requests[-1].headers["anthropic-beta"] == "interleaved-thinking-2025-05-14, effort-v2"


def test_no_betas_no_header(routes):
    routes.anthropic().messages.create(model="claude-test", max_tokens=20, messages=[{"role": "user", "content": "x"}])
    assert "anthropic-beta" not in routes.mock.requests[-1].headers


# --- item 3: the MCP connector --------------------------------------------------------------------------------


MCP_SERVERS = [{"type": "url", "url": "https://mcp.example.test/sse", "name": "example", "authorization_token": "t"}]


def test_mcp_servers_forwarded_and_relayed(routes):
    # when (non-streamed)
    body = {"max_tokens": 100, "messages": [{"role": "user", "content": "ping"}], "mcp_servers": MCP_SERVERS}
    message = _send(routes, "claude-test", body, betas="mcp-client-2025-04-04")
    # then: the upstream got mcp_servers unchanged and the beta; its blocks come back
    upstream = routes.mock.requests[-1]
    assert upstream.json["mcp_servers"] == MCP_SERVERS
    assert upstream.headers["anthropic-beta"] == "mcp-client-2025-04-04"
    assert [block.type for block in message.content] == ["mcp_tool_use", "mcp_tool_result", "text"]


def test_mcp_blocks_relayed_in_streams(routes):
    body = {"model": "claude-test", "max_tokens": 100, "stream": True, "mcp_servers": MCP_SERVERS,
            "messages": [{"role": "user", "content": "ping"}]}  # fmt: skip
    headers = {"x-api-key": routes.tenant.secret, "anthropic-version": "2023-06-01",
               "anthropic-beta": "mcp-client-2025-04-04"}  # fmt: skip
    response = httpx.post(f"{routes.server.url}/v1/messages", json=body, headers=headers, timeout=10)
    starts = [json.loads(line[6:])["content_block"] for line in response.text.splitlines()
              if line.startswith("data: ") and '"content_block_start"' in line]  # fmt: skip
    assert [block["type"] for block in starts] == ["mcp_tool_use", "mcp_tool_result", "text"]
    assert starts[1]["content"] == [{"type": "text", "text": "mcp: ping"}]


@pytest.mark.parametrize("model", ["gpt-test", "gemini-test"])
def test_mcp_servers_refused_on_other_protocols(routes, model):
    import anthropic

    body = {"max_tokens": 100, "messages": [{"role": "user", "content": "ping"}], "mcp_servers": MCP_SERVERS}
    with pytest.raises(anthropic.BadRequestError) as info:
        _send(routes, model, body, betas="mcp-client-2025-04-04")
    assert info.value.body["error"] == {"type": "invalid_request_error",
                                        "message": "mcp_servers is not supported for this model."}  # fmt: skip
    assert not [r for r in routes.mock.requests if r.path != "/v1/models"]


# --- item 4: server tools billed ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_web_searches_billed(routes, stream):
    # given a model priced at $10 per 1,000 searches and a request allowing two
    body = {"max_tokens": 100, "messages": [{"role": "user", "content": "latest news"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]}  # fmt: skip
    # when
    message = _send(routes, "claude-search", body, betas="", stream=stream)
    # then: the two searches the upstream reported are billed exactly, on top of the tokens
    assert message.usage.server_tool_use.web_search_requests == 2
    record = routes.mock.requests[-1]
    tokens = upstream_tokens(record)
    expected = token_cost_nanos("claude-test", Tokens(input=tokens.input, output=tokens.output)) + 2 * SEARCH_PRICE_NANOS
    event = assert_billed_once(routes.tenant, expected)
    assert (event.web_search_requests, event.web_fetch_requests) == (2, 0)


def test_web_search_hold_covers_max_uses(routes):
    # given a tenant with just enough for the tokens but not for 50 possible searches ($0.50)
    from billing.models import Balance

    Balance.objects.filter(org_id=routes.tenant.org.id).update(balance_nanos=100_000_000)
    body = {"max_tokens": 100, "messages": [{"role": "user", "content": "news"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 50}]}  # fmt: skip
    import anthropic

    with pytest.raises(anthropic.APIStatusError) as info:
        _send(routes, "claude-search", body, betas="")
    assert info.value.status_code == 402
    assert routes.mock.requests == []
    assert Balance.objects.get(org_id=routes.tenant.org.id).held_nanos == 0


# --- item 5: automatic caching for OpenAI clients ----------------------------------------------------------------


def test_auto_cache_second_identical_request_costs_less(routes):
    # given a long system prompt, an OpenAI client and an Anthropic upstream that caches strictly
    routes.mock.prompt_caching = True
    system = " ".join(f"rule{i}" for i in range(1500))
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "hello there"}]
    client = routes.openai()
    try:
        # when the same request is sent twice
        first = client.chat.completions.with_raw_response.create(model="claude-cache", messages=messages)
        second = client.chat.completions.with_raw_response.create(model="claude-cache", messages=messages)
    finally:
        routes.mock.prompt_caching = False
    # then: the upstream got breakpoints; the first wrote the prefix, the second read it
    sent = routes.mock.requests[0].json
    assert sent["system"] == [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    assert sent["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "hello there", "cache_control": {"type": "ephemeral"}}]}]  # fmt: skip
    prompt = 1500 + 10 + 2 + 10
    usage_1, usage_2 = first.parse().usage, second.parse().usage
    assert (usage_1.prompt_tokens, usage_1.prompt_tokens_details.cached_tokens) == (prompt, 0)
    assert usage_1.prompt_tokens_details.to_dict()["cache_write_tokens"] == prompt
    assert (usage_2.prompt_tokens, usage_2.prompt_tokens_details.cached_tokens) == (prompt, prompt)
    # billed at the cache prices: write $3.75/M, read $0.30/M, output $15/M
    output = usage_1.completion_tokens
    cost_1 = round_half_up_div(prompt * 3_750_000_000 + output * 15_000_000_000, 1_000_000)
    cost_2 = round_half_up_div(prompt * 300_000_000 + output * 15_000_000_000, 1_000_000)
    assert (header_usd(first.headers["x-ruapi-cost-usd"]), header_usd(second.headers["x-ruapi-cost-usd"])) == (
        cost_1, cost_2,
    )  # fmt: skip
    assert cost_2 < cost_1
    events = wait_for_usage_events(routes.tenant, 2)
    assert [(e.cache_write_tokens, e.cache_read_tokens, e.cost_nanos) for e in events] == [
        (prompt, 0, cost_1), (0, prompt, cost_2),
    ]  # fmt: skip
    from billing.models import Balance

    assert Balance.objects.get(org_id=routes.tenant.org.id).balance_nanos == START_BALANCE_NANOS - cost_1 - cost_2


def test_without_auto_cache_no_breakpoints_no_cache(routes):
    routes.mock.prompt_caching = True
    system = " ".join(f"rule{i}" for i in range(1500))
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "hello there"}]
    try:
        for _ in range(2):
            usage = routes.openai().chat.completions.create(model="claude-test", messages=messages).usage
            assert usage.prompt_tokens_details.cached_tokens == 0
    finally:
        routes.mock.prompt_caching = False
    assert routes.mock.requests[-1].json["system"] == system
    assert UsageEvent.objects.filter(org_id=routes.tenant.org.id, cache_read_tokens__gt=0).count() == 0
