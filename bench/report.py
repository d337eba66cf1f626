"""Results rendering: the Markdown table of a run (latest.md) and the py-spy profile summary."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

TARGETS = ("direct", "ruapi", "litellm", "portkey")
NAMES = {"direct": "direct", "ruapi": "RuAPI", "litellm": "LiteLLM", "portkey": "Portkey"}
NOT_SUPPORTED = "n/a (not supported)"


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def times(value: float | None) -> str:
    """A ratio with two significant digits when small (0.0013×), two decimals otherwise."""
    if value is None:
        return "–"
    return f"{value:.2g}×" if abs(value) < 0.1 else f"{value:.2f}×"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


@dataclass
class Row:
    label: str
    values: dict[str, float | None]
    digits: int = 2
    # RuAPI vs LiteLLM: "ratio" (RuAPI / LiteLLM) and the goal as (operator, bound)
    goal: tuple[str, float] | None = None
    goal_text: str = ""
    percent: bool = False
    unsupported: frozenset[str] = frozenset()  # targets that do not support this request kind

    def cells(self) -> list[str]:
        def show(v: float | None, target: str = "") -> str:
            if target in self.unsupported:
                return NOT_SUPPORTED
            return "–" if v is None else (f"{v:.1%}" if self.percent else fmt(v, self.digits))

        ruapi, litellm, direct = self.values.get("ruapi"), self.values.get("litellm"), self.values.get("direct")
        portkey = self.values.get("portkey")
        vs_litellm = ratio(ruapi, litellm)
        vs_portkey = ratio(ruapi, portkey)
        vs_direct = ratio(ruapi, direct)
        met = "–"
        if self.goal and vs_litellm is not None:
            op, bound = self.goal
            met = "yes" if (vs_litellm <= bound if op == "<=" else vs_litellm >= bound) else "**no**"
        elif self.goal_text.startswith("100") and ruapi is not None:
            met = "yes" if ruapi >= 0.9999 else "**no**"
        return [
            self.label, show(direct), show(ruapi), show(litellm, "litellm"), show(portkey, "portkey"),
            times(vs_litellm), "–" if "portkey" in self.unsupported else times(vs_portkey), times(vs_direct),
            self.goal_text or "–", met,
        ]  # fmt: skip


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(results: dict) -> str:
    meta, med = results["meta"], results["medians"]
    unsupported: dict[str, set[str]] = {}  # "scenario/leg" -> targets that do not support that leg
    for run in results["runs"]:
        if "unsupported" in run:
            unsupported.setdefault(f"{run['scenario']}/{run['leg']}", set()).add(run["target"])

    def na(scenario: str, leg: int | None = 0) -> frozenset[str]:
        """Targets without support for the leg (for leg None: for any leg of the scenario)."""
        if leg is not None:
            return frozenset(unsupported.get(f"{scenario}/{leg}", ()))
        return frozenset().union(*(v for k, v in unsupported.items() if k.startswith(scenario + "/")))

    def get(scenario: str, key: str, leg: int = 0) -> dict[str, float | None]:
        per_target = med.get(scenario, {}).get(str(leg), {})
        return {t: per_target.get(t, {}).get(key) for t in TARGETS}

    def cpu_with_pg(scenario: str, leg: int) -> dict[str, float | None]:
        """CPU per request of the server's processes plus, for RuAPI, its Postgres backends' (what the
        request costs the machine: the peers keep no database)."""
        per_target = med.get(scenario, {}).get(str(leg), {})
        out: dict[str, float | None] = {}
        for t in TARGETS:
            values = per_target.get(t, {})
            cpu = values.get("cpu_ms_per_req")
            out[t] = None if cpu is None else cpu + (values.get("postgres_cpu_ms_per_req") or 0.0)
        return out

    def added(scenario: str, key: str) -> dict[str, float | None]:
        values = get(scenario, key)
        direct = values.get("direct")
        return {t: (None if v is None or direct is None else v - direct) for t, v in values.items() if t != "direct"}

    def combined(scenario: str, key: str, fn: Callable[[list[float]], float]) -> dict[str, float | None]:
        legs = med.get(scenario, {})
        out: dict[str, float | None] = {}
        for t in TARGETS:
            values = [legs[leg][t][key] for leg in legs if t in legs[leg] and legs[leg][t].get(key) is not None]
            out[t] = fn(values) if values and len(values) == len(legs) else None
        return out

    def peak_rss() -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for t in TARGETS:
            values = [run["peak_rss_mb"] for run in results["runs"] if run["target"] == t and "peak_rss_mb" in run]
            out[t] = max(values) if values else None
        return out

    rows: list[Row] = []
    if "S1" in med:
        rows += [
            Row("S1 latency p50, 1 conn (ms)", get("S1", "p50_ms"), 3),
            Row("S1 **added** latency p50 over direct (ms)", added("S1", "p50_ms"), 3, ("<=", 0.25), "≤ ¼ LiteLLM"),
            Row("S1 latency p99 (ms)", get("S1", "p99_ms"), 3),
            Row("S1 **added** latency p99 over direct (ms)", added("S1", "p99_ms"), 3, ("<=", 0.25), "≤ ¼ LiteLLM"),
        ]
    if "S2" in med:
        rows += [
            Row("S2 **requests/s**, 64 conns", get("S2", "rps"), 0, (">=", 4), "≥ 4× LiteLLM"),
            Row("S2 latency p50 (ms)", get("S2", "p50_ms")),
            Row("S2 latency p99 (ms)", get("S2", "p99_ms")),
            Row("S2 errors", get("S2", "errors"), 0),
        ]
    if "S3" in med:
        rows += [
            Row("S3 stream **TTFB p50** (ms), 16 conns", get("S3", "ttfb_p50_ms"), 2, ("<=", 0.1), "≤ 1/10 LiteLLM"),
            Row("S3 stream TTFB p99 (ms)", get("S3", "ttfb_p99_ms")),
            Row("S3 stream **requests/s**", get("S3", "rps"), 0, (">=", 10), "≥ 10× LiteLLM"),
            Row("S3 success rate", get("S3", "success_rate"), percent=True),
        ]
    if "S4" in med:
        streams = meta["config"]["scenarios"]["S4"]["streams"]
        rows += [
            Row(f"S4 {streams:,} slow streams: **success**", get("S4", "success_rate"), goal_text="100 %",
                percent=True),
            Row("S4 TTFB p50 (ms)", get("S4", "ttfb_p50_ms")),
            Row("S4 **TTFB p99** (ms)", get("S4", "ttfb_p99_ms"), 2, ("<=", 0.1), "≤ 1/10 LiteLLM"),
            Row("S4 stream duration p99 (ms)", get("S4", "p99_ms"), 0),
            Row("S4 peak RSS (MB)", get("S4", "peak_rss_mb"), 0),
        ]
    if "S5" in med:
        for leg, info in sorted(med["S5"].items()):
            label = next(iter(info.values()))["leg_label"]
            rows += [
                Row(f"S5 leg {label}: requests/s", get("S5", "rps", int(leg)), 0, unsupported=na("S5", int(leg))),
                Row(f"S5 leg {label}: p99 (ms)", get("S5", "p99_ms", int(leg)), unsupported=na("S5", int(leg))),
                Row(f"S5 leg {label}: CPU ms / request (+ Postgres)", cpu_with_pg("S5", int(leg)), 3,
                    unsupported=na("S5", int(leg))),
            ]
        rows.append(
            Row("S5 cross-protocol **requests/s** (mean of legs)", combined("S5", "rps", lambda v: sum(v) / len(v)),
                0, (">=", 4), "≥ 4× LiteLLM", unsupported=na("S5", None))
        )
    if "S6" in med:
        for leg, info in sorted(med["S6"].items()):
            label = next(iter(info.values()))["leg_label"]
            rows += [
                Row(f"S6 leg {label}: requests/s", get("S6", "rps", int(leg)), 0, unsupported=na("S6", int(leg))),
                Row(f"S6 leg {label}: p99 (ms)", get("S6", "p99_ms", int(leg)), unsupported=na("S6", int(leg))),
                Row(f"S6 leg {label}: CPU ms / request (+ Postgres)", cpu_with_pg("S6", int(leg)), 3,
                    unsupported=na("S6", int(leg))),
            ]
    if "S2" in med:
        rows.append(Row("**CPU ms / request** (S2, server processes)", get("S2", "cpu_ms_per_req"), 3,
                        ("<=", 0.25), "≤ ¼ LiteLLM"))  # fmt: skip
        pg = med["S2"]["0"].get("ruapi", {}).get("postgres_cpu_ms_per_req")
        if pg is not None:
            rows.append(Row("  + Postgres backends CPU ms / request (S2, RuAPI only)", {"ruapi": pg}, 3))
    if "S3" in med:
        rows.append(Row("CPU ms / request (S3 streams)", get("S3", "cpu_ms_per_req"), 3, ("<=", 0.25), "≤ ¼ LiteLLM"))
    rows.append(Row("**peak RSS** of the server, whole run (MB)", peak_rss(), 0, ("<=", 1 / 3), "≤ ⅓ LiteLLM"))

    header = ["scenario / metric", "direct", "RuAPI", "LiteLLM", "Portkey", "RuAPI ÷ LiteLLM", "RuAPI ÷ Portkey",
              "RuAPI ÷ direct", "target", "met"]  # fmt: skip
    targets = meta["targets"]
    machine = meta["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    out = [
        "# Benchmark results (latest run)",
        "",
        f"Run {meta['date']} · mode **{meta['mode']}** · {meta['repeats']} repetition(s) per scenario, medians shown · "
        f"total {meta['runtime_s']} s.",
        "",
        f"Machine: {machine['cpu']}, **{machine['cores']} cores**, {machine['memory_gib']} GiB, {machine['os']}, "
        f"kernel {machine['kernel']}. **Load generator, fake upstream and server share these cores** (each "
        "target is measured with the other gateways paused); compare the targets within this run, not with "
        "other machines."
        + (f" Load average (1 min) {machine['loadavg_1m_start']} at the start, {machine['loadavg_1m_end']} at the "
           "end (above ~2, other work competed for the cores)." if "loadavg_1m_start" in machine else ""),
        "",
        "Targets: " + "; ".join(f"**{NAMES.get(n, n)}** = {t['label']}" for n, t in targets.items()) + ".",
        "",
        f"Versions: {versions}.",
        "",
        table(header, [row.cells() for row in rows]),
        "",
        "Ratios are RuAPI's value divided by LiteLLM's / Portkey's / direct's (for *added* latency: RuAPI's "
        "added milliseconds over the other gateway's). CPU is user+system time of the server's process tree "
        "(uvicorn master + workers; the Node process for Portkey; nginx for direct) over the successful "
        "requests of that measurement; RuAPI's Postgres backends are shown on their own line. RSS is the sum "
        "over the server's processes. Portkey does less per request than RuAPI (no database, no auth, no "
        f"metering) and runs one process; {NOT_SUPPORTED} marks a conversion it does not offer.",
        "",
        smoke_section(meta.get("smoke", {})),
        "## Every measurement",
        "",
        runs_table(results["runs"]),
        "",
    ]
    return "\n".join(out)


def smoke_section(smoke: dict) -> str:
    outcomes = [(t, c, o) for t, checks in smoke.items() for c, o in checks.items() if o != "ok"]
    failures = [(t, c, o) for t, c, o in outcomes if "is not supported by" not in o]
    lacking = [(t, c, o) for t, c, o in outcomes if "is not supported by" in o]
    lines = []
    if not failures:
        lines.append("Smoke test before the run: every target answered every request kind it supports correctly.")
    else:
        lines += ["Smoke test failures before the run:", ""]
        lines += [f"- {NAMES.get(t, t)} `{c}`: {o[:200]}" for t, c, o in failures]
    if lacking:
        lines += ["", "Request kinds a target does not support (those legs are skipped, shown as "
                  f"{NOT_SUPPORTED}):", ""]  # fmt: skip
        lines += [f"- {NAMES.get(t, t)} `{c}`: {o[:200]}" for t, c, o in lacking]
    return "\n".join(lines) + "\n"


def runs_table(runs: list[dict]) -> str:
    header = ["scen.", "leg", "target", "rep", "req/s", "p50 ms", "p99 ms", "TTFB p50", "TTFB p99", "success",
              "errors", "CPU ms/req", "PG ms/req", "peak RSS MB", "upstream CPU ms/req"]  # fmt: skip
    rows = []
    for run in runs:
        if "unsupported" in run:
            cells = [run["scenario"], run["leg_label"], NAMES.get(run["target"], run["target"]), "–", NOT_SUPPORTED]
            rows.append(cells + [""] * (len(header) - len(cells)))
            continue
        if "failed" in run:
            failed = [run["scenario"], run["leg_label"], run["target"], str(run["rep"]), "FAILED", run["failed"][:80]]
            rows.append(failed + [""] * (len(header) - len(failed)))
            continue
        rate = run.get("success_rate")
        rows.append([
            run["scenario"], run["leg_label"], NAMES.get(run["target"], run["target"]), str(run["rep"]),
            fmt(run["rps"], 0), fmt(run.get("p50_ms"), 3), fmt(run.get("p99_ms"), 3),
            fmt(run.get("ttfb_p50_ms")), fmt(run.get("ttfb_p99_ms")),
            "–" if rate is None else f"{rate:.1%}", str(run["errors"]), fmt(run["cpu_ms_per_req"], 3),
            fmt(run.get("postgres_cpu_ms_per_req"), 3), fmt(run["peak_rss_mb"], 0),
            fmt(run["upstream_cpu_ms_per_req"], 3),
        ])  # fmt: skip
    return table(header, rows)


# -- profile --------------------------------------------------------------------------------------------

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def frame_parts(frame: str) -> tuple[str, str]:
    """(function, file) of one py-spy frame `func (path/to/file.py:123)`."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    return match["func"], match["file"]


def area_of(file: str) -> str:
    """The package a frame belongs to: site-packages/<pkg>, the project app, or the stdlib module."""
    if "site-packages/" in file:
        rest = file.split("site-packages/", 1)[1]
        return rest.split("/", 1)[0].removesuffix(".py")
    if "/work/" in file or file.startswith(("proxy/", "billing/", "catalog/", "accounts/", "ruapi/")):
        parts = file.split("/")
        for app in ("proxy", "billing", "catalog", "accounts", "ruapi"):
            if app in parts:
                return f"gateway:{app}" + ("/translate" if "translate" in parts else "")
    if "/python3" in file:
        return "stdlib:" + file.rsplit("/", 1)[-1].removesuffix(".py")
    return file or "?"


def short(file: str) -> str:
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1]
    if "/work/main/" in file:
        return file.split("/work/main/", 1)[1]
    return file.rsplit("/lib/", 1)[-1]


def _aggregate(stacks: dict[str, int]) -> dict[str, dict[str, int]]:
    """Self and inclusive sample counts per function and per package."""
    out: dict[str, dict[str, int]] = {"self": {}, "inclusive": {}, "area_self": {}, "area_inclusive": {}}
    for stack, count in stacks.items():
        frames = [f for f in stack.split(";") if "(" in f]
        if not frames:
            continue
        leaf_func, leaf_file = frame_parts(frames[-1])
        key = f"{leaf_func} ({short(leaf_file)})"
        out["self"][key] = out["self"].get(key, 0) + count
        area = area_of(leaf_file)
        out["area_self"][area] = out["area_self"].get(area, 0) + count
        keys = {f"{func} ({short(file)})" for func, file in map(frame_parts, frames)}
        areas = {area_of(file) for _, file in map(frame_parts, frames)}
        for fkey in keys:
            out["inclusive"][fkey] = out["inclusive"].get(fkey, 0) + count
        for farea in areas:
            out["area_inclusive"][farea] = out["area_inclusive"].get(farea, 0) + count
    return out


def is_pool_thread(stack: str) -> bool:
    """Stacks of threads other than the event loop start in threading.Thread._bootstrap."""
    first = stack.split(";", 1)[0]
    return "_bootstrap (" in first and "threading" in first


def profile_markdown(stacks: dict[str, int], name: str, scenario: dict, metrics: dict, workers: list[int],
                     seconds: int) -> str:  # fmt: skip
    total = sum(stacks.values()) or 1
    loop_stacks = {s: c for s, c in stacks.items() if not is_pool_thread(s)}
    pool_stacks = {s: c for s, c in stacks.items() if is_pool_thread(s)}
    everything, loop, pool = _aggregate(stacks), _aggregate(loop_stacks), _aggregate(pool_stacks)

    def top(data: dict[str, int], n: int) -> list[list[str]]:
        ranked = sorted(data.items(), key=lambda kv: -kv[1])[:n]
        return [[f"{count / total:.1%}", f"`{key}`"] for key, count in ranked]

    by_thread = metrics.get("cpu_ms_per_req_by_thread", {})
    loop_share = sum(loop_stacks.values()) / total
    return "\n".join([
        f"# Profile of the gateway under {name} ({scenario.get('title', '')})",
        "",
        f"py-spy record (200 Hz, non-blocking, idle threads excluded) on the {len(workers)} uvicorn workers "
        f"(PIDs {', '.join(map(str, workers))}) for {seconds} s while the load generator ran "
        f"{scenario.get('connections')} connections: {metrics.get('rps')} requests/s, p50 {metrics.get('p50_ms')} ms, "
        f"p99 {metrics.get('p99_ms')} ms, {metrics.get('errors')} errors. {total} samples; every percentage "
        "below is of all samples of both workers (CPU-active threads only).",
        "",
        "CPU ms per request by thread kind (from /proc, not sampled): "
        + ", ".join(f"{k}: **{v} ms**" for k, v in by_thread.items()) + ".",
        "",
        f"Samples on the event-loop thread: {loop_share:.1%}; on other threads (the sync_to_async pool that "
        f"runs the ORM): {1 - loop_share:.1%}. Self time of `Runner.run` is native code under the loop "
        "(uvloop, httptools, socket syscalls, thread-pool wake-ups): no Python frame sits above it. py-spy's "
        "idle detection misses some threads blocked in C (poll/epoll/recv), so `Runner.run`, "
        "`Connection.wait` and `Connection._recv` self time include waiting: the /proc split above is the "
        "reliable CPU figure; the stacks show *where* the time goes.",
        "",
        "## CPU by package, self time of the leaf frame (all threads)",
        "",
        table(["self", "package"], top(everything["area_self"], 20)),
        "",
        "## Pool threads (ORM): top functions by inclusive time",
        "",
        table(["inclusive", "function"], top(pool["inclusive"], 40)),
        "",
        "## Pool threads (ORM): top functions by self time",
        "",
        table(["self", "function"], top(pool["self"], 20)),
        "",
        "## Event-loop thread: top functions by inclusive time",
        "",
        table(["inclusive", "function"], top(loop["inclusive"], 50)),
        "",
        "## Event-loop thread: top functions by self time",
        "",
        table(["self", "function"], top(loop["self"], 30)),
        "",
    ])  # fmt: skip
