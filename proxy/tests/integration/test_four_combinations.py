"""The four client/upstream combinations (O→O, O→A, A→O, A→A) through the official SDKs, non-streaming:
plain text, system prompts, multi-turn, stop sequences, sampling parameters, output caps, images.

Every test checks what the upstream received (the mock validates Anthropic's rules and answers 400 otherwise),
what the client got back, and what was billed.
"""

import hashlib

import pytest
from asgiref.sync import sync_to_async

from proxy.tests.integration.helpers import (
    COMBINATION_IDS,
    COMBINATIONS,
    UPSTREAM_MODEL,
    UPSTREAM_PATH,
    Tokens,
    anthropic_usage_numbers,
    assert_billed_once,
    assert_not_debited,
    bearer,
    cost_of,
    event_tokens,
    header_usd,
    openai_usage_numbers,
    raw_client,
    token_cost_nanos,
    upstream_tokens,
    usd,
)
from proxy.tests.mock_upstream import TINY_PNG_BASE64, Script

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

HELLO = [{"role": "user", "content": "hello there"}]
HELLO_TOKENS = Tokens(input=12, output=3)  # "hello there" + 10 per message; "Echo: hello there"


def _system_texts(system) -> list[str]:
    """A `system` value as its list of texts (a string is one text)."""
    if isinstance(system, str):
        return [system]
    return [block["text"] for block in system]


def _ask(gateway, protocol: str, model: str, *, messages, **params):
    """(raw response, parsed SDK object) of a non-streaming request in `protocol`."""
    if protocol == "openai":
        raw = gateway.openai().chat.completions.with_raw_response.create(model=model, messages=messages, **params)
    else:
        params.setdefault("max_tokens", 50)
        raw = gateway.anthropic().messages.with_raw_response.create(model=model, messages=messages, **params)
    return raw, raw.parse()


def _answer_text(protocol: str, result) -> str:
    if protocol == "openai":
        return result.choices[0].message.content
    return "".join(block.text for block in result.content if block.type == "text")


def _stop(protocol: str, result) -> str:
    return result.choices[0].finish_reason if protocol == "openai" else result.stop_reason


# -- plain text ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "protocol", "model"), COMBINATIONS, ids=COMBINATION_IDS)
def test_plain_text_round_trip(gateway, case, protocol, model):
    # when
    raw, result = _ask(gateway, protocol, model, messages=HELLO)

    # then: the upstream got a protocol-valid body with the upstream model id and nothing else
    (upstream,) = gateway.mock.requests
    assert upstream.path == UPSTREAM_PATH[model]
    expected_body = {
        "O->O": {"model": "gpt-upstream-1", "messages": HELLO},
        "O->A": {"model": "claude-upstream-1", "max_tokens": 32000, "messages": HELLO},
        "A->O": {"model": "gpt-upstream-1", "messages": HELLO, "max_tokens": 50},
        "A->A": {"model": "claude-upstream-1", "max_tokens": 50, "messages": HELLO},
    }[case]
    assert upstream.json == expected_body
    assert upstream_tokens(upstream) == HELLO_TOKENS
    cost = token_cost_nanos(model, HELLO_TOKENS)

    # then: the client got its own protocol's shape, echoing its model id (G2)
    if protocol == "openai":
        assert result.object == "chat.completion"
        assert result.id == {"O->O": "chatcmpl-mock1", "O->A": "msg_mock1"}[case]
        assert result.model == model
        assert result.choices[0].index == 0
        assert result.choices[0].message.role == "assistant"
        assert result.choices[0].message.content == "Echo: hello there"
        assert result.choices[0].message.tool_calls is None
        assert result.choices[0].finish_reason == "stop"
        assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (12, 3, 15)
        assert result.usage.prompt_tokens_details.cached_tokens == 0
    else:
        assert result.type == "message"
        assert result.role == "assistant"
        assert result.id == {"A->O": "msg_chatcmpl-mock1", "A->A": "msg_mock1"}[case]
        assert result.model == model
        assert [block.to_dict() for block in result.content] == [{"type": "text", "text": "Echo: hello there"}]
        assert (result.stop_reason, result.stop_sequence) == ("end_turn", None)
        assert anthropic_usage_numbers(result.usage) == HELLO_TOKENS
    assert cost_of(result.usage) == usd(cost)

    # then: common headers, and exactly one debit of the cost
    assert raw.headers["x-request-id"].startswith("req_")
    assert header_usd(raw.headers["x-ruapi-cost-usd"]) == cost
    assert float(raw.headers["x-ruapi-overhead-ms"]) >= 0
    event = assert_billed_once(gateway.tenant, cost, wait=False)
    assert event.request_id == raw.headers["x-request-id"]
    assert event_tokens(event) == HELLO_TOKENS
    assert (event.model, event.upstream_model, event.status_code, event.is_stream, event.is_estimated) == (
        model,
        UPSTREAM_MODEL[model],
        200,
        False,
        False,
    )
    assert (event.client_protocol, event.upstream_protocol, event.endpoint) == (
        protocol,
        "openai" if model == "gpt-test" else "anthropic",
        "chat.completions" if protocol == "openai" else "messages",
    )


@pytest.mark.asyncio
@pytest.mark.parametrize(("case", "protocol", "model"), COMBINATIONS, ids=COMBINATION_IDS)
async def test_plain_text_with_async_clients(gateway, case, protocol, model):
    # when
    if protocol == "openai":
        async with gateway.async_openai() as client:
            raw = await client.chat.completions.with_raw_response.create(model=model, messages=HELLO)
            result = raw.parse()
        text, usage = result.choices[0].message.content, openai_usage_numbers(result.usage)
    else:
        async with gateway.async_anthropic() as client:
            raw = await client.messages.with_raw_response.create(model=model, max_tokens=50, messages=HELLO)
            result = await raw.parse()  # the anthropic SDK's async raw response parses asynchronously
        text, usage = result.content[0].text, anthropic_usage_numbers(result.usage)

    # then
    cost = token_cost_nanos(model, HELLO_TOKENS)
    assert (result.model, text, usage, cost_of(result.usage)) == (model, "Echo: hello there", HELLO_TOKENS, usd(cost))
    assert header_usd(raw.headers["x-ruapi-cost-usd"]) == cost
    event = await sync_to_async(assert_billed_once)(gateway.tenant, cost, wait=False)
    assert event.request_id == raw.headers["x-request-id"]


def test_balance_is_start_minus_the_sum_of_all_requests(gateway):
    # given: one request of each combination
    for _, protocol, model in COMBINATIONS:
        _ask(gateway, protocol, model, messages=HELLO)

    # then
    from billing.models import Balance, LedgerEntry, UsageEvent

    costs = [token_cost_nanos(model, HELLO_TOKENS) for _, _, model in COMBINATIONS]
    events = UsageEvent.objects.filter(org_id=gateway.tenant.org.id)
    assert sorted(events.values_list("cost_nanos", flat=True)) == sorted(costs)
    entries = LedgerEntry.objects.filter(org_id=gateway.tenant.org.id, kind="usage")
    assert sorted(entries.values_list("amount_nanos", flat=True)) == sorted(-cost for cost in costs)
    assert set(entries.values_list("request_id", flat=True)) == set(events.values_list("request_id", flat=True))
    balance = Balance.objects.get(org_id=gateway.tenant.org.id)
    assert (balance.balance_nanos, balance.held_nanos) == (10_000_000_000 - sum(costs), 0)


# -- system prompts --------------------------------------------------------------------------------------------

O_SYSTEM_MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there"},
    {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
    {"role": "assistant", "content": "ok"},
    {"role": "system", "content": "No jokes."},
    {"role": "user", "content": "and now"},
]


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_openai_system_and_developer_messages(gateway, model):
    # when
    _, result = _ask(gateway, "openai", model, messages=O_SYSTEM_MESSAGES)

    # then
    (upstream,) = gateway.mock.requests
    if model == "gpt-test":  # same protocol: forwarded as they are
        assert upstream.json["messages"] == O_SYSTEM_MESSAGES
    else:  # hoisted into `system`, in order; the rest keeps its order (edge case 22)
        assert "\n".join(_system_texts(upstream.json["system"])) == "Be brief.\nAnswer in English.\nNo jokes."
        assert upstream.json["messages"] == [
            {"role": "user", "content": "hello there"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "and now"},
        ]
    assert result.choices[0].message.content == "Echo: and now"
    assert openai_usage_numbers(result.usage) == upstream_tokens(upstream)
    assert_billed_once(gateway.tenant, token_cost_nanos(model, upstream_tokens(upstream)))


SYSTEM_BLOCKS = [
    {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
    {"type": "text", "text": "Answer in English."},
]


@pytest.mark.parametrize(
    ("case", "model", "system", "expected_upstream"),
    [
        ("string to O", "gpt-test", "Be brief.", {"role": "system", "content": "Be brief."}),
        ("blocks to O", "gpt-test", SYSTEM_BLOCKS, {"role": "system", "content": "Be brief.\n\nAnswer in English."}),
        ("string to A", "claude-test", "Be brief.", "Be brief."),
        ("blocks to A", "claude-test", SYSTEM_BLOCKS, SYSTEM_BLOCKS),
    ],
)
def test_anthropic_system_string_and_blocks(gateway, case, model, system, expected_upstream):
    # when
    _, message = _ask(gateway, "anthropic", model, messages=HELLO, system=system)

    # then
    (upstream,) = gateway.mock.requests
    if model == "gpt-test":  # one system message first, blocks joined by a blank line, no cache_control (edge 23)
        assert upstream.json["messages"] == [expected_upstream, *HELLO]
    else:
        assert (upstream.json["system"], upstream.json["messages"]) == (expected_upstream, HELLO)
    tokens = upstream_tokens(upstream)
    # cache_control reaches only the A upstream, which then reports a cache read (prompt // 2)
    assert tokens.cache_read == (13 if case == "blocks to A" else 0)
    assert message.content[0].text == "Echo: hello there"
    assert anthropic_usage_numbers(message.usage) == Tokens(tokens.input, tokens.cache_read, 0, tokens.output)
    cost = token_cost_nanos(model, tokens)
    assert cost_of(message.usage) == usd(cost)
    event = assert_billed_once(gateway.tenant, cost)
    assert event_tokens(event) == tokens


# -- multi-turn ------------------------------------------------------------------------------------------------

TURNS = [
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": "second question"},
]


@pytest.mark.parametrize(("case", "protocol", "model"), COMBINATIONS, ids=COMBINATION_IDS)
def test_multi_turn_history(gateway, case, protocol, model):
    # given: the A client sends the assistant turn as blocks, the O client as a string
    messages = [dict(message) for message in TURNS]
    if protocol == "anthropic":
        messages[1] = {"role": "assistant", "content": [{"type": "text", "text": "first answer"}]}

    # when
    _, result = _ask(gateway, protocol, model, messages=messages)

    # then
    (upstream,) = gateway.mock.requests
    expected = messages if case in ("O->O", "A->A") else TURNS
    assert upstream.json["messages"] == expected
    assert _answer_text(protocol, result) == "Echo: second question"
    tokens = upstream_tokens(upstream)
    assert tokens == Tokens(input=6 + 30, output=3)
    assert_billed_once(gateway.tenant, token_cost_nanos(model, tokens))


# -- stop sequences, sampling, output caps --------------------------------------------------------------------


@pytest.mark.parametrize(("case", "protocol", "model"), COMBINATIONS, ids=COMBINATION_IDS)
def test_stop_sequences(gateway, case, protocol, model):
    # when
    params = {"stop": "there"} if protocol == "openai" else {"stop_sequences": ["there"]}
    _, result = _ask(gateway, protocol, model, messages=HELLO, **params)

    # then: O→A turns the string into a one-element array; A→O keeps an array (edge case 31)
    (upstream,) = gateway.mock.requests
    expected_field = {
        "O->O": ("stop", "there"),
        "O->A": ("stop_sequences", ["there"]),
        "A->O": ("stop", ["there"]),
        "A->A": ("stop_sequences", ["there"]),
    }[case]
    assert upstream.json[expected_field[0]] == expected_field[1]
    assert _answer_text(protocol, result) == "Echo: hello "
    if protocol == "openai":
        assert result.choices[0].finish_reason == "stop"
    elif case == "A->A":
        assert (result.stop_reason, result.stop_sequence) == ("stop_sequence", "there")
    else:  # an O upstream does not reveal the matched string
        assert (result.stop_reason, result.stop_sequence) == ("end_turn", None)
    assert_billed_once(gateway.tenant, token_cost_nanos(model, Tokens(input=12, output=2)))


@pytest.mark.parametrize(
    ("case", "protocol", "model", "params", "forwarded", "absent"),
    [
        ("O->O", "openai", "gpt-test", {"temperature": 0.3, "top_p": 0.9, "seed": 7},
         {"temperature": 0.3, "top_p": 0.9, "seed": 7}, []),
        ("O->A", "openai", "claude-test", {"temperature": 0.3, "top_p": 0.9, "seed": 7, "stop": [" "]},
         {"temperature": 0.3, "top_p": 0.9}, ["seed", "stop", "stop_sequences"]),
        ("O->A clamps temperature", "openai", "claude-test", {"temperature": 1.7}, {"temperature": 1.0}, []),
        ("A->O", "anthropic", "gpt-test", {"temperature": 0.5, "top_p": 0.8, "top_k": 40},
         {"temperature": 0.5, "top_p": 0.8}, ["top_k"]),
        ("A->A", "anthropic", "claude-test", {"temperature": 0.5, "top_p": 0.8, "top_k": 40},
         {"temperature": 0.5, "top_p": 0.8, "top_k": 40}, []),
    ],
)  # fmt: skip
def test_sampling_parameters_are_forwarded(gateway, case, protocol, model, params, forwarded, absent):
    # when: the 2026 Anthropic SDK has no sampling arguments any more; they still exist on the wire
    kwargs = params if protocol == "openai" else {"extra_body": params}
    _, result = _ask(gateway, protocol, model, messages=HELLO, **kwargs)

    # then
    (upstream,) = gateway.mock.requests
    assert {name: upstream.json.get(name) for name in forwarded} == forwarded
    assert [name for name in absent if name in upstream.json] == []
    assert _answer_text(protocol, result) == "Echo: hello there"


@pytest.mark.parametrize(
    ("case", "protocol", "model", "params", "upstream_field"),
    [
        ("O->O max_tokens", "openai", "gpt-test", {"max_tokens": 2}, "max_tokens"),
        ("O->O max_completion_tokens", "openai", "gpt-test", {"max_completion_tokens": 2}, "max_completion_tokens"),
        ("O->A max_tokens", "openai", "claude-test", {"max_tokens": 2}, "max_tokens"),
        ("O->A max_completion_tokens", "openai", "claude-test", {"max_completion_tokens": 2}, "max_tokens"),
        ("A->O", "anthropic", "gpt-test", {"max_tokens": 2}, "max_tokens"),
        ("A->A", "anthropic", "claude-test", {"max_tokens": 2}, "max_tokens"),
    ],
)
def test_output_cap_ends_with_length(gateway, case, protocol, model, params, upstream_field):
    # when
    _, result = _ask(gateway, protocol, model, messages=HELLO, **params)

    # then
    (upstream,) = gateway.mock.requests
    assert upstream.json.get(upstream_field) == 2
    assert _answer_text(protocol, result) == "Echo: hello"
    assert _stop(protocol, result) == ("length" if protocol == "openai" else "max_tokens")
    assert_billed_once(gateway.tenant, token_cost_nanos(model, Tokens(input=12, output=2)))


def test_openai_n_above_one_is_refused_for_an_anthropic_upstream(gateway):
    import openai

    # when
    with pytest.raises(openai.BadRequestError) as excinfo:
        gateway.openai().chat.completions.create(model="claude-test", messages=HELLO, n=2)

    # then
    assert excinfo.value.status_code == 400
    assert excinfo.value.body["type"] == "invalid_request_error"
    assert excinfo.value.body["param"] == "n"
    assert gateway.mock.requests == []
    assert_not_debited(gateway.tenant)


# -- images ----------------------------------------------------------------------------------------------------


def _image_message(url: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
            ],
        }
    ]


@pytest.mark.parametrize(
    ("case", "url", "expected_source"),
    [
        ("png data URL", f"data:image/png;base64,{TINY_PNG_BASE64}",
         {"type": "base64", "media_type": "image/png", "data": TINY_PNG_BASE64}),
        ("image/jpg becomes image/jpeg", f"data:image/jpg;base64,{TINY_PNG_BASE64}",
         {"type": "base64", "media_type": "image/jpeg", "data": TINY_PNG_BASE64}),
        ("https URL", "https://example.com/cat.png", {"type": "url", "url": "https://example.com/cat.png"}),
    ],
)  # fmt: skip
def test_openai_image_part_becomes_an_anthropic_image_block(gateway, case, url, expected_source):
    # when
    completion = gateway.openai().chat.completions.create(model="claude-test", messages=_image_message(url))

    # then: `detail` dropped, the image is a block of the same user turn (§2.7)
    (upstream,) = gateway.mock.requests
    assert upstream.json["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "what is this"}, {"type": "image", "source": expected_source}],
        }
    ]
    assert completion.choices[0].message.content == "Echo: what is this"
    assert_billed_once(gateway.tenant, token_cost_nanos("claude-test", upstream_tokens(upstream)))


def test_openai_image_part_is_forwarded_as_is_to_an_openai_upstream(gateway):
    # when
    messages = _image_message(f"data:image/png;base64,{TINY_PNG_BASE64}")
    gateway.openai().chat.completions.create(model="gpt-test", messages=messages)

    # then
    assert gateway.mock.requests[0].json["messages"] == messages


def test_unsupported_image_type_is_refused_before_the_upstream(gateway):
    import openai

    # when
    with pytest.raises(openai.BadRequestError) as excinfo:
        gateway.openai().chat.completions.create(
            model="claude-test", messages=_image_message("data:image/svg+xml;base64,PHN2Zy8+")
        )

    # then
    assert excinfo.value.body["type"] == "invalid_request_error"
    assert gateway.mock.requests == []
    assert_not_debited(gateway.tenant)


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_anthropic_base64_image_block(gateway, model):
    # given
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": TINY_PNG_BASE64}}
    messages = [{"role": "user", "content": [image, {"type": "text", "text": "what is this"}]}]

    # when
    message = gateway.anthropic().messages.create(model=model, max_tokens=50, messages=messages)

    # then: an O upstream gets a data URL image part (edge case 25)
    (upstream,) = gateway.mock.requests
    if model == "gpt-test":
        assert upstream.json["messages"] == [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{TINY_PNG_BASE64}"}},
                    {"type": "text", "text": "what is this"},
                ],
            }
        ]
    else:
        assert upstream.json["messages"] == messages
    assert message.content[0].text == "Echo: what is this"


# -- what reaches the upstream ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "protocol", "model"), COMBINATIONS, ids=COMBINATION_IDS)
def test_gateway_key_never_reaches_the_upstream(gateway, case, protocol, model):
    # when
    _ask(gateway, protocol, model, messages=HELLO)

    # then: the provider's own credentials, in the upstream protocol's header
    (upstream,) = gateway.mock.requests
    secret = gateway.tenant.secret
    assert not any(secret in value for value in upstream.headers.values())
    assert secret.encode() not in upstream.body
    if model == "gpt-test":
        assert upstream.headers["authorization"] == f"Bearer {gateway.mock.api_key}"
        assert "x-api-key" not in upstream.headers
    else:
        assert upstream.headers["x-api-key"] == gateway.mock.api_key
        assert upstream.headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in upstream.headers


@pytest.mark.parametrize("model", ["gpt-test", "claude-test"])
def test_anthropic_beta_header_goes_only_to_anthropic_upstreams(gateway, model):
    # when
    gateway.anthropic().messages.create(
        model=model, max_tokens=50, messages=HELLO, extra_headers={"anthropic-beta": "some-beta-2025-01-01"}
    )

    # then
    headers = gateway.mock.requests[0].headers
    assert headers.get("anthropic-beta") == ("some-beta-2025-01-01" if model == "claude-test" else None)


CLIENT_EXTRAS = {"api_base": "http://evil.example", "base_url": "http://evil.example", "not_a_field": {"x": 1}}


@pytest.mark.parametrize(("case", "protocol", "model"), COMBINATIONS, ids=COMBINATION_IDS)
def test_unknown_client_fields_are_not_forwarded(gateway, case, protocol, model):
    # when
    _, result = _ask(gateway, protocol, model, messages=HELLO, extra_body=CLIENT_EXTRAS)

    # then: dropped across protocols (G1) and by the same-protocol allowlist
    (upstream,) = gateway.mock.requests
    assert sorted(set(CLIENT_EXTRAS) & set(upstream.json)) == []
    assert _answer_text(protocol, result) == "Echo: hello there"


def test_openai_only_fields_are_not_sent_to_an_anthropic_upstream(gateway):
    # when
    gateway.openai().chat.completions.create(
        model="claude-test",
        messages=HELLO,
        seed=1,
        frequency_penalty=0.5,
        presence_penalty=0.5,
        logprobs=True,
        top_logprobs=2,
        store=True,
        metadata={"tag": "x"},
        service_tier="auto",
        prompt_cache_key="k1",
        user="user-123",
        stream_options=None,
    )

    # then: only A fields, the user id as metadata.user_id (§2.1)
    upstream = gateway.mock.requests[0].json
    assert upstream == {
        "model": "claude-upstream-1",
        "max_tokens": 32000,
        "messages": HELLO,
        "metadata": {"user_id": "user-123"},
    }


def test_anthropic_only_fields_are_not_sent_to_an_openai_upstream(gateway):
    # when
    gateway.anthropic().messages.create(
        model="gpt-test",
        max_tokens=50,
        messages=HELLO,
        service_tier="auto",
        metadata={"user_id": "user-123"},
        extra_body={"top_k": 5},
    )

    # then
    upstream = gateway.mock.requests[0].json
    user = hashlib.sha256(b"user-123").hexdigest()  # metadata.user_id as its sha256 hex (PROTOCOLS-RESPONSES M10)
    assert upstream == {"model": "gpt-upstream-1", "messages": HELLO, "max_tokens": 50, "user": user}


def test_openai_body_on_the_wire_is_relayed_with_only_the_model_changed(gateway):
    # given: a same-protocol body with every kind of documented field
    body = {
        "model": "gpt-test",
        "messages": HELLO,
        "temperature": 0.2,
        "response_format": {"type": "json_object"},
        "prompt_cache_key": "conversation-1",
        "user": "u1",
        "api_base": "http://evil.example",
    }

    # when
    with raw_client(gateway) as client:
        response = client.post("/v1/chat/completions", json=body, headers=bearer(gateway))

    # then
    assert response.status_code == 200
    (upstream,) = gateway.mock.requests
    assert upstream.json == {**{k: v for k, v in body.items() if k != "api_base"}, "model": "gpt-upstream-1"}
    # prompt_cache_key makes the O mock report a cache read: billed at the cache-read price
    tokens = upstream_tokens(upstream)
    assert tokens.cache_read == 6
    assert response.json()["usage"]["prompt_tokens_details"] == {"cached_tokens": 6}
    assert_billed_once(gateway.tenant, token_cost_nanos("gpt-test", tokens))


# -- stop reasons without a text answer (§3.1, §3.3, §3.4, edge case 36) ---------------------------------------


def test_anthropic_refusal_with_no_content_reaches_an_openai_client_as_content_filter(gateway):
    # given
    gateway.mock.enqueue("/v1/messages", Script(json={
        "id": "msg_r", "type": "message", "role": "assistant", "model": "claude-upstream-1", "content": [],
        "stop_reason": "refusal", "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 0}}))  # fmt: skip

    # when
    completion = gateway.openai().chat.completions.create(model="claude-test", messages=HELLO)

    # then: an empty message is "" (not null without tool calls)
    assert (completion.choices[0].message.content, completion.choices[0].finish_reason) == ("", "content_filter")
    assert_billed_once(gateway.tenant, token_cost_nanos("claude-test", Tokens(input=12)))


def test_openai_content_filter_with_empty_content_reaches_an_anthropic_client_as_refusal(gateway):
    # given
    gateway.mock.enqueue("/v1/chat/completions", Script(json={
        "id": "chatcmpl-r", "object": "chat.completion", "created": 1, "model": "gpt-upstream-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 0, "total_tokens": 12}}))  # fmt: skip

    # when
    message = gateway.anthropic().messages.create(model="gpt-test", max_tokens=50, messages=HELLO)

    # then: no empty text block (it would 400 when replayed)
    assert (message.content, message.stop_reason) == ([], "refusal")
    assert_billed_once(gateway.tenant, token_cost_nanos("gpt-test", Tokens(input=12)))
