"""The log of served impressions: one JSON line per impression, with the exact features it was scored on.

Lines go to ``$PCTR_HOME/serving/served/dt=<UTC date>/<pid>.jsonl``: one file per process, so
replicas and restarts never interleave writes. A record (``served_record``) holds the fields of the
raw impression schema (``core.raw_logs``) in its order, so the same readers take both, then what only
serving knows (price, exploration, bundle), then ``served_features``: every spec feature with the
value the ranker saw (``position`` there is the default slot the model scored with, while the
top-level ``position`` is the slot served).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.raw_logs import IMPRESSION_KEYS, SERVED_FEATURES


def served_record(fields: Mapping[str, Any], served_features: Mapping[str, Any], **serving: Any) -> dict[str, Any]:
    """One served impression as a log record: the schema fields, the serving-only ``serving`` ones, the features.

    ``fields`` must hold every field of the raw impression schema (a ``KeyError`` names the first
    missing), so a field added to the schema cannot silently go missing from the served log.
    """
    return {**{key: fields[key] for key in IMPRESSION_KEYS}, **serving, SERVED_FEATURES: served_features}


class ServedLog:
    """Appends impression records under ``directory``; thread-safe."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    def path(self, day: dt.date) -> Path:
        return self.directory / f"dt={day.isoformat()}" / f"{os.getpid()}.jsonl"

    def write(self, records: Sequence[dict[str, Any]], day: dt.date) -> None:
        """Append ``records`` (the impressions of one request) to the file of ``day``."""
        if not records:
            return
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        path = self.path(day)
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            # one write per request so that a request's impressions stay together
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(text)
