"""The OpenAI Responses protocol on the hub, pure: PROTOCOLS-RESPONSES.md §7 edge cases (conversion, streams,
errors, usage) as table tests over plain dicts, with a fixed clock, counting ids and a fixed envelope key."""

import itertools
import json

import pytest

from proxy.translate import GatewayError, TargetModel
from proxy.translate.envelope import Sealer
from proxy.translate.hub import Turn, hub_request, hub_response, hub_stream
from proxy.translate.responses_request import (
    responses_input_items,
    responses_items_check,
    responses_request_check,
)
from proxy.translate.responses_stream import ResponsesRelay

A_TARGET = TargetModel(upstream_model="claude-up", max_output_tokens=32000, thinking="budget")
O_TARGET = TargetModel(upstream_model="gpt-up", max_output_tokens=16000, thinking="budget")
R_TARGET = TargetModel(upstream_model="gpt-r", max_output_tokens=16000, thinking="adaptive")
KEY = bytes(range(32))


def sealer(tenant: int = 1, channel: int = 7, model: str = "claude-up") -> Sealer:
    nonces = itertools.count()
    return Sealer(key=KEY, tenant=tenant, channel=channel, model=model,
                  new_nonce=lambda n: next(nonces).to_bytes(n, "big"))  # fmt: skip


def turn(request: dict, **kwargs) -> Turn:
    counter = itertools.count(1)
    items = responses_input_items(request) if "input" in request else None
    return Turn(model="client-model", now=1700000000, new_id=lambda p: f"{p}_{next(counter)}", request=request,
                items=items, sealer=kwargs.pop("sealer", sealer()), **kwargs)  # fmt: skip


def r_to(upstream: str, body: dict, target: TargetModel, **kwargs):
    t = turn(body, **kwargs)
    return hub_request("responses", upstream, body, target, t), t


def a_event(name: str, **data) -> dict:
    return {"type": name, **data}


def a_message_events(blocks: list[dict], *, stop="end_turn", usage=None) -> list[dict]:
    """A stream events for finished blocks (text split in two deltas)."""
    start_usage = usage or {"input_tokens": 10, "output_tokens": 1}
    events = [a_event("message_start", message={"id": "m", "type": "message", "role": "assistant", "content": [],
                                                "model": "x", "usage": start_usage})]  # fmt: skip
    for index, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            events.append(a_event("content_block_start", index=index, content_block={"type": "text", "text": ""}))
            half = len(block["text"]) // 2
            for piece in (block["text"][:half], block["text"][half:]):
                events.append(a_event("content_block_delta", index=index, delta={"type": "text_delta", "text": piece}))
        elif kind == "thinking":
            events.append(a_event("content_block_start", index=index,
                                  content_block={"type": "thinking", "thinking": "", "signature": ""}))  # fmt: skip
            events.append(a_event("content_block_delta", index=index,
                                  delta={"type": "thinking_delta", "thinking": block["thinking"]}))  # fmt: skip
            events.append(a_event("content_block_delta", index=index,
                                  delta={"type": "signature_delta", "signature": block["signature"]}))  # fmt: skip
        else:
            events.append(a_event("content_block_start", index=index, content_block={**block, "input": {}}))
            events.append(a_event("content_block_delta", index=index,
                                  delta={"type": "input_json_delta", "partial_json": json.dumps(block["input"])}))  # fmt: skip
        events.append(a_event("content_block_stop", index=index))
    events.append(a_event("message_delta", delta={"stop_reason": stop}, usage={"output_tokens": 15}))
    events.append(a_event("message_stop"))
    return events


def run_stream(machine, events: list[dict]) -> list[tuple]:
    items = []
    for event in events:
        items += machine.feed(event)
    items += machine.finish()
    return items


def names(items) -> list[str]:
    return [name for name, _ in items]


# -- §7.1, 2, 4, 5, 6: A → R streams --------------------------------------------------------------------------


def test_edge1_text_stream_grammar():
    conv, t = r_to("anthropic", {"model": "m", "input": "hi", "stream": True}, A_TARGET)
    items = run_stream(
        hub_stream("responses", "anthropic", conv, t), a_message_events([{"type": "text", "text": "Hello!"}])
    )
    assert names(items) == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed",
    ]  # fmt: skip
    assert [data["sequence_number"] for _, data in items] == list(range(10))
    assert all(data["type"] == name for name, data in items)
    final = items[-1][1]["response"]
    assert final["output"] == [{"id": "msg_2", "type": "message", "status": "completed", "role": "assistant",
                                "content": [{"type": "output_text", "text": "Hello!", "annotations": [],
                                             "logprobs": []}]}]  # fmt: skip
    assert final["id"] == t.response_id and final["model"] == "client-model"


def test_edge2_thinking_text_two_tools_indexes():
    body = {"model": "m", "input": "hi", "stream": True, "reasoning": {"effort": "high", "summary": "auto"}}
    conv, t = r_to("anthropic", body, A_TARGET)
    blocks = [
        {"type": "thinking", "thinking": "hmm", "signature": "sig1"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "t1", "name": "a", "input": {"x": 1}},
        {"type": "tool_use", "id": "t2", "name": "b", "input": {}},
    ]
    items = run_stream(hub_stream("responses", "anthropic", conv, t), a_message_events(blocks, stop="tool_use"))
    added = [data for name, data in items if name == "response.output_item.added"]
    assert [(a["output_index"], a["item"]["type"]) for a in added] == [
        (0, "reasoning"), (1, "message"), (2, "function_call"), (3, "function_call")]  # fmt: skip
    final = items[-1][1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call", "function_call"]
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": "hmm"}]
    assert final["output"][2]["arguments"] == '{"x": 1}' and final["output"][2]["call_id"] == "t1"
    assert "response.reasoning_summary_text.delta" in names(items)
    assert final["status"] == "completed"


def test_edge4_usage_mapping_with_cache():
    conv, t = r_to("anthropic", {"model": "m", "input": "hi"}, A_TARGET)
    usage = {
        "input_tokens": 10,
        "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 400,
        "output_tokens": 1,
    }
    items = run_stream(hub_stream("responses", "anthropic", conv, t),
                       a_message_events([{"type": "text", "text": "ok"}], usage=usage))  # fmt: skip
    assert items[-1][1]["response"]["usage"] == {
        "input_tokens": 2410, "input_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 400},
        "output_tokens": 15, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 2425,
    }  # fmt: skip


def test_edge5_no_upstream_usage_still_integers():
    conv, t = r_to("openai", {"model": "m", "input": "hi", "stream": True}, O_TARGET)
    machine = hub_stream("responses", "openai", conv, t)
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi there"}}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]  # fmt: skip
    items = run_stream(machine, chunks)
    usage = items[-1][1]["response"]["usage"]
    assert set(usage) == {"input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details",
                          "total_tokens"}  # fmt: skip
    assert all(isinstance(v, int) for v in (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]))
    assert usage["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0}
    assert machine.usage.estimated


def test_edge6_max_tokens_is_incomplete():
    conv, t = r_to("anthropic", {"model": "m", "input": "hi", "max_output_tokens": 16}, A_TARGET)
    assert conv.body["max_tokens"] == 16
    items = run_stream(hub_stream("responses", "anthropic", conv, t),
                       a_message_events([{"type": "text", "text": "cut"}], stop="max_tokens"))  # fmt: skip
    assert items[-1][0] == "response.incomplete"
    final = items[-1][1]["response"]
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete"
    # non-stream too
    message = {"content": [{"type": "text", "text": "cut"}], "stop_reason": "max_tokens", "usage": {}}
    out = hub_response("responses", "anthropic", message, conv, t)
    assert (out["status"], out["output"][0]["status"]) == ("incomplete", "incomplete")
    assert "completed_at" not in out


# -- §7.3: O upstream, name after the first fragment --------------------------------------------------------


def test_edge3_openai_tool_name_after_first_fragment():
    conv, t = r_to("openai", {"model": "m", "input": "hi", "stream": True}, O_TARGET)
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"arguments": '{"a"'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": ":1}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
         "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}},
    ]  # fmt: skip
    items = run_stream(hub_stream("responses", "openai", conv, t), chunks)
    assert "response.content_part.added" not in names(items)
    added = next(d for n, d in items if n == "response.output_item.added")
    assert (added["output_index"], added["item"]["type"], added["item"]["name"]) == (0, "function_call", "f")
    deltas = [d["delta"] for n, d in items if n == "response.function_call_arguments.delta"]
    assert deltas == ['{"a":1}']  # the fragments that came before the name, flushed in one delta
    assert items[-1][1]["response"]["usage"]["input_tokens"] == 5


# -- §7.7, 8, 11, 18: checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("_case", "body", "code", "param"),
    [
        ("below min", {"max_output_tokens": 10}, "integer_below_min_value", "max_output_tokens"),
        ("messages", {"messages": []}, "unsupported_parameter", "messages"),
        ("max_tokens", {"max_tokens": 5}, "unsupported_parameter", "max_tokens"),
        ("reasoning_effort", {"reasoning_effort": "low"}, "unsupported_parameter", "reasoning_effort"),
        ("response_format", {"response_format": {}}, "unsupported_parameter", "response_format"),
        ("file_search", {"tools": [{"type": "file_search"}]}, "unsupported_tool", "tools[0]"),
        ("mcp", {"tools": [{"type": "function", "name": "f"}, {"type": "mcp"}]}, "unsupported_tool", "tools[1]"),
        ("hosted choice", {"tool_choice": {"type": "web_search_preview"}}, "unsupported_tool", "tool_choice"),
        ("background", {"background": True}, "unsupported_parameter", "background"),
    ],
)
def test_edges_7_8_18_checks(_case, body, code, param):
    with pytest.raises(GatewayError) as caught:
        responses_request_check({"model": "m", "input": "x", **body})
    assert (caught.value.code, caught.value.param, caught.value.status_for("responses")) == (code, param, 400)


def test_edge8_moved_hint():
    with pytest.raises(GatewayError) as caught:
        responses_request_check({"model": "m", "input": "x", "max_tokens": 5})
    assert caught.value.message == (
        "Unsupported parameter: 'max_tokens'. In the Responses API, this parameter has moved to 'max_output_tokens'."
    )


def test_edge11_output_without_call():
    items = responses_input_items({"input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}]})
    with pytest.raises(GatewayError) as caught:
        responses_items_check(items)
    assert caught.value.message == "No tool call found for function call output with call_id c9."


def test_edge18_web_search_dropped():
    conv, _t = r_to("anthropic", {"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, A_TARGET)
    assert "tools" not in conv.body


def test_edge7_o_and_a_clients_on_r_upstream_raised_to_16():
    t = turn({"model": "m"})
    conv = hub_request("openai", "responses", {"model": "m", "messages": [{"role": "user", "content": "x"}],
                                               "max_tokens": 5}, R_TARGET, t)  # fmt: skip
    assert conv.body["max_output_tokens"] == 16
    conv = hub_request("anthropic", "responses", {"model": "m", "max_tokens": 3,
                                                  "messages": [{"role": "user", "content": "x"}]}, R_TARGET, t)  # fmt: skip
    assert conv.body["max_output_tokens"] == 16


# -- §7.9, 10, 12, 13, 30, 31: R client requests -------------------------------------------------------------


def fc(call_id: str, name: str = "f", arguments: str = "{}") -> dict:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def out(call_id: str, output: str = "r") -> dict:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def test_edge9_parallel_calls_one_assistant_message():
    body = {"model": "m", "input": [{"role": "user", "content": "go"}, fc("c1"), fc("c2"), out("c1"), out("c2")]}
    conv, _ = r_to("openai", body, O_TARGET)
    assert conv.body["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
        {"role": "tool", "tool_call_id": "c2", "content": "r"},
    ]  # fmt: skip


def test_edge10_text_then_call_one_assistant_message():
    body = {"model": "m", "input": [
        {"role": "user", "content": "go"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        fc("c1"), out("c1"),
    ]}  # fmt: skip
    conv, _ = r_to("openai", body, O_TARGET)
    assistant = conv.body["messages"][1]
    assert assistant["role"] == "assistant" and assistant["content"] == "ok"
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1"]


def test_edge12_results_then_text_in_one_user_message():
    body = {"model": "m", "input": [{"role": "user", "content": "go"}, fc("c1"), fc("c2"), out("c1"), out("c2"),
                                    {"role": "user", "content": "and?"}]}  # fmt: skip
    conv, _ = r_to("anthropic", body, A_TARGET)
    assert conv.body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "c1", "content": "r"},
        {"type": "tool_result", "tool_use_id": "c2", "content": "r"},
        {"type": "text", "text": "and?", "cache_control": {"type": "ephemeral"}},
    ]}  # fmt: skip


@pytest.mark.parametrize(("_case", "arguments", "expected"), [
    ("empty", "", {}), ("invalid", "{nope", {}), ("array", "[1]", {"value": [1]}), ("object", '{"a":1}', {"a": 1}),
])  # fmt: skip
def test_edge13_ids_and_arguments(_case, arguments, expected):
    body = {"model": "m", "input": [{"role": "user", "content": "go"}, fc("call.a/1", arguments=arguments),
                                    out("call.a/1")]}  # fmt: skip
    conv, _ = r_to("anthropic", body, A_TARGET)
    tool_use = conv.body["messages"][1]["content"][0]
    assert (tool_use["id"], tool_use["input"]) == ("call_a_1", expected)
    assert conv.body["messages"][2]["content"][0]["tool_use_id"] == "call_a_1"


def test_edge30_empty_tools_and_include():
    for upstream, target in (("openai", O_TARGET), ("anthropic", A_TARGET)):
        conv, _ = r_to(upstream, {"model": "m", "input": "x", "tools": [], "include": []}, target)
        assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(conv.body)


def test_edge31_json_schema():
    fmt = {"type": "json_schema", "name": "w", "schema": {"type": "object", "properties": {}}, "strict": True}
    conv, _ = r_to("openai", {"model": "m", "input": "x", "text": {"format": fmt}}, O_TARGET)
    assert conv.body["response_format"]["type"] == "json_schema"
    assert conv.body["response_format"]["json_schema"]["name"] == "w"
    assert conv.body["response_format"]["json_schema"]["strict"] is True
    # an A upstream without structured output: forced tool fallback → a message with the JSON text
    conv, t = r_to("anthropic", {"model": "m", "input": "x", "text": {"format": fmt}}, A_TARGET)
    assert conv.body["tool_choice"] == {"type": "tool", "name": "json_tool_call"}
    message = {"content": [{"type": "tool_use", "id": "t", "name": "json_tool_call", "input": {"a": 1}}],
               "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}}  # fmt: skip
    response = hub_response("responses", "anthropic", message, conv, t)
    assert response["status"] == "completed"
    assert [(i["type"], i["content"][0]["text"]) for i in response["output"]] == [("message", '{"a":1}')]


# -- §7.15, 16, 17: custom tools and namespaces ------------------------------------------------------------


APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": "Patch files.",
               "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}}  # fmt: skip


def test_edge15_custom_tool_on_anthropic():
    conv, t = r_to("anthropic", {"model": "m", "input": "x", "tools": [APPLY_PATCH], "stream": True}, A_TARGET)
    assert conv.body["tools"] == [{"name": "apply_patch", "description": "Patch files.\nInput grammar (lark): start: x",
                                   "input_schema": {"type": "object", "properties": {"input": {"type": "string"}},
                                                    "required": ["input"], "additionalProperties": False}}]  # fmt: skip
    patch = "*** Begin Patch\n*** End Patch"
    block = {"type": "tool_use", "id": "t1", "name": "apply_patch", "input": {"input": patch}}
    items = run_stream(hub_stream("responses", "anthropic", conv, t), a_message_events([block], stop="tool_use"))
    assert [n for n in names(items) if "custom" in n] == ["response.custom_tool_call_input.delta",
                                                          "response.custom_tool_call_input.done"]  # fmt: skip
    final = items[-1][1]["response"]["output"][0]
    assert (final["type"], final["input"], final["call_id"]) == ("custom_tool_call", patch, "t1")
    response = hub_response("responses", "anthropic", {"content": [block], "stop_reason": "tool_use", "usage": {}},
                            conv, t)  # fmt: skip
    assert response["output"][0]["input"] == patch


def test_edge16_custom_call_history():
    body = {"model": "m", "tools": [APPLY_PATCH], "input": [
        {"role": "user", "content": "x"},
        {"type": "custom_tool_call", "call_id": "p1", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "custom_tool_call_output", "call_id": "p1", "output": "done"},
    ]}  # fmt: skip
    conv, _ = r_to("anthropic", body, A_TARGET)
    assert conv.body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "p1", "name": "apply_patch", "input": {"input": "*** Begin Patch"}}
    ]
    assert conv.body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "p1", "content": "done", "cache_control": {"type": "ephemeral"}}
    ]


def test_edge17_namespace_flattened_and_restored():
    tools = [{"type": "namespace", "name": "multi_agent_v1", "description": "agents",
              "tools": [{"type": "function", "name": "close_agent", "parameters": {"type": "object"}}]}]  # fmt: skip
    conv, t = r_to("anthropic", {"model": "m", "input": "x", "tools": tools}, A_TARGET)
    assert [tool["name"] for tool in conv.body["tools"]] == ["multi_agent_v1__close_agent"]
    message = {"content": [{"type": "tool_use", "id": "t", "name": "multi_agent_v1__close_agent", "input": {}}],
               "stop_reason": "tool_use", "usage": {}}  # fmt: skip
    item = hub_response("responses", "anthropic", message, conv, t)["output"][0]
    assert (item["name"], item["namespace"]) == ("close_agent", "multi_agent_v1")


# -- §7.19–22, 26: reasoning envelopes ------------------------------------------------------------------------


REASONING = {"model": "m", "input": "w?", "store": False, "include": ["reasoning.encrypted_content"],
             "reasoning": {"effort": "high", "summary": "auto"}}  # fmt: skip
THINKING = {"type": "thinking", "thinking": "Let me think.", "signature": "EqQBCkYIBxgCKkA+sig=="}


def first_turn_reasoning(seal: Sealer) -> dict:
    conv, t = r_to("anthropic", REASONING, A_TARGET, sealer=seal)
    message = {"content": [THINKING, {"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
               "stop_reason": "tool_use", "usage": {}}  # fmt: skip
    return hub_response("responses", "anthropic", message, conv, t)["output"][0]


def second_turn(item: dict, seal: Sealer) -> dict:
    body = {**REASONING, "input": [{"role": "user", "content": "w?"}, item, fc("t1"), out("t1")]}
    conv, _ = r_to("anthropic", body, A_TARGET, sealer=seal)
    return conv.body


def test_edge19_thinking_restored_byte_identical():
    item = first_turn_reasoning(sealer())
    assert item["encrypted_content"].startswith("rg1.")
    body = second_turn(item, sealer())
    assert body["messages"][1]["content"][0] == THINKING
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 4096}


def test_edge20_missing_envelope_omits_thinking():
    item = first_turn_reasoning(sealer())
    body = second_turn({k: v for k, v in item.items() if k != "encrypted_content"}, sealer())
    assert "thinking" not in body
    assert body["messages"][1]["content"][0]["type"] == "tool_use"


@pytest.mark.parametrize(("_case", "replay"), [
    ("other tenant", sealer(tenant=2)), ("other channel", sealer(channel=8)), ("other model", sealer(model="m2")),
])  # fmt: skip
def test_edge21_foreign_envelopes_dropped(_case, replay):
    body = second_turn(first_turn_reasoning(sealer()), replay)
    assert "thinking" not in body
    assert all(block["type"] != "thinking" for block in body["messages"][1]["content"])


def test_edge21_altered_envelope_dropped():
    item = first_turn_reasoning(sealer())
    token = item["encrypted_content"]
    altered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    body = second_turn({**item, "encrypted_content": altered}, sealer())
    assert "thinking" not in body


def test_edge26_id_only_reasoning_dropped():
    body = second_turn({"type": "reasoning", "id": "rs_never_stored", "summary": []}, sealer())
    assert body["messages"][1]["content"][0]["type"] == "tool_use"


def test_edge22_anthropic_client_on_responses_upstream():
    seal = sealer(model="gpt-r")
    t = turn({"model": "m"}, sealer=seal)
    a_body = {"model": "m", "max_tokens": 2000, "thinking": {"type": "adaptive"}, "output_config": {"effort": "low"},
              "messages": [{"role": "user", "content": "w?"}]}  # fmt: skip
    conv = hub_request("anthropic", "responses", a_body, R_TARGET, t)
    assert conv.body["store"] is False
    assert conv.body["include"] == ["reasoning.encrypted_content"]
    assert conv.body["reasoning"] == {"effort": "low", "summary": "auto"}
    upstream = {"object": "response", "status": "completed", "output": [
        {"type": "reasoning", "id": "rs_up", "summary": [{"type": "summary_text", "text": "S"}],
         "encrypted_content": "gAAAA-upstream"},
        {"type": "function_call", "id": "fc_up", "call_id": "call_1", "name": "f", "arguments": "{}"},
    ], "usage": {"input_tokens": 5, "output_tokens": 7}}  # fmt: skip
    message = hub_response("anthropic", "responses", upstream, conv, t)
    thinking = message["content"][0]
    assert thinking["thinking"] == "S" and thinking["signature"].startswith("rg1.")
    assert message["stop_reason"] == "tool_use"
    next_body = {**a_body, "messages": [
        {"role": "user", "content": "w?"},
        {"role": "assistant", "content": message["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "ok"}]},
    ]}  # fmt: skip
    conv = hub_request("anthropic", "responses", next_body, R_TARGET, turn({"model": "m"}, sealer=seal))
    assert conv.body["input"][1] == {"type": "reasoning", "id": "rs_up", "summary": [{"type": "summary_text",
                                     "text": "S"}], "encrypted_content": "gAAAA-upstream"}  # fmt: skip
    assert conv.body["input"][2]["type"] == "function_call"


# -- §7.14, 23, 32: R upstream → O client -------------------------------------------------------------------


R_ANSWER = {"object": "response", "status": "completed", "output": [
    {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "Because."}]},
    {"type": "message", "id": "m", "role": "assistant", "content": [{"type": "output_text", "text": "Sure END no"}]},
    {"type": "function_call", "id": "fc", "call_id": "call_9", "name": "f", "arguments": '{"a":1}'},
], "usage": {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 5}, "output_tokens": 9}}  # fmt: skip


def test_edges14_23_one_choice_content_tool_calls_reasoning():
    t = turn({"model": "m"})
    conv = hub_request("openai", "responses", {"model": "m", "messages": [{"role": "user", "content": "x"}]},
                       R_TARGET, t)  # fmt: skip
    out_body = hub_response("openai", "responses", R_ANSWER, conv, t)
    (choice,) = out_body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Sure END no"
    assert choice["message"]["reasoning_content"] == "Because."
    assert choice["message"]["tool_calls"][0]["id"] == "call_9"
    assert out_body["usage"]["prompt_tokens"] == 20
    assert out_body["usage"]["prompt_tokens_details"]["cached_tokens"] == 5


def r_events(texts: list[str], *, summary: str | None = None) -> list[dict]:
    seq = itertools.count()
    events = [{"type": "response.created", "response": {"id": "up", "status": "in_progress", "output": []}}]
    if summary:
        events += [
            {"type": "response.output_item.added", "output_index": 0, "item": {"id": "rs", "type": "reasoning"}},
            {"type": "response.reasoning_summary_text.delta", "item_id": "rs", "summary_index": 0, "delta": summary},
            {"type": "response.output_item.done", "output_index": 0, "item": {"id": "rs", "type": "reasoning"}},
        ]
    events.append({"type": "response.output_item.added", "item": {"id": "m", "type": "message"}})
    events += [{"type": "response.output_text.delta", "item_id": "m", "delta": text} for text in texts]
    events.append({"type": "response.output_item.done", "item": {"id": "m", "type": "message"}})
    events.append({"type": "response.completed", "response": {"status": "completed", "output": [],
                   "usage": {"input_tokens": 4, "output_tokens": 6}}})  # fmt: skip
    return [{**e, "sequence_number": next(seq)} for e in events]


def test_edge23_stream_reasoning_never_content():
    t = turn({"model": "m"}, include_usage=True)
    conv = hub_request("openai", "responses", {"model": "m", "stream": True,
                                               "messages": [{"role": "user", "content": "x"}]}, R_TARGET, t)  # fmt: skip
    items = run_stream(hub_stream("openai", "responses", conv, t), r_events(["Hel", "lo"], summary="Why"))
    deltas = [d["choices"][0]["delta"] for _, d in items if isinstance(d, dict) and d.get("choices")]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "Why"
    assert "".join(d.get("content") or "" for d in deltas) == "Hello"
    assert items[-1] == (None, "[DONE]")


def test_edge32_stop_emulated_on_responses_upstream():
    t = turn({"model": "m"})
    body = {"model": "m", "stream": True, "stop": ["END"], "messages": [{"role": "user", "content": "x"}]}
    conv = hub_request("openai", "responses", body, R_TARGET, t)
    assert "stop" not in conv.body and "stop_sequences" not in conv.body
    machine = hub_stream("openai", "responses", conv, t)
    items = run_stream(machine, r_events(["Sure E", "ND no"]))
    deltas = [d["choices"][0] for _, d in items if isinstance(d, dict) and d.get("choices")]
    assert "".join(c["delta"].get("content") or "" for c in deltas) == "Sure "
    assert [c["finish_reason"] for c in deltas if c.get("finish_reason")] == ["stop"]
    # non-stream
    answer = {**R_ANSWER, "output": [R_ANSWER["output"][1]]}
    out_body = hub_response("openai", "responses", answer, conv, t)
    assert out_body["choices"][0]["message"]["content"] == "Sure "
    assert out_body["choices"][0]["finish_reason"] == "stop"


# -- §7.27: failures ----------------------------------------------------------------------------------------


def test_edge27_overloaded_after_text():
    conv, t = r_to("anthropic", {"model": "m", "input": "hi", "stream": True}, A_TARGET)
    machine = hub_stream("responses", "anthropic", conv, t)
    events = a_message_events([{"type": "text", "text": "Hello"}])[:4]
    events.append({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    items = run_stream(machine, events)
    assert names(items)[-2:] == ["error", "response.failed"]
    error = items[-2][1]
    assert (error["code"], error["message"], error["param"]) == ("server_error", "Overloaded", None)
    assert error["error"] == {"type": "server_error", "code": "server_error", "message": "Overloaded", "param": None}
    failed = items[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "server_error", "message": "Overloaded"}
    assert "response.completed" not in names(items)
    assert machine.error is not None and machine.done


def test_edge27_eof_before_terminal():
    conv, t = r_to("anthropic", {"model": "m", "input": "hi", "stream": True}, A_TARGET)
    items = run_stream(
        hub_stream("responses", "anthropic", conv, t), a_message_events([{"type": "text", "text": "He"}])[:3]
    )
    assert names(items)[-2:] == ["error", "response.failed"]
    assert items[-1][1]["response"]["error"]["message"] == "upstream stream ended before completion"


def test_rate_limit_code_and_retry_hint():
    from proxy.translate.errors import ErrorKind
    from proxy.translate.responses_stream import responses_error_code, responses_error_message

    error = GatewayError(ErrorKind.RATE_LIMIT, "Slow down.", retry_after=3)
    assert responses_error_code(error) == "rate_limit_exceeded"
    assert responses_error_message(error) == "Slow down. Please try again in 3s."


# -- §7.33 and §6 M8/M10: an A client on an R upstream ----------------------------------------------------


def test_edge33_mid_conversation_system_becomes_developer_item():
    t = turn({"model": "m"})
    a_body = {"model": "m", "max_tokens": 100, "system": [{"type": "text", "text": "Top."}],
              "metadata": {"user_id": "x" * 150},
              "messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "Mid."},
                           {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}  # fmt: skip
    conv = hub_request("anthropic", "responses", a_body, R_TARGET, t)
    assert conv.body["instructions"] == "Top."
    assert [(i.get("role"), i["type"]) for i in conv.body["input"]] == [
        ("user", "message"),
        ("developer", "message"),
        ("assistant", "message"),
        ("user", "message"),
    ]
    assert conv.body["input"][1]["content"] == [{"type": "input_text", "text": "Mid."}]
    import hashlib

    assert conv.body["safety_identifier"] == hashlib.sha256(b"x" * 150).hexdigest()


# -- the R → R relay ------------------------------------------------------------------------------------------


def test_relay_rewrites_id_and_model_and_fails_on_eof():
    t = turn({"model": "m", "store": True}).responses()
    relay = ResponsesRelay(t, input_estimate=3)
    events = r_events(["Hi"])
    items = [item for event in events[:-1] for item in relay.feed(event)]
    assert items[0][1]["response"]["id"] == t.response_id
    assert items[0][1]["response"]["model"] == "client-model"
    tail = relay.finish()
    assert names(tail) == ["error", "response.failed"]
    assert tail[0][1]["sequence_number"] == events[-2]["sequence_number"] + 1
    relay = ResponsesRelay(t, input_estimate=3)
    items = [item for event in events for item in relay.feed(event)]
    assert relay.done and relay.usage.output_tokens == 6 and items[-1][0] == "response.completed"


def test_anthropic_cache_breakpoints_for_r_clients_only():
    body = {"model": "m", "instructions": "Sys.", "input": [{"role": "user", "content": "a"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "b"}]},
            {"role": "user", "content": "c"}]}  # fmt: skip
    conv, _ = r_to("anthropic", body, A_TARGET)
    assert conv.body["system"] == [{"type": "text", "text": "Sys.", "cache_control": {"type": "ephemeral"}}]
    assert conv.body["messages"][0]["content"] == [{"type": "text", "text": "a"}]
    assert conv.body["messages"][2]["content"] == [
        {"type": "text", "text": "c", "cache_control": {"type": "ephemeral"}}
    ]
    conv, _ = r_to("openai", body, O_TARGET)
    assert conv.body["messages"][0] == {"role": "system", "content": "Sys."}
    o_body = {"model": "m", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u"}]}
    conv = hub_request("openai", "anthropic", o_body, A_TARGET, turn({"model": "m"}))
    assert conv.body["system"] == "S"  # O clients: unchanged


# -- the hub's table: which machine serves each converted pair ----------------------------------------------


@pytest.mark.parametrize(
    ("client", "upstream", "machine"),
    [
        ("openai", "anthropic", "AnthropicToOpenAIStream"),
        ("anthropic", "openai", "OpenAIToAnthropicStream"),
        ("openai", "gemini", "GeminiToOpenAIStream"),
        ("anthropic", "gemini", "GeminiToAnthropicStream"),
        ("responses", "anthropic", "AnthropicToResponsesStream"),
        ("responses", "openai", "NeutralHop(OpenAIToAnthropicStream→AnthropicToResponsesStream)"),
        ("responses", "gemini", "NeutralHop(GeminiToAnthropicStream→AnthropicToResponsesStream)"),
        ("anthropic", "responses", "ResponsesToAnthropicStream"),
        ("openai", "responses", "NeutralHop(ResponsesToAnthropicStream→AnthropicToOpenAIStream)"),
    ],
)
def test_hub_reaches_every_pair_in_at_most_one_neutral_hop(client, upstream, machine):
    request = {"model": "m", "input": "hi"} if client == "responses" else {"model": "m", "max_tokens": 50,
               "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    t = turn(request)
    target = {"anthropic": A_TARGET, "openai": O_TARGET, "gemini": A_TARGET, "responses": R_TARGET}[upstream]
    conv = hub_request(client, upstream, request, target, t)
    built = hub_stream(client, upstream, conv, t)
    name = type(built).__name__
    if name == "NeutralHop":
        name = f"NeutralHop({type(built.inner).__name__}→{type(built.outer).__name__})"
    assert name == machine


def test_gemini_json_modes_from_a_responses_client():
    fmt = {"type": "json_schema", "name": "w", "schema": {"type": "object"}}
    conv, _ = r_to("gemini", {"model": "m", "input": "x", "text": {"format": fmt}}, A_TARGET)
    assert conv.body["generationConfig"]["responseJsonSchema"] == {"type": "object"}
    conv, _ = r_to("gemini", {"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}, A_TARGET)
    assert conv.body["generationConfig"]["responseMimeType"] == "application/json"
