"""Images and documents between O content parts and A blocks (§2.7).

The core does no I/O: for upstreams flagged without URL image support the HTTP layer downloads the URLs
listed by `openai_image_urls` / `anthropic_image_urls` and passes them in as `InlineImages`.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import TranslationError

InlineImages = Mapping[str, tuple[str, str]]  # image URL -> (media_type, base64 data), downloaded by the caller

ANTHROPIC_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_MEDIA_TYPE_ALIASES = {"image/jpg": "image/jpeg"}  # NousResearch/hermes-agent#55432
PDF = "application/pdf"


def parse_data_url(url: str) -> tuple[str, str] | None:
    """(media_type, base64 data) of a `data:<mime>;base64,<data>` URL, or None if `url` is not one."""
    if not url.startswith("data:"):
        return None
    header, separator, data = url[len("data:") :].partition(",")
    parameters = header.split(";")
    if not separator or "base64" not in parameters[1:]:
        return None
    media_type = parameters[0].strip().lower()
    return _MEDIA_TYPE_ALIASES.get(media_type, media_type), data


def _url_image_source(url: str, *, image_urls: bool, inline_images: InlineImages, param: str) -> dict:
    if url in inline_images:
        media_type, data = inline_images[url]
        return {"type": "base64", "media_type": _MEDIA_TYPE_ALIASES.get(media_type, media_type), "data": data}
    if not image_urls:
        # The HTTP layer should have downloaded it (BerriAI/litellm#13600); refuse rather than send a 400-bound body.
        raise TranslationError(
            "This model does not accept image URLs; send the image as a base64 data URL.",
            param=param,
            code="unsupported_value",
        )
    return {"type": "url", "url": url}


def openai_image_to_anthropic(part: dict, *, image_urls: bool, inline_images: InlineImages, param: str) -> dict:
    """O image_url part → A image block; `detail` is dropped (§2.7)."""
    url = (part.get("image_url") or {}).get("url")
    if not isinstance(url, str) or not url:
        raise TranslationError("image_url.url is required.", param=f"{param}.image_url.url")
    if url.startswith(("http://", "https://")):
        source = _url_image_source(url, image_urls=image_urls, inline_images=inline_images, param=param)
        return {"type": "image", "source": source}
    parsed = parse_data_url(url)
    if parsed is None:
        raise TranslationError(
            "image_url.url must be an http(s) URL or a base64 data URL.", param=f"{param}.image_url.url"
        )
    media_type, data = parsed
    if media_type not in ANTHROPIC_IMAGE_TYPES:
        # Rejected here, before the upstream is called and billed (§2.7).
        raise TranslationError(
            f"Image type {media_type!r} is not supported; use JPEG, PNG, GIF or WebP.",
            param=f"{param}.image_url.url",
            code="unsupported_value",
        )
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def openai_file_to_anthropic(part: dict, *, param: str) -> dict:
    """O file part with a PDF data URL → A base64 document block; file_id has no counterpart (§2.2 step 2)."""
    file = part.get("file") or {}
    if file.get("file_id"):
        raise TranslationError(
            "file_id is not supported for this model; send file_data.",
            param=f"{param}.file.file_id",
            code="unsupported_parameter",
        )
    parsed = parse_data_url(file.get("file_data") or "")
    if parsed is None or parsed[0] != PDF:
        raise TranslationError(
            "Only PDF files sent as a base64 data URL are supported.",
            param=f"{param}.file.file_data",
            code="unsupported_value",
        )
    return {"type": "document", "source": {"type": "base64", "media_type": PDF, "data": parsed[1]}}


def anthropic_image_to_openai(block: dict, *, image_urls: bool, inline_images: InlineImages, param: str) -> dict:
    """A image block → O image_url part: base64 becomes a data URL (BerriAI/litellm#16202), a URL stays."""
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = source.get("url")
        if url in inline_images:
            media_type, data = inline_images[url]
            url = f"data:{media_type};base64,{data}"
        elif not image_urls:
            raise TranslationError(
                "This model does not accept image URLs; send the image as base64.",
                param=f"{param}.source.url",
                code="unsupported_value",
            )
    else:
        raise TranslationError(
            f"Image source type {source.get('type')!r} is not supported for this model.",
            param=f"{param}.source.type",
            code="unsupported_value",
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _text_of_blocks(blocks: object) -> list[str]:
    if isinstance(blocks, str):
        return [blocks] if blocks else []
    return [b["text"] for b in blocks or [] if isinstance(b, dict) and b.get("type") == "text" and b.get("text")]


def anthropic_document_to_openai(block: dict, *, documents: bool, param: str) -> list[dict]:
    """A document → O parts: PDF → file part (if the upstream takes files), text sources → text (§2.4 step 2)."""
    source = block.get("source") or {}
    kind = source.get("type")
    if kind == "text":
        return [{"type": "text", "text": source.get("data") or ""}] if source.get("data") else []
    if kind == "content":
        return [{"type": "text", "text": text} for text in _text_of_blocks(source.get("content"))]
    if kind == "base64" and source.get("media_type") == PDF and documents:
        file_data = f"data:{PDF};base64,{source.get('data')}"
        return [{"type": "file", "file": {"filename": "document.pdf", "file_data": file_data}}]
    raise TranslationError(
        "This document cannot be sent to this model; send PDF as base64 or plain text.",
        param=f"{param}.source",
        code="unsupported_value",
    )


def anthropic_search_result_to_openai(block: dict) -> list[dict]:
    """A search_result → one O text part: title, source, then its texts."""
    lines = [block.get("title"), block.get("source"), *_text_of_blocks(block.get("content"))]
    text = "\n".join(line for line in lines if isinstance(line, str) and line)
    return [{"type": "text", "text": text}] if text else []


def openai_image_urls(body: dict) -> list[str]:
    """http(s) image URLs in an O request, for the HTTP layer to download when the upstream lacks URL support."""
    urls: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            url = (part.get("image_url") or {}).get("url") if isinstance(part, dict) else None
            if isinstance(url, str) and url.startswith(("http://", "https://")) and url not in urls:
                urls.append(url)
    return urls


def anthropic_image_urls(body: dict) -> list[str]:
    """URL image sources in an A request (also inside tool results), for the HTTP layer to download."""
    urls: list[str] = []

    def collect(blocks: object) -> None:
        for block in blocks if isinstance(blocks, list) else []:
            if not isinstance(block, dict):
                continue
            source = block.get("source") or {}
            if block.get("type") == "image" and source.get("type") == "url" and source.get("url") not in urls:
                urls.append(source.get("url"))
            if block.get("type") == "tool_result":
                collect(block.get("content"))

    for message in body.get("messages") or []:
        if isinstance(message, dict):
            collect(message.get("content"))
    return urls
