"""No gateway key or upstream provider key in logs, error bodies or upstream requests (issue 8 §5)."""

import logging

import pytest

from accounts.models import ApiKey
from catalog.models import Provider
from proxy.tests.mock_upstream import Script

pytestmark = [pytest.mark.integration, pytest.mark.embedded]


def test_keys_never_logged_or_echoed(gateway, caplog):
    # given
    caplog.set_level(logging.DEBUG)
    gateway.mock.enqueue("/v1/messages", Script.error(401, provider="anthropic", message="invalid x-api-key"))
    # when: a success through each protocol, and an upstream credential failure
    gateway.openai().chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    with gateway.anthropic().messages.stream(
        model="gpt-test", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        stream.get_final_message()
    with pytest.raises(Exception) as excinfo:
        gateway.anthropic().messages.create(model="claude-test", max_tokens=20, messages=[{"role": "user", "content": "x"}])
    # then
    logged = "\n".join(record.getMessage() for record in caplog.records) + caplog.text
    for secret in (gateway.tenant.secret, gateway.mock.api_key):
        assert secret not in logged
        assert secret not in str(excinfo.value.body)
    for recorded in gateway.mock.requests:
        assert gateway.tenant.secret not in str(recorded.headers) + recorded.body.decode(errors="replace")
    # the upstream's 401 is the gateway's credentials problem, not the client's (PROTOCOLS §5.3 step 3)
    assert excinfo.value.status_code == 502


@pytest.mark.django_db
def test_stored_forms_of_secrets():
    from catalog.services import catalog_load
    from conftest import make_tenant

    tenant = make_tenant("Keys")
    catalog_load({"providers": [{"name": "p", "kind": "openai", "base_url": "http://127.0.0.1:1/v1",
                                 "api_key": "sk-provider-plaintext"}]})  # fmt: skip
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key_encrypted FROM catalog_provider")
        [(stored_provider_key,)] = cursor.fetchall()
        cursor.execute("SELECT key_hash, prefix FROM accounts_apikey")
        [(key_hash, prefix)] = cursor.fetchall()
    assert "sk-provider-plaintext" not in stored_provider_key
    assert Provider.objects.get().api_key_encrypted == stored_provider_key
    assert tenant.secret not in (key_hash, prefix) and len(key_hash) == 64
    assert ApiKey.objects.get().prefix == tenant.secret[:14]
