"""HTTP responses of the public API: JSON, errors in the caller's protocol shape, common headers."""

import time
import uuid
from dataclasses import dataclass, field

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from billing.money import nanos_to_usd
from proxy.translate.errors import ErrorKind, GatewayError, anthropic_error_body, openai_error_body

OPENAI = "openai"
ANTHROPIC = "anthropic"


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


@dataclass
class Call:
    """Per-request bookkeeping shared by the endpoint handlers."""

    request: HttpRequest
    protocol: str  # the client's protocol: "openai" | "anthropic"
    endpoint: str
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)
    upstream_seconds: float = 0.0  # time spent waiting on the upstream (excluded from overhead)
    extra_headers: dict[str, str] = field(default_factory=dict)  # e.g. x-ratelimit-* from admission

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    def overhead_ms(self) -> float:
        return max(0.0, (time.perf_counter() - self.started - self.upstream_seconds) * 1000)

    def headers(self, response: HttpResponse, *, cost_nanos: int | None = None) -> HttpResponse:
        response["x-request-id"] = self.request_id
        response["request-id"] = self.request_id
        response["x-ruapi-overhead-ms"] = f"{self.overhead_ms():.2f}"
        for name, value in self.extra_headers.items():
            response[name] = value
        if cost_nanos is not None:
            response["x-ruapi-cost-usd"] = f"{nanos_to_usd(cost_nanos).normalize():f}"
        return response


def json_response(data: dict, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json")


def error_response(call: Call, error: GatewayError) -> HttpResponse:
    """The error in the client's protocol shape with its status and retry hints (PROTOCOLS §5)."""
    body = anthropic_error_body(error, call.request_id) if call.protocol == ANTHROPIC else openai_error_body(error)
    response = call.headers(json_response(body, status=error.status_for(call.protocol)))
    if error.retry_after is not None:
        response["retry-after"] = str(error.retry_after)
    elif error.kind in (ErrorKind.RATE_LIMIT, ErrorKind.OVERLOADED):
        response["retry-after"] = str(settings.RUAPI_DEFAULT_RETRY_AFTER)
    if error.should_retry is not None:
        response["x-should-retry"] = "true" if error.should_retry else "false"
    return response


def usd_number(cost_nanos: int) -> orjson.Fragment:
    """`usage.cost` as a JSON number written as a plain decimal, exact: 0.0000075, never 7.5e-06 (a float
    would be printed in exponent form below 1e-4). orjson writes a Fragment as is, in bodies and stream
    chunks alike (proxy/sse.py); SDKs still read it as a number. Same figure as x-ruapi-cost-usd."""
    return orjson.Fragment(f"{nanos_to_usd(cost_nanos).normalize():f}".encode())
