"""Benchmark driver (issue 7): every scenario of scenarios.toml against the fake upstream directly,
this gateway in its production configuration, LiteLLM proxy and Portkey's gateway, in one run; writes
bench/results/latest.md and latest.json.

    python3 bench/run.py                      # full run (bench/run.sh installs what is missing first)
    python3 bench/run.py --quick              # short durations, one repetition
    python3 bench/run.py --targets direct,ruapi --scenarios S1,S2
    python3 bench/run.py --profile            # py-spy on the gateway's workers under S2 load

Every server is started here as a child process on 127.0.0.1 and stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import canned
import procstats
import report

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
VAR_DIR = BENCH_DIR / "var"
LOG_DIR = VAR_DIR / "logs"
PGID_FILE = VAR_DIR / "run" / "pgids"
RESULTS_DIR = BENCH_DIR / "results"
RAW_DIR = RESULTS_DIR / "raw"
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
TOOLS_VENV = BENCH_DIR / ".venv-tools"
PORTKEY_DIR = BENCH_DIR / ".portkey"  # npm install of @portkey-ai/gateway (bench/setup.sh)
PORTKEY_PACKAGE = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway"

WORKERS = 2
DATABASE_URL = os.environ.get("RUAPI_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ruapi_bench")
REDIS_URL = "redis://127.0.0.1:6379/14"
ANTHROPIC_VERSION = "2023-06-01"
ALL_TARGETS = ("direct", "ruapi", "litellm", "portkey")
ALL_SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- configuration ------------------------------------------------------------------------------


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: Path, *, quick: bool) -> dict:
    config = tomllib.loads(path.read_text())
    quick_overrides = config.pop("quick", {})
    return deep_merge(config, quick_overrides) if quick else config


# -- child processes -------------------------------------------------------------------------------


@dataclass
class Children:
    """Servers started by this run: each in its own session (process group), stopped by its pgid."""

    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path = REPO_DIR):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with open(LOG_DIR / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self.procs[name] = proc
        PGID_FILE.parent.mkdir(parents=True, exist_ok=True)
        with open(PGID_FILE, "a") as file:
            file.write(f"{proc.pid}\n")
        return proc

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # workers that outlived their master (same process group)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)
        PGID_FILE.unlink(missing_ok=True)


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode} (see bench/var/logs/)")
        if check():
            return
        time.sleep(0.25)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f} s (see bench/var/logs/)")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((canned.HOST, port)) == 0


def http_request(url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 30):
    """(status, body bytes) of one request; (0, error text) when the connection failed."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc).encode()


def http_ok(url: str, headers: dict | None = None) -> bool:
    return http_request(url, headers=headers, timeout=2)[0] == 200


def command_output(argv: list[str], **kwargs) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({exc})"
    return (result.stdout + result.stderr).strip()


# -- targets -----------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    label: str
    base_url: str
    slow_base_url: str
    key: str
    root: str  # name of the child whose process tree is the target
    workers: int
    extra_meters: dict[str, Callable[[], list[int]]] = field(default_factory=dict)
    # per-model headers that route the request (Portkey: its x-portkey-config), instead of the key
    model_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    # "protocol->model" legs the target answers "not supported" (found by the smoke test): skipped
    unsupported: dict[str, str] = field(default_factory=dict)

    def url(self, protocol: str, *, slow: bool = False) -> str:
        base = self.slow_base_url if slow else self.base_url
        paths = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "responses": "/v1/responses"}
        return base + paths[protocol]

    def headers(self, protocol: str, model: str) -> dict[str, str]:
        if model in self.model_headers:
            routing = self.model_headers[model]
            return routing | ({"anthropic-version": ANTHROPIC_VERSION} if protocol == "anthropic" else {})
        if protocol in ("openai", "responses"):
            return {"Authorization": f"Bearer {self.key}"}
        return {"x-api-key": self.key, "anthropic-version": ANTHROPIC_VERSION}


class Bench:
    def __init__(self, args: argparse.Namespace, config: dict) -> None:
        self.args = args
        self.config = config
        self.children = Children()
        self.upstream = canned.UpstreamParams(**config["upstream"])
        self.targets: dict[str, Target] = {}
        self.python = sys.executable
        self.gateway_dir = REPO_DIR
        self.gateway_rev = command_output(["git", "-C", str(REPO_DIR), "describe", "--always", "--dirty"])

    def export_gateway(self, rev: str) -> None:
        """Run the gateway from a clean export of a commit (the work tree may be mid-edit)."""
        sha = command_output(["git", "-C", str(REPO_DIR), "rev-parse", "--verify", f"{rev}^{{commit}}"])
        if not re.fullmatch(r"[0-9a-f]{40}", sha):
            raise RuntimeError(f"unknown revision {rev!r}: {sha}")
        target = VAR_DIR / "gateway-src"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO_DIR), "archive", "--format=tar", sha],
                                 capture_output=True, check=True)  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
        self.gateway_dir = target
        self.gateway_rev = sha[:12] + f" ({rev})"
        log(f"gateway source: clean export of {self.gateway_rev} in {target}")

    # -- servers -------------------------------------------------------------------------------
    def start_upstreams(self) -> None:
        paths = canned.write_all(self.upstream)
        nginx_dir = paths["nginx_conf"].parent
        log(f"starting nginx (fake upstream) on {canned.HOST}:{canned.NGINX_PORT}")
        proc = self.children.start(
            "nginx", ["nginx", "-p", str(nginx_dir), "-c", str(paths["nginx_conf"]), "-e", str(nginx_dir / "error.log")]
        )
        wait_until(lambda: port_open(canned.NGINX_PORT), 15, "nginx", proc)
        log(f"starting the slow upstream on {canned.HOST}:{canned.SLOW_PORT}")
        proc = self.children.start(
            "slow-upstream",
            [self.python, str(BENCH_DIR / "slow_upstream.py"), "--port", str(canned.SLOW_PORT),
             "--tokens", str(self.upstream.slow_tokens), "--delay-ms", str(self.upstream.slow_delay_ms)],
        )  # fmt: skip
        wait_until(lambda: port_open(canned.SLOW_PORT), 15, "slow upstream", proc)
        self.targets["direct"] = Target(
            name="direct", label="direct (nginx / slow upstream)",
            base_url=f"http://{canned.HOST}:{canned.NGINX_PORT}",
            slow_base_url=f"http://{canned.HOST}:{canned.SLOW_PORT}",
            key=canned.UPSTREAM_KEY, root="nginx", workers=1,
        )  # fmt: skip

    def ruapi_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="ruapi.settings",
            DATABASE_URL=DATABASE_URL,
            REDIS_URL=REDIS_URL,
            RUAPI_PRODUCTION="1",
            RUAPI_VAR_DIR=str(VAR_DIR / "gateway-var"),
            SECRET_KEY="bench-secret-key-not-for-production-0123456789abcdef",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            SECURE_SSL_REDIRECT="0",
            DEBUG="0",
        )
        return env

    def prepare_ruapi_database(self, env: dict[str, str]) -> str:
        """A fresh ruapi_bench database and Redis db 14: migrate, catalog, org with credit, key."""
        import psycopg
        import redis

        log("creating the ruapi_bench database (Postgres) and flushing Redis db 14")
        with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS ruapi_bench WITH (FORCE)")
            conn.execute("CREATE DATABASE ruapi_bench")
        redis.Redis.from_url(REDIS_URL).flushdb()

        def manage(*argv: str) -> str:
            result = subprocess.run(
                [self.python, "manage.py", *argv],
                cwd=self.gateway_dir, env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if result.returncode:
                raise RuntimeError(f"manage.py {' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
            return result.stdout

        log("migrating, loading the catalog, creating the organisation and its key")
        manage("migrate", "--no-input", "-v0")
        manage("loadcatalog", str(VAR_DIR / "ruapi-catalog.json"))
        manage("createorg", "Bench", "--credit", "1000000")
        return manage("createapikey", "Bench", "--name", "bench").strip().splitlines()[-1].strip()

    def start_ruapi(self) -> None:
        env = self.ruapi_env()
        key = self.prepare_ruapi_database(env)
        log(f"starting the gateway: uvicorn, {WORKERS} workers, uvloop, guarded httptools, port {canned.RUAPI_PORT}")
        proc = self.children.start(
            "ruapi",
            [self.python, "-m", "uvicorn", "ruapi.asgi:application", "--host", canned.HOST,
             "--port", str(canned.RUAPI_PORT), "--workers", str(WORKERS), "--loop", "uvloop",
             "--http", "ruapi.server:GuardedHttpToolsProtocol", "--no-access-log", "--backlog", "4096",
             "--timeout-keep-alive", "60"],
            env=env, cwd=self.gateway_dir,
        )  # fmt: skip
        base = f"http://{canned.HOST}:{canned.RUAPI_PORT}"
        auth = {"Authorization": f"Bearer {key}"}
        wait_until(lambda: http_ok(base + "/v1/models", auth), 60, "the gateway", proc)
        self.targets["ruapi"] = Target(
            name="ruapi", label=f"RuAPI ({WORKERS} workers, Postgres + Redis, full metering)",
            base_url=base, slow_base_url=base, key=key, root="ruapi", workers=WORKERS,
            extra_meters={"postgres": postgres_backends},
        )  # fmt: skip

    def start_litellm(self) -> None:
        executable = LITELLM_VENV / "bin" / "litellm"
        if not executable.exists():
            raise RuntimeError("LiteLLM is not installed: run bench/setup.sh")
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "VIRTUAL_ENV")}
        env.update(
            LITELLM_LOCAL_MODEL_COST_MAP="True",  # no network fetch of the price map at start
            LITELLM_LOG="ERROR",  # uvicorn's log level too: no access log, as for RuAPI
            LITELLM_MODE="PRODUCTION",
            # Anthropic client -> OpenAI upstream through /v1/chat/completions, as RuAPI does (LiteLLM
            # would otherwise call the upstream's Responses API, which the fake upstream does not serve).
            LITELLM_USE_CHAT_COMPLETIONS_URL_FOR_ANTHROPIC_MESSAGES="True",
            DISABLE_ADMIN_UI="True",
            PATH=f"{LITELLM_VENV / 'bin'}:{os.environ.get('PATH', '')}",
        )
        log(f"starting LiteLLM proxy: {WORKERS} workers, no database, on port {canned.LITELLM_PORT}")
        proc = self.children.start(
            "litellm",
            [str(executable), "--config", str(VAR_DIR / "litellm-config.yaml"), "--host", canned.HOST,
             "--port", str(canned.LITELLM_PORT), "--num_workers", str(WORKERS)],
            env=env, cwd=VAR_DIR,
        )  # fmt: skip
        base = f"http://{canned.HOST}:{canned.LITELLM_PORT}"
        wait_until(lambda: http_ok(base + "/health/liveliness"), 180, "LiteLLM", proc)
        self.targets["litellm"] = Target(
            name="litellm", label=f"LiteLLM proxy ({WORKERS} workers, no database)",
            base_url=base, slow_base_url=base, key=canned.LITELLM_MASTER_KEY, root="litellm", workers=WORKERS,
        )  # fmt: skip

    def start_portkey(self) -> None:
        """Portkey's open-source gateway (Node): no database, no auth, no model list; each request carries
        its route (provider, upstream URL and key, upstream model) in an x-portkey-config header."""
        start_script = PORTKEY_PACKAGE / "build" / "start-server.js"
        node = shutil.which("node")
        if not start_script.exists() or node is None:
            raise RuntimeError("Portkey's gateway (or Node) is not installed: run bench/setup.sh")
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "VIRTUAL_ENV")}
        env["NODE_ENV"] = "production"  # no log console UI, as --headless
        log(f"starting Portkey's gateway: 1 Node process, no database, on port {canned.PORTKEY_PORT}")
        proc = self.children.start(
            "portkey",
            # the preload binds its listen (which names no host) to 127.0.0.1
            [node, "--import", str(BENCH_DIR / "portkey_loopback.mjs"), str(start_script),
             f"--port={canned.PORTKEY_PORT}", "--headless"],
            env=env, cwd=PORTKEY_DIR,
        )  # fmt: skip
        base = f"http://{canned.HOST}:{canned.PORTKEY_PORT}"
        wait_until(lambda: http_ok(base + "/"), 60, "Portkey", proc)
        routes = {model: {"x-portkey-config": json.dumps(config, separators=(",", ":"))}
                  for model, config in canned.portkey_configs().items()}  # fmt: skip
        self.targets["portkey"] = Target(
            name="portkey", label="Portkey gateway (1 Node process, no database, no auth, no metering)",
            base_url=base, slow_base_url=base, key="", root="portkey", workers=1, model_headers=routes,
        )  # fmt: skip

    def target_pids(self, target: Target) -> Callable[[], list[int]]:
        if target.name == "direct":  # nginx, and the slow upstream for S4
            return self.upstream_pids
        proc = self.children.procs[target.root]
        return lambda: procstats.tree(proc.pid)

    def upstream_pids(self) -> list[int]:
        pids = []
        for name in ("nginx", "slow-upstream"):
            if self.children.alive(name):
                pids += procstats.tree(self.children.procs[name].pid)
        return pids

    # -- request bodies and smoke tests ----------------------------------------------------------
    def body_file(self, protocol: str, model: str, *, stream: bool, extra: dict | None = None) -> Path:
        suffix = "".join(f"-{k}-{str(v).lower()}" for k, v in sorted((extra or {}).items()))
        path = VAR_DIR / "bodies" / f"{protocol}-{model}-{'stream' if stream else 'json'}{suffix}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_bytes(canned.request_body(protocol, model, stream=stream, max_tokens=self.upstream.max_tokens,
                                                 extra=extra))  # fmt: skip
        return path

    def smoke(self, target: Target) -> dict[str, str]:
        """One request of each kind the scenarios send: 'ok' or what went wrong. A request the target
        answers "… is not supported by …" (Portkey for conversions it lacks) marks that leg unsupported."""
        checks = {}
        for protocol, model, stream in (
            ("openai", "bench-gpt", False), ("openai", "bench-gpt", True), ("anthropic", "bench-gpt", False),
            ("openai", "bench-claude", False), ("openai", "bench-gpt-slow", True),
            ("responses", "bench-resp", False), ("responses", "bench-claude", False),
        ):  # fmt: skip
            slow = model.endswith("slow")
            body = self.body_file(protocol, model, stream=stream).read_bytes()
            headers = {"Content-Type": "application/json", **target.headers(protocol, model)}
            status, content = http_request(target.url(protocol, slow=slow), body, headers)
            name = f"{protocol}:{model}:{'stream' if stream else 'json'}"
            end = {"openai": b"[DONE]", "anthropic": b"message_stop", "responses": b"response.completed"}[protocol]
            good = status == 200 and (end in content[-200:] if stream else content.lstrip().startswith(b"{"))
            checks[name] = "ok" if good else f"HTTP {status}: {content[:300].decode(errors='replace')}"
            if not good and b"is not supported by" in content:
                target.unsupported[f"{protocol}->{model}"] = "not supported: " + content[:200].decode(errors="replace")
        return checks

    # -- scenarios ------------------------------------------------------------------------------------
    def run_leg(self, target: Target, scenario: dict, leg: dict, *, seconds: float | None = None) -> dict:
        """One measurement (or a warm-up when `seconds` is given) of one leg on one target."""
        kind = scenario["kind"]
        protocol, model = leg["protocol"], leg["model"]
        stream = kind in ("stream", "burst")
        slow = kind == "burst"
        url = target.url(protocol, slow=slow)
        body = self.body_file(protocol, model, stream=stream, extra=leg.get("body"))
        header_args = [f"{k}: {v}" for k, v in target.headers(protocol, model).items()]
        if kind == "wrk":
            duration = seconds or scenario["duration_s"]
            argv = ["wrk", "-t", str(scenario["threads"]), "-c", str(scenario["connections"]), "-d", f"{duration}s",
                    "--timeout", "10s", "-s", str(BENCH_DIR / "wrk_post.lua"), url, "--", str(body),
                    *header_args]  # fmt: skip
            output = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
            line = next((ln for ln in output.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
            if line is None:
                raise RuntimeError(f"wrk printed no summary: {output.stdout[-500:]} {output.stderr[-500:]}")
            return wrk_metrics(json.loads(line.removeprefix("WRK_JSON ")))
        expect = {"openai": "[DONE]", "anthropic": "message_stop", "responses": "response.completed"}[protocol]
        argv = [self.python, str(BENCH_DIR / "loadgen.py"), kind, "--url", url, "--body", str(body),
                "--expect", expect]  # fmt: skip
        for header in header_args:
            argv += ["-H", header]
        if kind == "stream":
            duration = seconds or scenario["duration_s"]
            argv += ["--connections", str(scenario["connections"]), "--duration", str(duration),
                     "--max-requests", str(scenario["max_requests"]), "--timeout", "60"]  # fmt: skip
            limit = duration + 120
        else:
            streams = min(100, scenario["streams"]) if seconds else scenario["streams"]
            argv += ["--streams", str(streams), "--timeout", str(scenario["timeout_s"])]
            limit = scenario["timeout_s"] + 60
        output = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False)
        if output.returncode:
            raise RuntimeError(f"loadgen failed: {output.stderr[-1000:]}")
        return stream_metrics(json.loads(output.stdout))

    def measure(self, target: Target, name: str, scenario: dict, leg: dict) -> dict:
        meters = {"target": procstats.Meter(self.target_pids(target)), "upstream": procstats.Meter(self.upstream_pids)}
        for label, pids in target.extra_meters.items():
            meters[label] = procstats.Meter(pids, interval=0.5)
        with contextlib.ExitStack() as stack:
            for meter in meters.values():
                stack.enter_context(meter)
            metrics = self.run_leg(target, scenario, leg)
        ok = metrics["ok"] or 1
        metrics["cpu_ms_per_req"] = round(meters["target"].cpu_seconds * 1000 / ok, 3)
        metrics["upstream_cpu_ms_per_req"] = round(meters["upstream"].cpu_seconds * 1000 / ok, 3)
        for label in target.extra_meters:
            metrics[f"{label}_cpu_ms_per_req"] = round(meters[label].cpu_seconds * 1000 / ok, 3)
        metrics["peak_rss_mb"] = round(meters["target"].peak_rss / 2**20, 1)
        return metrics

    @contextlib.contextmanager
    def alone(self, target: Target):
        """The other gateways paused (SIGSTOP to their process groups) while `target` is warmed up and
        measured, resumed after: an idle gateway's background work (LiteLLM's workers, timers, collectors)
        would otherwise land on whichever target is measured on these two shared cores. The fake
        upstreams (nginx, the slow upstream) always run."""
        paused = [
            self.children.procs[other.root].pid
            for other in self.targets.values()
            if other.name not in ("direct", target.name) and self.children.alive(other.root)
        ]
        for pgid in paused:
            os.killpg(pgid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pgid in paused:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGCONT)

    def run_scenarios(self, selected: list[str], target_names: list[str]) -> list[dict]:
        runs: list[dict] = []
        repeats = int(self.args.repeats or self.config["run"]["repeats"])
        warmup = float(self.config["run"]["warmup_seconds"])
        pause = float(self.config["run"]["settle_seconds"])
        for name in selected:
            scenario = self.config["scenarios"][name]
            for leg_index, leg in enumerate(scenario["legs"]):
                for rep in range(1, repeats + 1):
                    for target_name in target_names:
                        target = self.targets[target_name]
                        kind = f"{leg['protocol']}->{leg['model']}"  # what the smoke test checked
                        leg_label = kind + "".join(f" {k}:{json.dumps(v)}"
                                                   for k, v in sorted(leg.get("body", {}).items()))  # fmt: skip
                        if kind in target.unsupported:
                            if rep == 1:
                                runs.append({"scenario": name, "leg": leg_index, "leg_label": leg_label,
                                             "target": target_name, "rep": rep,
                                             "unsupported": target.unsupported[kind]})  # fmt: skip
                                log(f"{name} leg {leg_index} {leg_label:<28} {target_name:<8}: n/a (not supported)")
                            continue
                        with self.alone(target):
                            if rep == 1 and warmup > 0:
                                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                                    self.run_leg(target, scenario, leg, seconds=warmup)
                                time.sleep(pause)
                            try:
                                metrics = self.measure(target, name, scenario, leg)
                            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                                metrics = {"failed": str(exc)[:2000]}
                        runs.append({"scenario": name, "leg": leg_index, "leg_label": leg_label,
                                     "target": target_name, "rep": rep, **metrics})  # fmt: skip
                        log(f"{name} leg {leg_index} {leg_label:<28} {target_name:<8} rep {rep}: {brief(metrics)}")
                        time.sleep(pause)
        return runs


def postgres_backends() -> list[int]:
    """PIDs of the Postgres backends connected to the benchmark database (the gateway's pool)."""
    import psycopg

    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = 'ruapi_bench' AND pid <> pg_backend_pid()"
        ).fetchall()
    return [row[0] for row in rows]


def wrk_metrics(raw: dict) -> dict:
    errors = raw["errors"]
    duration = raw["duration_us"] / 1e6
    failed = errors["status"] + errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    ok = max(raw["requests"] - errors["status"], 0)
    return {
        "requests": raw["requests"],
        "ok": ok,
        "errors": failed,
        "error_detail": errors,
        "rps": round(ok / duration, 1) if duration else 0.0,
        "p50_ms": raw["latency_us"]["p50"] / 1000,
        "p90_ms": raw["latency_us"]["p90"] / 1000,
        "p99_ms": raw["latency_us"]["p99"] / 1000,
        "max_ms": raw["latency_us"]["max"] / 1000,
        "duration_s": round(duration, 3),
    }


def stream_metrics(raw: dict) -> dict:
    return {
        "requests": raw["requests"],
        "ok": raw["ok"],
        "errors": raw["requests"] - raw["ok"],
        "error_detail": raw["errors"],
        "success_rate": raw["success_rate"],
        "rps": raw["rps"],
        "ttfb_p50_ms": raw["ttfb_ms"]["p50"],
        "ttfb_p99_ms": raw["ttfb_ms"]["p99"],
        "ttfb_max_ms": raw["ttfb_ms"]["max"],
        "p50_ms": raw["latency_ms"]["p50"],
        "p99_ms": raw["latency_ms"]["p99"],
        "duration_s": raw["elapsed_s"],
    }


def brief(metrics: dict) -> str:
    if "failed" in metrics:
        return "FAILED " + metrics["failed"][:200]
    parts = [f"rps={metrics['rps']}"]
    for key in ("p50_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms"):
        if metrics.get(key) is not None:
            parts.append(f"{key}={metrics[key]:.2f}")
    if "success_rate" in metrics:
        parts.append(f"success={metrics['success_rate']:.1%}")
    parts.append(f"errors={metrics['errors']} cpu_ms/req={metrics['cpu_ms_per_req']} rss={metrics['peak_rss_mb']}MB")
    return " ".join(parts)


def medians(runs: list[dict]) -> dict:
    """scenario -> leg -> target -> median of every numeric metric over the repetitions."""
    grouped: dict[str, dict[int, dict[str, list[dict]]]] = {}
    for run in runs:
        if "failed" in run or "unsupported" in run:
            continue
        grouped.setdefault(run["scenario"], {}).setdefault(run["leg"], {}).setdefault(run["target"], []).append(run)
    result: dict = {}
    for scenario, legs in grouped.items():
        for leg, targets in legs.items():
            for target, items in targets.items():
                summary: dict = {"reps": len(items), "leg_label": items[0]["leg_label"]}
                for key, value in items[0].items():
                    if isinstance(value, int | float) and not isinstance(value, bool) and key not in ("leg", "rep"):
                        values = [i[key] for i in items if isinstance(i.get(key), int | float)]
                        summary[key] = statistics.median(values) if values else None
                result.setdefault(scenario, {}).setdefault(str(leg), {})[target] = summary
    return result


# -- machine and versions -------------------------------------------------------------------------


def machine_info() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as file:
        cpu = next((ln.split(":", 1)[1].strip() for ln in file if ln.startswith("model name")), cpu)
    with open("/proc/meminfo") as file:
        mem_kb = int(file.readline().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "os": command_output(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
    }


def versions() -> dict:
    def pip_version(python: str, package: str) -> str:
        code = f"import importlib.metadata as m; print(m.version({package!r}))"
        return command_output([python, "-c", code]).splitlines()[-1]

    litellm_python = str(LITELLM_VENV / "bin" / "python")
    found = {
        "python": platform.python_version(),
        "nginx": command_output(["nginx", "-v"]).removeprefix("nginx version: "),
        "wrk": command_output(["wrk", "-v"]).splitlines()[0].split(" [")[0],
        "postgres": command_output(["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "SHOW server_version"]),
        "redis": (command_output(["redis-cli", "-h", "127.0.0.1", "INFO", "server"]).partition("redis_version:")[2]
                  .split() or ["?"])[0],
    }  # fmt: skip
    for package in ("django", "django-ninja", "uvicorn", "uvloop", "httptools", "aiohttp", "orjson", "psycopg"):
        found[package] = pip_version(sys.executable, package)
    if Path(litellm_python).exists():
        for package in ("litellm", "uvicorn", "uvloop"):
            found[f"litellm-venv {package}"] = pip_version(litellm_python, package)
    node_modules = PORTKEY_DIR / "node_modules"
    if (node_modules / "@portkey-ai" / "gateway").exists():
        found["node"] = command_output(["node", "--version"])
        for package in ("@portkey-ai/gateway", "@hono/node-server", "hono"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                found[package] = json.loads((node_modules / package / "package.json").read_text())["version"]
    return found


# -- profile ----------------------------------------------------------------------------------------


def run_profile(bench: Bench, seconds: int, scenario_name: str) -> None:
    """py-spy on every gateway worker under `scenario_name`'s load; summary to results/profile-<scenario>.md."""
    pyspy = shutil.which("py-spy") or str(TOOLS_VENV / "bin" / "py-spy")
    if not Path(pyspy).exists():
        raise RuntimeError("py-spy is not installed: run bench/setup.sh")
    target = bench.targets["ruapi"]
    master = bench.children.procs["ruapi"].pid
    workers = [pid for pid in procstats.tree(master) if pid != master and b"python" in read_cmdline(pid)]
    workers = [pid for pid in workers if b"multiprocessing.resource_tracker" not in read_cmdline(pid)]
    scenario = dict(bench.config["scenarios"][scenario_name])
    leg = scenario["legs"][0]
    bench.run_leg(target, scenario, leg, seconds=3)  # warm-up
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid in workers:
        out = RAW_DIR / f"profile-{scenario_name}-{pid}.txt"
        spies.append((out, subprocess.Popen(
            [pyspy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200", "--nonblocking",
             "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )))  # fmt: skip
    time.sleep(1)
    scenario["duration_s"] = seconds - 2
    threads_before = {pid: procstats.thread_cpu_seconds(pid) for pid in workers}
    postgres_before = procstats.cpu_seconds(postgres_backends())
    metrics = bench.run_leg(target, scenario, leg)
    threads_after = {pid: procstats.thread_cpu_seconds(pid) for pid in workers}
    postgres_after = procstats.cpu_seconds(postgres_backends())
    for _, spy in spies:
        spy.wait(seconds + 60)
    ok = metrics["ok"] or 1
    main_label, pool_label = "event loop (main thread)", "other threads (sync_to_async pool: ORM, psycopg)"
    thread_cpu = {main_label: 0.0, pool_label: 0.0}
    for pid in workers:
        for tid, value in threads_after[pid].items():
            thread_cpu[main_label if tid == pid else pool_label] += value - threads_before[pid].get(tid, 0.0)
    thread_cpu["Postgres backends of ruapi_bench"] = sum(
        v - postgres_before.get(pid, 0.0) for pid, v in postgres_after.items()
    )
    metrics["cpu_ms_per_req_by_thread"] = {k: round(v * 1000 / ok, 3) for k, v in thread_cpu.items()}
    stacks: dict[str, int] = {}
    for out, _ in spies:
        if out.exists():
            for line in out.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if count.isdigit():
                    stacks[stack] = stacks.get(stack, 0) + int(count)
    text = report.profile_markdown(stacks, scenario_name, scenario, metrics, workers, seconds)
    text = text.replace("\n\n", f"\n\nGateway revision: {bench.gateway_rev}.\n\n", 1)
    out = RESULTS_DIR / f"profile-{scenario_name}.md"
    out.write_text(text)
    log(f"profile written to {out}")
    print(text)


def read_cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# -- main ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short durations, one repetition (about 4 minutes)")
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma-separated: " + ",".join(ALL_TARGETS))
    parser.add_argument("--scenarios", default=",".join(ALL_SCENARIOS), help="comma-separated: S1,...,S6")
    parser.add_argument("--repeats", type=int, help="repetitions per scenario (default from scenarios.toml)")
    parser.add_argument("--config", type=Path, default=BENCH_DIR / "scenarios.toml")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest", help="results path without suffix")
    parser.add_argument("--gateway-rev", help="benchmark a clean export of this commit (e.g. HEAD) instead of the "
                        "work tree")  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway's workers under load instead")
    parser.add_argument("--profile-scenario", default="S2")
    parser.add_argument("--profile-seconds", type=int, default=20)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args.config, quick=args.quick)
    targets = ["ruapi"] if args.profile else [t.strip() for t in args.targets.split(",") if t.strip()]
    scenarios = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    unknown = [t for t in targets if t not in ALL_TARGETS] + [s for s in scenarios if s not in config["scenarios"]]
    if unknown:
        sys.exit(f"unknown targets or scenarios: {', '.join(unknown)}")
    targets = [t for t in ALL_TARGETS if t in targets]  # direct first: the others are compared to it

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started = time.monotonic()
    load_before = os.getloadavg()
    bench = Bench(args, config)
    try:
        if args.gateway_rev:
            bench.export_gateway(args.gateway_rev)
        bench.start_upstreams()
        if "ruapi" in targets:
            bench.start_ruapi()
        if "litellm" in targets:
            bench.start_litellm()
        if "portkey" in targets:
            bench.start_portkey()
        if args.profile:
            run_profile(bench, args.profile_seconds, args.profile_scenario)
            return 0
        smoke = {name: bench.smoke(bench.targets[name]) for name in targets}
        for name, checks in smoke.items():
            for check, outcome in checks.items():
                if outcome != "ok":
                    log(f"smoke test {name} {check}: {outcome}")
        log(f"running {', '.join(scenarios)} on {', '.join(targets)}")
        runs = bench.run_scenarios(scenarios, targets)
        results = {
            "meta": {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "mode": "quick" if args.quick else "full",
                "runtime_s": round(time.monotonic() - started),
                "repeats": args.repeats or config["run"]["repeats"],
                "machine": {**machine_info(), "loadavg_1m_start": round(load_before[0], 2),
                            "loadavg_1m_end": round(os.getloadavg()[0], 2)},
                "versions": {"gateway": bench.gateway_rev, **versions()},
                "targets": {n: {"label": bench.targets[n].label, "workers": bench.targets[n].workers,
                                "unsupported": sorted(bench.targets[n].unsupported)} for n in targets},
                "smoke": smoke,
                "config": config,
            },
            "runs": runs,
            "medians": medians(runs),
        }  # fmt: skip
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".json").write_text(json.dumps(results, indent=1))
        args.output.with_suffix(".md").write_text(report.markdown(results))
        log(f"results: {args.output.with_suffix('.md')} and .json ({results['meta']['runtime_s']} s)")
        print(args.output.with_suffix(".md").read_text())
        return 0
    finally:
        log("stopping the servers")
        bench.children.stop_all()


if __name__ == "__main__":
    sys.exit(main())
