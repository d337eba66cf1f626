"""anthropic-beta policy per provider (issue 14 item 2): proxy/translate/betas.py."""

import pytest

from proxy.translate.betas import (
    anthropic_betas_for_upstream,
    anthropic_betas_parse,
    anthropic_betas_policy_problems,
)

CLAUDE_CODE = (
    "claude-code-20250219, interleaved-thinking-2025-05-14, context-management-2025-06-27, "
    "mid-conversation-tool-changes-2026-07-01, thinking-token-count-2026-05-13, advanced-tool-use-2025-11-20, "
    "effort-2025-11-24"
)
WITH_SYSTEM = {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}
WITHOUT_SYSTEM = {"messages": [{"role": "user", "content": "a"}]}


def test_parse_keeps_order_drops_blanks_and_repeats():
    assert anthropic_betas_parse(" a-1 ,b-2,,a-1 ") == ["a-1", "b-2"]
    assert anthropic_betas_parse(None) == []


@pytest.mark.parametrize(
    ("_case", "header", "policy", "body", "expected"),
    [
        ("default: forwarded unchanged", CLAUDE_CODE, None, WITH_SYSTEM, CLAUDE_CODE),
        ("no header: none sent", None, None, WITH_SYSTEM, None),
        ("mode pass with an empty policy", "a-1", {}, None, "a-1"),
        ("allow only listed (Bedrock-style)", CLAUDE_CODE,
         {"mode": "allow", "allow": ["interleaved-thinking-2025-05-14", "effort-*"]}, WITH_SYSTEM,
         "interleaved-thinking-2025-05-14, effort-2025-11-24"),
        ("allow with nothing listed: no header", "a-1", {"mode": "allow"}, None, None),
        ("drop listed", "a-1, b-2, c-3", {"mode": "drop", "drop": ["b-2"]}, None, "a-1, c-3"),
        ("drop by prefix", "mcp-client-2025-04-04, a-1", {"mode": "drop", "drop": ["mcp-client-*"]}, None, "a-1"),
        ("rename after the filter", "context-1m-2025-08-07, a-1",
         {"mode": "allow", "allow": ["context-1m-2025-08-07"], "rename": {"context-1m-2025-08-07": "ctx-1m"}},
         None, "ctx-1m"),
        ("rename onto an existing one: once", "a-1, b-2", {"rename": {"a-1": "b-2"}}, None, "b-2"),
        ("M2: mid-conversation betas removed once the system messages were folded", CLAUDE_CODE, None,
         WITHOUT_SYSTEM,
         "claude-code-20250219, interleaved-thinking-2025-05-14, context-management-2025-06-27, "
         "thinking-token-count-2026-05-13, advanced-tool-use-2025-11-20, effort-2025-11-24"),
        ("M2: the older mid-conversation-system beta too", "mid-conversation-system-2026-04-07", None,
         WITHOUT_SYSTEM, None),
        ("a mid_conv_system block keeps them", "mid-conversation-system-2026-04-07", None,
         {"messages": [{"role": "user", "content": [{"type": "mid_conv_system", "content": "x"}]}]},
         "mid-conversation-system-2026-04-07"),
        ("MCP connector beta passes by default", "mcp-client-2025-04-04", None, WITHOUT_SYSTEM,
         "mcp-client-2025-04-04"),
    ],
)  # fmt: skip
def test_betas_for_upstream(_case, header, policy, body, expected):
    assert anthropic_betas_for_upstream(header, policy, body=body) == expected


@pytest.mark.parametrize(
    ("_case", "policy", "problems"),
    [
        ("absent", None, []),
        ("full", {"mode": "allow", "allow": ["a"], "drop": [], "rename": {"a": "b"}}, []),
        ("not a mapping", ["a"], ["betas must be a mapping"]),
        ("bad mode", {"mode": "block"}, ["betas.mode must be one of pass, allow, drop"]),
        ("allow not a list", {"mode": "allow", "allow": "a"}, ["betas.allow must be a list of strings"]),
        ("rename to nothing", {"rename": {"a": ""}}, ["betas.rename must map beta names to beta names"]),
        ("unknown key", {"only": ["a"]}, ["betas has unknown keys: only"]),
    ],
)
def test_policy_problems(_case, policy, problems):
    assert anthropic_betas_policy_problems(policy) == problems
