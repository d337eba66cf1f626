from django import template

from billing.money import format_usd

register = template.Library()


@register.filter
def usd(nanos) -> str:
    """nano-USD -> "$1.50" / "-$0.000123" (exact, via billing.money)."""
    if nanos in (None, ""):
        return ""
    nanos = int(nanos)
    return f"-${format_usd(-nanos)}" if nanos < 0 else f"${format_usd(nanos)}"
