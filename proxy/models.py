"""Stored Responses-API state (PROTOCOLS-RESPONSES §4.1): responses kept per organisation for
`previous_response_id`, `item_reference`, GET/DELETE and `input_items`.

The JSON is kept as text exactly as the gateway produced it (orjson): Postgres' jsonb would reorder
keys and refuses `\\u0000` in strings, which a client's input may contain; nothing queries inside it.
Written off the request's path by proxy.response_store; expired rows are deleted by
proxy.tasks.purge_stored_responses.
"""

import orjson
from django.db import models

from accounts.models import ApiKey, Organization


class StoredResponse(models.Model):
    """One stored response: the response object and its expanded input (chain + new input, no instructions)."""

    id = models.CharField(primary_key=True, max_length=64)  # the public id, "resp_" + 32 hex
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    model = models.CharField(max_length=200)  # the catalog id the response echoes
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)  # created_at + RUAPI_RESPONSES_RETENTION_DAYS
    response_json = models.TextField()  # the response object as the client got it (reasoning envelopes kept)
    input_items_json = models.TextField()  # the expanded input, every item with an `id` (what input_items lists)

    def __str__(self) -> str:
        return self.id

    @property
    def response(self) -> dict:
        return orjson.loads(self.response_json)

    @property
    def input_items(self) -> list[dict]:
        return orjson.loads(self.input_items_json)


class StoredItem(models.Model):
    """Every item (input and output) of the stored responses by its id, for `item_reference` and id-only
    reasoning items. One row per organisation and item id: it names the newest response holding the
    item (an item replayed by a later turn lives as long as that turn), and goes with that response."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    item_id = models.CharField(max_length=200)
    response = models.ForeignKey(StoredResponse, on_delete=models.CASCADE, related_name="items")
    item_type = models.CharField(max_length=64)
    item_json = models.TextField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "item_id"], name="proxy_storeditem_org_item_unique")]

    def __str__(self) -> str:
        return self.item_id

    @property
    def item(self) -> dict:
        return orjson.loads(self.item_json)
