"""Metrics, the per-request JSON log and traces of the public /v1 API (issue 17).

One ASGI wrapper (`ObservedAPI`) around the /v1 handler sees every request once, whatever became
of it (refused at admission, failed upstream, streamed, cut by the client): it takes the status
from `http.response.start`, the timing from the clock, and the rest from the request's `Call`
(proxy/responses.py), on which metering.settle leaves the usage record it wrote. So the metrics,
the log line and the request span all describe the figures the ledger has, from one place.

- Metrics: prometheus-client. Several uvicorn workers share one registry on disk when
  PROMETHEUS_MULTIPROC_DIR is set (an empty directory per server start; each worker writes its own
  files, /metrics sums them). `GET /metrics` is open to loopback peers; any other peer needs
  `Authorization: Bearer $RUAPI_METRICS_TOKEN` (no token configured: refused).
- Request log: RUAPI_REQUEST_LOG=1 → one JSON line per request on the `ruapi.request` logger
  (ids, organisation, key prefix, model, route, status, tokens, cost, timings). Never a secret, a
  prompt or a completion: only the fields listed in `request_log_line`.
- Traces: OpenTelemetry, off unless RUAPI_OTEL_ENABLED=1 (OTLP/HTTP exporter, configured by the
  standard OTEL_EXPORTER_OTLP_* variables). A span per request and per upstream attempt, GenAI
  semantic conventions (gen_ai.*), the request id as `ruapi.request_id`. When off, the cost is a
  boolean test per request.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from contextlib import contextmanager, nullcontext, suppress
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import GaugeMetricFamily

request_logger = logging.getLogger("ruapi.request")
logger = logging.getLogger(__name__)

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "messages.count_tokens",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
    "/v1/images/generations": "images",
    "/v1/audio/transcriptions": "audio.transcriptions",
    "/v1/audio/speech": "audio.speech",
    "/v1/models": "models",
}

REQUESTS = Counter(
    "ruapi_requests", "Requests to the public API", ["endpoint", "model", "provider", "status"]
)
DURATION = Histogram(
    "ruapi_request_duration_seconds", "Time from request to last byte", ["endpoint", "model", "provider"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
OVERHEAD = Histogram(
    "ruapi_gateway_overhead_seconds", "Time spent in the gateway (upstream wait excluded)", ["endpoint"],
    buckets=OVERHEAD_BUCKETS,
)  # fmt: skip
TTFT = Histogram(
    "ruapi_time_to_first_token_seconds", "Streams: time to the first content byte", ["endpoint", "model"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
TOKENS = Counter("ruapi_tokens", "Tokens billed, by kind", ["model", "kind"])
COST = Counter("ruapi_cost_usd", "Amount debited (USD)", ["model"])
RETRIES = Counter("ruapi_upstream_retries", "Upstream attempts beyond the first", ["provider"])
UPSTREAM_ERRORS = Counter(
    "ruapi_upstream_errors", "Upstream failures counted by the circuit breaker", ["provider", "upstream_model"]
)
BREAKER_OPEN = Gauge(
    "ruapi_route_breaker_open", "1 while this process sees the route's circuit open", ["provider", "upstream_model"],
    multiprocess_mode="livemax",
)  # fmt: skip
ROUTE_CAPPED = Counter(
    "ruapi_route_capped", "Attempts skipped because a route was at its cap", ["provider", "upstream_model"]
)
REFUSALS = Counter(
    "ruapi_admission_refusals", "Requests refused before any upstream call (auth, limits, balance)",
    ["endpoint", "status"],
)  # fmt: skip
RATE_LIMITED = Counter("ruapi_ratelimit_refusals", "Requests refused by a rate limit (429)", ["endpoint"])
OPTIMISTIC_HOLD_REFUSALS = Counter(
    "ruapi_optimistic_hold_refusals",
    "Optimistic holds the database refused after the upstream call had started (402, nothing debited)",
)  # fmt: skip
SETTLEMENTS_LOST = Counter(
    "ruapi_settlements_lost",
    "Answered requests whose settlement, overlapping the answer, could not be committed (not billed; "
    "their holds are released on expiry)",
)  # fmt: skip
DRAINING = Gauge("ruapi_draining", "1 while this process shuts down", multiprocess_mode="livemax")
LEDGER_QUEUE_DEPTH = Gauge(
    "ruapi_ledger_queue_depth", "Holds / settlements queued for the batched ledger writer", ["kind"],
    multiprocess_mode="livesum",
)  # fmt: skip
CELERY_TASKS = Counter("ruapi_celery_tasks", "Celery task outcomes", ["task", "state"])


# -- the figures ---------------------------------------------------------------------------------
def _route_labels(route) -> tuple[str, str]:
    return route.provider.name, route.upstream_model


def breaker_state(route, *, is_open: bool) -> None:
    BREAKER_OPEN.labels(*_route_labels(route)).set(1 if is_open else 0)


def upstream_failure(route) -> None:
    UPSTREAM_ERRORS.labels(*_route_labels(route)).inc()


def route_capped(route) -> None:
    ROUTE_CAPPED.labels(*_route_labels(route)).inc()


def optimistic_hold_refused() -> None:
    OPTIMISTIC_HOLD_REFUSALS.inc()


def settlement_lost() -> None:
    SETTLEMENTS_LOST.inc()


def draining(is_draining: bool) -> None:
    DRAINING.set(1 if is_draining else 0)


def celery_task(name: str, state: str) -> None:
    CELERY_TASKS.labels(name, state).inc()


def endpoint_of(path: str) -> str:
    endpoint = ENDPOINTS.get(path.rstrip("/"))
    if endpoint is not None:
        return endpoint
    if path.startswith("/v1/models/"):
        return "models"
    if path.startswith("/v1/responses/"):
        return "responses.state"
    return "other"


def observe(scope: dict, status: int, seconds: float, headers: dict[bytes, bytes]) -> None:
    """Count one finished request (called once per request by ObservedAPI)."""
    call = scope.get("ruapi.call")
    record = getattr(call, "usage_record", None)
    endpoint = endpoint_of(scope.get("path", ""))
    model = record.model if record is not None else ""
    provider = record.provider if record is not None else ""
    REQUESTS.labels(endpoint, model, provider, str(status)).inc()
    DURATION.labels(endpoint, model, provider).observe(seconds)
    overhead = headers.get(b"x-ruapi-overhead-ms")
    if overhead:
        with suppress(ValueError):
            OVERHEAD.labels(endpoint).observe(float(overhead) / 1000)
    if record is None:
        if status in (401, 402, 403, 429):
            REFUSALS.labels(endpoint, str(status)).inc()
        if status == 429:
            RATE_LIMITED.labels(endpoint).inc()
        return
    if record.ttfb_ms is not None:
        TTFT.labels(endpoint, model).observe(record.ttfb_ms / 1000)
    for kind in ("input", "output", "cache_read", "cache_write", "reasoning"):
        count = getattr(record, f"{kind}_tokens", 0)
        if count:
            TOKENS.labels(model, kind).inc(count)
    if record.cost_nanos:
        COST.labels(model).inc(record.cost_nanos / 1e9)
    if record.attempts > 1:
        RETRIES.labels(provider).inc(record.attempts - 1)


class PendingHolds:
    """`ruapi_holds_pending`: read from the database at scrape time, by the process that serves it."""

    def collect(self):
        from billing.models import Hold

        family = GaugeMetricFamily("ruapi_holds_pending", "Holds not yet settled or released")
        try:
            family.add_metric([], Hold.objects.filter(status=Hold.Status.PENDING).count())
        except Exception as exc:  # the database is down: say nothing rather than fail the scrape
            logger.warning("metrics: could not count pending holds: %s", exc)
            return []
        return [family]


def render_metrics() -> bytes:
    """The exposition text: every worker's figures (multiprocess) plus the scrape-time gauges."""
    registry = CollectorRegistry()
    if MULTIPROCESS:
        prometheus_multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    output = generate_latest(registry)
    extra = CollectorRegistry()
    extra.register(PendingHolds())
    return output + generate_latest(extra)


def process_exited() -> None:
    """A worker is going away: its live gauges stop counting (multiprocess mode)."""
    if MULTIPROCESS:
        prometheus_multiprocess.mark_process_dead(os.getpid())


def metrics_allowed(scope: dict, token: str) -> bool:
    client = scope.get("client") or ("", 0)
    try:
        if ipaddress.ip_address(client[0]).is_loopback:
            return True
    except ValueError:
        pass
    if not token:
        return False
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, presented = value.decode("latin-1").partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip(), token)
    return False


# -- the request log -----------------------------------------------------------------------------
def request_log_line(scope: dict, status: int, seconds: float, headers: dict[bytes, bytes]) -> bytes:
    """One JSON object per request: ids, figures and timings only (never a key, prompt or answer)."""
    call = scope.get("ruapi.call")
    record = getattr(call, "usage_record", None)
    line: dict[str, Any] = {
        "ts": round(time.time(), 3),
        "request_id": getattr(call, "request_id", None) or headers.get(b"x-request-id", b"").decode() or None,
        "method": scope.get("method"),
        "endpoint": endpoint_of(scope.get("path", "")),
        "status": status,
        "latency_ms": round(seconds * 1000, 2),
    }
    overhead = headers.get(b"x-ruapi-overhead-ms")
    if overhead:
        line["overhead_ms"] = float(overhead)
    if call is not None:
        line["upstream_ms"] = round(call.upstream_seconds * 1000, 2)
        line["key_prefix"] = getattr(call, "key_prefix", "") or None
    if record is not None:
        line.update(
            org_id=record.org_id,
            api_key_id=record.api_key_id,
            model=record.model,
            provider=record.provider,
            upstream_model=record.upstream_model,
            stream=record.is_stream,
            error=record.error_type or None,
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            cache_read_tokens=record.cache_read_tokens,
            cache_write_tokens=record.cache_write_tokens,
            reasoning_tokens=record.reasoning_tokens,
            estimated=record.is_estimated,
            cost_usd=f"{record.cost_nanos / 1e9:.9f}",
            attempts=record.attempts,
            ttfb_ms=record.ttfb_ms,
        )
    return orjson.dumps(line)


# -- traces --------------------------------------------------------------------------------------
class Tracing:
    """OpenTelemetry, set up on first use when enabled (or by `install` with a given exporter)."""

    def __init__(self) -> None:
        self.tracer = None
        self.enabled: bool | None = None  # None: not decided yet (settings are read lazily)

    def install(self, exporter=None, *, simple: bool = False) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        service = os.environ.get("OTEL_SERVICE_NAME", "ruapi")
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter) if simple else BatchSpanProcessor(exporter))
        self.tracer = provider.get_tracer("ruapi")
        self.enabled = True

    def uninstall(self) -> None:
        self.tracer, self.enabled = None, False

    def active(self) -> bool:
        if self.enabled is None:
            from django.conf import settings

            if getattr(settings, "RUAPI_OTEL_ENABLED", False):
                self.install()
            else:
                self.enabled = False
        return bool(self.enabled)


tracing = Tracing()


def _start_request_span(scope: dict):
    from opentelemetry import context, trace

    span = tracing.tracer.start_span(
        f"{scope.get('method', '')} {endpoint_of(scope.get('path', ''))}", kind=trace.SpanKind.SERVER
    )
    span.set_attribute("http.request.method", scope.get("method", ""))
    span.set_attribute("url.path", scope.get("path", ""))
    token = context.attach(trace.set_span_in_context(span))
    return span, token


def _end_request_span(span, token, scope: dict, status: int) -> None:
    from opentelemetry import context, trace

    call = scope.get("ruapi.call")
    record = getattr(call, "usage_record", None)
    span.set_attribute("http.response.status_code", status)
    if call is not None:
        span.set_attribute("ruapi.request_id", call.request_id)
    if record is not None:
        operation = "embeddings" if record.endpoint == "embeddings" else "chat"
        span.set_attribute("gen_ai.operation.name", operation)
        span.set_attribute("gen_ai.request.model", record.model)
        span.set_attribute("gen_ai.response.model", record.upstream_model)
        span.set_attribute("gen_ai.provider.name", record.upstream_protocol or record.provider)
        span.set_attribute("gen_ai.usage.input_tokens", record.input_tokens + record.cache_read_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", record.output_tokens)
        span.set_attribute("ruapi.provider", record.provider)
        span.set_attribute("ruapi.org_id", record.org_id)
        span.set_attribute("ruapi.cost_usd", record.cost_nanos / 1e9)
        span.set_attribute("ruapi.attempts", record.attempts)
    if status >= 500:
        span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.end()
    context.detach(token)


@contextmanager
def _attempt_span(route, attempt: int):
    from opentelemetry import trace

    with tracing.tracer.start_as_current_span("upstream attempt", kind=trace.SpanKind.CLIENT) as span:
        span.set_attribute("gen_ai.provider.name", route.provider.protocol)
        span.set_attribute("gen_ai.response.model", route.upstream_model)
        span.set_attribute("ruapi.provider", route.provider.name)
        span.set_attribute("ruapi.attempt", attempt)
        yield span


def attempt_span(route, attempt: int):
    """A span around one upstream attempt (a no-op context when tracing is off)."""
    if not tracing.active():
        return nullcontext()
    return _attempt_span(route, attempt)


# -- the wrapper ---------------------------------------------------------------------------------
class ObservedAPI:
    """Wraps the /v1 ASGI app: metrics, the request log and the request span for every request."""

    def __init__(self, app) -> None:
        self.app = app
        self._log = None

    def log_enabled(self) -> bool:
        if self._log is None:
            from django.conf import settings

            self._log = bool(getattr(settings, "RUAPI_REQUEST_LOG", False))
        return self._log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 0
        response_headers: dict[bytes, bytes] = {}

        async def observed_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers") or ():
                    if name in (b"x-ruapi-overhead-ms", b"x-request-id"):
                        response_headers[name] = value
            await send(message)

        span = token = None
        if tracing.active():
            span, token = _start_request_span(scope)
        try:
            await self.app(scope, receive, observed_send)
        finally:
            seconds = time.perf_counter() - started
            try:
                observe(scope, status or 499, seconds, response_headers)
                if self.log_enabled():
                    request_logger.info(request_log_line(scope, status or 499, seconds, response_headers).decode())
                if span is not None:
                    _end_request_span(span, token, scope, status or 499)
            except Exception:  # observability must never fail a request
                logger.exception("could not observe request")
