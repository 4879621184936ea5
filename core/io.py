"""Atomic writes and stage summaries shared by every stage."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Stats = dict[str, Any]


def write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """Write ``path`` by ``write(a temporary path)`` beside it, then a rename: readers never see a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small file so readers see either the old or the new content, never a torn one (synced to disk)."""

    def synced(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    write_atomic(path, synced)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield a scratch directory beside ``final`` that replaces ``final`` only if the block succeeds.

    Reruns of a partition therefore swap a complete new partition in for the old one; a failed run
    leaves the previous partition untouched. (A crash between the two renames below leaves the old
    partition under ``.old-*``, from where it is restored on the next run.)
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    _restore_orphaned_old(final)
    scratch = final.parent / f".{final.name}.staging-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        yield scratch
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        if final.exists():
            os.rename(final, old)
        os.rename(scratch, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _restore_orphaned_old(final: Path) -> None:
    if final.exists():
        for leftover in final.parent.glob(f".{final.name}.old-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        return
    olds = sorted(final.parent.glob(f".{final.name}.old-*"))
    if olds:
        os.rename(olds[-1], final)


def write_stats(output_dir: Path, stats: Stats) -> Stats:
    """Write the stage summary as ``_stats.json`` beside the stage's output and return it."""
    write_json_atomic(output_dir / "_stats.json", stats)
    return stats
