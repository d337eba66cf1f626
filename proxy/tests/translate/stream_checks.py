"""Invariants every A event stream the gateway emits must keep (PROTOCOLS §4.2 "Invariants (test them)")."""

DELTA_FOR_BLOCK = {"text": "text_delta", "thinking": "thinking_delta", "tool_use": "input_json_delta"}


def assert_anthropic_stream_invariants(items: list) -> None:
    """Dense indices in start order, one stop per start before message_delta, matching delta types."""
    names = [name for name, _ in items]
    assert names[0] == "message_start", names
    for name, data in items:
        assert data["type"] == name, (name, data)
    open_blocks: dict[int, str] = {}
    stopped: set[int] = set()
    next_index = 0
    message_delta_seen = False
    for name, data in items:
        if name == "content_block_start":
            assert not message_delta_seen
            assert data["index"] == next_index, f"expected index {next_index}, got {data['index']}"
            open_blocks[data["index"]] = data["content_block"]["type"]
            next_index += 1
        elif name == "content_block_delta":
            assert data["index"] in open_blocks, f"delta for unopened index {data['index']}"
            assert data["delta"]["type"] in (DELTA_FOR_BLOCK[open_blocks[data["index"]]], "signature_delta")
            if data["delta"]["type"] == "input_json_delta":
                assert data["delta"]["partial_json"] != ""
        elif name == "content_block_stop":
            assert data["index"] in open_blocks, f"stop for unopened index {data['index']}"
            stopped.add(data["index"])
            del open_blocks[data["index"]]
        elif name == "message_delta":
            assert not message_delta_seen, "more than one message_delta"
            assert not open_blocks, f"blocks {sorted(open_blocks)} still open at message_delta"
            message_delta_seen = True
    if "message_stop" in names:
        assert names[-1] == "message_stop"
        assert message_delta_seen
        assert stopped == set(range(next_index))
