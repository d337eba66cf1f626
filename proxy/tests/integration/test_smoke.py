"""End-to-end smoke: official SDKs → real ASGI server → mock upstreams, both protocols."""

import pytest

from billing.models import LedgerEntry, UsageEvent
from billing.money import nanos_to_usd
from billing.services import balance_get

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


def test_openai_client_to_openai_upstream(gateway):
    # when
    completion = gateway.openai().chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hello there"}]
    )
    # then
    upstream = gateway.mock.requests[-1]
    assert upstream.json["model"] == "gpt-upstream-1"
    assert upstream.headers["authorization"] == f"Bearer {gateway.mock.api_key}"
    assert completion.model == "gpt-test"
    assert completion.choices[0].message.content == "Echo: hello there"
    assert completion.usage.prompt_tokens == upstream.response_usage["prompt_tokens"]
    assert completion.usage.completion_tokens == upstream.response_usage["completion_tokens"]
    event = UsageEvent.objects.get()
    expected = (event.input_tokens * 2_500_000_000 + event.output_tokens * 10_000_000_000 + 500_000) // 1_000_000
    assert event.cost_nanos == expected
    assert LedgerEntry.objects.get(kind="usage").amount_nanos == -expected
    assert balance_get(org_id=gateway.tenant.org.id).balance_nanos == 10_000_000_000 - expected
    assert completion.usage.model_extra["cost"] == float(nanos_to_usd(expected))


def test_anthropic_client_to_openai_upstream_streaming(gateway):
    with gateway.anthropic().messages.stream(
        model="gpt-test", max_tokens=200, messages=[{"role": "user", "content": "stream me please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    upstream = gateway.mock.requests[-1]
    assert upstream.path == "/v1/chat/completions"
    assert upstream.json["stream_options"] == {"include_usage": True}
    assert text == "Echo: stream me please"
    assert message.model == "gpt-test"
    assert message.usage.output_tokens == upstream.response_usage["completion_tokens"]
    assert message.usage.input_tokens == upstream.response_usage["prompt_tokens"]
    assert UsageEvent.objects.get().output_tokens == message.usage.output_tokens


def test_bad_key_is_401_in_each_shape(gateway):
    import anthropic
    import openai

    with pytest.raises(openai.AuthenticationError):
        gateway.openai(api_key="sk-ru-wrong").chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(anthropic.AuthenticationError) as excinfo:
        gateway.anthropic(api_key="sk-ru-wrong").messages.create(
            model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert excinfo.value.body["error"]["type"] == "authentication_error"
    assert gateway.mock.requests == []
