"""All money math. Nowhere else converts, rounds or prices.

Unit: amounts are integers of nano-USD (1e-9 USD) — `*_nanos` fields. Integers are exact on
Postgres and on SQLite alike (SQLite's DecimalField is not: Django ticket #29823).
Prices are nano-USD per million tokens ("mtok" = one million tokens), so $3.00 / 1M tokens is
3_000_000_000. Server tools the upstream charges per use (web search, web fetch) are priced in nano-USD
per thousand requests ("kreq"), so $10 / 1,000 searches is 10_000_000_000. A cost is
(sum(tokens_k * price_k) + 1000 * sum(requests_j * price_j)) / 1e6, rounded once, half up, to a whole nano-USD.
Stripe speaks integer cents: convert only at that edge (`nanos_to_cents`).
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

NANOS_PER_USD = 1_000_000_000
TOKENS_PER_MTOK = 1_000_000
REQUESTS_PER_KREQ = 1_000
USD_PLACES = Decimal("0.000000001")


class MoneyError(ValueError):
    pass


def usd_to_nanos(amount: Decimal | str | int) -> int:
    """Exact USD amount -> nano-USD; refuses floats and sub-nano precision."""
    if isinstance(amount, float):
        raise MoneyError("money must not be a float; pass a Decimal or a string")
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError) as exc:
        raise MoneyError(f"not an amount: {amount!r}") from exc
    if not value.is_finite():
        raise MoneyError(f"not a finite amount: {amount!r}")
    nanos = value * NANOS_PER_USD
    if nanos != nanos.to_integral_value():
        raise MoneyError(f"{amount} has more than 9 decimal places")
    return int(nanos)


def nanos_to_usd(nanos: int) -> Decimal:
    """nano-USD -> Decimal USD with 9 places."""
    return (Decimal(nanos) / NANOS_PER_USD).quantize(USD_PLACES)


def format_usd(nanos: int) -> str:
    """A plain decimal string without trailing zeros beyond cents, e.g. '1.5' -> '1.50', '0.000123'."""
    value = nanos_to_usd(nanos).normalize()
    if value == value.to_integral_value() or -value.as_tuple().exponent < 2:
        return f"{value:.2f}"
    return f"{value:f}"


def nanos_to_cents(nanos: int) -> int:
    """nano-USD -> whole cents (Stripe's minor unit), half up."""
    return int((Decimal(nanos) / (NANOS_PER_USD // 100)).to_integral_value(rounding=ROUND_HALF_UP))


def cents_to_nanos(cents: int) -> int:
    return int(cents) * (NANOS_PER_USD // 100)


@dataclass(frozen=True, slots=True)
class TokenPrices:
    """Sell prices of one model, nano-USD per million tokens."""

    input_nanos_per_mtok: int = 0
    output_nanos_per_mtok: int = 0
    cache_read_nanos_per_mtok: int = 0
    cache_write_nanos_per_mtok: int = 0
    web_search_nanos_per_kreq: int = 0  # per 1,000 server-side web searches
    web_fetch_nanos_per_kreq: int = 0  # per 1,000 server-side web fetches


@dataclass(frozen=True, slots=True)
class TokenCounts:
    input_tokens: int = 0  # uncached input
    output_tokens: int = 0  # including reasoning
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    web_search_requests: int = 0
    web_fetch_requests: int = 0


def _round_div(numerator: int, denominator: int) -> int:
    """Integer division rounding half up (for non-negative numerators)."""
    return (numerator * 2 + denominator) // (denominator * 2)


def cost_for(tokens: TokenCounts, prices: TokenPrices) -> int:
    """Cost in nano-USD of these token counts at these prices (exact, one rounding)."""
    total = (
        tokens.input_tokens * prices.input_nanos_per_mtok
        + tokens.output_tokens * prices.output_nanos_per_mtok
        + tokens.cache_read_tokens * prices.cache_read_nanos_per_mtok
        + tokens.cache_write_tokens * prices.cache_write_nanos_per_mtok
        # per 1,000 requests = per 1M tokens scaled by 1,000: one common denominator, so still one rounding
        + (
            tokens.web_search_requests * prices.web_search_nanos_per_kreq
            + tokens.web_fetch_requests * prices.web_fetch_nanos_per_kreq
        )
        * (TOKENS_PER_MTOK // REQUESTS_PER_KREQ)
    )
    if total < 0:
        raise MoneyError("token counts and prices must not be negative")
    return _round_div(total, TOKENS_PER_MTOK)


def unit_cost(units: int | float | Decimal, price_nanos: int, *, per: int = 1) -> int:
    """Cost of `units` at `price_nanos` per `per` units (images, audio minutes, 1M characters), half up."""
    value = Decimal(str(units)) * price_nanos / per
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def cents_exact(nanos: int) -> int:
    """nano-USD that must be a whole number of cents -> cents (a top-up amount); refuses fractions."""
    cents, rest = divmod(int(nanos), NANOS_PER_USD // 100)
    if rest:
        raise MoneyError("the amount must be a whole number of cents")
    return cents


def tax_included(gross_nanos: int, rate_percent: Decimal | str) -> int:
    """The tax contained in a tax-inclusive amount: gross * rate / (100 + rate), rounded half up."""
    rate = Decimal(rate_percent)
    if rate < 0:
        raise MoneyError("a tax rate cannot be negative")
    value = Decimal(gross_nanos) * rate / (100 + rate)
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def _display_usd(nanos: int) -> Decimal:
    """USD without trailing zeros and never in exponent form (normalize() makes 10 "1E+1")."""
    value = nanos_to_usd(nanos).normalize()
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


def usd_per_mtok(nanos_per_mtok: int) -> Decimal:
    """A price in nano-USD per million tokens -> USD per million tokens (for display on invoices)."""
    return _display_usd(nanos_per_mtok)


def usd_per_kreq(nanos_per_kreq: int) -> Decimal:
    """A price in nano-USD per 1,000 requests -> USD per 1,000 requests (for display)."""
    return _display_usd(nanos_per_kreq)
