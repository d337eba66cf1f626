"""The Responses API's endpoints around stored responses (PROTOCOLS-RESPONSES §0, §4): GET / DELETE
/v1/responses/{id}, its input_items, cancel, compact and input_tokens. POST /v1/responses itself is
the chat pipeline's; the state behind all of them is proxy/response_store.py.

Bearer auth, errors in the O shape (§3), every lookup scoped to the key's organisation: another
organisation's response id answers exactly like one that does not exist.
"""

from django.http import HttpRequest, HttpResponse

from proxy import response_store
from proxy.auth import authenticate
from proxy.catalog import resolve_model
from proxy.requests import read_json_body
from proxy.responses import OPENAI, Call, error_response, json_response
from proxy.translate.errors import NULL_CODE, ErrorKind, GatewayError
from proxy.translate.usage import estimate_responses_prompt_tokens
from ruapi.db import run_db

INPUT_ITEMS_DEFAULT_LIMIT = 20
INPUT_ITEMS_MAX_LIMIT = 100


def _include(request: HttpRequest) -> set[str]:
    """`include` as the SDKs send it in a query: `include[]=a&include[]=b` (openai-python) or `include=a`."""
    return set(request.GET.getlist("include[]")) | set(request.GET.getlist("include"))


def _invalid(message: str, param: str | None, code: str | None = None) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param, code=code)


async def _stored(key, response_id: str):
    stored = await run_db(response_store.response_store_get, org_id=key.org_id, response_id=response_id)
    if stored is None:
        raise response_store.response_not_found(response_id)
    return stored


async def retrieve(request: HttpRequest, response_id: str) -> HttpResponse:
    """GET /v1/responses/{id}: the stored response object (a replay stream is not offered: 400)."""
    call = Call(request, OPENAI, endpoint="responses.retrieve")
    try:
        key = await authenticate(request, allow_x_api_key=False)
        if request.GET.get("stream", "").lower() in ("true", "1"):
            raise _invalid("Streaming a stored response (`stream=true`) is not supported by this gateway; "
                           "retrieve it without `stream`.", "stream", "unsupported_parameter")  # fmt: skip
        stored = await _stored(key, response_id)
    except GatewayError as exc:
        return error_response(call, exc)
    body = stored.response
    if isinstance(body.get("output"), list):
        body["output"] = response_store.without_encrypted_reasoning(body["output"], _include(request))
    return call.headers(json_response(body))


async def delete(request: HttpRequest, response_id: str) -> HttpResponse:
    """DELETE /v1/responses/{id}: the response and its items are gone at once."""
    call = Call(request, OPENAI, endpoint="responses.delete")
    try:
        key = await authenticate(request, allow_x_api_key=False)
        deleted = await run_db(response_store.response_store_delete, org_id=key.org_id, response_id=response_id)
        if not deleted:
            raise response_store.response_not_found(response_id)
    except GatewayError as exc:
        return error_response(call, exc)
    return call.headers(json_response({"id": response_id, "object": "response.deleted", "deleted": True}))


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return INPUT_ITEMS_DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise _invalid(f"Invalid 'limit': expected an integer, but got '{raw}' instead.", "limit",
                       "invalid_type") from None  # fmt: skip
    if limit < 1:
        raise _invalid(f"Invalid 'limit': integer below minimum value. Expected a value >= 1, but got {limit} "
                       "instead.", "limit", "integer_below_min_value")  # fmt: skip
    if limit > INPUT_ITEMS_MAX_LIMIT:
        raise _invalid(f"Invalid 'limit': integer above maximum value. Expected a value <= {INPUT_ITEMS_MAX_LIMIT}, "
                       f"but got {limit} instead.", "limit", "integer_above_max_value")  # fmt: skip
    return limit


def items_page(items: list[dict], *, after: str | None, limit: int, order: str) -> dict:
    """One page of a response's input items, OpenAI's list shape (pure)."""
    ordered = items if order == "asc" else items[::-1]
    start = 0
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise _invalid(f"Invalid 'after': no input item with id '{after}' in this response.", "after",
                           "invalid_value")  # fmt: skip
        start = ids.index(after) + 1
    page = ordered[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + limit < len(ordered),
    }


async def input_items(request: HttpRequest, response_id: str) -> HttpResponse:
    """GET /v1/responses/{id}/input_items: the stored expanded input, `after` / `limit` / `order` / `include`."""
    call = Call(request, OPENAI, endpoint="responses.input_items")
    try:
        key = await authenticate(request, allow_x_api_key=False)
        limit = _limit(request.GET.get("limit"))
        order = request.GET.get("order") or "desc"
        if order not in ("asc", "desc"):
            raise _invalid(f"Invalid 'order': expected one of 'asc' or 'desc', but got '{order}' instead.", "order",
                           "invalid_value")  # fmt: skip
        stored = await _stored(key, response_id)
        items = response_store.without_encrypted_reasoning(stored.input_items, _include(request))
        body = items_page(items, after=request.GET.get("after") or None, limit=limit, order=order)
    except GatewayError as exc:
        return error_response(call, exc)
    return call.headers(json_response(body))


async def cancel(request: HttpRequest, response_id: str) -> HttpResponse:
    """POST /v1/responses/{id}/cancel: only `background` responses are cancellable, and the gateway runs none."""
    call = Call(request, OPENAI, endpoint="responses.cancel")
    try:
        key = await authenticate(request, allow_x_api_key=False)
        await _stored(key, response_id)
    except GatewayError as exc:
        return error_response(call, exc)
    return error_response(call, _invalid(f"Cannot cancel response '{response_id}': only responses created with "
                                         "`background: true` can be cancelled, and this gateway does not run "
                                         "background responses.", None))  # fmt: skip


async def compact(request: HttpRequest) -> HttpResponse:
    """POST /v1/responses/compact: not offered (§0); answered as an unknown URL, code null."""
    call = Call(request, OPENAI, endpoint="unknown")
    return error_response(call, GatewayError(ErrorKind.NOT_FOUND, "Invalid URL (POST /v1/responses/compact)",
                                             code=NULL_CODE))  # fmt: skip


# -- input_tokens -------------------------------------------------------------------------------------------------
async def input_tokens(request: HttpRequest) -> HttpResponse:
    """POST /v1/responses/input_tokens: a create-like body's input tokens, the chain and references expanded.

    The gateway's estimate (`x-ruapi-estimated: true`) on every route for now; an Anthropic route could
    be asked (count_tokens, as listing.count_tokens does for /v1/messages/count_tokens) once the R→A
    request converter exists (issue 13, protocol hub)."""
    call = Call(request, OPENAI, endpoint="responses.input_tokens")
    try:
        key = await authenticate(request, allow_x_api_key=False)
        body = read_json_body(request)
        if body.get("conversation") is not None:
            raise _invalid("Conversations are not supported by this gateway; use `previous_response_id`.",
                           "conversation", "unsupported_parameter")  # fmt: skip
        if body.get("model") is not None:
            await resolve_model(body["model"], key, mode="chat")  # 404 for a model this key cannot see
        items = await response_store.responses_expand(org_id=key.org_id, body=body)
        count = estimate_responses_prompt_tokens(body, items)
    except GatewayError as exc:
        return error_response(call, exc)
    response = call.headers(json_response({"object": "response.input_tokens", "input_tokens": count}))
    response["x-ruapi-estimated"] = "true"
    return response
