"""Every write to the catalog. Admin actions, management commands and tests all call these.

Each write ends with `catalog_changed()`: after commit, this process rebuilds its snapshot and
every other process follows within about a second (catalog/snapshot.py).
"""

from catalog.services.audit import audit_record, catalog_changed
from catalog.services.io import CatalogError, LoadResult, catalog_dump, catalog_load
from catalog.services.models import ModelSyncResult, models_add_from_upstream, models_set_enabled, price_set
from catalog.services.providers import (
    provider_check_record,
    provider_key_add,
    provider_key_remove,
    provider_set_api_key,
    provider_test_connection,
    providers_set_enabled,
)

__all__ = [
    "CatalogError",
    "LoadResult",
    "ModelSyncResult",
    "audit_record",
    "catalog_changed",
    "catalog_dump",
    "catalog_load",
    "models_add_from_upstream",
    "models_set_enabled",
    "price_set",
    "provider_check_record",
    "provider_key_add",
    "provider_key_remove",
    "provider_set_api_key",
    "provider_test_connection",
    "providers_set_enabled",
]
