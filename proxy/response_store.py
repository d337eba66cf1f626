"""Stored responses (PROTOCOLS-RESPONSES §4.1): the interface the Responses pipeline calls.

STUB — the `rstate` branch replaces these bodies with the per-tenant store. The signatures are the contract.
"""

from proxy.translate.errors import ErrorKind, GatewayError
from proxy.translate.responses_request import responses_input_items


async def responses_expand(*, org_id: int, body: dict) -> list[dict]:
    """The full input item list: the stored `previous_response_id` chain + the new `input`, item_references
    resolved; raises GatewayError (code previous_response_not_found) for an unknown/foreign/expired id."""
    previous = body.get("previous_response_id")
    if previous:
        raise GatewayError(
            ErrorKind.INVALID_REQUEST,
            f"Previous response with id '{previous}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    items = responses_input_items(body)
    for item in items:
        if item.get("type") == "item_reference":
            raise GatewayError(
                ErrorKind.NOT_FOUND, f"Item with id '{item.get('id')}' not found.", param="input", code="item_not_found"
            )
    return items


def responses_store_later(
    *, org_id: int, api_key_id: int, request: dict, input_items: list[dict], response: dict
) -> None:
    """Persist a finished response after its last byte when `store` is not false (fire-and-forget). Stub: no-op."""
