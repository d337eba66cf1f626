"""The hold math (issue 12): every billable multiplier is in the hold, and no prompt beats the input bound.

Pure tests: ModelSpec rows built here, no database. The end-to-end proof (bursts of the worst
requests through two gateway processes) is proxy/tests/reliability/test_worst_case_holds.py.
"""

import json
import math
import struct
import wave
from io import BytesIO

import pytest

from billing.models import Hold
from billing.money import TokenPrices
from catalog.snapshot import ModelSpec, ProviderSpec, RouteSpec, UnitPrices
from proxy import metering
from proxy.media import AUDIO_MIN_BYTES_PER_SECOND, audio_seconds_bound
from proxy.responses import Call
from proxy.translate.usage import (
    DOCUMENT_TOKENS_BOUND,
    IMAGE_TOKENS_BOUND,
    TOOLS_PROMPT_TOKENS_BOUND,
    Usage,
    UsageBounds,
    bound_prompt_tokens,
    estimate_openai_prompt_tokens,
    expect_usage,
)

MTOK = 1_000_000
# $1 per 1M input tokens, $2 per 1M output: one input token costs 1000 nano-USD, one output token 2000.
PRICES = TokenPrices(input_nanos_per_mtok=1000 * MTOK, output_nanos_per_mtok=2000 * MTOK)


def provider(kind: str = "openai", **options) -> ProviderSpec:
    return ProviderSpec(id=1, name=kind, kind=kind, base_url="http://upstream.invalid", options=options)


def spec(*, routes=None, context_window=None, max_output_tokens=None, thinking="", prices=PRICES) -> ModelSpec:
    return ModelSpec(id=1, name="m", display_name="m", description="", mode="chat", context_window=context_window,
                     max_output_tokens=max_output_tokens, thinking=thinking, supports_tools=True,
                     supports_vision=True, structured_output=False, created=0, price_id=None, prices=prices,
                     unit_prices=UnitPrices(), routes=tuple(routes or [RouteSpec(provider(), "u", 1, 1)]))  # fmt: skip


def body_bytes(body: dict) -> int:
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


# -- input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("_case", "text"),
    [
        ("short repeated words (≈ 2 bytes a token, twice the 4-byte estimate)", "a " * 5000),
        ("CJK (3 bytes, often 1 token, a character)", "漢字仮名交じり文" * 600),
        ("emoji (4 bytes, up to 4 byte tokens)", "🙂" * 2000),
        ("digits and punctuation", "1,2;3." * 1500),
    ],
)
def test_no_text_beats_the_input_bound(_case, text):
    # given: a prompt whose worst-case tokenization is one token per UTF-8 byte (byte-level BPE's most)
    body = {"model": "m", "messages": [{"role": "user", "content": text}, {"role": "user", "content": text}]}
    worst = 2 * len(text.encode("utf-8"))
    # when
    bound = bound_prompt_tokens(body, body_bytes=body_bytes(body))
    # then: the bound covers it (plus the message framing, which the JSON syntax outweighs), the old
    # estimate did not
    assert worst <= bound <= worst + 200
    assert estimate_openai_prompt_tokens(body) < worst


def test_the_raw_body_size_is_used_when_given():
    # given: a body sent with whitespace and \u escapes (the raw bytes are more than the compact form)
    body = {"model": "m", "messages": [{"role": "user", "content": "é" * 100}]}
    raw = json.dumps(body, indent=2, ensure_ascii=True).encode()
    # then: never below the compact UTF-8 form
    assert bound_prompt_tokens(body, body_bytes=len(raw)) == len(raw) > body_bytes(body)


def test_media_count_at_their_own_bound_not_at_their_base64_size():
    # given: one big base64 image, one PDF document and some text, Anthropic style
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 400_000}}
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "B" * 9000}}
    text_doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain " * 10}}
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [image, pdf, text_doc]}]}
    media = body_bytes(image) + 1 + body_bytes(pdf)  # with the comma between them
    # when
    bound = bound_prompt_tokens(body, body_bytes=body_bytes(body))
    # then: the text document stays text (its bytes), the image and PDF count their bounds
    assert bound == body_bytes(body) - media + 1 + IMAGE_TOKENS_BOUND + DOCUMENT_TOKENS_BOUND


def test_openai_images_in_tool_results_and_tools_are_counted():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 1000}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = {"model": "m", "tools": tools, "messages": [{"role": "user", "content": [image, image]}]}
    expected = body_bytes(body) - 2 * body_bytes(image) + 2 * IMAGE_TOKENS_BOUND + TOOLS_PROMPT_TOKENS_BOUND
    # the comma between the two images stays counted as text
    assert bound_prompt_tokens(body) == expected


def test_the_context_window_caps_the_input_bound():
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 50_000}]}
    assert metering.chat_input_bound(spec(context_window=8192), body) == 8192
    assert metering.chat_input_bound(spec(), body) == body_bytes(body)


def test_server_tools_add_their_results_to_the_input_bound():
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    body = {"model": "m", "max_tokens": 10, "tools": [search], "messages": [{"role": "user", "content": "q"}]}
    expected = body_bytes(body) + TOOLS_PROMPT_TOKENS_BOUND + 3 * metering.SERVER_TOOL_RESULT_TOKENS_BOUND
    assert metering.chat_input_bound(spec(), body) == expected
    assert metering.server_tool_calls(body) == [("web_search_20250305", 3)]
    unlimited = {**body, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    assert metering.server_tool_calls(unlimited) == [("web_search_20250305", metering.SERVER_TOOL_CALLS_BOUND)]


# -- output -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("_case", "model", "client_cap", "choices", "thinking", "output_tokens"),
    [
        ("client cap", spec(), 100, 1, 0, 100),
        ("n multiplies the output", spec(), 100, 16, 0, 1600),
        ("catalog max output without a client cap", spec(max_output_tokens=8000), None, 2, 0, 16_000),
        ("client cap above the catalog's max is clamped", spec(max_output_tokens=8000), 50_000, 1, 0, 8000),
        ("no cap anywhere: the documented reserve", spec(), None, 3, 0, 3 * metering.DEFAULT_OUTPUT_RESERVE),
        ("a provider default_max_tokens above the reserve",
         spec(routes=[RouteSpec(provider("anthropic", default_max_tokens=20_000), "u", 1, 1)]), None, 1, 0, 20_000),
        ("thinking budget raises max_tokens as O→A does", spec(), 100, 1, 8192, 8192 + 4096),
        ("thinking within the cap adds nothing", spec(), 20_000, 1, 8192, 20_000),
        ("Gemini counts thoughts apart", spec(routes=[RouteSpec(provider("gemini"), "u", 1, 1)]), 20_000, 1, 8192,
         28_192),
    ],
)  # fmt: skip
def test_output_bound(_case, model, client_cap, choices, thinking, output_tokens):
    hold = metering.chat_hold_nanos(
        model, input_tokens=0, max_output_tokens=client_cap, choices=choices, thinking_tokens=thinking
    )
    assert hold == output_tokens * 2000


def test_an_anthropic_clients_thinking_is_inside_its_max_tokens():
    # Anthropic counts thinking within max_tokens (budget_tokens must be below it): no raise for A clients
    assert metering.chat_output_bound(spec(), 10_000, thinking_tokens=8192, thinking_in_cap=True) == 10_000
    gemini = spec(routes=[RouteSpec(provider("gemini"), "u", 1, 1)])
    assert metering.chat_output_bound(gemini, 10_000, thinking_tokens=8192, thinking_in_cap=True) == 18_192


def test_hold_prices_input_at_the_dearer_of_input_and_cache_write():
    prices = TokenPrices(
        input_nanos_per_mtok=1000 * MTOK, output_nanos_per_mtok=0, cache_write_nanos_per_mtok=1250 * MTOK
    )
    assert metering.chat_hold_nanos(spec(prices=prices), input_tokens=1000, max_output_tokens=1) == 1_250_000


@pytest.mark.parametrize(
    ("_case", "body", "protocol", "thinking", "budget"),
    [
        ("A thinking budget", {"thinking": {"type": "enabled", "budget_tokens": 3000}}, "anthropic", "", 3000),
        ("O reasoning_effort on a thinking model", {"reasoning_effort": "high"}, "openai", "budget", 4096),
        ("O reasoning_effort on a model without thinking", {"reasoning_effort": "high"}, "openai", "", 0),
        ("O thinking extra", {"thinking": {"type": "enabled", "budget_tokens": 5000}}, "openai", "", 5000),
        ("none", {}, "openai", "budget", 0),
    ],
)
def test_thinking_budget(_case, body, protocol, thinking, budget):
    assert metering.thinking_budget(body, protocol, spec(thinking=thinking)) == budget


def test_choices_of():
    assert [metering.choices_of(b) for b in ({}, {"n": 16}, {"n": None}, {"n": True})] == [1, 16, 1, 1]


# -- settlement: the money rule ------------------------------------------------------------------------------


def _call() -> Call:
    return Call(request=None, protocol="openai", endpoint="chat.completions")


def test_a_debit_never_exceeds_its_hold(caplog):
    # given: an upstream reporting more than the request could cost
    hold = Hold(amount_nanos=5000)
    outcome = metering.Outcome(usage=Usage(input_tokens=10, output_tokens=100), cost_nanos=7000)
    # when
    billed = metering.billable_nanos(_call(), hold, outcome)
    # then: the hold is billed, marked estimated, and logged with the figures only
    assert (billed, outcome.cost_nanos, outcome.usage.estimated) == (5000, 5000, True)
    assert "above its hold of 5000" in caplog.text


def test_a_debit_within_the_hold_is_the_cost():
    outcome = metering.Outcome(usage=Usage(output_tokens=1), cost_nanos=4999)
    assert metering.billable_nanos(_call(), Hold(amount_nanos=5000), outcome) == 4999
    assert outcome.usage.estimated is False


# -- usage bounds scale with n -----------------------------------------------------------------------------


def test_reported_output_of_n_choices_is_billed_as_reported():
    # given: a request for 16 choices of at most 100 tokens
    expect_usage(UsageBounds(max_output_tokens=100, choices=16))
    try:
        # when: the upstream reports 16 full choices, then something far beyond
        full = Usage(input_tokens=5, output_tokens=1600)
        absurd = Usage(input_tokens=5, output_tokens=16 * (2 * 100 + 1024) + 1)
    finally:
        expect_usage(None)
    # then
    assert (full.output_tokens, full.estimated) == (1600, False)
    assert (absurd.output_tokens, absurd.estimated) == (1600, True)


# -- media --------------------------------------------------------------------------------------------------


def _wav(seconds: int, rate: int) -> bytes:
    out = BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(rate)
        w.writeframes(struct.pack("B", 128) * (rate * seconds))
    return out.getvalue()


def test_audio_bound_reads_the_duration_from_the_container():
    # given: one minute of 8-bit mono audio at 1000 samples/s: 1000 bytes/s, under what the old
    # bytes-based hold assumed (4000 bytes/s) — it held a quarter of the real duration
    audio = _wav(60, 1000)
    assert len(audio) / 4000 < 16
    # then
    assert audio_seconds_bound(audio) == 60 + 1


def test_audio_bound_without_a_readable_container_assumes_the_lowest_bitrate():
    junk = b"\x00\x01" * 3000
    assert audio_seconds_bound(junk) == math.ceil(len(junk) / AUDIO_MIN_BYTES_PER_SECOND) == 8
