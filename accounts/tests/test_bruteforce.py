"""Brute force: repeated wrong passwords on the login form (allauth's rate limits) and repeated invalid
gateway keys from one address (proxy/auththrottle.py), and how secrets are stored and looked up."""

import asyncio
import hashlib

import anthropic
import httpx
import openai
import pytest
from django.db import connection
from django.urls import reverse

from accounts import keycache
from accounts.models import ApiKey
from accounts.services import managementkey_issue
from accounts.tests.factories import MembershipFactory, OrgFactory, UserFactory, key_for
from proxy import auth as proxy_auth
from proxy import auththrottle
from proxy.translate.errors import GatewayError

pytestmark = pytest.mark.embedded  # cheap: also run on the embedded default (in-process limiter)

HELLO = [{"role": "user", "content": "Hello"}]
LIMIT = 20  # the default RUAPI_AUTH_FAIL_LIMIT, set explicitly below so the test says what it expects


# -- the login form -----------------------------------------------------------------------------------
def _login(client, email: str, password: str):
    return client.post(reverse("account_login"), {"login": email, "password": password})


@pytest.mark.django_db
def test_wrong_passwords_lock_the_account_then_even_the_right_one_is_refused(client):
    # given: RUAPI_LOGIN_RATE_LIMIT's default allows 5 failures per account in 5 minutes
    user = UserFactory()
    for _ in range(5):
        response = _login(client, user.email, "wrong password")
        assert response.status_code == 200
        assert "Too many failed login attempts" not in response.content.decode()
    # when
    response = _login(client, user.email, "correct horse battery")
    # then
    assert "Too many failed login attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_wrong_passwords_for_many_accounts_from_one_address_are_throttled(client):
    # given: 10 failures per minute per address, spread over accounts so no account limit is reached
    users = UserFactory.create_batch(11)
    for user in users[:10]:
        assert "Too many failed login attempts" not in _login(client, user.email, "wrong").content.decode()
    # when: the 11th account, with its right password, from the same address
    response = _login(client, users[10].email, "correct horse battery")
    # then
    assert "Too many failed login attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


# -- gateway keys through the real SDKs ---------------------------------------------------------------------
@pytest.fixture
def throttled_gateway(gateway, settings, monkeypatch):
    """The live gateway with the default limit spelled out, and a count of key hashes computed
    (the test process runs the server, so the patch reaches it)."""
    settings.RUAPI_AUTH_FAIL_LIMIT = LIMIT
    settings.RUAPI_AUTH_FAIL_WINDOW = 60.0
    settings.RUAPI_TRUSTED_PROXIES = ["127.0.0.1"]  # the test client plays a reverse proxy (see _from)
    hashed = []
    original = proxy_auth.apikey_hash

    def counting_hash(secret):
        hashed.append(secret)
        return original(secret)

    monkeypatch.setattr(proxy_auth, "apikey_hash", counting_hash)
    gateway.hashed = hashed
    return gateway


def _from(address: str) -> dict:
    # With 127.0.0.1 in RUAPI_TRUSTED_PROXIES (throttled_gateway), the header sets the peer address
    # the gateway sees, as a reverse proxy in front of it would.
    return {"default_headers": {"X-Forwarded-For": address}}


@pytest.mark.integration
def test_openai_invalid_keys_from_one_address_get_429_in_openai_shape(throttled_gateway):
    gw = throttled_gateway
    # given: LIMIT invalid keys from one address are each answered 401
    for i in range(LIMIT):
        with pytest.raises(openai.AuthenticationError):
            gw.openai(api_key=f"sk-ru-guess-{i}", **_from("203.0.113.10")).chat.completions.create(
                model="gpt-test", messages=HELLO
            )
    # when: five more guesses
    errors = []
    for i in range(5):
        with pytest.raises(openai.RateLimitError) as excinfo:
            gw.openai(api_key=f"sk-ru-more-{i}", **_from("203.0.113.10")).chat.completions.create(
                model="gpt-test", messages=HELLO
            )
        errors.append(excinfo.value)
    # then: 429 in the OpenAI shape with Retry-After, and none of them was hashed or looked up
    for error in errors:
        assert error.status_code == 429
        body = error.response.json()["error"]
        assert (body["type"], body["code"]) == ("rate_limit_error", "too_many_auth_failures")
        assert 1 <= int(error.response.headers["retry-after"]) <= 61
    assert len(gw.hashed) == LIMIT
    # the valid key from the blocked address is refused too (blocked for the window, whatever the key)...
    with pytest.raises(openai.RateLimitError):
        gw.openai(**_from("203.0.113.10")).chat.completions.create(model="gpt-test", messages=HELLO)
    # ...and works from any other address
    reply = gw.openai(**_from("203.0.113.11")).chat.completions.create(model="gpt-test", messages=HELLO)
    assert reply.choices[0].message.content
    assert gw.mock.requests and len(gw.hashed) == LIMIT + 1


@pytest.mark.integration
def test_anthropic_invalid_keys_from_one_address_get_429_in_anthropic_shape(throttled_gateway):
    gw = throttled_gateway
    for i in range(LIMIT):
        with pytest.raises(anthropic.AuthenticationError):
            gw.anthropic(api_key=f"sk-ru-guess-{i}", **_from("198.51.100.20")).messages.create(
                model="claude-test", max_tokens=10, messages=HELLO
            )
    for i in range(5):
        with pytest.raises(anthropic.RateLimitError) as excinfo:
            gw.anthropic(api_key=f"sk-ru-more-{i}", **_from("198.51.100.20")).messages.create(
                model="claude-test", max_tokens=10, messages=HELLO
            )
        error = excinfo.value
        assert error.status_code == 429
        body = error.response.json()
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
        assert body["request_id"].startswith("req_")
        assert 1 <= int(error.response.headers["retry-after"]) <= 61
    assert len(gw.hashed) == LIMIT
    # the block is per address, and per address only: another one authenticates normally
    reply = gw.anthropic(**_from("198.51.100.21")).messages.create(model="claude-test", max_tokens=10, messages=HELLO)
    assert reply.content[0].text


@pytest.mark.integration
def test_valid_keys_and_missing_keys_are_not_counted(throttled_gateway, monkeypatch):
    # given: every call into the failure counter is recorded
    calls = []
    original = auththrottle.check_counters

    async def counting(counters):
        calls.append([c.name for c in counters])
        return await original(counters)

    monkeypatch.setattr(auththrottle, "check_counters", counting)
    gw = throttled_gateway
    # when: many successful requests, and many without any key, from one address
    client = gw.openai(**_from("192.0.2.30"))
    for _ in range(5):
        client.chat.completions.create(model="gpt-test", messages=HELLO)
        client.models.list()
    with httpx.Client(base_url=gw.server.url, headers={"X-Forwarded-For": "192.0.2.30"}) as raw:
        for _ in range(LIMIT + 5):
            assert raw.get("/v1/models").status_code == 401
    # then: the successful path never touched the limiter, and no key-less request was counted
    assert calls == []
    # and one wrong key is counted once
    with pytest.raises(openai.AuthenticationError):
        gw.openai(api_key="sk-ru-wrong", **_from("192.0.2.30")).models.list()
    assert len(calls) == 1 and calls[0][0].startswith("ruapi:rl:authfail:192.0.2.30:")


# -- the limiter itself ------------------------------------------------------------------------------------
def _run(coro):
    return asyncio.run(coro)


async def _fail(address: str, times: int) -> list[int]:
    """Record `times` failures; the statuses a request would have got (401 counted, 429 refused)."""
    statuses = []
    for _ in range(times):
        try:
            auththrottle.check_blocked(address)
            await auththrottle.record_failure(address)
            statuses.append(401)
        except GatewayError as exc:
            assert exc.status_for("openai") == 429
            statuses.append(429)
    return statuses


@pytest.fixture
def limit3(settings):
    settings.RUAPI_AUTH_FAIL_LIMIT = 3
    settings.RUAPI_AUTH_FAIL_WINDOW = 60.0


def test_failures_are_counted_per_address(limit3):
    assert _run(_fail("10.0.0.1", 5)) == [401, 401, 401, 429, 429]
    assert _run(_fail("10.0.0.2", 3)) == [401, 401, 401]  # another address has its own count
    auththrottle.check_blocked("10.0.0.3")  # and a third is not blocked at all
    with pytest.raises(GatewayError) as excinfo:
        auththrottle.check_blocked("10.0.0.1")
    assert excinfo.value.retry_after is not None and 1 <= excinfo.value.retry_after <= 61


def test_ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4(limit3):
    assert auththrottle.client_bucket("2001:db8:1:2::1") == auththrottle.client_bucket("2001:db8:1:2:ffff::9")
    assert auththrottle.client_bucket("2001:db8:1:2::1") != auththrottle.client_bucket("2001:db8:1:3::1")
    assert auththrottle.client_bucket("::ffff:10.1.2.3") == "10.1.2.3"
    assert auththrottle.client_bucket(None) == "unknown"
    assert _run(_fail("2001:db8:1:2::1", 2)) == [401, 401]
    assert _run(_fail("2001:db8:1:2::abcd", 2)) == [401, 429]


def test_a_process_that_did_not_see_the_failures_blocks_on_its_first_failure_over_the_limit(limit3):
    # given: the address reached its limit; this process's verdicts are then forgotten, as in a
    # process that did not handle those failures (the shared count, in Redis or the limiter, remains)
    assert _run(_fail("10.0.0.9", 3)) == [401, 401, 401]
    keycache.invalidate()
    auththrottle.check_blocked("10.0.0.9")  # not blocked here any more
    # when / then: its next failure is refused and blocks it here too
    assert _run(_fail("10.0.0.9", 2)) == [429, 429]


def test_a_block_ends_with_its_window(limit3):
    bucket = auththrottle.client_bucket("10.0.0.4")
    keycache.client_block(bucket, 0.05)
    with pytest.raises(GatewayError):
        auththrottle.check_blocked("10.0.0.4")
    _run(asyncio.sleep(0.1))
    auththrottle.check_blocked("10.0.0.4")
    assert not keycache.any_client_blocked()


def test_failure_windows_are_fixed_and_named_per_address(limit3):
    counter = auththrottle.failure_counter("10.0.0.5", now=120.5)
    assert counter.name == "ruapi:rl:authfail:10.0.0.5:2" and counter.limit == 3 and counter.amount == 1
    assert counter.ttl_ms == 60_500  # to the window's end, plus a second of slack


def test_limit_zero_turns_the_throttle_off(settings):
    settings.RUAPI_AUTH_FAIL_LIMIT = 0
    assert _run(_fail("10.0.0.6", 30)) == [401] * 30


# -- secrets at rest ----------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_key_tables_hold_only_hashes_and_prefixes():
    # given: a gateway key and a management key
    org = OrgFactory()
    owner = MembershipFactory(org=org, role="owner")
    issued = key_for(org)
    token = managementkey_issue(org=org, name="t", role="admin", actor_role=owner.role)
    # when: every column of both tables is read back raw
    rows = {}
    with connection.cursor() as cursor:
        for table in ("accounts_apikey", "accounts_managementkey"):
            cursor.execute(f"SELECT * FROM {table}")
            columns = [c[0] for c in cursor.description]
            [row] = cursor.fetchall()
            rows[table] = dict(zip(columns, row, strict=True))
    # then: no column holds the secret, nor any part of it beyond the displayed prefix
    for table, secret in (("accounts_apikey", issued.secret), ("accounts_managementkey", token.secret)):
        stored = " ".join(str(value) for value in rows[table].values())
        assert secret not in stored
        assert secret[len(rows[table]["prefix"]) :][:8] not in stored
        assert rows[table]["key_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert ApiKey.objects.get().prefix == issued.secret[: len(ApiKey.objects.get().prefix)]
