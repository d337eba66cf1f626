"""catalog.services: import/export round trip, keys, prices (append-only, audited), sync, enable/disable."""

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.crypto import decrypt_secret
from catalog.models import AuditEntry, Model, Price, Provider, ProviderKey, Route
from catalog.services import (
    CatalogError,
    catalog_dump,
    catalog_load,
    models_add_from_upstream,
    models_set_enabled,
    price_set,
    provider_key_add,
    provider_key_remove,
)

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

CATALOG = {
    "providers": [
        {"name": "openai", "kind": "openai", "base_url": "https://api.openai.com/v1/", "api_key": "sk-primary-1111"},
        {"name": "gem", "kind": "gemini", "base_url": "https://generativelanguage.googleapis.com/v1beta",
         "api_keys": ["g-key-aaaa1111", "g-key-bbbb2222"], "read_timeout": 30, "enabled": False},
    ],
    "models": [
        {"name": "multi", "aliases": ["multi-latest"], "display_name": "Multi", "context_window": 1000,
         "supports_audio": True, "visibility": "restricted", "input": 1.25, "output": "5",
         "cost": {"input": "0.5", "output": 2},
         "routes": [{"provider": "gem", "upstream_model": "gemini-2.5-flash", "priority": 1, "weight": 3,
                     "max_concurrency": 4, "rpm_limit": 60},
                    {"provider": "openai", "upstream_model": "gpt-4o-mini", "priority": 2, "weight": 1}]},
        {"name": "simple", "provider": "openai", "upstream_model": "gpt-4o", "input": 2.5, "output": 10},
    ],
}  # fmt: skip


def test_dump_loads_back_unchanged():
    # given
    catalog_load(CATALOG)
    dumped = catalog_dump(include_secrets=True)
    prices_before = Price.objects.count()
    # when
    result = catalog_load(dumped)
    # then
    assert catalog_dump(include_secrets=True) == dumped
    assert Price.objects.count() == prices_before
    assert result.prices_changed == []
    multi = next(m for m in dumped["models"] if m["name"] == "multi")
    assert multi["routes"][0] == {"provider": "gem", "upstream_model": "gemini-2.5-flash", "priority": 1, "weight": 3,
                                  "max_concurrency": 4, "rpm_limit": 60}  # fmt: skip
    assert multi["cost"] == {"input": 0.5, "output": 2}
    assert multi["aliases"] == ["multi-latest"] and multi["visibility"] == "restricted"
    gem = next(p for p in dumped["providers"] if p["name"] == "gem")
    assert gem["api_keys"] == ["g-key-aaaa1111", "g-key-bbbb2222"] and gem["enabled"] is False


def test_dump_without_secrets_has_no_keys():
    catalog_load(CATALOG)
    text = str(catalog_dump())
    assert "sk-primary-1111" not in text and "g-key" not in text


def test_keys_are_stored_encrypted_and_audited_masked():
    catalog_load(CATALOG)
    gem = Provider.objects.get(name="gem")
    assert decrypt_secret(gem.api_key_encrypted) == "g-key-aaaa1111"
    (extra,) = ProviderKey.objects.filter(provider=gem)
    assert "g-key-bbbb2222" not in extra.key_encrypted and extra.key_hint == "…2222"
    audit = list(AuditEntry.objects.filter(action__startswith="key.").values_list("action", "target_repr", "after"))
    assert ("key.add", "gem", {"key": "…2222"}) in audit
    assert ("key.set", "openai", {"key": "…1111"}) in audit
    assert "g-key-bbbb2222" not in str(list(AuditEntry.objects.values()))


def test_key_add_and_remove_service(django_user_model):
    admin = django_user_model.objects.create(username="root", email="root@example.test")
    catalog_load(CATALOG)
    provider = Provider.objects.get(name="openai")
    key = provider_key_add(provider=provider, api_key="sk-second-key-7777", label="b", actor=admin)
    provider_key_remove(key=key, actor=admin)
    entries = list(AuditEntry.objects.filter(actor=admin).order_by("id").values_list("action", "before", "after"))
    assert entries == [("key.add", None, {"key": "…7777", "label": "b"}), ("key.remove", {"key": "…7777", "label": "b"}, None)]
    assert not ProviderKey.objects.filter(provider=provider).exists()


def test_price_changes_are_new_rows_with_audit():
    catalog_load(CATALOG)
    model = Model.objects.get(name="simple")
    first = model.prices.get()
    later = timezone.now() + timedelta(hours=1)
    price = price_set(model=model, nanos={"input_nanos_per_mtok": 3_000_000_000}, effective_from=later, actor="ops")
    assert list(model.prices.order_by("effective_from").values_list("pk", flat=True)) == [first.pk, price.pk]
    entry = AuditEntry.objects.filter(action="price.set", actor_label="ops").get()
    assert entry.before == {"input_usd_per_mtok": "2.5", "output_usd_per_mtok": "10",
                            "effective_from": first.effective_from.isoformat()}  # fmt: skip
    assert entry.after["input_usd_per_mtok"] == "3"
    # loading the same catalog again keeps the price in force (now) and adds nothing
    catalog_load(CATALOG)
    assert model.prices.count() == 2
    with pytest.raises(ValueError):
        price_set(model=model, nanos={"input_nanos_per_mtok": -1})


@pytest.mark.parametrize(
    ("_case", "catalog", "message"),
    [
        ("bad kind", {"providers": [{"name": "x", "kind": "nope", "base_url": "http://x"}]}, "kind must be one of"),
        ("unknown provider", {"models": [{"name": "m", "provider": "ghost", "input": 1, "output": 1}]}, "unknown provider"),
        ("bad visibility", {"models": [{"name": "m", "visibility": "secret", "routes": []}]}, "visibility"),
        ("bad cost", {"models": [{"name": "m", "routes": [], "cost": {"weird": 1}}]}, "cost must be"),
        ("unknown org", {"models": [{"name": "m", "routes": [], "organizations": ["nobody"]}]}, "unknown organisations"),
    ],
)
def test_invalid_catalogs_change_nothing(_case, catalog, message):
    with pytest.raises(CatalogError, match=message):
        catalog_load(catalog)
    assert not Model.objects.exists() and not Provider.objects.exists()


def test_sync_adds_disabled_unpriced_models_with_routes():
    catalog_load(CATALOG)
    provider = Provider.objects.get(name="gem")
    result = models_add_from_upstream(provider=provider, upstream_ids=["o4-mini", "simple"], actor="admin")
    assert (result.created, result.routed) == (["o4-mini"], ["simple"])
    new = Model.objects.get(name="o4-mini")
    assert not new.is_enabled and not new.prices.exists()
    assert Route.objects.get(model__name="simple", provider=provider, upstream_model="simple")


def test_enable_disable_is_audited_and_idempotent():
    catalog_load(CATALOG)
    assert models_set_enabled(models=Model.objects.all(), enabled=False, actor="ops") == 2
    assert models_set_enabled(models=Model.objects.all(), enabled=False, actor="ops") == 0
    assert AuditEntry.objects.filter(action="model.disable").count() == 2


CLAUDE_CODE_CATALOG = {
    "providers": [
        {"name": "anthropic", "kind": "anthropic", "base_url": "https://api.anthropic.com",
         "options": {"betas": {"mode": "allow", "allow": ["effort-*"], "rename": {"a-1": "b-1"}},
                     "mid_system": "hoist"}},
    ],
    "models": [
        {"name": "claude", "provider": "anthropic", "upstream_model": "claude-opus-4-8", "input": 5, "output": 25,
         "web_search": 10, "web_fetch": "0.5", "mid_conv_system": True, "auto_cache": True,
         "reasoning_efforts": ["low", "high"], "options": {"other_flag": 1}},
    ],
}  # fmt: skip


def test_issue_14_fields_load_dump_and_reach_the_snapshot():
    # given
    from catalog.snapshot import catalog_build

    # when
    catalog_load(CLAUDE_CODE_CATALOG)
    dumped = catalog_dump()
    # then: server-tool prices are nano-USD per 1,000 requests, flags live in Model.options, all round-trip
    price = Price.objects.get(model__name="claude")
    assert (price.web_search_nanos_per_kreq, price.web_fetch_nanos_per_kreq) == (10_000_000_000, 500_000_000)
    model = Model.objects.get(name="claude")
    assert model.options == {"other_flag": 1, "mid_conv_system": True, "auto_cache": True,
                             "reasoning_efforts": ["low", "high"]}  # fmt: skip
    item = dumped["models"][0]
    assert {k: item[k] for k in ("web_search", "web_fetch", "mid_conv_system", "auto_cache", "reasoning_efforts",
                                 "options")} == {"web_search": 10, "web_fetch": 0.5, "mid_conv_system": True,
                                                 "auto_cache": True, "reasoning_efforts": ["low", "high"],
                                                 "options": {"other_flag": 1}}  # fmt: skip
    assert dumped["providers"][0]["options"] == CLAUDE_CODE_CATALOG["providers"][0]["options"]
    assert catalog_load(dumped).prices_changed == []
    assert catalog_dump() == dumped
    spec = catalog_build().get("claude")
    assert (spec.prices.web_search_nanos_per_kreq, spec.options["auto_cache"]) == (10_000_000_000, True)


@pytest.mark.parametrize(
    ("_case", "options", "message"),
    [
        ("bad mode", {"betas": {"mode": "only"}}, "provider a: betas.mode must be one of pass, allow, drop"),
        ("not a mapping", {"betas": "all"}, "provider a: betas must be a mapping"),
    ],
)
def test_beta_policy_is_checked_on_load(_case, options, message):
    with pytest.raises(CatalogError) as info:
        catalog_load({"providers": [{"name": "a", "kind": "anthropic", "base_url": "https://x.test",
                                     "options": options}]})  # fmt: skip
    assert str(info.value) == message
    assert not Provider.objects.filter(name="a").exists()


def test_reasoning_efforts_must_be_a_list():
    with pytest.raises(CatalogError):
        catalog_load({**CLAUDE_CODE_CATALOG, "models": [{**CLAUDE_CODE_CATALOG["models"][0],
                                                          "reasoning_efforts": "high"}]})  # fmt: skip
