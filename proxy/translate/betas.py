"""The `anthropic-beta` header an Anthropic-protocol upstream receives (issue 14 item 2): a pure policy.

Default: the client's betas are forwarded unchanged (Anthropic's gateway contract: a beta the gateway does not
know still reaches the upstream that does). A provider can narrow that with `options.betas`:

    betas: {mode: pass | allow | drop, allow: [...], drop: [...], rename: {client-name: upstream-name}}

* `pass` (default) forwards every beta; `allow` only those listed in `allow`; `drop` all but those in `drop`.
  Entries match exactly or, ending in `*`, by prefix (`mcp-client-*`). Bedrock/Vertex-style upstreams refuse
  unknown betas, so they want `allow`.
* `rename` maps a client's name to the upstream's after the filter (filters name what clients send).
* The mid-conversation betas (`mid-conversation-system-*`, `mid-conversation-tool-changes-*`) go only with a body
  that still carries a `{role:"system"}` message: when the gateway folded those into `system` (a model without
  the catalog flag `mid_conv_system`, PROTOCOLS-RESPONSES §6 M2) the upstream would refuse or misread them.

Betas never reach other upstream protocols: only the Anthropic client sends them (proxy/upstreams/anthropic.py).
"""

from __future__ import annotations

from .system_messages import has_system_messages, without_mid_conversation_betas

BETA_MODES = ("pass", "allow", "drop")


def anthropic_betas_parse(header: str | None) -> list[str]:
    """The betas of an `anthropic-beta` header value (comma-separated), in order, without blanks or repeats."""
    betas: list[str] = []
    for part in (header or "").split(","):
        beta = part.strip()
        if beta and beta not in betas:
            betas.append(beta)
    return betas


def _matches(beta: str, patterns: object) -> bool:
    for pattern in patterns if isinstance(patterns, list) else []:
        if not isinstance(pattern, str):
            continue
        if pattern == beta or (pattern.endswith("*") and beta.startswith(pattern[:-1])):
            return True
    return False


def anthropic_betas_for_upstream(header: str | None, policy: object, *, body: dict | None = None) -> str | None:
    """The `anthropic-beta` value to send upstream (None: send no header) for a client's header and a provider's
    `options.betas` policy (None or not a mapping: pass everything)."""
    betas = anthropic_betas_parse(header)
    if body is not None and not has_system_messages(body.get("messages")):
        betas = without_mid_conversation_betas(betas)
    policy = policy if isinstance(policy, dict) else {}
    mode = policy.get("mode", "pass")
    if mode == "allow":
        betas = [beta for beta in betas if _matches(beta, policy.get("allow"))]
    elif mode == "drop" or (mode == "pass" and policy.get("drop")):
        betas = [beta for beta in betas if not _matches(beta, policy.get("drop"))]
    rename = policy.get("rename") if isinstance(policy.get("rename"), dict) else {}
    renamed: list[str] = []
    for beta in betas:
        new = rename.get(beta, beta)
        if isinstance(new, str) and new and new not in renamed:
            renamed.append(new)
    return ", ".join(renamed) or None


def anthropic_betas_policy_problems(policy: object) -> list[str]:
    """What is wrong with a provider's `options.betas` (empty: fine), for the catalog loader and admin."""
    if policy is None:
        return []
    if not isinstance(policy, dict):
        return ["betas must be a mapping"]
    problems = []
    if policy.get("mode", "pass") not in BETA_MODES:
        problems.append(f"betas.mode must be one of {', '.join(BETA_MODES)}")
    for key in ("allow", "drop"):
        value = policy.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            problems.append(f"betas.{key} must be a list of strings")
    rename = policy.get("rename")
    if rename is not None and (
        not isinstance(rename, dict) or not all(isinstance(v, str) and v for v in rename.values())
    ):
        problems.append("betas.rename must map beta names to beta names")
    unknown = set(policy) - {"mode", "allow", "drop", "rename"}
    if unknown:
        problems.append(f"betas has unknown keys: {', '.join(sorted(unknown))}")
    return problems
