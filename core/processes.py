"""Child processes in sessions of their own, stopped with every descendant: the demo's and the UIs' children,
and the daemons that outlive the command that started them (``make cluster``'s), found again by their pid files."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil


class ChildProcesses:
    """The processes the demo starts, each in a session of its own, and their descendants; ``stop`` ends them.

    A session of their own keeps a terminal's Ctrl-C to the demo alone, which then stops them in order:
    SIGINT to each child's process group (Airflow shuts down on SIGINT; ``airflow dags test`` was seen
    ignoring SIGTERM), then, after ``grace`` seconds, SIGKILL to whatever of their trees is left, including
    descendants in groups of their own (Airflow's task processes, horovodrun's workers).
    """

    def __init__(self, grace: float = 5.0) -> None:
        self.grace = grace
        self._procs: list[subprocess.Popen] = []

    def popen(self, command: list[str], **kwargs: Any) -> subprocess.Popen:
        proc = subprocess.Popen(command, start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    def stop(self, *procs: subprocess.Popen, grace: float | None = None) -> None:
        """Stop ``procs`` (default: every child) with their descendants; return once all are gone."""
        procs = procs or tuple(self._procs)
        tree = _process_trees(procs)
        for proc in procs:
            _signal_group(proc, signal.SIGINT)
        _wait_gone(tree, self.grace if grace is None else grace)
        # descendants started meanwhile count too; a group leader is reaped only below, so its pid is still its group's
        survivors = [p for p in {*tree, *_process_trees(procs)} if _alive(p)]
        for victim in survivors:
            with contextlib.suppress(psutil.Error):
                victim.kill()
        for proc in procs:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
            if proc in self._procs:
                self._procs.remove(proc)
        _wait_gone(survivors, 10.0)  # SIGKILL is delivered asynchronously


def _process_trees(procs: tuple[subprocess.Popen, ...]) -> list[psutil.Process]:
    tree = []
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(proc.pid)
                tree += [root, *root.children(recursive=True)]
    return tree


def _wait_gone(processes: list[psutil.Process], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive(p) for p in processes):
        time.sleep(0.1)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    if proc.returncode is None:  # not reaped yet: its pid, and so the group id, cannot have been reused
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def daemon_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in ``pid_file`` if that process still runs a command line holding ``marker`` (a daemon's class or
    module): a pid file left by a crash names a dead process, or one whose pid was reused since."""
    try:
        pid = int(pid_file.read_text())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError):
        return None
    return pid if marker.encode() in command else None


def stop_process_group(pid: int, grace: float) -> None:
    """SIGTERM the process group that ``pid`` leads (a daemon started in a session of its own, with its
    workers), SIGKILL what outlasts ``grace`` seconds; return once the group is gone."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0  # SIGKILL is delivered asynchronously
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    # a leader that is this process's child stays a zombie until reaped, and its group never empties
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
