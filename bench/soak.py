"""Soak (issue 8 item 9, "Load held"): the gateway in its production configuration under a sustained
mixed load, sampled for leaks; writes bench/results/soak.md and soak.json.

    python3 bench/soak.py                             # 300 s, 64 connections (bench/soak.sh starts Postgres/Redis)
    python3 bench/soak.py --duration 180 --concurrency 64 --warmup 30 --interval 5

The servers start exactly as bench/run.py starts them (its `Bench` and `Children`, the same nginx
fake upstream, slow upstream, catalog and uvicorn command line), but on their own ports, database
(`ruapi_soak`), Redis db (13) and directory (bench/var/soak/), so a soak never collides with a
concurrent benchmark run.

The load: CONCURRENCY clients in a closed loop for DURATION seconds, each request's kind drawn at
random (fixed seed) from `KINDS`: non-streaming and streaming chat over both protocols, same- and
cross-protocol, slow streams (20 tokens, 50 ms apart), clients that disconnect after the first
chunk of a slow stream, invalid keys and bad bodies (their 4xx is expected and counted apart).
Every request has a timeout; every target is 127.0.0.1.

Every INTERVAL seconds: RSS and open file descriptors of each gateway process, the gateway's
Postgres connections (pg_stat_activity), Redis clients on db 13 (CLIENT LIST), the gateway's
established TCP connections by peer (its socket inodes matched against /proc/net/tcp), and the
interval's throughput and error rate. At the end: money consistency (ledger == balance, one usage
event per request the client saw complete or cut, no pending hold left or expired) and a verdict
per check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import canned
import procstats
import run
from loadgen import percentile

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
SOAK_VAR = BENCH_DIR / "var" / "soak"
RESULTS_DIR = BENCH_DIR / "results"

# Nothing shared with bench/run.py (ports 18080/18081/18100/18200, ruapi_bench, Redis db 14).
NGINX_PORT = 18480
SLOW_PORT = 18481
GATEWAY_PORT = 18400
DB_NAME = "ruapi_soak"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
ADMIN_DSN = "postgres://postgres@127.0.0.1:5432/postgres"
REDIS_DB = 13
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
PG_PORT, REDIS_PORT = 5432, 6379
POOL_SIZE = int(os.environ.get("DATABASE_POOL_SIZE", "10"))  # ruapi/settings.py's default, per process
HOLD_TTL_S = int(os.environ.get("RUAPI_HOLD_TTL", "3600"))
MAX_TOKENS = 128
SEED = 809
GUESSER_ADDRESS = "127.0.0.2"  # source address of the invalid-key requests (see Load)


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- servers: bench/run.py's, isolated ----------------------------------------------------------------


def isolate_from_bench() -> None:
    """Point run.py's and canned.py's module constants at the soak's own ports, database, Redis db
    and directory (in this process only). Both modules read them when a server is configured or
    started, so `run.Bench` and `run.Children` then start the soak's servers unchanged."""
    run.VAR_DIR = SOAK_VAR
    run.LOG_DIR = SOAK_VAR / "logs"
    run.PGID_FILE = SOAK_VAR / "run" / "pgids"  # bench/soak.sh's cleanup trap reads this one
    run.DATABASE_URL = DATABASE_URL
    run.REDIS_URL = REDIS_URL
    canned.NGINX_PORT = NGINX_PORT
    canned.SLOW_PORT = SLOW_PORT
    canned.RUAPI_PORT = GATEWAY_PORT


BUDGET_CODE = """
import json
import django
django.setup()
from django.conf import settings
pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
pool_size = pool.get("max_size", 1) if isinstance(pool, dict) else 1
try:
    from billing.services import holds_pg as batched
except ImportError:
    ledger = 0
else:
    ledger = 2 * batched.MAX_INFLIGHT if getattr(settings, "RUAPI_BATCHED_LEDGER", True) else 0
print(json.dumps({"pool": pool_size, "ledger_writer": ledger}))
"""


class SoakBench(run.Bench):
    """bench/run.py's server start-up; only what names bench's own files and database is overridden."""

    def start_upstreams(self) -> None:
        paths = canned.write_all(self.upstream, SOAK_VAR)  # run.py writes to bench/var/
        nginx_conf = paths["nginx_conf"]
        if f"{canned.HOST}:{NGINX_PORT} " not in nginx_conf.read_text():
            raise RuntimeError("the nginx config does not listen on the soak's port")
        log(f"starting nginx (fake upstream) on {canned.HOST}:{NGINX_PORT}")
        proc = self.children.start(
            "nginx", ["nginx", "-p", str(nginx_conf.parent), "-c", str(nginx_conf), "-e",
                      str(nginx_conf.parent / "error.log")],
        )  # fmt: skip
        run.wait_until(lambda: run.port_open(NGINX_PORT), 15, "nginx", proc)
        log(f"starting the slow upstream on {canned.HOST}:{SLOW_PORT}")
        proc = self.children.start(
            "slow-upstream",
            [self.python, str(BENCH_DIR / "slow_upstream.py"), "--port", str(SLOW_PORT),
             "--tokens", str(self.upstream.slow_tokens), "--delay-ms", str(self.upstream.slow_delay_ms)],
        )  # fmt: skip
        run.wait_until(lambda: run.port_open(SLOW_PORT), 15, "slow upstream", proc)

    def ruapi_env(self) -> dict[str, str]:
        env = super().ruapi_env()
        if (env["DATABASE_URL"], env["REDIS_URL"]) != (DATABASE_URL, REDIS_URL):
            raise RuntimeError("the gateway would not run on the soak's own database and Redis db")
        return env

    def prepare_ruapi_database(self, env: dict[str, str]) -> str:
        """A fresh ruapi_soak database and Redis db 13: migrate, catalog, org with credit, key."""
        import psycopg
        import redis

        log(f"creating the {DB_NAME} database (Postgres) and flushing Redis db {REDIS_DB}")
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {DB_NAME}")
        redis.Redis.from_url(REDIS_URL).flushdb()
        log("migrating, loading the catalog, creating the organisation and its key")
        self.manage(env, "migrate", "--no-input", "-v0")
        self.manage(env, "loadcatalog", str(SOAK_VAR / "ruapi-catalog.json"))
        self.manage(env, "createorg", "Soak", "--credit", "1000000")
        return self.manage(env, "createapikey", "Soak", "--name", "soak").strip().splitlines()[-1].strip()

    def manage(self, env: dict[str, str], *argv: str, check: bool = True) -> str:
        result = subprocess.run(
            [self.python, "manage.py", *argv], cwd=self.gateway_dir, env=env, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        if check and result.returncode:
            raise RuntimeError(f"manage.py {' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout + result.stderr

    def connection_budget(self, env: dict[str, str]) -> dict:
        """Postgres connections one gateway process may hold, as the code under test configures them:
        the ORM pool's max_size, plus the batched ledger writer's own connections where it exists
        (billing/services/holds_pg.py: MAX_INFLIGHT per kind, holds and settlements)."""
        result = subprocess.run(
            [self.python, "-c", BUDGET_CODE], cwd=self.gateway_dir, env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        try:
            return json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            log(f"could not read the connection budget ({result.stderr.strip()[-300:]}); assuming the pool's")
            return {"pool": POOL_SIZE, "ledger_writer": 0}

    @property
    def gateway_pid(self) -> int:
        return self.children.procs["ruapi"].pid


# -- the load --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of request. mode: json | stream (read to the end) | disconnect (close the connection
    after the first chunk) | bad_key | bad_body (`expect` is then the expected 4xx)."""

    name: str
    weight: int
    protocol: str  # the client's: openai = POST /v1/chat/completions, anthropic = POST /v1/messages
    model: str
    mode: str
    expect: int = 200
    body: bytes | None = None  # default: canned.request_body for protocol/model/mode

    @property
    def source(self) -> str:
        """The client's source address (the destination is always 127.0.0.1)."""
        return GUESSER_ADDRESS if self.mode == "bad_key" else "127.0.0.1"

    def request_body(self) -> bytes:
        if self.body is not None:
            return self.body
        return canned.request_body(self.protocol, self.model, stream=self.mode != "json", max_tokens=MAX_TOKENS)


KINDS = [
    Kind("openai -> openai json", 16, "openai", "bench-gpt", "json"),
    Kind("openai -> openai stream", 12, "openai", "bench-gpt", "stream"),
    Kind("anthropic -> anthropic json", 10, "anthropic", "bench-claude", "json"),
    Kind("anthropic -> anthropic stream", 8, "anthropic", "bench-claude", "stream"),
    Kind("openai -> anthropic json", 6, "openai", "bench-claude", "json"),
    Kind("openai -> anthropic stream", 5, "openai", "bench-claude", "stream"),
    Kind("anthropic -> openai json", 6, "anthropic", "bench-gpt", "json"),
    Kind("anthropic -> openai stream", 5, "anthropic", "bench-gpt", "stream"),
    Kind("openai -> openai slow stream (1 s)", 5, "openai", "bench-gpt-slow", "stream"),
    Kind("anthropic -> openai slow stream (1 s)", 3, "anthropic", "bench-gpt-slow", "stream"),
    Kind("openai disconnect mid-stream", 3, "openai", "bench-gpt-slow", "disconnect"),
    Kind("anthropic disconnect mid-stream", 2, "anthropic", "bench-gpt-slow", "disconnect"),
    Kind("openai invalid key", 2, "openai", "bench-gpt", "bad_key", 401),
    Kind("anthropic invalid key", 2, "anthropic", "bench-claude", "bad_key", 401),
    Kind("openai bad body: malformed JSON", 2, "openai", "bench-gpt", "bad_body", 400,
         b'{"model": "bench-gpt", "messages": [{"role": "user", "content": "cut'),
    Kind("anthropic bad body: no messages", 2, "anthropic", "bench-claude", "bad_body", 400,
         b'{"model": "bench-claude", "max_tokens": 16}'),
    Kind("openai bad body: unknown model", 1, "openai", "no-such-model", "bad_body", 404,
         canned.request_body("openai", "no-such-model", stream=False, max_tokens=16)),
]  # fmt: skip
OUTCOMES = ("ok", "expected_4xx", "disconnect", "unexpected")


def error_shaped(protocol: str, content: bytes) -> bool:
    """An error body in the caller's protocol shape."""
    try:
        body = json.loads(content)
        if protocol == "anthropic":
            return body["type"] == "error" and isinstance(body["error"]["type"], str)
        return isinstance(body["error"]["message"], str)
    except (ValueError, KeyError, TypeError):
        return False


def full_reply(kind: Kind, content: bytes) -> str:
    """'' for a complete, well-formed 200 reply, else what is wrong with it."""
    if kind.mode == "stream":
        tail = content[-1024:]
        if (b"[DONE]" if kind.protocol == "openai" else b"event: message_stop") not in tail:
            return "incomplete_stream"
        if b"event: error" in content or b'"error"' in content:
            return "stream_error_event"
        return ""
    try:
        body = json.loads(content)
        if kind.protocol == "openai":
            ok = bool(body["choices"][0]["message"]["content"]) and "cost" in body["usage"]
        else:
            ok = body["type"] == "message" and bool(body["content"]) and "cost" in body["usage"]
    except (ValueError, KeyError, TypeError, IndexError):
        ok = False
    return "" if ok else "malformed_json_reply"


@dataclass
class Stats:
    by_kind: defaultdict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    totals: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # "kind: detail" of unexpected outcomes
    latency_ms: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: defaultdict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, kind: Kind, outcome: str, detail: str, status: int, seconds: float) -> None:
        self.by_kind[kind.name][outcome] += 1
        self.statuses[kind.name][str(status)] += 1
        self.totals[outcome] += 1
        if outcome == "unexpected":
            self.errors[f"{kind.name}: {detail}"] += 1
        elif outcome == "ok":
            self.latency_ms[kind.name].append(seconds * 1000)


THROTTLED = (b"too_many_auth_failures", b"Too many invalid API keys")


class Load:
    """The closed-loop mixed load. Requests with an invalid key come from a second loopback source
    address (127.0.0.2): the gateway throttles an address after RUAPI_AUTH_FAIL_LIMIT failed keys
    per window (429, proxy/auththrottle.py), which must not block the valid traffic from 127.0.0.1."""

    def __init__(self, base_url: str, key: str, concurrency: int, timeout: float) -> None:
        if not base_url.startswith("http://127.0.0.1:"):
            raise RuntimeError("load only ever goes to 127.0.0.1")
        self.base_url = base_url
        self.key = key
        self.concurrency = concurrency
        self.timeout = timeout
        self.stats = Stats()
        self.bodies = {kind.name: kind.request_body() for kind in KINDS}

    def headers(self, kind: Kind) -> dict[str, str]:
        key = "sk-ru-" + "0" * 40 if kind.mode == "bad_key" else self.key
        headers = {"Content-Type": "application/json"}
        if kind.protocol == "openai":
            headers["Authorization"] = f"Bearer {key}"
        else:
            headers.update({"x-api-key": key, "anthropic-version": run.ANTHROPIC_VERSION})
        return headers

    async def one(self, session: aiohttp.ClientSession, kind: Kind) -> tuple[str, str, int]:
        """(outcome, detail, HTTP status or 0) of one request of this kind."""
        path = "/v1/chat/completions" if kind.protocol == "openai" else "/v1/messages"
        status = 0
        try:
            async with session.post(self.base_url + path, data=self.bodies[kind.name],
                                    headers=self.headers(kind)) as response:  # fmt: skip
                status = response.status
                if kind.mode == "disconnect":
                    if status != 200:
                        return "unexpected", f"http_{status}", status
                    first = await response.content.readany()
                    response.close()  # drops the connection: the gateway sees the client go away mid-stream
                    return ("disconnect", "", status) if first else ("unexpected", "no_first_chunk", status)
                content = await response.read()
                if kind.mode in ("bad_key", "bad_body"):
                    expected = status == kind.expect or (
                        kind.mode == "bad_key" and status == 429 and any(t in content for t in THROTTLED)
                    )
                    if expected and error_shaped(kind.protocol, content):
                        return "expected_4xx", "", status
                    return "unexpected", f"http_{status}_expected_{kind.expect}", status
                if status != 200:
                    return "unexpected", f"http_{status}", status
                problem = full_reply(kind, content)
                return ("unexpected", problem, status) if problem else ("ok", "", status)
        except TimeoutError:
            return "unexpected", "timeout", status
        except (aiohttp.ClientError, OSError) as exc:
            return "unexpected", type(exc).__name__, status

    async def run(self, duration: float) -> float:
        rng = random.Random(SEED)
        weights = [kind.weight for kind in KINDS]
        deadline = time.monotonic() + duration

        async def client(sessions: dict[str, aiohttp.ClientSession]) -> None:
            while time.monotonic() < deadline:
                kind = rng.choices(KINDS, weights)[0]
                started = time.perf_counter()
                outcome, detail, status = await self.one(sessions[kind.source], kind)
                self.stats.add(kind, outcome, detail, status, time.perf_counter() - started)
                if outcome == "unexpected" and detail != "timeout":
                    await asyncio.sleep(0.05)  # no tight loop against a failing server

        def session(source: str) -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(
                limit=self.concurrency, limit_per_host=self.concurrency, local_addr=(source, 0)
            )
            timeout = aiohttp.ClientTimeout(total=self.timeout, sock_connect=min(10.0, self.timeout))
            return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)

        started = time.monotonic()
        async with session("127.0.0.1") as main, session(GUESSER_ADDRESS) as guesser:
            sessions = {"127.0.0.1": main, GUESSER_ADDRESS: guesser}
            await asyncio.gather(*(client(sessions) for _ in range(self.concurrency)))
        return time.monotonic() - started


# -- sampling ----------------------------------------------------------------------------------------------


def fd_inodes(pid: int) -> tuple[int, set[int]]:
    """(number of open file descriptors, inodes of its sockets) of a process."""
    count, inodes = 0, set()
    with contextlib.suppress(OSError):
        for entry in os.listdir(f"/proc/{pid}/fd"):
            count += 1
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{entry}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return count, inodes


def established_tcp(pid: int) -> list[tuple[int, int, int]]:
    """(local port, remote port, inode) of every ESTABLISHED TCP socket in the process's network namespace."""
    found = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as file:
            next(file)
            for line in file:
                fields = line.split()
                if fields[3] == "01":
                    local, remote = fields[1], fields[2]
                    found.append((int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), int(fields[9])))
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


PEERS = {NGINX_PORT: "upstream_nginx", SLOW_PORT: "upstream_slow", PG_PORT: "postgres", REDIS_PORT: "redis"}


class Probe:
    """One sample of the gateway's resources (blocking; runs in a thread)."""

    def __init__(self, master_pid: int) -> None:
        import psycopg
        import redis

        self.master_pid = master_pid
        self.pg = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
        self.redis = redis.Redis(host="127.0.0.1", port=REDIS_PORT, db=0, socket_timeout=5)

    def close(self) -> None:
        self.pg.close()
        self.redis.close()

    def role(self, pid: int) -> str:
        if pid == self.master_pid:
            return "master"
        return "resource_tracker" if b"resource_tracker" in cmdline(pid) else "worker"

    def sample(self) -> dict:
        processes, inodes = {}, set()
        for pid in sorted(procstats.tree(self.master_pid)):
            fds, sockets = fd_inodes(pid)
            inodes |= sockets
            rss = procstats.rss_bytes([pid])
            if rss:  # still alive
                processes[str(pid)] = {"role": self.role(pid), "rss_mb": round(rss / 2**20, 1), "fds": fds,
                                       "socket_fds": len(sockets)}  # fmt: skip
        connections = Counter()
        for local, remote, inode in established_tcp(self.master_pid):
            if inode in inodes:
                connections["clients" if local == GATEWAY_PORT else PEERS.get(remote, "other")] += 1
        pg_states = dict(self.pg.execute(
            "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity WHERE datname = %s GROUP BY 1", [DB_NAME]
        ).fetchall())  # fmt: skip
        redis_clients = sum(1 for client in self.redis.client_list() if client.get("db") == str(REDIS_DB))
        fds = sum(p["fds"] for p in processes.values())
        return {
            "rss_mb": round(sum(p["rss_mb"] for p in processes.values()), 1),
            "fds": fds,
            # what is left once the established connections counted below are taken away: files,
            # pipes, epoll/eventfd, listening and unix sockets, and sockets in any other TCP state
            # (a socket never closed after its peer went away stays here, in CLOSE_WAIT)
            "untracked_fds": fds - sum(count for name, count in connections.items() if name != "other"),
            "non_socket_fds": sum(p["fds"] - p["socket_fds"] for p in processes.values()),
            "db_connections": sum(pg_states.values()),
            "db_states": pg_states,
            "redis_clients": redis_clients,
            "tcp": {name: connections.get(name, 0) for name in ("clients", *PEERS.values(), "other")},
            "upstream_connections": connections["upstream_nginx"] + connections["upstream_slow"],
            "processes": processes,
        }


async def sample_during(probe: Probe, load: Load, interval: float, started: float, samples: list[dict],
                        stop: asyncio.Event) -> None:  # fmt: skip
    """A sample every `interval` seconds while the load runs, with the interval's throughput and errors;
    the last one (phase load_end) is taken when the clients have finished and closed their connections."""
    previous = Counter(load.stats.totals)
    previous_at = time.monotonic()
    tick = 1
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, started + tick * interval - time.monotonic()))
        tick += 1
        final = stop.is_set()
        now, totals = time.monotonic(), Counter(load.stats.totals)
        sample = await asyncio.to_thread(probe.sample)
        delta = {outcome: totals[outcome] - previous[outcome] for outcome in OUTCOMES}
        completed = sum(delta.values())
        seconds = now - previous_at
        sample.update(
            phase="load_end" if final else "load", t_s=round(now - started, 1), interval_s=round(seconds, 2),
            completed=completed,
            rps=round(completed / seconds, 1) if seconds else 0.0, outcomes=delta,
            unexpected_rate=round(delta["unexpected"] / completed, 5) if completed else 0.0,
        )  # fmt: skip
        samples.append(sample)
        log(f"t={sample['t_s']:>6}s {sample['rps']:>7} req/s unexpected={delta['unexpected']} "
            f"rss={sample['rss_mb']}MB fds={sample['fds']} db={sample['db_connections']} "
            f"redis={sample['redis_clients']} upstream={sample['upstream_connections']}")  # fmt: skip
        previous, previous_at = totals, now


async def soak(probe: Probe, load: Load, args: argparse.Namespace) -> tuple[float, list[dict]]:
    samples: list[dict] = []
    stop = asyncio.Event()
    started = time.monotonic()
    sampler = asyncio.create_task(sample_during(probe, load, args.interval, started, samples, stop))
    try:
        elapsed = await load.run(args.duration)
    finally:
        stop.set()
        await sampler
    return elapsed, samples


# -- money ------------------------------------------------------------------------------------------------


def money_state() -> dict:
    """Ledger, balances, holds and usage events of ruapi_soak, read with SQL."""
    import psycopg

    with psycopg.connect(DATABASE_URL, connect_timeout=5) as conn:
        orgs = conn.execute(
            "SELECT o.name, b.balance_nanos, b.held_nanos,"
            " (SELECT coalesce(sum(l.amount_nanos), 0) FROM billing_ledgerentry l WHERE l.org_id = b.org_id),"
            " (SELECT coalesce(sum(h.amount_nanos), 0) FROM billing_hold h"
            "  WHERE h.org_id = b.org_id AND h.status = 'pending')"
            " FROM billing_balance b JOIN accounts_organization o ON o.id = b.org_id ORDER BY o.name"
        ).fetchall()
        events = dict(conn.execute(
            "SELECT CASE WHEN status_code = 200 AND error_type = '' THEN 'complete' ELSE"
            " status_code::text || ' ' || coalesce(nullif(error_type, ''), '-') END, count(*)"
            " FROM billing_usageevent GROUP BY 1"
        ).fetchall())  # fmt: skip
        usage_debits = conn.execute(
            "SELECT coalesce(-sum(amount_nanos), 0) FROM billing_ledgerentry WHERE kind = 'usage'"
        ).fetchone()[0]
        event_costs = conn.execute("SELECT coalesce(sum(cost_nanos), 0) FROM billing_usageevent").fetchone()[0]
        holds = dict(conn.execute("SELECT status, count(*) FROM billing_hold GROUP BY 1").fetchall())
        expired_pending = conn.execute(
            "SELECT count(*) FROM billing_hold WHERE status = 'pending' AND expires_at < now()"
        ).fetchone()[0]
        older_than_ttl = conn.execute(
            "SELECT count(*) FROM billing_hold WHERE status = 'pending' AND created_at < now() - %s * interval '1 s'",
            [HOLD_TTL_S],
        ).fetchone()[0]
    return {
        "orgs": [{"org": name, "balance_nanos": balance, "held_nanos": held, "ledger_nanos": int(ledger),
                  "pending_hold_nanos": int(pending)} for name, balance, held, ledger, pending in orgs],
        "usage_events": events,
        "usage_events_total": sum(events.values()),
        "usage_debits_nanos": int(usage_debits),
        "usage_event_costs_nanos": int(event_costs),
        "holds": holds,
        "pending_holds_expired": expired_pending,
        "pending_holds_older_than_ttl": older_than_ttl,
    }  # fmt: skip


def wait_for_holds(timeout: float) -> int:
    """Wait until no hold is pending (streams cut by the clients settle in the background); the count left."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(DATABASE_URL, connect_timeout=5) as conn:
            pending = conn.execute("SELECT count(*) FROM billing_hold WHERE status = 'pending'").fetchone()[0]
        if not pending or time.monotonic() > deadline:
            return pending
        time.sleep(0.5)


# -- analysis ----------------------------------------------------------------------------------------------


def mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def growth(before: float | None, after: float | None) -> float | None:
    if not before or after is None:
        return None
    return round((after - before) / before, 4)


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope (units per minute) of (t seconds, value) points."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return round(sum((x - mx) * (y - my) for x, y in points) / var * 60, 3) if var else None


METRICS = {
    "rss_mb": ("RSS of the gateway processes (MB, summed)", lambda s: s["rss_mb"]),
    "fds": ("open file descriptors (summed)", lambda s: s["fds"]),
    "untracked_fds": ("… other than the established connections below", lambda s: s["untracked_fds"]),
    "non_socket_fds": ("… not sockets at all (files, pipes, epoll, eventfd)", lambda s: s["non_socket_fds"]),
    "db_connections": (f"Postgres connections to {DB_NAME}", lambda s: s["db_connections"]),
    "redis_clients": (f"Redis clients on db {REDIS_DB}", lambda s: s["redis_clients"]),
    "upstream_connections": ("established TCP to the upstreams", lambda s: s["upstream_connections"]),
    "client_connections": ("established TCP from the clients", lambda s: s["tcp"]["clients"]),
}


def summarise(samples: list[dict], idle_before: dict, idle_after: dict, warmup: float, window: float) -> dict:
    """Per metric: idle before, first, after warm-up (mean of the window after it), last (mean of the
    final window), max, idle after the load, growth after warm-up, slope after warm-up."""
    load = [s for s in samples if s["phase"] == "load"]
    end = load[-1]["t_s"] if load else 0.0
    early = [s for s in load if warmup <= s["t_s"] < warmup + window]
    late = [s for s in load if s["t_s"] > end - window]
    after_warmup = [s for s in load if s["t_s"] >= warmup]
    middle = warmup + (end - warmup) / 2
    first_half = [s for s in after_warmup if s["t_s"] < middle]
    second_half = [s for s in after_warmup if s["t_s"] >= middle]
    result = {}
    for name, (label, get) in METRICS.items():
        values = [get(s) for s in load]
        baseline, final = mean([get(s) for s in early]), mean([get(s) for s in late])
        result[name] = {
            "label": label,
            "idle_before": get(idle_before),
            "first": values[0] if values else None,
            "after_warmup": baseline,
            "last": final,
            "max": max(values, default=None),
            "max_after_warmup": max((get(s) for s in after_warmup), default=None),
            "max_first_half": max((get(s) for s in first_half), default=None),
            "max_second_half": max((get(s) for s in second_half), default=None),
            "mean_first_half": mean([get(s) for s in first_half]),
            "mean_second_half": mean([get(s) for s in second_half]),
            "idle_after": get(idle_after),
            "growth_after_warmup": growth(baseline, final),
            "slope_per_min_after_warmup": slope_per_min([(s["t_s"], get(s)) for s in after_warmup]),
        }
    return result


def process_table(samples: list[dict]) -> dict:
    """Per gateway process: role, RSS and FDs first / last / max over the load."""
    table: dict[str, dict] = {}
    for sample in (s for s in samples if s["phase"] == "load"):
        for pid, proc in sample["processes"].items():
            row = table.setdefault(pid, {"role": proc["role"], "rss_mb": [], "fds": []})
            row["rss_mb"].append(proc["rss_mb"])
            row["fds"].append(proc["fds"])
    return {pid: {"role": row["role"], "samples": len(row["fds"]),
                  **{m: {"first": row[m][0], "last": row[m][-1], "max": max(row[m])} for m in ("rss_mb", "fds")}}
            for pid, row in table.items()}  # fmt: skip


def checks(results: dict, args: argparse.Namespace) -> list[dict]:
    metrics, totals, money = results["metrics"], results["totals"], results["money"]
    before, after = results["money_before"], money
    found = []

    def check(name: str, ok: bool, value: str) -> None:
        found.append({"check": name, "value": value, "verdict": "PASS" if ok else "FAIL"})

    check(
        "no unexpected errors (expected 4xx counted apart)",
        totals["unexpected"] == 0,
        f"{totals['unexpected']} of {totals['requests']}",
    )
    rss, fds = metrics["rss_mb"], metrics["fds"]
    check(
        f"RSS growth after warm-up ≤ {args.max_rss_growth:.0%}",
        rss["growth_after_warmup"] is not None and rss["growth_after_warmup"] <= args.max_rss_growth,
        f"{rss['after_warmup']} → {rss['last']} MB ({pct(rss['growth_after_warmup'])})",
    )
    # The FD total moves with the load (one socket per connection in flight, upstream keep-alive
    # pools) and with the pools' high-water marks; those have their own checks below, so the growth
    # check is on the rest, where a leaked file, pipe or never-closed socket would show.
    fds = metrics["untracked_fds"]
    check(
        f"FD growth after warm-up ≤ {args.max_fd_growth:.0%} (FDs other than established connections; "
        f"all FDs: {pct(metrics['fds']['growth_after_warmup'])})",
        fds["growth_after_warmup"] is not None and fds["growth_after_warmup"] <= args.max_fd_growth,
        f"{fds['after_warmup']} → {fds['last']} ({pct(fds['growth_after_warmup'])})",
    )
    check(
        "FDs at rest other than established connections: after the load ≤ before it + 2",
        fds["idle_after"] <= fds["idle_before"] + 2,
        f"{fds['idle_before']} → {fds['idle_after']} (all FDs {metrics['fds']['idle_before']} → "
        f"{metrics['fds']['idle_after']})",
    )
    budget = results["db_budget"]
    db_bound = results["workers"] * (budget["pool"] + budget["ledger_writer"])
    db = metrics["db_connections"]
    check(
        f"DB connections ≤ workers × (pool {budget['pool']} + ledger writer {budget['ledger_writer']}) = {db_bound}",
        max(db["max"] or 0, db["idle_after"]) <= db_bound,
        f"max {db['max']}, at rest after {db['idle_after']}",
    )
    upstream_bound = results["workers"] * args.concurrency
    up = metrics["upstream_connections"]
    check(
        f"upstream connections ≤ workers × concurrency ({upstream_bound})",
        (up["max"] or 0) <= upstream_bound,
        f"max {up['max']}",
    )
    clients = metrics["client_connections"]
    check(
        f"upstream and client connections all closed at rest ({args.idle_after:g} s after the load, keep-alive "
        "expired)",
        up["idle_after"] == 0 and clients["idle_after"] == 0,
        f"{up['idle_after']} upstream, {clients['idle_after']} client",
    )
    redis = metrics["redis_clients"]
    first, second = redis["mean_first_half"], redis["mean_second_half"]
    check(
        "Redis clients stopped growing (mean of the 2nd half after warm-up ≤ the 1st half's + 10% + 2)",
        first is not None and second is not None and second <= first * 1.1 + 2,
        f"{first} → {second} (max {redis['max_first_half']} → {redis['max_second_half']})",
    )
    check(
        "gateway processes unchanged (no worker died or was replaced)",
        results["pids_start"] == results["pids_end"],
        f"{len(results['pids_start'])} processes",
    )
    drift = [o for o in money["orgs"] if o["ledger_nanos"] != o["balance_nanos"]]
    check(
        "ledger sum == cached balance, every organisation",
        not drift,
        "; ".join(f"{o['org']}: ledger {o['ledger_nanos']} balance {o['balance_nanos']}" for o in money["orgs"]),
    )
    check("manage.py reconcile", results["reconcile"].strip() == "ok", results["reconcile"].strip()[:200])
    check(
        "usage debits == sum of usage event costs",
        money["usage_debits_nanos"] == money["usage_event_costs_nanos"],
        f"{money['usage_debits_nanos']} == {money['usage_event_costs_nanos']} nano-USD",
    )
    new_complete = after["usage_events"].get("complete", 0) - before["usage_events"].get("complete", 0)
    check(
        "usage events (complete) == successful requests counted by the client",
        new_complete == totals["ok"],
        f"{new_complete} == {totals['ok']}",
    )
    new_events = after["usage_events_total"] - before["usage_events_total"]
    billed = totals["ok"] + totals["disconnect"]
    check(
        "usage events (all) == successful + disconnected requests (one event each)",
        new_events == billed,
        f"{new_events} == {totals['ok']} + {totals['disconnect']}",
    )
    check(
        f"no pending hold older than the hold TTL ({HOLD_TTL_S} s) or past its expiry",
        money["pending_holds_older_than_ttl"] == 0 and money["pending_holds_expired"] == 0,
        f"{money['pending_holds_older_than_ttl']} / {money['pending_holds_expired']}",
    )
    held = sum(o["held_nanos"] for o in money["orgs"])
    check(
        "no hold left pending after the load drained, nothing held",
        money["holds"].get("pending", 0) == 0 and held == 0,
        f"{money['holds'].get('pending', 0)} pending, {held} nano-USD held",
    )
    return found


# -- report ---------------------------------------------------------------------------------------------


def fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1%}"


def markdown(results: dict) -> str:
    meta, totals, params = results["meta"], results["totals"], results["params"]
    machine, versions = meta["machine"], meta["versions"]
    verdict = "PASS" if all(c["verdict"] == "PASS" for c in results["checks"]) else "FAIL"
    lines = [
        "# Soak: load held (issue 8 item 9)",
        "",
        f"**{verdict}** — {meta['date']}, gateway {versions.get('gateway')}, "
        f"`bash bench/soak.sh --duration {params['duration_s']:g} --concurrency {params['concurrency']}"
        + (f" --gateway-rev {params['gateway_rev']}`" if params.get("gateway_rev") else "`"),
        "",
        "The gateway in its production configuration (`RUAPI_PRODUCTION=1`, Postgres `ruapi_soak`, Redis db 13, "
        f"uvicorn {results['workers']} workers, uvloop, httptools, full metering) behind bench/'s fake upstreams, "
        f"under {params['concurrency']} concurrent clients in a closed loop for {params['duration_s']:g} s of mixed "
        "traffic. **This is about leaks and errors, not speed**: the machine has "
        f"{machine['cores']} cores shared by the load generator, nginx, the slow upstream, Postgres, Redis and "
        "other engineers' test suites (load average "
        f"{machine['loadavg_1m_start']} at the start, {machine['loadavg_1m_end']} at the end), so throughput "
        "and latency here say little.",
        "",
        "## Checks",
        "",
        "| check | value | verdict |",
        "|---|---|---|",
        *(f"| {c['check']} | {c['value']} | {c['verdict']} |" for c in results["checks"]),
        "",
        "## Requests",
        "",
        f"{totals['requests']:,} requests in {params['elapsed_s']:.0f} s "
        f"({totals['requests'] / params['elapsed_s']:.0f}/s): {totals['ok']:,} complete, "
        f"{totals['disconnect']:,} cut by the client on purpose, "
        f"{totals['expected_4xx']:,} expected 4xx ({totals['expected_4xx'] / max(1, totals['requests']):.1%}), "
        f"**{totals['unexpected']} unexpected errors ({totals['unexpected_rate']:.3%})**. The invalid keys come "
        f"from a second source address ({GUESSER_ADDRESS}); after `RUAPI_AUTH_FAIL_LIMIT` failures per window the "
        "gateway's brute-force throttle answers that address 429, which counts as expected, while the valid traffic "
        "from 127.0.0.1 is not affected.",
        "",
        "| kind | weight | requests | complete | cut | expected 4xx | unexpected | HTTP statuses | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["by_kind"].items():
        lines.append(
            f"| {name} | {row['weight']} | {row['requests']:,} | {row['ok']:,} | {row['disconnect']:,} | "
            f"{row['expected_4xx']:,} | {row['unexpected']} | "
            f"{', '.join(f'{code}: {n:,}' for code, n in row['statuses'].items())} | "
            f"{fmt(row['p50_ms'])} | {fmt(row['p99_ms'])} |"
        )
    if results["errors"]:
        lines += ["", "Unexpected errors:", ""]
        lines += [f"- {detail}: {count}" for detail, count in results["errors"].items()]
    lines += [
        "",
        "## Resources",
        "",
        f"Sampled every {params['interval_s']:g} s. *After warm-up* is the mean over the {params['window_s']:g} s "
        f"after the first {params['warmup_s']:g} s, *last* the mean over the final {params['window_s']:g} s; "
        "growth compares the two. The FD total follows the load (a socket per connection in flight) and the "
        "pools' high-water marks, so the FD checks are on the FDs other than established connections, and the "
        "connections have their own: a bound, all closed at rest, and for Redis the two halves of the period "
        "after warm-up compared (a pool grows to a high-water mark and stays, a leak keeps growing). *Idle before* "
        f"is after start-up and a smoke request of each kind; *idle after* {params['idle_after_s']:g} s after the "
        "load stopped (upstream keep-alive connections have expired; the Postgres pool keeps its connections).",
        "",
        "| metric | idle before | first | after warm-up | last | max | idle after | growth after warm-up | slope/min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results["metrics"].values():
        lines.append(
            f"| {m['label']} | {fmt(m['idle_before'])} | {fmt(m['first'])} | {fmt(m['after_warmup'])} | "
            f"{fmt(m['last'])} | {fmt(m['max'])} | {fmt(m['idle_after'])} | "
            f"{pct(m['growth_after_warmup'])} | "
            f"{fmt(m['slope_per_min_after_warmup'])} |"
        )
    m = results["metrics"]

    def delta(name: str) -> float:
        return (m[name]["last"] or 0) - (m[name]["after_warmup"] or 0)

    parts = {
        "upstream connections": delta("upstream_connections"),
        "Postgres": delta("db_connections"),
        "Redis": delta("redis_clients"),
        "clients": delta("client_connections"),
        "the rest": delta("untracked_fds"),
    }
    lines += [
        "",
        f"All FDs, after warm-up → last: {delta('fds'):+.1f}, of which "
        + ", ".join(f"{name} {value:+.1f}" for name, value in parts.items()) + ".",
    ]  # fmt: skip
    lines += ["", "| process | role | RSS MB first / last / max | FDs first / last / max |", "|---|---|---|---|"]
    for pid, proc in results["processes"].items():
        r, f = proc["rss_mb"], proc["fds"]
        lines.append(f"| {pid} | {proc['role']} | {r['first']} / {r['last']} / {r['max']} | "
                     f"{f['first']} / {f['last']} / {f['max']} |")  # fmt: skip
    money = results["money"]
    lines += [
        "",
        "## Money",
        "",
        "| organisation | ledger sum (nano-USD) | cached balance | held | pending holds |",
        "|---|---|---|---|---|",
        *(f"| {o['org']} | {o['ledger_nanos']:,} | {o['balance_nanos']:,} | {o['held_nanos']:,} | "
          f"{o['pending_hold_nanos']:,} |" for o in money["orgs"]),
        "",
        f"Usage events by outcome (whole database, including {results['money_before']['usage_events_total']} from the "
        f"smoke requests before the load): {json.dumps(money['usage_events'])}; holds by status: "
        f"{json.dumps(money['holds'])}.",
        "",
        "## Time series",
        "",
        "| t s | req/s | unexpected | expected 4xx | cut | RSS MB | FDs | FDs w/o conns | DB conns | Redis clients "
        "| upstream conns | client conns |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for s in results["samples"]:
        if s["phase"] not in ("load", "load_end"):
            continue
        o = s["outcomes"]
        lines.append(
            f"| {s['t_s']:g} | {s['rps']:g} | {o['unexpected']} | {o['expected_4xx']} | {o['disconnect']} | "
            f"{s['rss_mb']} | {s['fds']} | {s['untracked_fds']} | {s['db_connections']} | {s['redis_clients']} | "
            f"{s['upstream_connections']} | {s['tcp']['clients']} |"
        )
    lines += [
        "",
        "## Machine and versions",
        "",
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['os']}, "
        f"kernel {machine['kernel']}.",
        "",
        ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "",
        f"Ports: gateway {GATEWAY_PORT}, nginx {NGINX_PORT}, slow upstream {SLOW_PORT} (bench/run.py uses 18100, "
        "18080, 18081); every request had a "
        f"{params['request_timeout_s']:g} s timeout; load seed {SEED}. Raw samples: `soak.json`.",
        "",
    ]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300, help="seconds of load (default 300)")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent clients (default 64)")
    parser.add_argument("--interval", type=float, default=5, help="seconds between two samples (default 5)")
    parser.add_argument("--warmup", type=float, help="seconds before growth is measured (default: 1/6 of the "
                        "duration, 10-60 s)")  # fmt: skip
    parser.add_argument("--window", type=float, help="seconds averaged for 'after warm-up' and 'last' "
                        "(default: 1/6 of the duration, at least 4 intervals)")  # fmt: skip
    parser.add_argument("--request-timeout", type=float, default=30, help="per request (default 30 s)")
    parser.add_argument("--idle-after", type=float, default=35,
                        help="seconds after the load for the sample at rest (default 35: aiohttp closes idle "
                        "keep-alive connections 15-30 s after their last use)")  # fmt: skip
    parser.add_argument("--max-rss-growth", type=float, default=0.10)
    parser.add_argument("--max-fd-growth", type=float, default=0.05)
    parser.add_argument("--gateway-rev", help="soak a clean export of this commit (e.g. HEAD) instead of the work tree")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "soak", help="results path without suffix")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(60.0, max(10.0, args.duration / 6))
    if args.window is None:
        args.window = max(4 * args.interval, args.duration / 6)
    if args.duration < args.warmup + 2 * args.window:
        parser.error("--duration must leave room for the warm-up and two windows")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    isolate_from_bench()
    for port in (NGINX_PORT, SLOW_PORT, GATEWAY_PORT):
        if run.port_open(port):
            sys.exit(f"port {port} is in use: is another soak running? (see {SOAK_VAR / 'run' / 'pgids'})")

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    load_before = os.getloadavg()
    config = run.load_config(BENCH_DIR / "scenarios.toml", quick=False)
    bench = SoakBench(args, config)
    probe = None
    try:
        if args.gateway_rev:
            bench.export_gateway(args.gateway_rev)
        bench.start_upstreams()
        bench.start_ruapi()
        db_budget = bench.connection_budget(bench.ruapi_env())
        target = bench.targets["ruapi"]
        smoke = bench.smoke(target)
        failed = {name: outcome for name, outcome in smoke.items() if outcome != "ok"}
        if failed:
            raise RuntimeError(f"smoke test failed: {failed}")
        probe = Probe(bench.gateway_pid)
        time.sleep(1)
        idle_before = {"phase": "idle_before", "t_s": 0.0, **probe.sample()}
        money_before = money_state()
        pids_start = sorted(idle_before["processes"])
        roles = [f"{pid} ({proc['role']})" for pid, proc in idle_before["processes"].items()]
        log(f"gateway processes: {', '.join(roles)}")
        log(f"soak: {args.duration:g} s, {args.concurrency} clients, sample every {args.interval:g} s")
        load = Load(target.base_url, target.key, args.concurrency, args.request_timeout)
        elapsed, samples = asyncio.run(soak(probe, load, args))
        log(f"load done in {elapsed:.1f} s; waiting for in-flight settlements")
        left = wait_for_holds(30)
        time.sleep(max(0.0, args.idle_after))
        idle_after = {"phase": "idle_after", "t_s": round(elapsed + args.idle_after, 1), **probe.sample()}
        pids_end = sorted(idle_after["processes"])
        money = money_state()
        reconcile = bench.manage(bench.ruapi_env(), "reconcile", check=False)

        totals = {outcome: load.stats.totals[outcome] for outcome in OUTCOMES}
        totals["requests"] = sum(totals.values())
        totals["unexpected_rate"] = totals["unexpected"] / max(1, totals["requests"])
        by_kind = {}
        for kind in KINDS:
            counts = load.stats.by_kind[kind.name]
            latencies = load.stats.latency_ms[kind.name]
            by_kind[kind.name] = {
                "weight": kind.weight, "protocol": kind.protocol, "model": kind.model, "mode": kind.mode,
                "requests": sum(counts.values()), **{o: counts[o] for o in OUTCOMES},
                "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                "statuses": dict(sorted(load.stats.statuses[kind.name].items())),
            }  # fmt: skip
        all_samples = [idle_before, *samples, idle_after]
        results = {
            "meta": {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {**run.machine_info(), "loadavg_1m_start": round(load_before[0], 2),
                            "loadavg_1m_end": round(os.getloadavg()[0], 2)},
                "versions": {"gateway": bench.gateway_rev, **{k: v for k, v in run.versions().items()
                                                                if not k.startswith(("litellm", "wrk"))}},
                "smoke": smoke,
            },
            "params": {"gateway_rev": args.gateway_rev, "duration_s": args.duration, "elapsed_s": round(elapsed, 1),
                       "concurrency": args.concurrency,
                       "interval_s": args.interval, "warmup_s": args.warmup, "window_s": args.window,
                       "idle_after_s": args.idle_after, "request_timeout_s": args.request_timeout,
                       "gateway_port": GATEWAY_PORT, "nginx_port": NGINX_PORT, "slow_port": SLOW_PORT,
                       "database": DB_NAME, "redis_db": REDIS_DB, "hold_ttl_s": HOLD_TTL_S,
                       "holds_pending_after_wait": left},
            "workers": run.WORKERS,
            "db_budget": db_budget,
            "totals": totals,
            "by_kind": by_kind,
            "errors": dict(load.stats.errors.most_common()),
            "metrics": summarise(all_samples, idle_before, idle_after, args.warmup, args.window),
            "processes": process_table(all_samples),
            "pids_start": pids_start,
            "pids_end": pids_end,
            "money_before": money_before,
            "money": money,
            "reconcile": reconcile,
            "samples": all_samples,
        }  # fmt: skip
        results["checks"] = checks(results, args)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
        args.output.with_suffix(".md").write_text(markdown(results))
        for check in results["checks"]:
            log(f"{check['verdict']}  {check['check']}: {check['value']}")
        log(f"results: {args.output.with_suffix('.md')} and .json")
        return 0 if all(c["verdict"] == "PASS" for c in results["checks"]) else 1
    finally:
        if probe is not None:
            probe.close()
        log("stopping the servers")
        bench.children.stop_all()


if __name__ == "__main__":
    sys.exit(main())
