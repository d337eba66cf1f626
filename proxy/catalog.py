"""The gateway's view of the catalog: resolve a client's model id, describe the upstream target."""

import time

from accounts.keycache import KeyContext
from catalog.snapshot import ModelSpec, RouteSpec, catalog_snapshot
from proxy.translate import TargetModel
from proxy.translate.errors import ErrorKind, GatewayError

MODE_NAMES = {
    "chat": "chat", "embedding": "embeddings", "image": "image generation",
    "transcription": "audio transcription", "speech": "text to speech",
}  # fmt: skip


async def resolve_model(name: object, key: KeyContext, *, mode: str) -> ModelSpec:
    """The enabled catalog model `name` of this mode, or 404 / 400 / 403 (not allowed for this key)."""
    if not isinstance(name, str) or not name:
        raise GatewayError(ErrorKind.INVALID_REQUEST, "`model` is required and must be a string.", param="model")
    if key.allowed_models is not None and name not in key.allowed_models:
        # Checked before the catalog lookup, so a restricted key learns nothing about other models.
        raise GatewayError(ErrorKind.PERMISSION, f"This API key is not allowed to use the model `{name}`.",
                           param="model", code="model_not_allowed")  # fmt: skip
    snapshot = await catalog_snapshot()
    spec = snapshot.get(name)
    if spec is not None and not spec.visible_to(key.org_id):
        spec = None  # a restricted model answers exactly like a missing one: its existence is not leaked
    if spec is None and snapshot.is_disabled(name):
        raise GatewayError(ErrorKind.NOT_FOUND, f"The model `{name}` is currently disabled.", param="model")
    if spec is None:
        raise GatewayError(ErrorKind.NOT_FOUND, f"The model `{name}` does not exist or you do not have access to it.",
                           param="model")  # fmt: skip
    if spec.mode != mode:
        raise GatewayError(
            ErrorKind.INVALID_REQUEST,
            f"The model `{name}` is a {MODE_NAMES.get(spec.mode, spec.mode)} model; this endpoint needs "
            f"a {MODE_NAMES[mode]} model.",
            param="model",
        )
    return spec.priced_at(time.time())  # billed at the price in force when the request started


def target_for(spec: ModelSpec, route: RouteSpec) -> TargetModel:
    """What the translators need to know about this route's upstream model (from the catalog)."""
    options = route.provider.options
    return TargetModel(
        upstream_model=route.upstream_model,
        max_output_tokens=spec.max_output_tokens,
        default_max_tokens=options.get("default_max_tokens"),
        thinking=spec.thinking or None,
        structured_output=spec.structured_output,
        max_tokens_field=options.get("max_tokens_field", "max_tokens"),
        image_urls=options.get("image_urls", True),
        stream_usage=options.get("stream_usage", True),
        reasons_by_default=options.get("reasons_by_default", False),
        requires_user_first=options.get("requires_user_first", False),
        reasoning_efforts=tuple(spec.options.get("reasoning_efforts") or ()),
        system_role=options.get("system_role", "system"),
        mid_system=options.get("mid_system", "inline"),
        mid_conv_system=bool(spec.options.get("mid_conv_system", False)),
        auto_cache=bool(spec.options.get("auto_cache", False)),
    )
