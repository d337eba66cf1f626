"""Money in templates (`{% load money %}`): one formatting for every page and the admin (issue 16).

    {{ nanos|usd }}        "$9.99"        balances and totals: whole cents, cut toward zero (never shows
                                          more than is there); "<$0.01" for a non-zero amount below a cent
    {{ nanos|usd_span }}   <span class="money" title="9.99984244">$9.99</span>   the same, exact on hover:
                                          use it in tables and stats (ledger rows, balances, totals)
    {{ nanos|usd_plain }}  "9.99984244"   exact plain decimal: form input values, title attributes
    {{ nanos|usd_exact }}  "$9.99984244"  exact with the sign: statements that must add up to the
                                          nano-USD (the invoice document) and per-request costs

All take integer nano-USD (billing.money) and leave None/"" empty. CSV exports keep full precision
(billing.views writes billing.money.nanos_to_usd). Python code (the admin) uses `usd_cents` and
`usd_span_html` from here, so both render alike.
"""

from decimal import ROUND_DOWN, Decimal

from django import template
from django.utils.html import format_html

from billing.money import NANOS_PER_USD, format_usd

register = template.Library()

_CENT_NANOS = NANOS_PER_USD // 100


def _nanos(value) -> int | None:
    if value in (None, ""):
        return None
    return int(value)


def usd_cents(nanos: int) -> str:
    """nano-USD -> "$9.99" / "-$0.50" / "<$0.01" (whole cents, toward zero)."""
    sign = "-" if nanos < 0 else ""
    magnitude = abs(nanos)
    if 0 < magnitude < _CENT_NANOS:
        return f"{sign}<$0.01"
    cents = (Decimal(magnitude) / NANOS_PER_USD).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    return f"{sign}${cents:,.2f}"


def usd_plain_text(nanos: int) -> str:
    """nano-USD -> "9.99984244" / "-0.0000075" (exact, no symbol)."""
    return f"-{format_usd(-nanos)}" if nanos < 0 else format_usd(nanos)


def usd_span_html(nanos: int) -> str:
    return format_html('<span class="money" title="{}">{}</span>', usd_plain_text(nanos), usd_cents(nanos))


@register.filter
def usd(value) -> str:
    """Whole cents for display: "$9.99"."""
    nanos = _nanos(value)
    return "" if nanos is None else usd_cents(nanos)


@register.filter
def usd_span(value) -> str:
    """Whole cents, the exact amount in the title (hover)."""
    nanos = _nanos(value)
    return "" if nanos is None else usd_span_html(nanos)


@register.filter
def usd_plain(value) -> str:
    """The exact amount as a plain decimal, for inputs and attributes."""
    nanos = _nanos(value)
    return "" if nanos is None else usd_plain_text(nanos)


@register.filter
def usd_exact(value) -> str:
    """The exact amount with its sign and symbol: "$1.50", "-$0.000123"."""
    nanos = _nanos(value)
    if nanos is None:
        return ""
    return f"-${format_usd(-nanos)}" if nanos < 0 else f"${format_usd(nanos)}"
