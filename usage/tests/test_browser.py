"""In a real browser (Playwright driving Debian's Chromium, never a download): a playground reply
streams in word by word, and the usage page open in another tab adds the request live."""

import re

import pytest

from accounts.models import Membership
from accounts.tests.factories import MembershipFactory
from proxy.tests.mock_upstream import Script
from usage.tests.conftest import session_cookie

pytestmark = [pytest.mark.integration, pytest.mark.embedded, pytest.mark.browser]




def test_playground_reply_streams_in_and_the_live_feed_adds_the_request(gateway, browser_context):
    base = gateway.server.url
    user = MembershipFactory(org=gateway.tenant.org, role=Membership.Role.DEVELOPER).user
    browser_context.add_cookies([{"name": "sessionid", "value": session_cookie(user), "url": base}])
    words = [(None, {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-upstream-1",
                     "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]})
             for i in range(12)]  # fmt: skip
    gateway.mock.enqueue("/v1/chat/completions", Script(sse=words, chunk_delay=0.15))

    # the usage page, live
    usage = browser_context.new_page()
    usage.goto(base + "/dashboard/usage/")
    usage.wait_for_selector("[data-testid=live-status][data-state=on]")

    # the playground: pick a model, ask, watch the reply stream in
    playground = browser_context.new_page()
    playground.goto(base + "/dashboard/playground/")
    playground.wait_for_selector("[data-testid=pg-status][data-state=ready]")
    playground.select_option("[data-testid=pg-model]", "gpt-test")
    assert 'model="gpt-test"' in playground.inner_text("[data-testid=pg-code]")
    playground.fill("[data-testid=pg-input]", "count for me")
    playground.click("[data-testid=pg-send]")
    reply = playground.locator(".msg-assistant .msg-text")
    reply.filter(has_text="word2").wait_for()
    partial = reply.inner_text()
    assert "word11" not in partial  # seen mid-stream: the reply arrives token by token
    assert playground.get_attribute("[data-testid=pg-status]", "data-state") == "streaming"
    playground.wait_for_selector("[data-testid=pg-status][data-state=done]")
    assert reply.inner_text().strip() == " ".join(f"word{i}" for i in range(12))
    meta = playground.inner_text("[data-testid=pg-reply-meta]")
    request_id = re.search(r"req_[0-9a-f]+", meta).group(0)
    assert re.search(r"\d+ in / \d+ out tokens · \$0\.\d+", meta)  # the script sends no usage: estimated
    assert "base_url=" in playground.inner_text("[data-testid=pg-code]")

    # the usage tab got the request without a reload
    row = usage.locator(f"#requests-body tr[data-request-id='{request_id}']")
    row.wait_for()
    assert "gpt-test" in row.inner_text() and "playground" in row.inner_text()
