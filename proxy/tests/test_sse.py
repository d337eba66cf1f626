import pytest

from proxy.sse import SSEDecoder, encode


@pytest.mark.parametrize(
    ("_case", "chunks", "events"),
    [
        ("lf framing", [b"event: a\ndata: {}\n\n"], [("a", b"{}")]),
        ("crlf framing", [b"event: a\r\ndata: 1\r\n\r\n"], [("a", b"1")]),
        ("cr framing", [b"data: 1\r\rdata: 2\r\r"], [(None, b"1"), (None, b"2")]),
        ("crlf split between chunks", [b"data: 1\r", b"\n\r\n"], [(None, b"1")]),
        ("no space after colon", [b"data:{}\n\n"], [(None, b"{}")]),
        ("multi-line data", [b"data: a\ndata: b\n\n"], [(None, b"a\nb")]),
        ("comments ignored", [b": keep-alive\n\ndata: x\n\n"], [(None, b"x")]),
        ("split anywhere", [b"da", b"ta: hel", b"lo\n", b"\n"], [(None, b"hello")]),
        ("event without data is dropped", [b"event: ping\n\n"], []),
        ("unknown fields ignored", [b"id: 7\nretry: 10\ndata: z\n\n"], [(None, b"z")]),
    ],
)
def test_decoder(_case, chunks, events):
    decoder = SSEDecoder()
    seen = [event for chunk in chunks for event in decoder.feed(chunk)]
    assert seen + decoder.flush() == events


def test_decoder_flushes_a_final_event_without_blank_line():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.flush() == [(None, b"[DONE]")]


@pytest.mark.parametrize(
    ("event", "data", "wire"),
    [
        (None, {"a": 1}, b'data: {"a":1}\n\n'),
        ("message_stop", {"type": "message_stop"}, b'event: message_stop\ndata: {"type":"message_stop"}\n\n'),
        (None, "[DONE]", b"data: [DONE]\n\n"),
        (None, b'{"raw":true}', b'data: {"raw":true}\n\n'),
    ],
)
def test_encode(event, data, wire):
    assert encode(event, data) == wire
