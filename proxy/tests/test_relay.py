"""Same-protocol stream relays: model echo (G2), usage stripping (G5), usage capture, early EOF."""

from proxy.relay import AnthropicRelay, OpenAIRelay
from proxy.translate.usage import Usage


def chunk(delta=None, finish=None, usage=None, choices=True):
    data = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "upstream-x", "usage": usage}
    data["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
    return data


def test_openai_relay_hides_usage_chunk_from_client_that_did_not_ask():
    relay = OpenAIRelay(model="public", include_usage=False, input_estimate=3)
    out = relay.feed(chunk({"content": "hi"}))
    out += relay.feed(chunk(finish="stop"))
    out += relay.feed(chunk(usage={"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}, choices=False))
    out += relay.feed_done()
    assert [data for _, data in out] == [
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "public",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "public",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        "[DONE]",
    ]  # fmt: skip
    assert relay.usage == Usage(input_tokens=12, output_tokens=2)


def test_openai_relay_keeps_usage_chunk_when_asked():
    relay = OpenAIRelay(model="public", include_usage=True, input_estimate=3)
    out = relay.feed(chunk(usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}, choices=False))
    assert out == [(None, chunk(usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}, choices=False)
                    | {"model": "public"})]  # fmt: skip


def test_openai_relay_eof_after_finish_is_done_and_eof_before_is_error():
    finished = OpenAIRelay(model="m", include_usage=False, input_estimate=3)
    finished.feed(chunk(finish="stop"))
    assert finished.finish() == [(None, "[DONE]")]

    cut = OpenAIRelay(model="m", include_usage=False, input_estimate=3)
    cut.feed(chunk({"content": "abcdefgh"}))
    [(event, data)] = cut.finish()
    assert event is None and data["error"]["code"] == "stream_incomplete"
    assert cut.usage == Usage(input_tokens=3, output_tokens=2, estimated=True)


def test_anthropic_relay_usage_is_cumulative_not_added():
    relay = AnthropicRelay(model="public", input_estimate=1)
    start = {"type": "message_start", "message": {"model": "up", "usage": {"input_tokens": 25, "output_tokens": 1}}}
    [(name, data)] = relay.feed(start)
    assert name == "message_start" and data["message"]["model"] == "public"
    relay.feed({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}})
    relay.feed({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 15, "input_tokens": 25}})
    relay.feed({"type": "message_stop"})
    assert relay.done
    assert relay.usage == Usage(input_tokens=25, output_tokens=15)


def test_anthropic_relay_cut_stream_is_error_and_estimated():
    relay = AnthropicRelay(model="public", input_estimate=1)
    relay.feed({"type": "message_start", "message": {"usage": {"input_tokens": 25, "output_tokens": 1}}})
    relay.feed({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x" * 40}})
    [(name, data)] = relay.finish()
    assert name == "error" and data["type"] == "error"
    assert relay.usage == Usage(input_tokens=25, output_tokens=10, estimated=True)
