"""Memory of a whole process tree, sampled while work runs: the budget ``make demo`` and ``make bench`` report.

One process's RSS says little here: a stage's memory sits in its Spark JVM, its horovodrun workers or
the Airflow task process it runs in. ``PeakMemory`` sums the RSS of a root process and every
descendant alive at each sample.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType

import psutil

MIB = 2**20


def tree_rss_bytes(root: psutil.Process) -> int:
    """Summed RSS of ``root`` and its descendants now (processes that exit meanwhile count as 0)."""
    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for proc in processes:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


class PeakMemory:
    """Peak summed RSS (MiB) of the tree under ``pid`` (default: this process), sampled every ``interval`` s.

    ``begin(name)`` attributes the following samples to the phase ``name`` as well, until ``end(name)``;
    phases may overlap (two tasks running at once). ``phase_peaks_mib`` holds each phase's peak. Use as a
    context manager; the peaks are readable while it runs.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.5) -> None:
        self._root = psutil.Process(pid if pid is not None else os.getpid())
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
        self._phases: set[str] = set()
        self._peak = 0
        self._phase_peaks: dict[str, int] = {}

    @property
    def peak_mib(self) -> float:
        return round(self._peak / MIB, 1)

    @property
    def phase_peaks_mib(self) -> dict[str, float]:
        with self._lock:
            return {name: round(peak / MIB, 1) for name, peak in self._phase_peaks.items()}

    def begin(self, name: str) -> None:
        with self._lock:
            self._phases.add(name)
            self._phase_peaks.setdefault(name, 0)
        self.sample()  # a short phase still gets one sample

    def end(self, name: str) -> None:
        with self._lock:
            self._phases.discard(name)

    def sample(self) -> int:
        """Take one sample now; return it in bytes."""
        rss = tree_rss_bytes(self._root)
        with self._lock:
            self._peak = max(self._peak, rss)
            for phase in self._phases:
                self._phase_peaks[phase] = max(self._phase_peaks[phase], rss)
        return rss

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
