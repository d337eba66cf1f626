"""The hold covers server tools (issue 14 item 4): proxy.metering.server_tool_hold_nanos."""

import pytest

from billing.money import TokenPrices
from catalog.snapshot import ModelSpec, UnitPrices
from proxy.metering import DEFAULT_SERVER_TOOL_USES, server_tool_hold_nanos

SEARCH = 10_000_000_000  # $10 per 1,000 searches: 10_000_000 nanos each
FETCH = 2_000_000_000  # $2 per 1,000 fetches: 2_000_000 nanos each


def spec(prices: TokenPrices) -> ModelSpec:
    return ModelSpec(
        id=1, name="m", display_name="m", description="", mode="chat", context_window=None, max_output_tokens=None,
        thinking="", supports_tools=True, supports_vision=False, structured_output=False, created=0, price_id=1,
        prices=prices, unit_prices=UnitPrices(), routes=(),
    )  # fmt: skip


PRICED = spec(TokenPrices(web_search_nanos_per_kreq=SEARCH, web_fetch_nanos_per_kreq=FETCH))


@pytest.mark.parametrize(
    ("_case", "tools", "expected"),
    [
        ("no tools", None, 0),
        ("client tools only", [{"name": "f", "input_schema": {}}], 0),
        ("web search with max_uses", [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
         3 * 10_000_000),
        ("web search without max_uses: the documented default", [{"type": "web_search_20260209", "name": "ws"}],
         DEFAULT_SERVER_TOOL_USES * 10_000_000),
        ("search and fetch", [{"type": "web_search_20250305", "name": "s", "max_uses": 2},
                              {"type": "web_fetch_20250910", "name": "f", "max_uses": 5}], 2 * 10_000_000 + 5 * 2_000_000),
        ("max_uses 0", [{"type": "web_search_20250305", "name": "s", "max_uses": 0}], 0),
        ("malformed max_uses: the default", [{"type": "web_search_20250305", "name": "s", "max_uses": "3"}],
         DEFAULT_SERVER_TOOL_USES * 10_000_000),
    ],
)  # fmt: skip
def test_server_tool_hold(_case, tools, expected):
    body = {"messages": []} if tools is None else {"messages": [], "tools": tools}
    assert server_tool_hold_nanos(PRICED, body) == expected


def test_unpriced_model_holds_nothing():
    body = {"tools": [{"type": "web_search_20250305", "name": "s", "max_uses": 9}]}
    assert server_tool_hold_nanos(spec(TokenPrices(input_nanos_per_mtok=1)), body) == 0
