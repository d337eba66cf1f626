"""Metrics, the request log, traces and probes (issue 17, ruapi/observability.py, ruapi/lifecycle.py)."""

import orjson
import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from billing.models import UsageEvent
from proxy.tests.reliability.faults import GatewayProcess, database_url, wait_for
from ruapi import lifecycle, observability

pytestmark = [pytest.mark.integration]


def samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def total(found: list, name: str, **labels) -> float:
    return sum(s.value for s in found if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_from_a_two_worker_server_count_every_request_and_the_log_has_one_line_each(gateway, tmp_path):
    import anthropic
    import httpx
    import openai

    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    server = GatewayProcess(tmp_path / "gateway.log", workers=2, env={
        "DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL or "",
        "PROMETHEUS_MULTIPROC_DIR": str(prometheus_dir), "RUAPI_REQUEST_LOG": "1"}).wait_ready()  # fmt: skip
    try:
        # given: traffic of both protocols, streams, and one invalid key
        request_ids = []
        with httpx.Client(timeout=30, headers={"Connection": "close"}) as http:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key=gateway.tenant.secret, max_retries=0,
                                   default_headers={"Connection": "close"})  # fmt: skip
            for _ in range(4):
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-test", max_tokens=5, messages=[{"role": "user", "content": "count me"}])
                request_ids.append(raw.headers["x-request-id"])
            for _ in range(2):
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-test", max_tokens=5, stream=True, stream_options={"include_usage": True},
                    messages=[{"role": "user", "content": "stream me"}])
                list(raw.parse())
                request_ids.append(raw.headers["x-request-id"])
            claude = anthropic.Anthropic(base_url=server.url, api_key=gateway.tenant.secret, max_retries=0,
                                         default_headers={"Connection": "close"})  # fmt: skip
            for _ in range(2):
                raw = claude.messages.with_raw_response.create(
                    model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "and me"}])
                request_ids.append(raw.headers["request-id"])
            refused = http.post(server.url + "/v1/chat/completions", headers={"Authorization": "Bearer sk-ru-wrong"},
                                json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]})  # fmt: skip
            assert refused.status_code == 401
            # when
            scraped = http.get(server.url + "/metrics")
        assert scraped.status_code == 200
        found = samples(scraped.text)
        # then: the counts are exact, summed over both workers
        assert total(found, "ruapi_requests_total", endpoint="chat.completions", status="200") == 6
        assert total(found, "ruapi_requests_total", endpoint="messages", status="200") == 2
        assert total(found, "ruapi_requests_total", status="401") == 1
        assert total(found, "ruapi_admission_refusals_total", status="401") == 1
        assert total(found, "ruapi_time_to_first_token_seconds_count", endpoint="chat.completions") == 2
        assert total(found, "ruapi_gateway_overhead_seconds_count") == 9
        assert total(found, "ruapi_request_duration_seconds_count", model="claude-test") == 2
        events = list(UsageEvent.objects.filter(org_id=gateway.tenant.org.id))
        assert len(events) == 8
        for model in ("gpt-test", "claude-test"):
            mine = [e for e in events if e.model == model]
            assert total(found, "ruapi_tokens_total", model=model, kind="output") == sum(e.output_tokens for e in mine)
            assert total(found, "ruapi_tokens_total", model=model, kind="input") == sum(e.input_tokens for e in mine)
            assert total(found, "ruapi_cost_usd_total", model=model) == pytest.approx(
                sum(e.cost_nanos for e in mine) / 1e9, abs=1e-9)
        assert total(found, "ruapi_holds_pending") == 0
        # the batched ledger writer's queues were used and are empty again
        assert {s.labels["kind"] for s in found if s.name == "ruapi_ledger_queue_depth"} == {"holds", "settlements"}
        assert total(found, "ruapi_ledger_queue_depth") == 0
        # and: one JSON line per request in the log, with the figures and never the key
        log = server.log.read_text()
        lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert sorted(line["request_id"] for line in lines if line["status"] == 200) == sorted(request_ids)
        assert len([line for line in lines if line["status"] == 401]) == 1
        by_id = {line["request_id"]: line for line in lines}
        for event in events:
            line = by_id[event.request_id]
            assert (line["model"], line["org_id"], line["output_tokens"]) == (
                event.model, gateway.tenant.org.id, event.output_tokens)
            assert line["key_prefix"] == gateway.tenant.api_key.prefix
            assert line["cost_usd"] == f"{event.cost_nanos / 1e9:.9f}"
            assert line["overhead_ms"] >= 0 and line["upstream_ms"] >= 0
        assert gateway.tenant.secret not in log and "sk-ru-wrong" not in log
        assert gateway.mock.api_key not in log
    finally:
        server.stop()


@pytest.mark.parametrize(("_case", "client", "headers", "token", "allowed"), [
    ("loopback v4", "127.0.0.1", [], "", True),
    ("loopback v6", "::1", [], "", True),
    ("remote, no token configured", "10.1.2.3", [(b"authorization", b"Bearer x")], "", False),
    ("remote, right token", "10.1.2.3", [(b"authorization", b"Bearer s3cret")], "s3cret", True),
    ("remote, wrong token", "10.1.2.3", [(b"authorization", b"Bearer nope")], "s3cret", False),
    ("remote, no header", "10.1.2.3", [], "s3cret", False),
])  # fmt: skip
def test_metrics_are_open_on_loopback_and_need_the_token_elsewhere(_case, client, headers, token, allowed):
    assert observability.metrics_allowed({"client": (client, 1234), "headers": headers}, token) is allowed


def test_a_request_and_its_upstream_attempt_are_traced_with_genai_attributes(gateway):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    observability.tracing.install(exporter, simple=True)
    try:
        raw = gateway.openai().chat.completions.with_raw_response.create(
            model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "a secret prompt"}])
    finally:
        observability.tracing.uninstall()
    event = wait_for(lambda: UsageEvent.objects.filter(org_id=gateway.tenant.org.id).first(), 5, "usage event")
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server, attempt = spans["POST chat.completions"], spans["upstream attempt"]
    assert attempt.parent.span_id == server.context.span_id
    assert server.attributes["ruapi.request_id"] == raw.headers["x-request-id"]
    assert server.attributes["gen_ai.request.model"] == "claude-test"
    assert server.attributes["gen_ai.response.model"] == "claude-upstream-1"
    assert server.attributes["gen_ai.usage.output_tokens"] == event.output_tokens
    assert server.attributes["ruapi.cost_usd"] == pytest.approx(event.cost_nanos / 1e9)
    assert attempt.attributes["gen_ai.provider.name"] == "anthropic"
    values = " ".join(str(v) for span in exporter.get_finished_spans() for v in span.attributes.values())
    assert "secret prompt" not in values and gateway.tenant.secret not in values


def test_probes_and_readiness_during_a_drain(gateway):
    import httpx

    base = gateway.server.url
    assert httpx.get(base + "/livez").status_code == 200
    assert httpx.get(base + "/readyz").json() == {"status": "ready"}
    try:
        lifecycle.drain_begin()
        assert httpx.get(base + "/readyz").status_code == 503
        assert httpx.get(base + "/livez").status_code == 200
    finally:
        lifecycle.reset()
    assert httpx.get(base + "/readyz").status_code == 200


def test_a_drain_skips_loops_that_have_ended_and_still_arms_the_live_ones():
    """A process that ran servers (or test loops) before keeps their registrations: a drain must not
    fail on a closed loop, or the process would be left marked draining with nothing armed."""
    import asyncio

    ended = asyncio.new_event_loop()
    ended.run_until_complete(_register())
    ended.close()
    live = asyncio.new_event_loop()
    future = live.run_until_complete(_register())
    try:
        with override_grace(0.0):
            lifecycle.drain_begin()
        live.run_until_complete(asyncio.wait_for(asyncio.shield(future), 2))
        assert lifecycle.is_draining() and future.done()
        assert all(not loop.is_closed() for loop, _ in lifecycle._deadlines.values())
    finally:
        lifecycle.reset()
        live.close()
    assert not lifecycle.is_draining()


async def _register():
    return lifecycle.grace_over()


def override_grace(seconds: float):
    from django.test import override_settings

    return override_settings(RUAPI_SHUTDOWN_GRACE_SECONDS=seconds)


def test_a_workers_start_up_heap_is_frozen_out_of_the_collector(gateway):
    """The live gateway went through the lifespan start-up: its start-up objects sit in the permanent
    generation (gc.freeze), so full collections during requests do not walk them."""
    import gc

    assert gc.get_freeze_count() > 10_000
