"""Documented parameters are checked by type and range at ingress (issue 12 item 5).

Before, a same-protocol route forwarded `temperature: "hot"`, `top_p: [1]`, `stop: 123` or a message
without `content` to the provider, which rejected it — after the gateway had held and called for
it. Now proxy/requests.py's tables (OPENAI_CHAT_CHECKS, ANTHROPIC_MESSAGES_CHECKS and the message
checks) refuse them with a 400 in the caller's shape naming the parameter, before any hold or
upstream call; what real SDKs and clients send (Claude Code, the OpenAI SDK's newer fields) still
passes, and fields the tables do not know are forwarded as before.
"""

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.requests import (
    ANTHROPIC_MESSAGES_CHECKS,
    OPENAI_CHAT_CHECKS,
    check_anthropic_messages,
    check_openai_chat,
)
from proxy.translate.errors import ErrorKind, GatewayError

HI = [{"role": "user", "content": "hi"}]
OPENAI_BASE = {"model": "gpt-test", "messages": HI}
ANTHROPIC_BASE = {"model": "claude-test", "max_tokens": 50, "messages": HI}

# (case, field or message path, value) -> refused with that param
OPENAI_BAD = [
    ("temperature a string", "temperature", "hot"),
    ("temperature above 2", "temperature", 2.5),
    ("temperature below 0", "temperature", -0.1),
    ("temperature a boolean", "temperature", True),
    ("top_p a list", "top_p", [1]),
    ("top_p above 1", "top_p", 1.5),
    ("stop a number", "stop", 123),
    ("stop five strings", "stop", ["a", "b", "c", "d", "e"]),
    ("stop a list of numbers", "stop", [1, 2]),
    ("presence_penalty out of range", "presence_penalty", 3),
    ("frequency_penalty a string", "frequency_penalty", "high"),
    ("seed a float", "seed", 1.5),
    ("logit_bias a list", "logit_bias", [1, 2]),
    ("logprobs a string", "logprobs", "yes"),
    ("top_logprobs above 20", "top_logprobs", 21),
    ("parallel_tool_calls a string", "parallel_tool_calls", "true"),
    ("tools an object", "tools", {"type": "function"}),
    ("tool without a function name", "tools", [{"type": "function", "function": {"description": "x"}}]),
    ("tool_choice unknown string", "tool_choice", "sometimes"),
    ("response_format unknown type", "response_format", {"type": "yaml"}),
    ("response_format a string", "response_format", "json"),
    ("reasoning_effort unknown", "reasoning_effort", "extreme"),
    ("verbosity a number", "verbosity", 3),
    ("user a number", "user", 42),
    ("metadata non-string values", "metadata", {"a": 1}),
    ("metadata 17 pairs", "metadata", {f"k{i}": "v" for i in range(17)}),
    ("store a string", "store", "no"),
    ("stream_options.include_usage a string", "stream_options", {"include_usage": "yes"}),
    ("n zero", "n", 0),
    ("max_tokens a string", "max_tokens", "100"),
]
OPENAI_BAD_MESSAGES = [
    ("user message without content", [{"role": "user"}], "messages[0].content"),
    ("content a number", [{"role": "user", "content": 5}], "messages[0].content"),
    ("content parts without type", [{"role": "user", "content": [{"text": "x"}]}], "messages[0].content"),
    ("unknown role", [{"role": "robot", "content": "x"}], "messages[0].role"),
    ("assistant with neither content nor tool calls", [*HI, {"role": "assistant"}], "messages[1].content"),
    ("tool message without tool_call_id", [*HI, {"role": "tool", "content": "x"}], "messages[1].tool_call_id"),
]
ANTHROPIC_BAD = [
    ("temperature a string", "temperature", "hot"),
    ("temperature above 1", "temperature", 1.5),
    ("top_p a list", "top_p", [1]),
    ("top_k a float", "top_k", 2.5),
    ("top_k negative", "top_k", -1),
    ("stop_sequences a number", "stop_sequences", 123),
    ("stop_sequences a string", "stop_sequences", "END"),
    ("system a number", "system", 7),
    ("system blocks without type", "system", [{"text": "x"}]),
    ("tools an object", "tools", {"name": "x"}),
    ("tool without name", "tools", [{"description": "x", "input_schema": {"type": "object"}}]),
    ("tool_choice a string", "tool_choice", "auto"),
    ("tool_choice tool without name", "tool_choice", {"type": "tool"}),
    ("thinking unknown type", "thinking", {"type": "sometimes"}),
    ("thinking budget too small", "thinking", {"type": "enabled", "budget_tokens": 100}),
    ("thinking budget a string", "thinking", {"type": "enabled", "budget_tokens": "2000"}),
    ("output_config.effort unknown", "output_config", {"effort": "extreme"}),
    ("metadata.user_id a number", "metadata", {"user_id": 5}),
    ("service_tier unknown", "service_tier", "premium"),
    ("max_tokens a string", "max_tokens", "100"),
]
ANTHROPIC_BAD_MESSAGES = [
    ("message without content", [{"role": "user"}], "messages[0].content"),
    ("content a number", [{"role": "user", "content": 5}], "messages[0].content"),
    ("blocks without type", [{"role": "user", "content": [{"text": "x"}]}], "messages[0].content"),
    ("unknown role", [{"role": "tool", "content": "x"}], "messages[0].role"),
]

# What real clients send: all of it must pass.
CLAUDE_CODE_BODY = {
    "model": "claude-test",
    "max_tokens": 32000,
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"},
                                     {"type": "text", "text": "fix the bug", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                                          {"type": "tool_use", "id": "toolu_1", "name": "Read",
                                           "input": {"file_path": "/a"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
        {"role": "system", "content": "Claude Code sends system turns inside messages too."},
    ],
    "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
    "tools": [{"name": "Read", "description": "read", "input_schema": {"type": "object", "properties": {}}},
              {"name": "mcp__x__y", "description": "deferred", "input_schema": {"type": "object"},
               "defer_loading": True},
              {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": False},
    "thinking": {"type": "adaptive"},
    "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "metadata": {"user_id": "user_" + "a" * 64 + "_account__session_" + "0" * 36},
    "temperature": 1,
    "stream": True,
}  # fmt: skip
OPENAI_CLIENT_BODY = {
    "model": "gpt-test",
    "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "system", "content": [{"type": "text", "text": "Also a system turn."}]},
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ],
    "max_completion_tokens": 1000,
    "reasoning_effort": "low",
    "verbosity": "low",
    "stream": True,
    "stream_options": {"include_usage": True},
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}},
              {"type": "custom", "custom": {"name": "grammar"}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "parallel_tool_calls": False,
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    "temperature": 0, "top_p": 1, "n": 1, "stop": ["END"], "seed": 7, "presence_penalty": -2,
    "frequency_penalty": 2.0, "logit_bias": {"50256": -100}, "logprobs": True, "top_logprobs": 20,
    "user": "u1", "safety_identifier": "s1", "prompt_cache_key": "k", "metadata": {"a": "b"},
    "service_tier": "flex", "store": False, "modalities": ["text"], "prediction": {"type": "content", "content": "x"},
    "web_search_options": {}, "some_vendor_field": {"anything": [1, 2]},
}  # fmt: skip


def _refused_param(check, body: dict) -> str:
    with pytest.raises(GatewayError) as excinfo:
        check(body)
    assert excinfo.value.kind is ErrorKind.INVALID_REQUEST
    return excinfo.value.param


@pytest.mark.parametrize(("_case", "field", "value"), OPENAI_BAD)
def test_openai_parameters_of_the_wrong_type_or_range_are_refused(_case, field, value):
    assert _refused_param(check_openai_chat, {**OPENAI_BASE, field: value}) == field


@pytest.mark.parametrize(("_case", "messages", "param"), OPENAI_BAD_MESSAGES)
def test_openai_bad_messages_are_refused(_case, messages, param):
    assert _refused_param(check_openai_chat, {**OPENAI_BASE, "messages": messages}) == param


@pytest.mark.parametrize(("_case", "field", "value"), ANTHROPIC_BAD)
def test_anthropic_parameters_of_the_wrong_type_or_range_are_refused(_case, field, value):
    assert _refused_param(check_anthropic_messages, {**ANTHROPIC_BASE, field: value}) == field


@pytest.mark.parametrize(("_case", "messages", "param"), ANTHROPIC_BAD_MESSAGES)
def test_anthropic_bad_messages_are_refused(_case, messages, param):
    assert _refused_param(check_anthropic_messages, {**ANTHROPIC_BASE, "messages": messages}) == param


def test_what_real_clients_send_passes():
    assert check_anthropic_messages(copy.deepcopy(CLAUDE_CODE_BODY)) == 32000
    assert check_openai_chat(copy.deepcopy(OPENAI_CLIENT_BODY)) == 1000
    # null means "not given" for every optional field
    assert check_openai_chat({**OPENAI_BASE, **dict.fromkeys(OPENAI_CHAT_CHECKS)}) is None
    assert check_anthropic_messages({**ANTHROPIC_BASE, **dict.fromkeys(ANTHROPIC_MESSAGES_CHECKS)}) == 50


# Every documented field against values of every JSON type: a value is either accepted or refused
# with `param` naming that field — never another exception, never another param.
json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(
    max_size=12
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(protocol=st.sampled_from(["openai", "anthropic"]), data=st.data())
def test_any_value_of_a_documented_field_is_accepted_or_refused_naming_it(protocol, data):
    checks = OPENAI_CHAT_CHECKS if protocol == "openai" else ANTHROPIC_MESSAGES_CHECKS
    field = data.draw(st.sampled_from(sorted(checks)))
    value = data.draw(json_values)
    body = {**(OPENAI_BASE if protocol == "openai" else ANTHROPIC_BASE), field: value}
    check = check_openai_chat if protocol == "openai" else check_anthropic_messages
    try:
        check(body)
    except GatewayError as exc:
        assert exc.kind is ErrorKind.INVALID_REQUEST
        assert exc.param == field
    else:
        assert value is None or checks[field](value) is None


# -- through the real server: refused before any hold or upstream call -------------------------------------


@pytest.mark.integration
@pytest.mark.embedded
@pytest.mark.parametrize(
    ("_case", "protocol", "patch", "param"),
    [
        ("O temperature hot", "openai", {"temperature": "hot"}, "temperature"),
        ("O top_p [1]", "openai", {"top_p": [1]}, "top_p"),
        ("O stop 123", "openai", {"stop": 123}, "stop"),
        ("O message without content", "openai", {"messages": [{"role": "user"}]}, "messages[0].content"),
        ("O reasoning_effort unknown", "openai", {"reasoning_effort": "extreme"}, "reasoning_effort"),
        ("A temperature hot", "anthropic", {"temperature": "hot"}, "temperature"),
        ("A top_k 2.5", "anthropic", {"top_k": 2.5}, "top_k"),
        ("A stop_sequences 123", "anthropic", {"stop_sequences": 123}, "stop_sequences"),
        ("A message without content", "anthropic", {"messages": [{"role": "user"}]}, "messages[0].content"),
        ("A thinking budget 10", "anthropic", {"thinking": {"type": "enabled", "budget_tokens": 10}}, "thinking"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_refused_parameter_costs_nothing_and_reaches_no_upstream(gateway, _case, protocol, patch, param, stream):
    # given
    from billing.models import Balance, Hold, LedgerEntry, UsageEvent
    from proxy.tests.integration.helpers import bearer, raw_client

    ledger_before = list(LedgerEntry.objects.filter(org_id=gateway.tenant.org.id).values_list("id", "amount_nanos"))
    base = OPENAI_BASE if protocol == "openai" else ANTHROPIC_BASE
    path = "/v1/chat/completions" if protocol == "openai" else "/v1/messages"

    # when
    with raw_client(gateway) as client:
        response = client.post(path, json={**base, **patch, "stream": stream}, headers=bearer(gateway))

    # then: 400 in the caller's shape naming the parameter
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    if protocol == "openai":
        assert (error["type"], error["param"]) == ("invalid_request_error", param)
    else:
        assert response.json()["type"] == "error" and error["type"] == "invalid_request_error"
        assert f"`{param}`" in error["message"]
    # nothing upstream, nothing held or billed
    assert gateway.mock.requests == []
    balance = Balance.objects.get(org_id=gateway.tenant.org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (10_000_000_000, 0)
    assert list(LedgerEntry.objects.filter(org_id=gateway.tenant.org.id).values_list("id", "amount_nanos")) == (
        ledger_before
    )
    assert not Hold.objects.exists() and not UsageEvent.objects.exists()


@pytest.mark.integration
@pytest.mark.embedded
def test_sdks_get_the_400_for_a_bad_parameter(gateway):
    import anthropic
    import openai

    with pytest.raises(openai.BadRequestError) as o_error:
        gateway.openai().chat.completions.create(model="gpt-test", messages=HI, temperature="hot")
    with pytest.raises(anthropic.BadRequestError) as a_error:
        gateway.anthropic().messages.create(model="claude-test", max_tokens=50, messages=HI, extra_body={"top_p": [1]})
    assert o_error.value.body["param"] == "temperature"
    assert a_error.value.body["error"]["type"] == "invalid_request_error"
    assert gateway.mock.requests == []


@pytest.mark.integration
@pytest.mark.embedded
def test_unknown_but_allowed_fields_are_still_forwarded(gateway):
    # given: documented fields the tables check loosely, and one they do not know (dropped by the
    # same-protocol allowlist as before, not refused)
    gateway.openai().chat.completions.create(
        model="gpt-test", messages=HI, verbosity="low", prompt_cache_key="k", extra_body={"some_vendor_field": 1}
    )

    # then
    (recorded,) = gateway.mock.requests
    assert recorded.json["verbosity"] == "low"
    assert recorded.json["prompt_cache_key"] == "k"
    assert "some_vendor_field" not in recorded.json
