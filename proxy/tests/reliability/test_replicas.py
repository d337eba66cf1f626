"""Several gateway replicas sharing Postgres and Redis (issue 17).

Three gateway processes (the production server: uvicorn + ruapi.server.GuardedHttpToolsProtocol)
behind a small round-robin TCP load balancer on loopback, on the test database and the test Redis:
- a route's concurrency cap and RPM limit hold globally, with exact counts;
- a circuit opened by failures seen on one replica routes the others away within a second;
- a rolling restart (SIGTERM one replica at a time, under streaming load) drops no request and
  leaves every request billed once, no hold pending and the ledger reconciled;
- a stream still running when a replica's grace period ends gets its protocol's error event, is
  billed for what it produced and leaves no hold.
"""

import asyncio
import itertools
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.conf import settings

from billing.models import Hold, UsageEvent
from proxy.tests.mock_upstream import Script
from proxy.tests.reliability.faults import (
    FULL,
    MIX,
    Clients,
    GatewayProcess,
    SlowMockUpstream,
    assert_billed_exactly_once,
    assert_ledger_equals_balance,
    database_url,
    one_request,
    wait_for,
)

pytestmark = [pytest.mark.integration]

SERVER_ARGS = ("--http", "ruapi.server:GuardedHttpToolsProtocol", "--timeout-graceful-shutdown", "10")


class LoadBalancer:
    """Round-robin TCP proxy on loopback; a backend refusing the connection is skipped (as any LB does)."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = list(backends)
        self.turn = itertools.count()
        self.loop = asyncio.new_event_loop()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lb", daemon=True)
        self.thread.start()
        self.ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()

    async def _serve(self, reader, writer) -> None:
        upstream = None
        for _ in range(len(self.backends) * 2):
            port = self.backends[next(self.turn) % len(self.backends)]
            try:
                upstream = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream

        async def pipe(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def start_replica(tmp_path, name: str, **env) -> GatewayProcess:
    full_env = {"DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL, "RUAPI_SHUTDOWN_GRACE_SECONDS": "4",
                "RUAPI_ROUTE_FAILURE_THRESHOLD": "3", "RUAPI_ROUTE_COOLDOWN_SECONDS": "30", **env}  # fmt: skip
    return GatewayProcess(tmp_path / f"{name}.log", env=full_env, extra_args=SERVER_ARGS)


@pytest.fixture
def replicas(gateway, tmp_path):
    if not settings.REDIS_URL:
        pytest.skip("replicas share state through Redis (TEST_REDIS_URL)")
    processes = [start_replica(tmp_path, f"replica-{i}") for i in range(3)]
    for process in processes:
        process.wait_ready()
    balancer = LoadBalancer([p.port for p in processes])
    try:
        yield gateway, processes, balancer
    finally:
        balancer.close()
        for process in processes:
            process.kill()


def chat(base_url: str, secret: str, model: str = "gpt-test", **extra) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/chat/completions", headers={"Authorization": f"Bearer {secret}",
                      "Connection": "close"}, json={"model": model, "max_tokens": 5,
                      "messages": [{"role": "user", "content": "hi"}], **extra}, timeout=30)  # fmt: skip


def set_route(upstream_model: str, **fields) -> None:
    from catalog.models import Route
    from catalog.services import catalog_changed

    Route.objects.filter(upstream_model=upstream_model).update(**fields)
    catalog_changed()


def test_a_route_concurrency_cap_holds_across_replicas(replicas):
    gateway, processes, _balancer = replicas
    set_route("gpt-upstream-1", max_concurrency=2)
    for _ in range(9):
        gateway.mock.enqueue("/v1/chat/completions", Script(first_byte_delay=2.0,
                             json={"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-upstream-1",
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                                "finish_reason": "stop"}],
                                   "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}))  # fmt: skip
    time.sleep(1.5)  # every replica's catalog sees the cap (version check ≤ 1 s)
    # when: nine concurrent requests, three per replica, each held 2 s by the upstream
    with ThreadPoolExecutor(9) as pool:
        answers = list(pool.map(lambda i: chat(f"http://127.0.0.1:{processes[i % 3].port}", gateway.tenant.secret),
                                range(9)))  # fmt: skip
    # then: exactly the cap was served, globally; the rest were told to retry
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200] + [429] * 7, [a.text for a in answers]
    assert len([r for r in gateway.mock.requests if r.path == "/v1/chat/completions"]) == 2


def test_a_route_rpm_limit_holds_across_replicas(replicas):
    gateway, _processes, balancer = replicas
    set_route("gpt-upstream-1", rpm_limit=5)
    time.sleep(1.5)
    answers = [chat(balancer.url, gateway.tenant.secret) for _ in range(12)]  # round-robin over the three
    assert [a.status_code for a in answers].count(200) == 5
    assert len([r for r in gateway.mock.requests if r.path == "/v1/chat/completions"]) == 5


def test_a_circuit_opened_on_one_replica_routes_the_others_away(replicas):
    from catalog.models import Model, Route

    gateway, processes, _balancer = replicas
    # given: gpt-test has a second route (the Anthropic upstream) after its first
    model = Model.objects.get(name="gpt-test")
    anthropic_route = Route.objects.get(model__name="claude-test")
    Route.objects.create(model=model, provider=anthropic_route.provider, upstream_model="claude-fallback",
                         priority=2, weight=1)  # fmt: skip
    set_route("gpt-upstream-1", priority=1)
    time.sleep(1.5)
    for _ in range(3):
        gateway.mock.enqueue("/v1/chat/completions", Script.error(500))
    # when: three failures seen by replica 0 only (each request falls back and is served)
    for _ in range(3):
        assert chat(f"http://127.0.0.1:{processes[0].port}", gateway.tenant.secret).status_code == 200
    time.sleep(1.0)
    gateway.mock.requests.clear()
    # then: replicas 1 and 2 no longer try the failing route first
    for process in processes[1:]:
        for _ in range(2):
            response = chat(f"http://127.0.0.1:{process.port}", gateway.tenant.secret)
            assert response.status_code == 200
            assert response.headers["x-ruapi-attempts"] == "1"
    assert [r.path for r in gateway.mock.requests] == ["/v1/messages"] * 4


@pytest.fixture
def slow_replicas(gateway, tmp_path):
    """The same three replicas, but with an upstream whose answers take ~1 s (streams in flight)."""
    if not settings.REDIS_URL:
        pytest.skip("replicas share state through Redis (TEST_REDIS_URL)")
    from catalog.services import catalog_load
    from catalog.snapshot import catalog_invalidate
    from conftest import mock_catalog

    with SlowMockUpstream(first_byte_delay=0.1, chunk_delay=0.1) as slow:
        catalog_load(mock_catalog(slow))
        catalog_invalidate()
        processes = [start_replica(tmp_path, f"replica-{i}") for i in range(3)]
        for process in processes:
            process.wait_ready()
        balancer = LoadBalancer([p.port for p in processes])
        try:
            yield gateway, processes, balancer, slow
        finally:
            balancer.close()
            for process in processes:
                process.kill()


def test_a_rolling_restart_drops_no_request(slow_replicas, tmp_path):
    gateway, processes, balancer, _slow = slow_replicas
    outcomes, stop = [], threading.Event()
    lock = threading.Lock()

    def client(index: int) -> None:
        clients = Clients(balancer.url, gateway.tenant.secret, timeout=30)
        clients.openai = clients.openai.with_options(default_headers={"Connection": "close"})
        clients.anthropic = clients.anthropic.with_options(default_headers={"Connection": "close"})
        try:
            for turn in itertools.count(index):
                if stop.is_set():
                    return
                outcome = one_request(clients, *MIX[turn % len(MIX)])
                with lock:
                    outcomes.append(outcome)
        finally:
            clients.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    # when: each replica in turn gets SIGTERM, exits by itself, and is replaced by a new one
    for index, old in enumerate(list(processes)):
        old.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the SIGTERM it handled once it has shut down: -15 is its clean exit
        assert old.process.wait(timeout=20) in (0, -signal.SIGTERM), old.log_tail()
        assert "Traceback" not in old.log_tail(20000), old.log_tail()
        new = start_replica(tmp_path, f"replacement-{index}").wait_ready()
        processes[index] = new
        balancer.backends[index] = new.port
        time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join(60)
    # then: every request was served in full, billed once; nothing pending; ledger = balance
    assert len(outcomes) > 30
    assert [o for o in outcomes if o.kind != FULL] == []
    assert_billed_exactly_once(gateway.tenant.org.id, outcomes)
    wait_for(lambda: not Hold.objects.filter(status=Hold.Status.PENDING).exists(), 10, "no hold pending")
    assert_ledger_equals_balance()


def test_a_stream_past_the_grace_period_ends_in_its_error_event_and_is_billed(gateway, tmp_path):
    if not settings.REDIS_URL:
        pytest.skip("Postgres + Redis tier")
    with SlowMockUpstream(first_byte_delay=0.05, chunk_delay=1.0) as slow:
        from catalog.services import catalog_load
        from catalog.snapshot import catalog_invalidate
        from conftest import mock_catalog

        catalog_load(mock_catalog(slow))
        catalog_invalidate()
        replica = start_replica(tmp_path, "draining", RUAPI_SHUTDOWN_GRACE_SECONDS="2").wait_ready()
        try:
            events: list[bytes] = []
            headers = {"Authorization": f"Bearer {gateway.tenant.secret}"}
            body = {"model": "gpt-test", "stream": True, "max_tokens": 200,
                    "messages": [{"role": "user", "content": " ".join(["word"] * 60)}]}  # fmt: skip
            with httpx.stream("POST", f"{replica.url}/v1/chat/completions", headers=headers, json=body,
                              timeout=30) as response:  # fmt: skip
                lines = response.iter_lines()
                events.append(next(lines).encode())
                assert httpx.get(f"{replica.url}/readyz").status_code == 200
                replica.process.send_signal(signal.SIGTERM)
                time.sleep(0.3)
                events.extend(line.encode() for line in lines)
            assert replica.process.wait(timeout=20) in (0, -signal.SIGTERM), replica.log_tail()
        finally:
            replica.kill()
    data = [e for e in events if e.startswith(b"data: ")]
    assert b"[DONE]" not in data[-1]
    assert b'"error"' in data[-1] and b"restarting" in data[-1]
    event = wait_for(lambda: UsageEvent.objects.filter(org_id=gateway.tenant.org.id).first(), 10, "usage event")
    assert event.output_tokens > 0 and event.cost_nanos > 0
    assert not Hold.objects.filter(status=Hold.Status.PENDING).exists()
    assert_ledger_equals_balance()
