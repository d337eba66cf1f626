"""The bootstrap commands of ARCHITECTURE.md, as outside tooling drives them."""

import io
import textwrap

import pytest
import yaml
from django.core.management import CommandError, call_command

from accounts.models import ApiKey, Organization
from accounts.services import apikey_hash
from billing.models import Balance
from catalog.crypto import decrypt_secret
from catalog.models import Model, Price, Provider

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

CATALOG = textwrap.dedent(
    """
    providers:
      - {name: openai, kind: openai, base_url: "https://api.openai.com/v1", api_key: sk-upstream-secret}
      - {name: anthropic, kind: anthropic, base_url: "https://api.anthropic.com", api_key_env: ANTHROPIC_KEY}
    models:
      - {name: gpt-4o-mini, provider: openai, upstream_model: gpt-4o-mini-2024-07-18, input: 0.15, output: 0.60,
         cache_read: 0.075, context_window: 128000, max_output_tokens: 16384}
      - name: claude-sonnet
        routes:
          - {provider: anthropic, upstream_model: claude-sonnet-4-5, priority: 1, weight: 1}
          - {provider: openai, upstream_model: gpt-4o, priority: 2, weight: 3}
        input: 3
        output: 15
        cache_read: 0.3
        cache_write: 3.75
    """
)


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def catalog_file(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    return path


def test_loadcatalog_upserts_and_encrypts_keys(catalog_file):
    # when
    first = run("loadcatalog", str(catalog_file))
    second = run("loadcatalog", str(catalog_file))
    # then
    assert first.strip() == "providers: 2 created, 0 updated; models: 2 created, 0 updated; prices changed: 0"
    assert second.strip() == "providers: 0 created, 2 updated; models: 0 created, 2 updated; prices changed: 0"
    provider = Provider.objects.get(name="openai")
    assert "sk-upstream-secret" not in provider.api_key_encrypted
    assert decrypt_secret(provider.api_key_encrypted) == "sk-upstream-secret"
    price = Price.objects.get(model__name="gpt-4o-mini")
    assert (price.input_nanos_per_mtok, price.output_nanos_per_mtok, price.cache_read_nanos_per_mtok) == (
        150_000_000, 600_000_000, 75_000_000,
    )  # fmt: skip
    routes = list(Model.objects.get(name="claude-sonnet").routes.values_list("provider__name", "priority", "weight"))
    assert routes == [("anthropic", 1, 1), ("openai", 2, 3)]


def test_dumpcatalog_loads_back_unchanged(catalog_file):
    run("loadcatalog", str(catalog_file))
    dumped = run("dumpcatalog")
    data = yaml.safe_load(dumped)
    assert "sk-upstream-secret" not in dumped  # keys are never written unless asked
    models = {model["name"]: model for model in data["models"]}
    assert models["gpt-4o-mini"]["provider"] == "openai"
    assert models["claude-sonnet"]["routes"][1] == {"provider": "openai", "upstream_model": "gpt-4o", "priority": 2, "weight": 3}
    catalog_file.write_text(dumped)
    assert run("loadcatalog", str(catalog_file)).strip().endswith("prices changed: 0")
    assert yaml.safe_load(run("dumpcatalog")) == data


def test_price_change_adds_history(catalog_file):
    run("loadcatalog", str(catalog_file))
    catalog_file.write_text(CATALOG.replace("input: 0.15", "input: 0.20"))
    assert run("loadcatalog", str(catalog_file)).strip().endswith("prices changed: 1")
    prices = list(Price.objects.filter(model__name="gpt-4o-mini").order_by("effective_from"))
    assert [p.input_nanos_per_mtok for p in prices] == [150_000_000, 200_000_000]


@pytest.mark.parametrize(
    ("_case", "text", "message"),
    [
        ("bad kind", "providers: [{name: x, kind: nope, base_url: 'http://x'}]", "kind must be one of"),
        ("unknown provider", "models: [{name: m, provider: missing, input: 1, output: 1}]", "unknown provider"),
        ("negative price", "providers: [{name: e, kind: echo}]\nmodels: [{name: m, provider: e, input: -1}]", "negative"),
        ("not yaml", "providers: [", "not valid YAML"),
    ],
)
def test_loadcatalog_errors_change_nothing(tmp_path, _case, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CommandError, match=message):
        run("loadcatalog", str(path))
    assert Provider.objects.count() == 0
    assert Model.objects.count() == 0


def test_createorg_is_idempotent_and_credits_once():
    assert run("createorg", "Acme Inc", "--credit", "12.5", "--owner-email", "o@example.com").strip() == "acme-inc"
    assert run("createorg", "Acme Inc", "--credit", "12.5").strip() == "acme-inc"
    assert Organization.objects.count() == 1
    assert Balance.objects.get().balance_nanos == 12_500_000_000
    assert run("balance", "Acme Inc").strip() == "12.5"
    assert run("balance", "acme-inc").strip() == "12.5"


def test_createapikey_prints_secret_last_and_stores_only_hash():
    run("createorg", "Acme")
    output = run("createapikey", "Acme", "--name", "ci")
    secret = output.strip().splitlines()[-1]
    key = ApiKey.objects.get()
    assert secret.startswith("sk-ru-") and len(secret) == 46
    assert key.key_hash == apikey_hash(secret)
    assert secret not in {key.prefix, key.key_hash, key.name}
    assert key.prefix == secret[:14]


@pytest.mark.parametrize("by", ["secret", "prefix"])
def test_revokeapikey(by):
    run("createorg", "Acme")
    secret = run("createapikey", "Acme").strip()
    key = ApiKey.objects.get()
    assert run("revokeapikey", secret if by == "secret" else key.prefix).strip() == key.prefix
    key.refresh_from_db()
    assert key.revoked_at is not None and not key.is_active


def test_revokeapikey_unknown_fails():
    with pytest.raises(CommandError, match="No API key"):
        run("revokeapikey", "sk-ru-nothing")


def test_balance_unknown_org_fails():
    with pytest.raises(CommandError, match="No organisation"):
        run("balance", "Nope")


def test_reconcile_ok_and_drift():
    run("createorg", "Acme", "--credit", "1")
    assert run("reconcile").strip() == "ok"
    Balance.objects.update(balance_nanos=5)
    with pytest.raises(CommandError, match="Acme: balance"):
        run("reconcile")
