"""`usage.cost` is always a plain decimal JSON number (issue 16): `"cost":0.0000075`, never `7.5e-06`.

Through the real server, both client protocols, streamed and not, same-protocol and translated routes:
a model whose reply costs exactly 7,500 nano-USD (5 output tokens at $1.50 per 1M, input free).
"""

import re

import httpx
import orjson
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

PROMPT = "one two three four five six seven eight nine"  # more words than the 5 output tokens allowed
EXPECTED = b'"cost":0.0000075'


@pytest.fixture
def priced(gateway):
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate
    from conftest import mock_catalog

    catalog = mock_catalog(gateway.mock)
    for name, provider, upstream in (("tiny-gpt", "mock-openai", "gpt-upstream-1"),
                                     ("tiny-claude", "mock-anthropic", "claude-upstream-1")):  # fmt: skip
        catalog["models"].append({"name": name, "provider": provider, "upstream_model": upstream, "input": 0,
                                  "output": "1.5", "max_output_tokens": 5})  # fmt: skip
    catalog_load(catalog)
    catalog_invalidate()
    return gateway


def _post(gateway, protocol: str, model: str, stream: bool) -> bytes:
    if protocol == "openai":
        url, headers = f"{gateway.server.url}/v1/chat/completions", {"authorization": f"Bearer {gateway.tenant.secret}"}
        body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": PROMPT}]}
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
    else:
        url = f"{gateway.server.url}/v1/messages"
        headers = {"x-api-key": gateway.tenant.secret, "anthropic-version": "2023-06-01"}
        body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    response = httpx.post(url, content=orjson.dumps(body), headers={**headers, "content-type": "application/json"},
                          timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    if not stream:  # a stream's headers leave before its cost is known
        assert response.headers["x-ruapi-cost-usd"] == "0.0000075"
    return response.content


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
@pytest.mark.parametrize("model", ["tiny-gpt", "tiny-claude"])
def test_usage_cost_is_a_plain_decimal_number(priced, protocol, model, stream):
    # when
    raw = _post(priced, protocol, model, stream)
    # then: written as a plain decimal (no exponent), in exactly one place, and still a JSON number
    assert raw.count(EXPECTED) == 1, raw.decode()
    assert not re.search(rb'"cost":-?[0-9.]+[eE]', raw)
    if stream:
        events = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ") and line != b"data: [DONE]"]
        costs = [orjson.loads(e)["usage"]["cost"] for e in events if EXPECTED in e]
    else:
        costs = [orjson.loads(raw)["usage"]["cost"]]
    assert costs == [7.5e-06]
