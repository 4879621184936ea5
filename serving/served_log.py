"""The log of served impressions: one JSON line per impression, with the exact features it was scored on.

Lines go to ``$PCTR_HOME/serving/served/dt=<UTC date>/<pid>.jsonl``: one file per process, so
replicas and restarts never interleave writes. The fields follow the raw impression schema
(``impression_id, request_id, ts, user_id, ad_id, advertiser_id, campaign_id, placement, position,
device, os, country, bid, model_version, pctr_served, served_features``) so the same readers take
both; ``served_features`` maps every spec feature to the value the ranker saw (``position`` there is
the default slot the model scored with, while the top-level ``position`` is the slot served).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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
