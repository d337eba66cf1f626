"""The built-in demo provider (kind `echo`): answers locally in the OpenAI wire format.

It lets the embedded default work with no upstream account: chat replies repeat the last user
message, embeddings are deterministic vectors, images a 1×1 PNG, speech silent WAV audio.
Token counts use the gateway's documented estimate (proxy.translate.usage.estimate_text_tokens).
"""

import base64
import hashlib
import struct
import time
from collections.abc import AsyncIterator

import orjson

from catalog.snapshot import ProviderSpec
from proxy.sse import encode, iter_event_batches, iter_events
from proxy.translate.usage import estimate_openai_prompt_tokens, estimate_text_tokens

_PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


class LocalReply:
    """Looks like proxy.upstreams.http.UpstreamReply, but the body is already here."""

    def __init__(self, body: bytes | list[bytes], *, content_type: str = "application/json") -> None:
        self.status = 200
        self._chunks = body if isinstance(body, list) else [body]
        self.content_type = content_type
        self.headers = {"Content-Type": content_type}
        self.started = self.headers_at = time.perf_counter()

    ok = True
    error = None  # as UpstreamReply.error: the body is always readable

    async def read(self, limit: int | None = None) -> bytes:
        return b"".join(self._chunks)

    async def json(self) -> dict | None:
        return orjson.loads(await self.read())

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    def events(self):
        return iter_events(self.iter_bytes())

    def event_batches(self):
        return iter_event_batches(self.iter_bytes())

    def close(self) -> None:
        pass


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _reply_text(body: dict) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return "Echo: " + _text_of(message.get("content"))
    return "Echo: (no user message)"


def _truncate(text: str, body: dict) -> tuple[str, str]:
    """Honour max tokens (by the estimate) and stop sequences like a real model would."""
    finish = "stop"
    for stop in [body.get("stop")] if isinstance(body.get("stop"), str) else body.get("stop") or []:
        if stop and stop in text:
            text = text[: text.index(stop)]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and estimate_text_tokens(text) > limit:
        words, kept = text.split(" "), []
        while words and estimate_text_tokens(" ".join([*kept, words[0]])) <= limit:
            kept.append(words.pop(0))
        text, finish = " ".join(kept), "length"
    return text, finish


class EchoUpstream:
    protocol = "openai"

    def __init__(self, provider: ProviderSpec) -> None:
        self.provider = provider

    async def chat(self, body: dict) -> LocalReply:
        text, finish = _truncate(_reply_text(body), body)
        prompt_tokens = estimate_openai_prompt_tokens(body)
        completion_tokens = estimate_text_tokens(text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        created = int(time.time())
        completion_id = "chatcmpl-echo" + hashlib.sha256(orjson.dumps(body)).hexdigest()[:20]
        model = body.get("model", "echo")
        if not body.get("stream"):
            return LocalReply(
                orjson.dumps(
                    {
                        "id": completion_id,
                        "object": "chat.completion",
                        "created": created,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text, "refusal": None},
                                "finish_reason": finish,
                                "logprobs": None,
                            }
                        ],
                        "usage": usage,
                        "system_fingerprint": None,
                    }
                )
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict, finish_reason: str | None = None, **extra) -> bytes:
            data = {
                "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            }  # fmt: skip
            if include_usage:
                data["usage"] = None
            data.update(extra)
            return encode(None, data)

        words = text.split(" ")
        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": word + (" " if i < len(words) - 1 else "")}) for i, word in enumerate(words)]
        chunks.append(chunk({}, finish))
        if include_usage:
            chunks.append(chunk({}, None, choices=[], usage=usage))
        chunks.append(encode(None, "[DONE]"))
        return LocalReply(chunks, content_type="text/event-stream")

    async def embeddings(self, body: dict) -> LocalReply:
        inputs = body.get("input")
        items = [inputs] if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)) else inputs or []
        dimensions = body.get("dimensions") or 8
        data, tokens = [], 0
        for index, item in enumerate(items):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            tokens += estimate_text_tokens(text) if isinstance(item, str) else len(item)
            digest = hashlib.sha256(text.encode()).digest() * (dimensions // 32 + 1)
            vector = [round((byte - 127.5) / 127.5, 6) for byte in digest[:dimensions]]
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return LocalReply(orjson.dumps({"object": "list", "data": data, "model": body.get("model"), "usage": usage}))

    async def images(self, body: dict) -> LocalReply:
        count = body.get("n") or 1
        image = base64.b64encode(_PNG_1X1).decode()
        data = [{"b64_json": image, "revised_prompt": body.get("prompt", "")} for _ in range(count)]
        return LocalReply(orjson.dumps({"created": int(time.time()), "data": data}))

    async def speech(self, body: dict) -> LocalReply:
        seconds = max(1, len(body.get("input") or "") // 15)
        return LocalReply(_silent_wav(seconds), content_type="audio/wav")

    async def transcription(self, fields: dict[str, str], file: tuple[str, bytes, str]) -> LocalReply:
        filename, content, _ = file
        seconds = max(1, -(-len(content) // 16000))
        text = f"Echo transcription of {filename} ({len(content)} bytes)."
        if fields.get("response_format") == "text":
            return LocalReply(text.encode(), content_type="text/plain")
        return LocalReply(orjson.dumps({"text": text, "usage": {"type": "duration", "seconds": seconds}}))


def _silent_wav(seconds: int, rate: int = 8000) -> bytes:
    frames = b"\x80" * (rate * seconds)  # 8-bit unsigned PCM silence
    header = b"RIFF" + struct.pack("<I", 36 + len(frames)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, rate, rate, 1, 8) + b"data" + struct.pack("<I", len(frames))
    return header + frames
