"""The demo's child processes: stopped with SIGINT, then SIGKILL, descendants in their own sessions included."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from core.processes import ChildProcesses

# a process that ignores SIGINT and SIGTERM (as `airflow dags test` was seen ignoring SIGTERM) and starts a
# grandchild in a session of its own that ignores them too (as horovodrun's workers run), then prints its pid
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen(
    [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"],
    start_new_session=True,
)
print(grandchild.pid, flush=True)
time.sleep(600)
"""


def _start(children: ChildProcesses, code: str) -> tuple[subprocess.Popen, int | None]:
    proc = children.popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    return proc, int(line) if line else None


def test_stop_kills_children_that_ignore_sigint_and_their_detached_descendants() -> None:
    children = ChildProcesses(grace=1.0)
    proc, grandchild = _start(children, STUBBORN)
    assert grandchild is not None and psutil.pid_exists(grandchild)
    assert psutil.Process(grandchild).ppid() == proc.pid
    started = time.time()
    children.stop()
    assert time.time() - started < 10
    assert proc.returncode is not None
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


def test_a_child_that_handles_sigint_stops_without_waiting_for_the_grace_period() -> None:
    children = ChildProcesses(grace=30.0)
    # Python ignores SIGINT for good when started with it ignored (a background job's children are): restore it
    handles_sigint = "import signal, time; signal.signal(signal.SIGINT, signal.default_int_handler)"
    proc, _ = _start(children, f"{handles_sigint}; print(flush=True); time.sleep(600)")
    started = time.time()
    children.stop(proc)
    assert time.time() - started < 5
    assert proc.returncode not in (None, 0)  # ended by the signal
    children.stop()  # nothing left: returns at once
