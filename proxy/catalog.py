"""The gateway's view of the catalog: resolve a client's model id, describe the upstream target."""

from accounts.keycache import KeyContext
from catalog.snapshot import ModelSpec, RouteSpec, catalog_snapshot
from proxy.translate import TargetModel
from proxy.translate.errors import ErrorKind, GatewayError

MODE_NAMES = {
    "chat": "chat", "embedding": "embeddings", "image": "image generation",
    "transcription": "audio transcription", "speech": "text to speech",
}  # fmt: skip


async def resolve_model(name: object, key: KeyContext, *, mode: str) -> ModelSpec:
    """The enabled catalog model `name` of this mode, or 404 / 400 in the caller's shape."""
    if not isinstance(name, str) or not name:
        raise GatewayError(ErrorKind.INVALID_REQUEST, "`model` is required and must be a string.", param="model")
    snapshot = await catalog_snapshot()
    spec = snapshot.get(name)
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
    return spec


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
    )
