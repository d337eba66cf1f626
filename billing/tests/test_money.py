from decimal import Decimal

import pytest

from billing.money import (
    MoneyError,
    TokenCounts,
    TokenPrices,
    cents_to_nanos,
    cost_for,
    format_usd,
    nanos_to_cents,
    nanos_to_usd,
    unit_cost,
    usd_to_nanos,
)


@pytest.mark.parametrize(
    ("_case", "amount", "nanos"),
    [
        ("whole dollars", "10", 10_000_000_000),
        ("cents", Decimal("2.50"), 2_500_000_000),
        ("nano precision", "0.000000001", 1),
        ("negative", "-1.5", -1_500_000_000),
        ("integer", 3, 3_000_000_000),
    ],
)
def test_usd_to_nanos(_case, amount, nanos):
    assert usd_to_nanos(amount) == nanos
    assert nanos_to_usd(nanos) == Decimal(str(amount)).quantize(Decimal("0.000000001"))


@pytest.mark.parametrize(
    ("_case", "amount"),
    [("float", 0.1), ("too precise", "0.0000000001"), ("not a number", "ten"), ("infinite", "Infinity")],
)
def test_usd_to_nanos_refuses(_case, amount):
    with pytest.raises(MoneyError):
        usd_to_nanos(amount)


@pytest.mark.parametrize(
    ("_case", "tokens", "prices", "expected"),
    [
        ("nothing", TokenCounts(), TokenPrices(3_000_000_000, 15_000_000_000), 0),
        # 1000 in at $3/M = $0.003; 500 out at $15/M = $0.0075
        ("in and out", TokenCounts(input_tokens=1000, output_tokens=500), TokenPrices(3_000_000_000, 15_000_000_000), 10_500_000),
        # cache kinds priced separately: 2000 read at $0.30/M = 600_000 nanos, 400 write at $3.75/M = 1_500_000 nanos
        ("cache kinds", TokenCounts(input_tokens=10, cache_read_tokens=2000, cache_write_tokens=400),
         TokenPrices(3_000_000_000, 15_000_000_000, 300_000_000, 3_750_000_000), 30_000 + 600_000 + 1_500_000),
        # 4 tokens at $0.15/M = 600 nanos exactly
        ("exact", TokenCounts(input_tokens=4), TokenPrices(150_000_000), 600),
        # at $0.0001/M one token is 0.1 nano: 5 tokens = 0.5 -> 1 (half up), 4 tokens = 0.4 -> 0
        ("half rounds up", TokenCounts(input_tokens=5), TokenPrices(100_000), 1),
        ("below half rounds down", TokenCounts(input_tokens=4), TokenPrices(100_000), 0),
    ],
)
def test_cost_for(_case, tokens, prices, expected):
    assert cost_for(tokens, prices) == expected


def test_cost_for_sums_before_rounding():
    # each part alone is 0.4 nanos (would round to 0 twice); together 0.8 -> 1
    prices = TokenPrices(input_nanos_per_mtok=100_000, output_nanos_per_mtok=100_000)
    assert cost_for(TokenCounts(input_tokens=4, output_tokens=4), prices) == 1


def test_cost_for_refuses_negative_counts():
    with pytest.raises(MoneyError):
        cost_for(TokenCounts(input_tokens=-1), TokenPrices(1_000_000_000))


@pytest.mark.parametrize(
    ("_case", "units", "price", "per", "expected"),
    [
        ("images", 3, 40_000_000, 1, 120_000_000),
        ("audio seconds at a per-minute price", 90, 6_000_000, 60, 9_000_000),
        ("characters at a per-1M price", 11, 15_000_000_000, 1_000_000, 165_000),
        ("fractional seconds", 1.5, 6_000_000, 60, 150_000),
    ],
)
def test_unit_cost(_case, units, price, per, expected):
    assert unit_cost(units, price, per=per) == expected


def test_cents_edge():
    assert nanos_to_cents(12_345_000_000) == 1235  # $12.345 -> 1235 cents (half up)
    assert cents_to_nanos(1235) == 12_350_000_000


@pytest.mark.parametrize(("nanos", "text"), [(10_000_000_000, "10.00"), (1_500_000_000, "1.50"), (123_000, "0.000123")])
def test_format_usd(nanos, text):
    assert format_usd(nanos) == text


WEB = TokenPrices(
    input_nanos_per_mtok=3_000_000_000, web_search_nanos_per_kreq=10_000_000_000, web_fetch_nanos_per_kreq=1_000_000
)


@pytest.mark.parametrize(
    ("_case", "tokens", "prices", "expected"),
    [
        # $10 per 1,000 searches = $0.01 = 10_000_000 nanos each
        ("one search", TokenCounts(web_search_requests=1), WEB, 10_000_000),
        ("three searches and tokens", TokenCounts(input_tokens=1000, web_search_requests=3), WEB,
         3_000_000 + 30_000_000),
        # $0.001 per 1,000 fetches = 1,000 nanos each
        ("fetches", TokenCounts(web_fetch_requests=7), WEB, 7_000),
        # $0.0000005 per 1,000 fetches = 0.5 nano a fetch -> 1 (half up)
        ("half a nano rounds up", TokenCounts(web_fetch_requests=1), TokenPrices(web_fetch_nanos_per_kreq=500), 1),
        ("no price: free", TokenCounts(web_search_requests=5), TokenPrices(3_000_000_000), 0),
        # 0.4 nano of input + 0.4 nano of one fetch: each alone rounds to 0, together 0.8 -> 1
        ("one rounding for all kinds", TokenCounts(input_tokens=1, web_fetch_requests=1),
         TokenPrices(input_nanos_per_mtok=400_000, web_fetch_nanos_per_kreq=400), 1),
    ],
)  # fmt: skip
def test_cost_for_server_tools(_case, tokens, prices, expected):
    assert cost_for(tokens, prices) == expected
