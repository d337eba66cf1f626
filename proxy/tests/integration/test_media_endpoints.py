"""The other endpoints through the official SDKs: /v1/models (both shapes), count_tokens, embeddings, image
generation, audio transcription and speech — each billed once at its catalog unit price."""

import hashlib
from datetime import datetime

import anthropic
import openai
import pytest

from proxy.tests.integration.helpers import (
    AUDIO_MINUTE_NANOS,
    IMAGE_PRICE_NANOS,
    SPEECH_NANOS_PER_MCHAR,
    Tokens,
    assert_billed_once,
    assert_not_debited,
    bearer,
    cost_of,
    header_usd,
    raw_client,
    round_half_up_div,
    token_cost_nanos,
    usd,
)
from proxy.tests.mock_upstream import TINY_PNG_BASE64

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

CATALOG_IDS = ["claude-test", "demo-echo", "embed-test", "gpt-test", "image-test", "tts-test", "whisper-test"]


# -- /v1/models ------------------------------------------------------------------------------------------------


def test_models_in_openai_shape(gateway):
    # when
    with raw_client(gateway) as client:
        response = client.get("/v1/models", headers=bearer(gateway))
    models = gateway.openai().models.list()

    # then
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"object", "data"}
    assert body["object"] == "list"
    assert [model["id"] for model in body["data"]] == CATALOG_IDS
    for model in body["data"]:
        assert set(model) == {"id", "object", "created", "owned_by"}
        assert model["object"] == "model"
        assert isinstance(model["created"], int)
    assert [model.id for model in models] == CATALOG_IDS
    assert gateway.mock.requests == []


def test_models_in_anthropic_shape(gateway):
    # when: the Anthropic SDK sends anthropic-version (and x-api-key)
    page = gateway.anthropic().models.list()
    with raw_client(gateway) as client:
        response = client.get(
            "/v1/models", headers={"x-api-key": gateway.tenant.secret, "anthropic-version": "2023-06-01"}
        )

    # then: §1.9 A shape
    assert [model.id for model in page.data] == CATALOG_IDS
    assert {model.type for model in page.data} == {"model"}
    body = response.json()
    assert set(body) == {"data", "has_more", "first_id", "last_id"}
    assert (body["has_more"], body["first_id"], body["last_id"]) == (False, CATALOG_IDS[0], CATALOG_IDS[-1])
    for model in body["data"]:
        assert set(model) == {"type", "id", "display_name", "created_at"}
        assert datetime.fromisoformat(model["created_at"].replace("Z", "+00:00")).tzinfo is not None


def test_model_retrieve_in_both_shapes(gateway):
    # when
    o_model = gateway.openai().models.retrieve("gpt-test")
    a_model = gateway.anthropic().models.retrieve("claude-test")

    # then
    assert (o_model.id, o_model.object) == ("gpt-test", "model")
    assert (a_model.id, a_model.type) == ("claude-test", "model")
    with pytest.raises(openai.NotFoundError):
        gateway.openai().models.retrieve("no-such-model")
    with pytest.raises(anthropic.NotFoundError) as excinfo:
        gateway.anthropic().models.retrieve("no-such-model")
    assert excinfo.value.body["error"]["type"] == "not_found_error"


def test_models_require_a_key_and_answer_in_the_requested_shape(gateway):
    # when
    with raw_client(gateway) as client:
        o_response = client.get("/v1/models")
        a_response = client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})

    # then
    assert o_response.status_code == a_response.status_code == 401
    assert o_response.json()["error"]["code"] == "invalid_api_key"
    assert a_response.json()["error"]["type"] == "authentication_error"


# -- /v1/messages/count_tokens ---------------------------------------------------------------------------------


def test_count_tokens_is_proxied_to_an_anthropic_upstream(gateway):
    # when
    raw = gateway.anthropic().messages.with_raw_response.count_tokens(
        model="claude-test", system="Be brief.", messages=[{"role": "user", "content": "hello there"}]
    )

    # then: the upstream's own count (system 2 + 10, message 2 + 10)
    assert raw.parse().input_tokens == 24
    assert "x-ruapi-estimated" not in raw.headers
    (upstream,) = gateway.mock.requests
    assert upstream.path == "/v1/messages/count_tokens"
    assert upstream.json == {
        "model": "claude-upstream-1",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hello there"}],
    }
    assert upstream.headers["x-api-key"] == gateway.mock.api_key
    assert_not_debited(gateway.tenant)


def test_count_tokens_is_estimated_for_an_openai_upstream(gateway):
    # when
    raw = gateway.anthropic().messages.with_raw_response.count_tokens(
        model="gpt-test", messages=[{"role": "user", "content": "hello there " * 50}]
    )

    # then
    assert raw.parse().input_tokens > 50
    assert raw.headers["x-ruapi-estimated"] == "true"
    assert gateway.mock.requests == []
    assert_not_debited(gateway.tenant)


# -- /v1/embeddings --------------------------------------------------------------------------------------------


def _mock_vector(text: str) -> list[float]:
    """The mock's deterministic embedding of `text` (8 floats from SHA-256)."""
    return [(byte - 128) / 128 for byte in hashlib.sha256(text.encode()).digest()[:8]]


@pytest.mark.parametrize(("case", "encoding"), [("float", "float"), ("base64 (the SDK's default)", None)])
def test_embeddings(gateway, case, encoding):
    # when
    params = {"encoding_format": encoding} if encoding else {}
    raw = gateway.openai().embeddings.with_raw_response.create(
        model="embed-test", input=["hello world", "bonjour"], extra_body={"api_base": "http://evil.example"}, **params
    )
    result = raw.parse()

    # then: the SDK decodes base64 itself; the vectors are the upstream's
    (upstream,) = gateway.mock.requests
    assert upstream.path == "/v1/embeddings"
    assert upstream.json == {
        "model": "embed-upstream",
        "input": ["hello world", "bonjour"],
        "encoding_format": encoding or "base64",
    }
    assert [item.embedding for item in result.data] == [_mock_vector("hello world"), _mock_vector("bonjour")]
    assert [item.index for item in result.data] == [0, 1]
    assert result.model == "embed-test"
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (3, 3)
    cost = token_cost_nanos("embed-test", Tokens(input=3))
    assert cost == 60
    assert cost_of(result.usage) == usd(cost)
    assert header_usd(raw.headers["x-ruapi-cost-usd"]) == cost
    event = assert_billed_once(gateway.tenant, cost)
    assert (event.endpoint, event.input_tokens, event.output_tokens, event.model) == (
        "embeddings", 3, 0, "embed-test"
    )  # fmt: skip


def test_embeddings_refuse_a_chat_model_and_unknown_models(gateway):
    with pytest.raises(openai.BadRequestError) as excinfo:
        gateway.openai().embeddings.create(model="gpt-test", input="hi")
    assert excinfo.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        gateway.openai().embeddings.create(model="no-such-model", input="hi")
    assert gateway.mock.requests == []
    assert_not_debited(gateway.tenant)


# -- /v1/images/generations ------------------------------------------------------------------------------------


def test_image_generation(gateway):
    # when
    raw = gateway.openai().images.with_raw_response.generate(
        model="image-test", prompt="a red cat", n=2, size="1024x1024"
    )
    result = raw.parse()

    # then
    (upstream,) = gateway.mock.requests
    assert upstream.json == {"model": "image-upstream", "prompt": "a red cat", "n": 2, "size": "1024x1024"}
    assert [image.b64_json for image in result.data] == [TINY_PNG_BASE64, TINY_PNG_BASE64]
    # tokens at the token prices plus $0.01 per image
    tokens = Tokens(input=3, output=2 * 272)
    cost = token_cost_nanos("image-test", tokens) + 2 * IMAGE_PRICE_NANOS
    assert cost == 15_000 + 21_760_000 + 20_000_000
    assert (result.usage.input_tokens, result.usage.output_tokens) == (3, 544)
    assert cost_of(result.usage) == usd(cost)
    assert header_usd(raw.headers["x-ruapi-cost-usd"]) == cost
    event = assert_billed_once(gateway.tenant, cost)
    assert (event.endpoint, event.units, event.input_tokens, event.output_tokens) == (
        "images.generations", 2, 3, 544
    )  # fmt: skip
    assert gateway.tenant.secret not in str(upstream.headers)


# -- /v1/audio/transcriptions ----------------------------------------------------------------------------------

AUDIO = bytes(range(256)) * 80  # 20480 bytes: 2 seconds for the mock (16000 bytes per second)


def test_transcription_multipart(gateway):
    # when
    raw = gateway.openai().audio.transcriptions.with_raw_response.create(
        model="whisper-test", file=("speech.wav", AUDIO, "audio/wav"), language="en",
        extra_body={"api_base": "http://evil.example"},
    )  # fmt: skip
    result = raw.parse()

    # then: the file and the known fields reach the upstream, with the upstream model
    (upstream,) = gateway.mock.requests
    assert upstream.path == "/v1/audio/transcriptions"
    assert upstream.form["file"] == AUDIO
    assert upstream.form["model"] == "whisper-upstream"
    assert upstream.form["language"] == "en"
    assert "api_base" not in upstream.form
    assert result.text == f"transcribed {len(AUDIO)} bytes"
    cost = round_half_up_div(2 * AUDIO_MINUTE_NANOS, 60)  # 2 seconds at $0.006 per minute
    assert cost == 200_000
    assert header_usd(raw.headers["x-ruapi-cost-usd"]) == cost
    event = assert_billed_once(gateway.tenant, cost)
    assert (event.endpoint, event.units, event.is_estimated) == ("audio.transcriptions", 2, False)


def test_transcription_as_plain_text_is_billed_from_the_audio_length(gateway):
    # when: response_format=text has no usage, so the duration is estimated from the bytes
    raw = gateway.openai().audio.transcriptions.with_raw_response.create(
        model="whisper-test", file=("speech.wav", AUDIO, "audio/wav"), response_format="text"
    )

    # then
    assert raw.http_response.text == f"transcribed {len(AUDIO)} bytes"
    assert raw.headers["content-type"].startswith("text/plain")
    event = assert_billed_once(gateway.tenant, header_usd(raw.headers["x-ruapi-cost-usd"]))
    assert event.is_estimated
    assert event.cost_nanos == round_half_up_div(int(event.units) * AUDIO_MINUTE_NANOS, 60) > 0


# -- /v1/audio/speech ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("response_format", "content_type"), [(None, "audio/mpeg"), ("wav", "audio/wav")])
def test_speech_is_streamed_binary(gateway, response_format, content_type):
    # given
    text = "Hello world"
    params = {"response_format": response_format} if response_format else {}

    # when
    with gateway.openai().audio.speech.with_streaming_response.create(
        model="tts-test", voice="alloy", input=text, **params
    ) as response:
        chunks = list(response.iter_bytes(chunk_size=256))
        headers = response.headers

    # then: the upstream's bytes, unchanged; 100 bytes per character from the mock
    audio = b"".join(chunks)
    assert audio == bytes(index % 256 for index in range(100 * len(text)))
    assert len(chunks) > 1
    assert headers["content-type"].startswith(content_type)
    (upstream,) = gateway.mock.requests
    assert upstream.json == {"model": "tts-upstream", "voice": "alloy", "input": text, **params}
    cost = round_half_up_div(len(text) * SPEECH_NANOS_PER_MCHAR, 1_000_000)  # $15 per 1M characters
    assert cost == 165_000
    assert header_usd(headers["x-ruapi-cost-usd"]) == cost
    event = assert_billed_once(gateway.tenant, cost)
    assert (event.endpoint, event.units, event.model) == ("audio.speech", len(text), "tts-test")


# -- the gateway key stays at the gateway ----------------------------------------------------------------------


def test_no_endpoint_forwards_the_gateway_key(gateway):
    # given: one call to every endpoint that reaches an upstream, with both of the Anthropic SDK's credentials
    client = gateway.openai()
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    list(client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True))
    client.embeddings.create(model="embed-test", input="hi")
    client.images.generate(model="image-test", prompt="a cat")
    client.audio.transcriptions.create(model="whisper-test", file=("a.wav", AUDIO, "audio/wav"))
    with client.audio.speech.with_streaming_response.create(model="tts-test", voice="alloy", input="hi") as speech:
        speech.read()
    for credentials in ({"api_key": gateway.tenant.secret}, {"api_key": None, "auth_token": gateway.tenant.secret}):
        a_client = gateway.anthropic(**credentials)
        a_client.messages.create(model="claude-test", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        a_client.messages.count_tokens(model="claude-test", messages=[{"role": "user", "content": "hi"}])

    # then: every upstream request carries the provider's key, never the client's
    requests = gateway.mock.requests
    assert len(requests) == 10
    secret = gateway.tenant.secret
    for request in requests:
        assert secret not in " ".join(request.headers.values()), request.path
        assert secret.encode() not in request.body, request.path
        if request.path.startswith("/v1/messages"):
            assert request.headers["x-api-key"] == gateway.mock.api_key
        else:
            assert request.headers["authorization"] == f"Bearer {gateway.mock.api_key}"
