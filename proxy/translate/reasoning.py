"""reasoning_effort ⇄ thinking (§2.6). The numbers are gateway choices (§7): LiteLLM's budgets, +4096 reserve."""

from __future__ import annotations

from .errors import TranslationError
from .models import TargetModel

EFFORT_LEVELS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")  # openai-python 2026-08, ascending
EFFORT_BUDGETS = {"low": 1024, "medium": 2048, "high": 4096, "xhigh": 8192, "max": 16384}
MIN_THINKING_BUDGET = 1024  # A rejects smaller budgets
VISIBLE_RESERVE_TOKENS = 4096  # room left for the visible answer when max_tokens must grow past the budget


def effort_to_anthropic_thinking(effort: object, target: TargetModel) -> tuple[dict | None, str | None]:
    """(A `thinking`, A `output_config.effort`) for an O reasoning_effort on `target`."""
    if effort is None:
        return None, None
    if effort not in EFFORT_LEVELS:
        raise TranslationError(
            f"reasoning_effort must be one of {', '.join(EFFORT_LEVELS)}.",
            param="reasoning_effort",
            code="invalid_value",
        )
    if target.thinking is None or effort in ("none", "minimal"):
        # A has no "think a little"; a model without thinking simply answers (no 400 for a hint).
        return None, None
    if target.thinking == "adaptive":
        return {"type": "adaptive"}, str(effort)
    return {"type": "enabled", "budget_tokens": EFFORT_BUDGETS[str(effort)]}, None


def fit_thinking_budget(thinking: dict, max_tokens: int, cap: int | None) -> tuple[dict | None, int]:
    """(thinking or None if it cannot fit, max_tokens) so that max_tokens > budget_tokens ≥ 1024 (§2.6)."""
    budget = thinking.get("budget_tokens")
    if thinking.get("type") != "enabled" or not isinstance(budget, int) or max_tokens > budget:
        return thinking, max_tokens
    # The client's max_tokens counted only the visible answer (themaximalist/llm.js#30): raise it.
    raised = budget + VISIBLE_RESERVE_TOKENS if cap is None else min(budget + VISIBLE_RESERVE_TOKENS, cap)
    if raised > budget:
        return thinking, raised
    # The model's max output is below the budget: shrink the budget, or give up thinking.
    smaller = max(raised - VISIBLE_RESERVE_TOKENS, MIN_THINKING_BUDGET)
    if smaller >= raised:
        return None, max_tokens
    return {**thinking, "budget_tokens": smaller}, raised


def clamp_effort(effort: str, supported: tuple[str, ...]) -> str:
    """The strongest supported effort not above `effort`, else the weakest supported one; () = all."""
    if not supported or effort in supported:
        return effort
    rank = EFFORT_LEVELS.index(effort) if effort in EFFORT_LEVELS else EFFORT_LEVELS.index("medium")
    ordered = sorted((word for word in supported if word in EFFORT_LEVELS), key=EFFORT_LEVELS.index)
    below = [word for word in ordered if EFFORT_LEVELS.index(word) <= rank]
    if below:
        return below[-1]
    return ordered[0] if ordered else effort


def anthropic_thinking_to_effort(thinking: object, output_config: object, target: TargetModel) -> str | None:
    """O reasoning_effort for an A `thinking` (+ `output_config.effort`); None = do not send it (§2.6)."""
    if target.thinking is None and not target.reasons_by_default:
        return None  # a non-reasoning O model rejects reasoning_effort
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        budget = budget if isinstance(budget, int) else 0
        effort = "low" if budget < 2048 else "medium" if budget < 4096 else "high"
    elif kind == "adaptive":
        effort = (output_config or {}).get("effort") if isinstance(output_config, dict) else None
        effort = effort if effort in EFFORT_LEVELS else "medium"
    else:
        # Absent or disabled: only providers that reason by default need an explicit "none" (BerriAI/litellm#34589).
        return clamp_effort("none", target.reasoning_efforts) if target.reasons_by_default else None
    return clamp_effort(effort, target.reasoning_efforts)
