"""GET /v1/models (both shapes) and POST /v1/messages/count_tokens."""

from datetime import UTC, datetime

from django.http import HttpRequest, HttpResponse

from catalog.snapshot import catalog_snapshot
from proxy.auth import authenticate
from proxy.catalog import resolve_model
from proxy.requests import invalid, read_json_body
from proxy.responses import ANTHROPIC, OPENAI, Call, error_response, json_response
from proxy.translate import anthropic_thinking_filter
from proxy.translate.errors import ErrorKind, GatewayError, upstream_http_error
from proxy.translate.system_messages import anthropic_hoist_system_messages
from proxy.translate.usage import estimate_anthropic_prompt_tokens
from proxy.upstreams import upstream_for

COUNT_TOKENS_FIELDS = frozenset({"messages", "system", "tools", "tool_choice", "thinking", "output_config"})


def models_protocol(request: HttpRequest) -> str:
    """PROTOCOLS §0.1: the Anthropic shape when the request carries `anthropic-version`."""
    return ANTHROPIC if "anthropic-version" in request.headers else OPENAI


def _openai_model(spec) -> dict:
    return {"id": spec.name, "object": "model", "created": spec.created, "owned_by": "ruapi"}


def _anthropic_model(spec) -> dict:
    created_at = datetime.fromtimestamp(spec.created, tz=UTC).isoformat().replace("+00:00", "Z")
    return {"type": "model", "id": spec.name, "display_name": spec.display_name, "created_at": created_at}


def _usable(spec, key) -> bool:
    allowed = getattr(key, "allowed_models", None)
    return spec.visible_to(key.org_id) and (allowed is None or spec.name in allowed)


async def list_models(request: HttpRequest) -> HttpResponse:
    call = Call(request, models_protocol(request), endpoint="models")
    try:
        key = await authenticate(request, allow_x_api_key=True)
    except GatewayError as exc:
        return error_response(call, exc)
    specs = sorted((await catalog_snapshot()).models.values(), key=lambda spec: spec.name)
    # Only what this organisation (and key) may call: visibility, then the key's model allowlist.
    specs = [spec for spec in specs if spec.routes and _usable(spec, key)]
    if call.protocol == ANTHROPIC:
        data = [_anthropic_model(spec) for spec in specs]
        body = {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}  # fmt: skip
    else:
        body = {"object": "list", "data": [_openai_model(spec) for spec in specs]}
    return call.headers(json_response(body))


async def get_model(request: HttpRequest, model_id: str) -> HttpResponse:
    call = Call(request, models_protocol(request), endpoint="models")
    try:
        key = await authenticate(request, allow_x_api_key=True)
        spec = (await catalog_snapshot()).get(model_id)
        if spec is None or not spec.routes or not _usable(spec, key):
            raise GatewayError(ErrorKind.NOT_FOUND, f"The model `{model_id}` does not exist.", param="model")
    except GatewayError as exc:
        return error_response(call, exc)
    body = _anthropic_model(spec) if call.protocol == ANTHROPIC else _openai_model(spec)
    return call.headers(json_response(body))


async def count_tokens(request: HttpRequest) -> HttpResponse:
    """A upstream: asked upstream (free). O upstream: the gateway's local estimate."""
    call = Call(request, ANTHROPIC, endpoint="messages.count_tokens")
    try:
        key = await authenticate(request, allow_x_api_key=True)
        body = read_json_body(request)
        if not isinstance(body.get("messages"), list):
            raise invalid("`messages` is required and must be an array.", "messages")
        spec = await resolve_model(body.get("model"), key, mode="chat")
        for route in spec.ordered_routes():
            if route.provider.protocol != ANTHROPIC:
                continue
            upstream_body = anthropic_thinking_filter({k: v for k, v in body.items() if k in COUNT_TOKENS_FIELDS})
            if not spec.options.get("mid_conv_system"):  # as on /v1/messages (PROTOCOLS-RESPONSES §6 M5)
                upstream_body = anthropic_hoist_system_messages(upstream_body)
            upstream_body["model"] = route.upstream_model
            try:
                reply = await upstream_for(route.provider).count_tokens(upstream_body)
            except GatewayError:
                continue
            data = await reply.json()
            if reply.ok and isinstance(data, dict) and isinstance(data.get("input_tokens"), int):
                return call.headers(json_response({"input_tokens": data["input_tokens"]}))
            if not reply.ok and reply.status < 500 and reply.status != 429:
                raise upstream_http_error(reply.status, data, ANTHROPIC)
        estimate = estimate_anthropic_prompt_tokens(body)
    except GatewayError as exc:
        return error_response(call, exc)
    response = call.headers(json_response({"input_tokens": estimate}))
    response["x-ruapi-estimated"] = "true"
    return response
