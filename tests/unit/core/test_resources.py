"""PeakMemory: the summed RSS of a process tree, children included, with per-phase peaks."""

from __future__ import annotations

import subprocess
import sys
import time

from core.resources import MIB, PeakMemory, tree_rss_bytes

# writes every byte (a bytes product, unlike a zeroed bytearray, is resident), then holds it
ALLOCATE_200_MB = "import time; block = b'x' * (200 * 2**20); print('ready', flush=True); time.sleep(1.5)"


def _child_holding_200_mb() -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", ALLOCATE_200_MB], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_a_child_allocating_200_mb_is_seen_in_the_peak() -> None:
    import psutil

    baseline_mib = tree_rss_bytes(psutil.Process()) / MIB
    with PeakMemory(interval=0.1) as memory:
        proc = _child_holding_200_mb()
        time.sleep(0.5)
        proc.wait()
    assert memory.peak_mib - baseline_mib >= 190


def test_phases_keep_their_own_peaks_and_may_overlap() -> None:
    with PeakMemory(interval=0.1) as memory:
        memory.begin("quiet")
        time.sleep(0.3)
        memory.end("quiet")
        memory.begin("long task")  # two tasks at once: both see the samples taken while both run
        memory.begin("allocating")
        proc = _child_holding_200_mb()
        time.sleep(0.5)
        proc.wait()
        memory.end("allocating")
        time.sleep(0.3)
        memory.end("long task")
        memory.begin("quiet again")
    peaks = memory.phase_peaks_mib
    assert set(peaks) == {"quiet", "long task", "allocating", "quiet again"}
    assert peaks["allocating"] - peaks["quiet"] >= 190
    assert peaks["long task"] == peaks["allocating"]
    assert peaks["allocating"] - peaks["quiet again"] >= 190  # the child's memory left with it
    assert memory.peak_mib == max(peaks.values())
