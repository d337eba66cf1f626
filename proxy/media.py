"""The OpenAI-only endpoints: embeddings, image generation, audio transcription and speech."""

import io
import math
import time
from collections.abc import AsyncIterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from billing.money import TokenCounts, TokenPrices, cost_for, unit_cost
from catalog.snapshot import RouteSpec
from proxy import metering
from proxy.auth import authenticate
from proxy.catalog import resolve_model
from proxy.exchange import Exchange
from proxy.requests import invalid, read_json_body
from proxy.responses import OPENAI, Call, error_response, json_response, usd_number
from proxy.translate.errors import ErrorKind, GatewayError
from proxy.translate.usage import Usage, bound_text_tokens, estimate_text_tokens
from proxy.upstreams import upstream_for

EMBEDDING_FIELDS = frozenset({"input", "encoding_format", "dimensions", "user"})
IMAGE_FIELDS = frozenset(
    {"prompt", "n", "size", "quality", "response_format", "style", "background", "output_format",
     "output_compression", "moderation", "user"}
)  # fmt: skip
SPEECH_FIELDS = frozenset({"input", "voice", "response_format", "speed", "instructions", "stream_format"})
TRANSCRIPTION_FIELDS = frozenset(
    {
        "language",
        "prompt",
        "response_format",
        "temperature",
        "timestamp_granularities[]",
        "include[]",
        "chunking_strategy",
    }
)
MAX_IMAGES = 10
# What OpenAI's images API accepts over its models (dall-e-2, dall-e-3, gpt-image-1): anything else is a 400
# here, before a hold, as it would be there. `n` and `quality` are billing multipliers (issue 12).
IMAGE_SIZES = frozenset({"auto", "256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "1792x1024", "1024x1792"})
IMAGE_QUALITIES = frozenset({"auto", "low", "medium", "high", "standard", "hd"})
MAX_SPEECH_CHARS = 4096
IMAGE_OUTPUT_TOKEN_RESERVE = 6240  # largest gpt-image output per image (1536px, high): held, then settled
# Transcription holds (issue 12): the audio's duration read from its container (mutagen), else the most
# seconds its bytes can hold: 750 bytes per second is 6 kbit/s, Opus's lowest bitrate, the lowest of the
# codecs OpenAI accepts in practice. The hold adds AUDIO_DURATION_SLACK_SECONDS to a parsed duration.
AUDIO_MIN_BYTES_PER_SECOND = 750
AUDIO_DURATION_SLACK_SECONDS = 1
AUDIO_TYPICAL_BYTES_PER_SECOND = 16000  # 128 kbit/s: the estimate when the upstream reports no duration


def _require_openai_routes(spec) -> None:
    if not any(route.provider.protocol == OPENAI for route in spec.routes):
        raise GatewayError(ErrorKind.INVALID_REQUEST, f"The model `{spec.name}` has no provider for this endpoint.",
                           param="model")  # fmt: skip


class OpenAIOnlyExchange(Exchange):
    """Forwards to OpenAI-protocol routes only (these endpoints have no Anthropic counterpart)."""

    def routes(self) -> list[RouteSpec]:
        return [route for route in super().routes() if route.provider.protocol == OPENAI]

    def _forward(self, body: dict, fields: frozenset[str], route: RouteSpec) -> dict:
        out = {k: v for k, v in body.items() if k in fields}
        out["model"] = route.upstream_model
        return out

    async def answer(
        self, data: dict, route: RouteSpec, attempts: int, usage: Usage, cost: int, units=0
    ) -> HttpResponse:
        outcome = metering.Outcome(usage=usage, cost_nanos=cost, units=units, route=route, attempts=attempts)
        cost = await self.settle(outcome, overlap=True)
        if "model" in data:
            data["model"] = self.spec.name
        if isinstance(data.get("usage"), dict):
            data["usage"]["cost"] = usd_number(cost)
        return self.call.headers(json_response(data), cost_nanos=cost)


class EmbeddingsExchange(OpenAIOnlyExchange):
    def __init__(self, *args, body: dict, estimate: int) -> None:
        super().__init__(*args)
        self.body = body
        self.estimate = estimate

    def convert(self, route):
        return self._forward(self.body, EMBEDDING_FIELDS, route)

    async def send(self, route, conversion):
        return await upstream_for(route.provider).embeddings(conversion)

    def is_answer(self, data, route):
        return isinstance(data.get("data"), list)

    async def respond(self, reply, route, conversion, attempts):
        data = await self.read_json(reply, route, attempts)
        if data is None:
            return await self.fail(self.unreadable(reply), route=route, attempts=attempts)
        reported = (data.get("usage") or {}).get("prompt_tokens")
        usage = Usage(input_tokens=reported) if isinstance(reported, int) else Usage(self.estimate, estimated=True)
        return await self.answer(data, route, attempts, usage, metering.usage_cost(usage, self.spec.prices))


class ImagesExchange(OpenAIOnlyExchange):
    def __init__(self, *args, body: dict, count: int) -> None:
        super().__init__(*args)
        self.body = body
        self.count = count

    def convert(self, route):
        return self._forward(self.body, IMAGE_FIELDS, route)

    async def send(self, route, conversion):
        return await upstream_for(route.provider).images(conversion)

    async def respond(self, reply, route, conversion, attempts):
        data = await self.read_json(reply, route, attempts)
        if data is None or not isinstance(data.get("data"), list):
            return await self.fail(self.unreadable(reply), route=route, attempts=attempts)
        images = len(data["data"])
        reported = data.get("usage") or {}
        usage = Usage(input_tokens=int(reported.get("input_tokens") or 0),
                      output_tokens=int(reported.get("output_tokens") or 0))  # fmt: skip
        cost = metering.usage_cost(usage, self.spec.prices) + unit_cost(images, self.spec.unit_prices.image_nanos)
        return await self.answer(data, route, attempts, usage, cost, units=images)


class TranscriptionExchange(OpenAIOnlyExchange):
    def __init__(self, *args, fields: dict[str, str], file: tuple[str, bytes, str]) -> None:
        super().__init__(*args)
        self.fields = fields
        self.file = file

    def convert(self, route):
        return {**{k: v for k, v in self.fields.items() if k in TRANSCRIPTION_FIELDS}, "model": route.upstream_model}

    async def send(self, route, conversion):
        return await upstream_for(route.provider).transcription(conversion, self.file)

    async def respond(self, reply, route, conversion, attempts):
        if reply.content_type == "application/json":
            data = await self.read_json(reply, route, attempts)
            if data is None:
                return await self.fail(self.unreadable(reply), route=route, attempts=attempts)
        else:  # response_format text / srt / vtt
            try:
                raw = await reply.read()
            except GatewayError as exc:  # too large, timed out or broken: nothing usable was produced
                return await self.fail(exc, route=route, attempts=attempts)
            self.call.upstream_seconds += time.perf_counter() - reply.headers_at
            data = None
        reported = (data or {}).get("usage") or {}
        usage = Usage()
        if reported.get("type") == "tokens":
            usage = Usage(input_tokens=int(reported.get("input_tokens") or 0),
                          output_tokens=int(reported.get("output_tokens") or 0))  # fmt: skip
        seconds = reported.get("seconds") if reported.get("type") == "duration" else (data or {}).get("duration")
        if not isinstance(seconds, (int, float)):  # text, srt, vtt: the container's duration, else an estimate
            duration = audio_duration_seconds(self.file[1])
            seconds = math.ceil(len(self.file[1]) / AUDIO_TYPICAL_BYTES_PER_SECOND if duration is None else duration)
            usage.estimated = reported.get("type") != "tokens"
        cost = metering.usage_cost(usage, self.spec.prices) + unit_cost(
            seconds, self.spec.unit_prices.audio_minute_nanos, per=60
        )
        if data is not None:
            return await self.answer(data, route, attempts, usage, cost, units=seconds)
        outcome = metering.Outcome(usage=usage, cost_nanos=cost, units=seconds, route=route, attempts=attempts)
        cost = await self.settle(outcome, overlap=True)
        response = HttpResponse(raw, content_type=reply.content_type or "text/plain")
        return self.call.headers(response, cost_nanos=cost)


class SpeechExchange(OpenAIOnlyExchange):
    def __init__(self, *args, body: dict, cost: int) -> None:
        super().__init__(*args)
        self.body = body
        self.cost = cost

    def convert(self, route):
        return self._forward(self.body, SPEECH_FIELDS, route)

    async def send(self, route, conversion):
        return await upstream_for(route.provider).speech(conversion)

    async def respond(self, reply, route, conversion, attempts):
        outcome = metering.Outcome(cost_nanos=self.cost, units=len(self.body["input"]), route=route, attempts=attempts)
        response = StreamingHttpResponse(self._audio(reply, outcome), content_type=reply.content_type or "audio/mpeg")
        return self.call.headers(response, cost_nanos=self.cost)

    async def _audio(self, reply, outcome: metering.Outcome) -> AsyncIterator[bytes]:
        """Relay audio one chunk behind, so the debit is recorded before the last chunk leaves."""
        previous: bytes | None = None
        settled = False
        try:
            try:
                async for chunk in reply.iter_bytes():
                    if previous is not None:
                        yield previous
                    previous = chunk
            except GatewayError as exc:
                outcome.status_code, outcome.error_type = 502, str(exc.kind)
            settled = True
            await self.settle(outcome)
            if previous is not None:
                yield previous
        finally:
            reply.close()
            if not settled:
                outcome.error_type = "client_disconnected"
                await self.settle(outcome)


async def _resolve(key, mode: str, model: object):
    spec = await resolve_model(model, key, mode=mode)
    _require_openai_routes(spec)
    return spec


async def embeddings(request: HttpRequest) -> HttpResponse:
    call = Call(request, OPENAI, endpoint="embeddings")
    try:
        key = await authenticate(request, allow_x_api_key=False)
        body = read_json_body(request)
        spec = await _resolve(key, "embedding", body.get("model"))
        inputs = body.get("input")
        if inputs is None or inputs == "" or inputs == []:
            raise invalid("`input` is required.", "input")
        texts = [inputs] if isinstance(inputs, str) else inputs if isinstance(inputs, list) else None
        if texts is None:
            raise invalid("`input` must be a string or an array.", "input")
        if len(texts) > 2048:
            raise invalid("`input` may hold at most 2048 items.", "input")
        estimate = sum(estimate_text_tokens(t) if isinstance(t, str) else len(t) if isinstance(t, list) else 1
                       for t in texts)  # fmt: skip
        # The hold: a text is at most its UTF-8 bytes in tokens, a token array its length (issue 12).
        bounds = [bound_text_tokens(t) if isinstance(t, str) else len(t) if isinstance(t, list) else 1
                  for t in texts]  # fmt: skip
        if spec.context_window:  # an input longer than the model reads is refused: none is billed more
            bounds = [min(bound, spec.context_window) for bound in bounds]
        reserve = cost_for(TokenCounts(input_tokens=sum(bounds)), spec.prices)
        hold = await metering.hold_open(call, key, reserve, tokens=estimate)
    except GatewayError as exc:
        return error_response(call, exc)
    return await EmbeddingsExchange(call, key, spec, hold, body=body, estimate=estimate).run()


async def images(request: HttpRequest) -> HttpResponse:
    call = Call(request, OPENAI, endpoint="images.generations")
    try:
        key = await authenticate(request, allow_x_api_key=False)
        body = read_json_body(request)
        spec = await _resolve(key, "image", body.get("model"))
        if not isinstance(body.get("prompt"), str) or not body["prompt"].strip():
            raise invalid("`prompt` is required and must be a non-empty string.", "prompt")
        count = body.get("n", 1)
        if count is None:
            count = 1
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_IMAGES:
            raise invalid(f"`n` must be an integer between 1 and {MAX_IMAGES}.", "n")
        for name, accepted in (("size", IMAGE_SIZES), ("quality", IMAGE_QUALITIES)):
            value = body.get(name)
            if value is not None and value not in accepted:
                raise invalid(f"`{name}` must be one of {', '.join(sorted(accepted))}.", name)
        prices = spec.prices
        reserve = cost_for(
            TokenCounts(
                input_tokens=bound_text_tokens(body["prompt"]), output_tokens=count * IMAGE_OUTPUT_TOKEN_RESERVE
            ),
            TokenPrices(
                input_nanos_per_mtok=prices.input_nanos_per_mtok, output_nanos_per_mtok=prices.output_nanos_per_mtok
            ),
        ) + unit_cost(count, spec.unit_prices.image_nanos)
        hold = await metering.hold_open(call, key, reserve, tokens=estimate_text_tokens(body["prompt"]))
    except GatewayError as exc:
        return error_response(call, exc)
    return await ImagesExchange(call, key, spec, hold, body=body, count=count).run()


def audio_seconds_bound(content: bytes) -> int:
    """Most seconds of audio a transcription can be billed for: the duration its container states
    (mutagen: MP3, MP4/M4A, Ogg, FLAC, WAV, ...) plus a second, else the most its bytes can hold at
    AUDIO_MIN_BYTES_PER_SECOND. The money rule (proxy/metering.py) caps the debit at this hold."""
    duration = audio_duration_seconds(content)
    if duration is not None:
        return math.ceil(duration) + AUDIO_DURATION_SLACK_SECONDS
    return max(math.ceil(len(content) / AUDIO_MIN_BYTES_PER_SECOND), 1)


def audio_duration_seconds(content: bytes) -> float | None:
    """The duration an audio file's container states, or None (not parsed, or mutagen missing)."""
    try:
        import mutagen  # pure Python; imported here so a missing package only costs the bytes bound
    except ImportError:
        return None
    try:
        parsed = mutagen.File(io.BytesIO(content))
    except Exception:  # any malformed file: mutagen raises many kinds; the bytes bound applies
        return None
    length = getattr(getattr(parsed, "info", None), "length", None)
    if not isinstance(length, (int, float)) or not math.isfinite(length) or length <= 0:
        return None
    return float(length)


async def transcriptions(request: HttpRequest) -> HttpResponse:
    call = Call(request, OPENAI, endpoint="audio.transcriptions")
    try:
        key = await authenticate(request, allow_x_api_key=False)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.RUAPI_MAX_BODY_BYTES:
            raise GatewayError(ErrorKind.REQUEST_TOO_LARGE, "Request body is too large.")
        if not request.content_type.startswith("multipart/form-data"):
            raise invalid("Send the audio as multipart/form-data with a `file` field.", "file")
        upload = request.FILES.get("file")
        if upload is None:
            raise invalid("`file` is required.", "file")
        spec = await _resolve(key, "transcription", request.POST.get("model"))
        content = upload.read()
        fields = {name: request.POST.get(name) for name in request.POST if name != "model"}
        max_seconds = audio_seconds_bound(content)
        # Token-priced models: audio tokens (50 a second is above any provider's rate), the text
        # prompt's bytes, and 10 output tokens a second (speech is about 3).
        prompt = fields.get("prompt") or ""
        reserve = unit_cost(max_seconds, spec.unit_prices.audio_minute_nanos, per=60) + cost_for(
            TokenCounts(input_tokens=max_seconds * 50 + bound_text_tokens(prompt), output_tokens=max_seconds * 10),
            spec.prices,
        )
        hold = await metering.hold_open(call, key, reserve)
    except GatewayError as exc:
        return error_response(call, exc)
    file = (upload.name or "audio", content, upload.content_type or "application/octet-stream")
    return await TranscriptionExchange(call, key, spec, hold, fields=fields, file=file).run()


async def speech(request: HttpRequest) -> HttpResponse:
    call = Call(request, OPENAI, endpoint="audio.speech")
    try:
        key = await authenticate(request, allow_x_api_key=False)
        body = read_json_body(request)
        spec = await _resolve(key, "speech", body.get("model"))
        text = body.get("input")
        if not isinstance(text, str) or not text:
            raise invalid("`input` is required and must be a non-empty string.", "input")
        if len(text) > MAX_SPEECH_CHARS:
            raise invalid(f"`input` may be at most {MAX_SPEECH_CHARS} characters.", "input")
        if not isinstance(body.get("voice"), (str, dict)):
            raise invalid("`voice` is required.", "voice")
        cost = unit_cost(len(text), spec.unit_prices.character_nanos_per_mchar, per=1_000_000)
        hold = await metering.hold_open(call, key, cost)
    except GatewayError as exc:
        return error_response(call, exc)
    return await SpeechExchange(call, key, spec, hold, body=body, cost=cost).run()
