"""Streaming load generator (aiohttp on uvloop): time to first byte, success rate, latency percentiles.

    stream: CONNECTIONS clients in a closed loop for DURATION seconds (and at most MAX_REQUESTS).
    burst:  STREAMS requests opened at once, each read to its end (at most TIMEOUT seconds in all).

A request succeeds when it answers 200 and its stream ends with the protocol's terminator
(`data: [DONE]` / `message_stop`) without an error event. Prints one JSON object on stdout.

    python3 bench/loadgen.py stream --url URL --body FILE -H 'Authorization: Bearer K' \\
        --connections 16 --duration 10 --max-requests 100000 --expect '[DONE]'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import uvloop

TAIL = 1024


@dataclass
class Sample:
    ok: bool
    ttfb: float  # seconds to the first body bytes (inf when none came)
    total: float  # seconds to the end of the body
    error: str = ""


@dataclass
class Load:
    url: str
    body: bytes
    headers: dict[str, str]
    expect: bytes
    timeout: float
    samples: list[Sample] = field(default_factory=list)

    async def one(self, session: aiohttp.ClientSession) -> Sample:
        started = time.perf_counter()
        ttfb = math.inf
        try:
            async with session.post(self.url, data=self.body, headers=self.headers) as response:
                first = await response.content.readany()
                if first:
                    ttfb = time.perf_counter() - started
                tail = first[-TAIL:]
                while chunk := await response.content.readany():
                    tail = (tail + chunk)[-TAIL:]
                total = time.perf_counter() - started
                if response.status != 200:
                    return Sample(False, ttfb, total, f"http_{response.status}")
                if self.expect not in tail:
                    return Sample(False, ttfb, total, "incomplete_stream")
                if b'"error"' in tail or b"event: error" in tail:
                    return Sample(False, ttfb, total, "stream_error")
                return Sample(True, ttfb, total)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Sample(False, ttfb, time.perf_counter() - started, type(exc).__name__)

    def session(self, limit: int) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.timeout, sock_connect=self.timeout)
        return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)


async def run_stream(load: Load, connections: int, duration: float, max_requests: int) -> float:
    """Closed loop: each connection sends the next request when the previous one ended."""
    deadline = time.perf_counter() + duration
    budget = [max_requests]

    async def client(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            load.samples.append(await load.one(session))

    async with load.session(connections) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(connections)))
        return time.perf_counter() - started


async def run_burst(load: Load, streams: int, overall_timeout: float) -> float:
    """All streams at once; those still running after `overall_timeout` count as failures."""
    async with load.session(streams) as session:
        started = time.perf_counter()
        tasks = [asyncio.create_task(load.one(session)) for _ in range(streams)]
        done, pending = await asyncio.wait(tasks, timeout=overall_timeout)
        for task in pending:
            task.cancel()
        load.samples.extend(task.result() for task in done)
        load.samples.extend(Sample(False, math.inf, overall_timeout, "overall_timeout") for _ in pending)
        return time.perf_counter() - started


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(samples: list[Sample], elapsed: float) -> dict:
    def ms(value: float | None) -> float | None:
        return None if value is None or math.isinf(value) else round(value * 1000, 3)

    ok = [s for s in samples if s.ok]
    ttfb = [s.ttfb for s in ok]
    total = [s.total for s in ok]
    return {
        "requests": len(samples),
        "ok": len(ok),
        "success_rate": len(ok) / len(samples) if samples else 0.0,
        "errors": dict(Counter(s.error for s in samples if not s.ok)),
        "elapsed_s": round(elapsed, 3),
        "rps": round(len(ok) / elapsed, 1) if elapsed else 0.0,
        "ttfb_ms": {"p50": ms(percentile(ttfb, 50)), "p90": ms(percentile(ttfb, 90)),
                    "p99": ms(percentile(ttfb, 99)), "max": ms(max(ttfb, default=None))},
        "latency_ms": {"p50": ms(percentile(total, 50)), "p90": ms(percentile(total, 90)),
                       "p99": ms(percentile(total, 99)), "max": ms(max(total, default=None))},
    }  # fmt: skip


def parse_headers(values: list[str]) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    for value in values:
        name, _, rest = value.partition(":")
        headers[name.strip()] = rest.strip()
    return headers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["stream", "burst"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True, help="file with the JSON request body")
    parser.add_argument("-H", "--header", action="append", default=[])
    parser.add_argument("--expect", required=True, help="terminator the end of every stream must contain")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=60, help="per request (stream) or overall (burst)")
    args = parser.parse_args()

    with open(args.body, "rb") as file:
        body = file.read()
    load = Load(args.url, body, parse_headers(args.header), args.expect.encode(), args.timeout)
    if args.mode == "stream":
        elapsed = uvloop.run(run_stream(load, args.connections, args.duration, args.max_requests))
    else:
        elapsed = uvloop.run(run_burst(load, args.streams, args.timeout))
    json.dump(summary(load.samples, elapsed), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
