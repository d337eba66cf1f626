"""Bad input over both request protocols: always a clear 4xx in the caller's shape, never a 500.

Property-based (hypothesis) over bodies of the wrong shape, plus the named cases of issue 8: huge
bodies, deep nesting, invalid UTF-8, absurd max_tokens, thousands of messages. Requests that are
valid go to the built-in echo provider, so nothing leaves the process.
"""

import json

import pytest
from django.test import AsyncClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_tenant

pytestmark = [pytest.mark.embedded, pytest.mark.django_db(transaction=True)]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
chat_fields = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.just("demo-echo"), json_values),
        "messages": st.one_of(
            st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool", "x"]),
                                            "content": json_values}), max_size=3),
            json_values,
        ),
        "max_tokens": st.one_of(st.integers(-5, 10**12), json_values),
        "max_completion_tokens": json_values,
        "stream": json_values,
        "tools": json_values,
        "tool_choice": json_values,
        "temperature": json_values,
        "stop": json_values,
        "n": json_values,
        "system": json_values,
        "thinking": json_values,
        "stream_options": json_values,
    },
)  # fmt: skip


@pytest.fixture
def tenant():
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate

    catalog_load({"providers": [{"name": "echo", "kind": "echo"}],
                  "models": [{"name": "demo-echo", "provider": "echo", "input": "1", "output": "1"}]})  # fmt: skip
    catalog_invalidate()
    return make_tenant("Fuzz", credit="100")


def assert_clean_error(response, protocol: str) -> None:
    assert response.status_code < 500, response.content[:500]
    if response.status_code >= 400:
        body = json.loads(response.content)
        if protocol == "anthropic":
            assert body["type"] == "error" and isinstance(body["error"]["message"], str)
        else:
            assert isinstance(body["error"]["message"], str) and "type" in body["error"]


async def post(tenant, path: str, content: bytes):
    client = AsyncClient()
    return await client.post(path, data=content, content_type="application/json",
                             headers={"authorization": f"Bearer {tenant.secret}"})  # fmt: skip


@pytest.mark.parametrize(("protocol", "path"), [("openai", "/v1/chat/completions"), ("anthropic", "/v1/messages")])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=chat_fields)
@pytest.mark.asyncio
async def test_random_bodies_never_500(tenant, protocol, path, body):
    response = await post(tenant, path, json.dumps(body).encode())
    if getattr(response, "streaming", False):
        [chunk async for chunk in response.streaming_content]
    assert_clean_error(response, protocol)


@pytest.mark.parametrize(
    ("_case", "content", "status"),
    [
        ("invalid utf-8", b'{"model": "demo-echo", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400),
        ("not json", b"{model: demo-echo", 400),
        ("json array", b"[1, 2, 3]", 400),
        ("empty", b"", 400),
        ("deep nesting", b'{"model": "demo-echo", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
        ("absurd max_tokens", b'{"model": "demo-echo", "max_tokens": 10000000000000, "messages": '
                              b'[{"role": "user", "content": "hi"}]}', 400),
        ("thousands of messages", json.dumps({"model": "demo-echo", "max_tokens": 5, "messages":
                                  [{"role": "user", "content": "hi"}] * 20_000}).encode(), 400),
    ],
)  # fmt: skip
@pytest.mark.parametrize(("protocol", "path"), [("openai", "/v1/chat/completions"), ("anthropic", "/v1/messages")])
@pytest.mark.asyncio
async def test_named_bad_inputs(tenant, protocol, path, _case, content, status):
    response = await post(tenant, path, content)
    assert response.status_code == status
    assert_clean_error(response, protocol)


@pytest.mark.asyncio
async def test_huge_body_is_413(tenant, settings):
    settings.RUAPI_MAX_BODY_BYTES = 1024
    big = json.dumps({"model": "demo-echo", "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    response = await post(tenant, "/v1/chat/completions", big)
    assert response.status_code == 413
    assert json.loads(response.content)["error"]["code"] == "request_too_large"
