"""CPU time and resident memory of a process tree, read from /proc (Linux only, no dependencies)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+system CPU seconds) of a live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            raw = file.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as file:
            return int(file.read().split()[1]) * PAGE_SIZE
    except OSError:
        return 0


def tree(root: int) -> list[int]:
    """The root and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat:
                children.setdefault(stat[0], []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    result = {}
    for pid in pids:
        stat = _stat(pid)
        if stat:
            result[pid] = stat[1]
    return result


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """thread id -> user+system CPU seconds of every thread of a process."""
    result = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{entry}/stat", "rb") as file:
                    raw = file.read()
            except OSError:
                continue
            fields = raw[raw.rindex(b")") + 2 :].split()
            result[int(entry)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return result


def rss_bytes(pids: Iterable[int]) -> int:
    return sum(_rss_bytes(pid) for pid in pids)


@dataclass
class Meter:
    """CPU seconds used and peak summed RSS of some processes while it runs (a sampling thread).

    `pids` is called at start and on every sample, so processes that appear meanwhile count too
    (their CPU from their start when they were not there at the beginning).
    """

    pids: Callable[[], list[int]]
    interval: float = 0.1
    peak_rss: int = 0
    _start: dict[int, float] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Meter:
        self._start = cpu_seconds(self.pids())
        self._last = dict(self._start)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            pids = self.pids()
            self.peak_rss = max(self.peak_rss, rss_bytes(pids))
            self._last.update(cpu_seconds(pids))
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        pids = self.pids()
        self.peak_rss = max(self.peak_rss, rss_bytes(pids))
        self._last.update(cpu_seconds(pids))

    @property
    def cpu_seconds(self) -> float:
        return sum(value - self._start.get(pid, 0.0) for pid, value in self._last.items())


