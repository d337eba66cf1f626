"""What current Claude Code sends, on every route: PROTOCOLS-RESPONSES.md §6 (M1–M11) and §7 cases 33–34."""

import copy
import hashlib

import pytest

from proxy.translate import TargetModel, anthropic_error_body, anthropic_request_to_openai
from proxy.translate.errors import TranslationError
from proxy.translate.gemini import anthropic_request_to_gemini
from proxy.translate.passthrough import anthropic_request_to_anthropic
from proxy.translate.system_messages import (
    MID_SYSTEM_ERROR_CODE,
    anthropic_hoist_system_messages,
    anthropic_split_mid_conv_blocks,
    anthropic_system_text,
    anthropic_tool_fold,
)

GPT = TargetModel(upstream_model="gpt-up", thinking="adaptive")
CLAUDE = TargetModel(upstream_model="claude-up", thinking="adaptive")
CLAUDE_MID = TargetModel(upstream_model="claude-up", thinking="adaptive", mid_conv_system=True)
GEMINI = TargetModel(upstream_model="gemini-up", thinking="adaptive")
USER_ID = '{"device_id":"' + "d" * 64 + '","account_uuid":"","session_id":"0b6c1f7e-2f4c-4d1e-9a8b-1f2e3d4c5b6a"}'
BILLING = "x-anthropic-billing-header: cc_version=2.1.328.abc; cc_entrypoint=sdk-cli; cch=00000;"
CACHE = {"type": "ephemeral"}


def tool(name: str, **extra) -> dict:
    return {"name": name, "description": f"{name} tool", "input_schema": {"type": "object"}, **extra}


def o_tool(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "description": f"{name} tool",
                                             "parameters": {"type": "object"}}}  # fmt: skip


def removal(name: str) -> dict:
    return {"type": "tool_removal", "tool": {"type": "tool_reference", "name": name}}


def addition(name: str) -> dict:
    return {"type": "tool_addition", "tool": {"type": "tool_reference", "name": name}}


def claude_code_body(**overrides) -> dict:
    """Modelled on §6 "Observed" (Claude Code 2.1.328): the shape that failed with "Unsupported message role"."""
    body = {
        "model": "claude",
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
        "tools": [tool("Bash"), tool("Read"), tool("WebFetch", defer_loading=True)],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hello"}]},
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "<system-reminder>today</system-reminder>", "cache_control": CACHE}
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
            {"role": "user", "content": "list files"},
        ],
        "stream": True,
    }
    return {**body, **overrides}


# --- A → O (M3, M8–M11) -------------------------------------------------------------------------------------


def test_claude_code_body_to_openai_case_33():
    # given Claude Code's body with messages[1].role "system"
    # when
    out = anthropic_request_to_openai(claude_code_body(), GPT).body
    # then: a system message in the same place, never "Unsupported message role"
    assert out == {
        "model": "gpt-up",
        "messages": [
            {"role": "system", "content": "You are Claude Code.\n\nEnvironment: linux."},  # M11: billing header gone
            {"role": "user", "content": "hello"},
            {"role": "system", "content": "<system-reminder>today</system-reminder>"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "list files"},
        ],
        "max_tokens": 32000,
        "stream": True,
        "stream_options": {"include_usage": True},
        # M9: every tool sent (defer_loading dropped with the other A-only keys); context_management dropped
        "tools": [o_tool("Bash"), o_tool("Read"), o_tool("WebFetch")],
        "reasoning_effort": "high",  # M8
        "user": hashlib.sha256(USER_ID.encode()).hexdigest(),  # M10
    }
    assert len(out["user"]) == 64


@pytest.mark.parametrize(
    ("_case", "target", "system_content", "expected"),
    [
        ("blocks joined with a blank line, empties and cache_control dropped", GPT,
         [{"type": "text", "text": "a", "cache_control": CACHE}, {"type": "text", "text": " "},
          {"type": "text", "text": "b"}],
         [{"role": "user", "content": "hello"}, {"role": "system", "content": "a\n\nb"}]),
        ("a string content", GPT, "note",
         [{"role": "user", "content": "hello"}, {"role": "system", "content": "note"}]),
        ("flag developer", TargetModel(upstream_model="o3", system_role="developer"), "note",
         [{"role": "user", "content": "hello"}, {"role": "developer", "content": "note"}]),
        ("an empty system message disappears", GPT, [{"type": "text", "text": ""}],
         [{"role": "user", "content": "hello"}]),
        ("flag mid_system hoist: appended to the leading system message",
         TargetModel(upstream_model="gpt-up", mid_system="hoist"), "note",
         [{"role": "system", "content": "top\n\nnote"}, {"role": "user", "content": "hello"}]),
    ],
)  # fmt: skip
def test_system_message_to_openai(_case, target, system_content, expected):
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": "hello"},
                                           {"role": "system", "content": system_content}]}  # fmt: skip
    if target.mid_system == "hoist":
        body["system"] = "top"
    assert anthropic_request_to_openai(body, target).body["messages"] == expected


def test_hoist_without_leading_system_creates_one():
    body = {
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "hello"},
            {"role": "system", "content": "n"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "go"},
        ],
    }
    out = anthropic_request_to_openai(body, TargetModel(upstream_model="g", mid_system="hoist")).body
    assert out["messages"] == [
        {"role": "system", "content": "n"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "go"},
    ]


def test_mid_conv_system_block_is_a_system_message_in_place():
    # given the SDK's mid_conv_system block inside a user turn
    messages = [{"role": "user", "content": [{"type": "text", "text": "a"},
                                             {"type": "mid_conv_system", "content": "rule", "cache_control": CACHE},
                                             {"type": "text", "text": "b"}]}]  # fmt: skip
    # when / then
    assert anthropic_split_mid_conv_blocks(messages) == [
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "system", "content": "rule"},
        {"role": "user", "content": [{"type": "text", "text": "b"}]},
    ]
    out = anthropic_request_to_openai({"max_tokens": 5, "messages": messages}, GPT).body
    assert out["messages"] == [
        {"role": "user", "content": "a"},
        {"role": "system", "content": "rule"},
        {"role": "user", "content": "b"},
    ]


@pytest.mark.parametrize(
    ("_case", "target", "expected"),
    [
        ("no catalog set: as sent", GPT, "high"),
        ("clamped to the strongest supported below", TargetModel(upstream_model="g", thinking="adaptive",
                                                                 reasoning_efforts=("low", "medium")), "medium"),
        ("max on a model that stops at high", TargetModel(upstream_model="g", thinking="adaptive",
                                                          reasoning_efforts=("low", "medium", "high")), "high"),
    ],
)  # fmt: skip
def test_adaptive_effort_clamped_m8(_case, target, expected):
    effort = "max" if "max" in _case else "high"
    body = claude_code_body(output_config={"effort": effort})
    assert anthropic_request_to_openai(body, target).body["reasoning_effort"] == expected


# --- M6: tool_addition / tool_removal --------------------------------------------------------------------------


def test_tool_removal_on_openai_keeps_the_tool_and_restricts_the_turn_case_34():
    # given a system message withdrawing Bash
    body = claude_code_body()
    body["messages"][1] = {"role": "system", "content": [removal("Bash")]}
    # when
    out = anthropic_request_to_openai(body, GPT).body
    # then: Bash still declared (history may call it), this turn may not use it, a one-line note in place
    assert out["tools"] == [o_tool("Bash"), o_tool("Read"), o_tool("WebFetch")]
    assert out["tool_choice"] == {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "Read"}},
                                                    {"type": "function", "function": {"name": "WebFetch"}}]},
    }  # fmt: skip
    assert out["messages"][2] == {"role": "system", "content": "(Tools no longer available: Bash.)"}


def test_tool_changes_fold_in_order():
    messages = [
        {"role": "user", "content": "a"},
        {"role": "system", "content": [removal("Bash"), addition("Lint")]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "b"},
        {"role": "system", "content": [addition("Bash"),
                                       {"type": "tool_removal", "tool": {"type": "mcp_toolset_reference",
                                                                         "server_name": "gh"}}]},
    ]  # fmt: skip
    fold = anthropic_tool_fold([tool("Bash"), tool("Read")], messages)
    assert (fold.active, fold.changed, sorted(fold.explicitly_added)) == (
        ["Read", "Lint", "Bash"],
        True,
        ["Bash", "Lint"],
    )


def test_tool_choice_any_becomes_required_allowed_tools():
    body = claude_code_body(tool_choice={"type": "any"})
    body["messages"][1] = {"role": "system", "content": [removal("Read")]}
    out = anthropic_request_to_openai(body, GPT).body
    assert out["tool_choice"]["allowed_tools"]["mode"] == "required"
    assert [t["function"]["name"] for t in out["tool_choice"]["allowed_tools"]["tools"]] == ["Bash", "WebFetch"]


# --- A → A (M2, M5) ----------------------------------------------------------------------------------------------


def test_anthropic_with_flag_forwards_unchanged_m2():
    body = claude_code_body()
    original = copy.deepcopy(body)
    out = anthropic_request_to_anthropic(body, CLAUDE_MID).body
    assert out == {**original, "model": "claude-up"}


def test_anthropic_without_flag_appends_to_system_m5():
    # given the observed body and a model without the catalog flag
    body = claude_code_body()
    # when
    out = anthropic_request_to_anthropic(body, CLAUDE).body
    # then: system messages gone, their blocks appended to `system` in order, billing header kept (A upstream)
    assert out["system"] == [
        {"type": "text", "text": BILLING},
        {"type": "text", "text": "You are Claude Code.", "cache_control": CACHE},
        {"type": "text", "text": "Environment: linux.", "cache_control": CACHE},
        {"type": "text", "text": "<system-reminder>today</system-reminder>", "cache_control": CACHE},
    ]
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
        {"role": "user", "content": "list files"},
    ]
    assert out["tools"] == body["tools"]  # no tool changes: untouched
    assert {k: v for k, v in out.items() if k not in ("system", "messages", "model")} == {
        k: v for k, v in body.items() if k not in ("system", "messages", "model")
    }


def test_anthropic_without_flag_folds_tool_changes_m6():
    body = {
        "max_tokens": 5,
        "system": "top",
        "tools": [tool("Bash"), tool("Read"), tool("WebFetch", defer_loading=True)],
        "messages": [{"role": "user", "content": "a"},
                     {"role": "system", "content": [removal("Bash"), addition("WebFetch"),
                                                   {"type": "text", "text": "tools changed"}]}],
    }  # fmt: skip
    out = anthropic_hoist_system_messages(body)
    assert out == {
        "max_tokens": 5,
        "system": [{"type": "text", "text": "top"}, {"type": "text", "text": "tools changed"}],
        "tools": [tool("Read"), tool("WebFetch")],  # loaded by the addition: offered outright
        "messages": [{"role": "user", "content": "a"}],
    }


def test_mid_system_reject_answers_what_claude_code_falls_back_from_m7():
    body = claude_code_body()
    for target, convert in (
        (TargetModel(upstream_model="g", mid_system="reject"), anthropic_request_to_openai),
        (TargetModel(upstream_model="c", mid_system="reject"), anthropic_request_to_anthropic),
        (TargetModel(upstream_model="m", mid_system="reject"), anthropic_request_to_gemini),
    ):
        with pytest.raises(TranslationError) as info:
            convert(body, target)
        assert info.value.message == "messages.1.role: role 'system' is not supported on this model"
        assert anthropic_error_body(info.value, "req_1") == {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "messages.1.role: role 'system' is not supported on this model",
                "details": {"error_code": MID_SYSTEM_ERROR_CODE},
            },
            "request_id": "req_1",
        }


# --- A → Gemini ---------------------------------------------------------------------------------------------------


def test_claude_code_body_to_gemini():
    body = claude_code_body()
    body["messages"][1]["content"].append(removal("Read"))
    out = anthropic_request_to_gemini(body, GEMINI).body
    # the nearest faithful form: the system instruction, after the top-level system; the billing header dropped
    assert out["systemInstruction"] == {"parts": [
        {"text": "You are Claude Code."}, {"text": "Environment: linux."},
        {"text": "<system-reminder>today</system-reminder>\n(Tools no longer available: Read.)"},
    ]}  # fmt: skip
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "hello"}]},
        {"role": "model", "parts": [{"text": "Hi."}]},
        {"role": "user", "parts": [{"text": "list files"}]},
    ]
    names = [d["name"] for d in out["tools"][0]["functionDeclarations"]]
    assert names == ["Bash", "Read", "WebFetch"]  # every declared tool stays
    assert "context_management" not in out and "metadata" not in out


@pytest.mark.parametrize(
    ("_case", "content", "expected"),
    [
        ("string", "x", "x"),
        ("billing header block dropped", [{"type": "text", "text": BILLING}, {"type": "text", "text": "x"}], "x"),
        ("tool changes are not text", [removal("Bash"), {"type": "text", "text": "x"}], "x"),
        ("whitespace only", [{"type": "text", "text": "  "}], ""),
    ],
)
def test_anthropic_system_text(_case, content, expected):
    assert anthropic_system_text(content) == expected


@pytest.mark.parametrize("upstream", ["openai", "gemini"])
def test_mcp_servers_refused_on_non_anthropic_upstreams(upstream):
    body = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
            "mcp_servers": [{"type": "url", "url": "https://mcp.example/sse", "name": "ex"}]}  # fmt: skip
    convert = anthropic_request_to_openai if upstream == "openai" else anthropic_request_to_gemini
    with pytest.raises(TranslationError) as info:
        convert(body, GPT)
    assert (info.value.message, info.value.param, info.value.status_for("anthropic")) == (
        "mcp_servers is not supported for this model.", "mcp_servers", 400,
    )  # fmt: skip


def test_clear_at_next_user_message_expires_once_a_user_message_follows():
    messages = [
        {"role": "user", "content": "a"},
        {"role": "system", "content": "only for a", "clear_at": "next_user_message"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "b"},
        {"role": "system", "content": "for b", "clear_at": "next_user_message"},
    ]
    out = anthropic_request_to_openai({"max_tokens": 5, "messages": messages}, GPT).body
    assert out["messages"] == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "b"},
        {"role": "system", "content": "for b"},
    ]
    hoisted = anthropic_request_to_anthropic({"max_tokens": 5, "messages": messages}, CLAUDE).body
    assert hoisted["system"] == [{"type": "text", "text": "for b"}]


def test_only_expired_system_messages_leave_system_as_it_was():
    body = {"max_tokens": 5, "system": "top", "messages": [
        {"role": "user", "content": "a"}, {"role": "system", "content": "x", "clear_at": "next_user_message"},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "b"}]}  # fmt: skip
    assert anthropic_request_to_anthropic(body, CLAUDE).body == {
        "max_tokens": 5, "model": "claude-up", "system": "top",
        "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "ok"},
                     {"role": "user", "content": "b"}],
    }  # fmt: skip


def test_reject_names_the_clients_index_for_a_mid_conv_system_block():
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                {"role": "user", "content": [{"type": "text", "text": "c"},
                                             {"type": "mid_conv_system", "content": "rule"}]}]  # fmt: skip
    with pytest.raises(TranslationError) as info:
        anthropic_request_to_openai({"max_tokens": 5, "messages": messages}, TargetModel("g", mid_system="reject"))
    assert info.value.message == "messages.2.role: role 'system' is not supported on this model"
