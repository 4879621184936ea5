"""The log of served impressions: one JSON line per impression, with the exact features it was scored on.

``impression_records`` builds the records of one request's placements; ``ServedLog`` appends them.

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
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.raw_logs import IMPRESSION_KEYS, SERVED_FEATURES
from models.features import FEATURES
from serving.auction import Placement
from serving.request_features import CONTEXT

FEATURE_NAMES = tuple(f.name for f in FEATURES)  # what a record's served_features hold: the model inputs and the bid


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


def impression_records(
    *, request_id: str, now: dt.datetime, columns: Mapping[str, np.ndarray], pctr: np.ndarray,
    placements: Sequence[Placement], campaign_ids: np.ndarray, bids: np.ndarray, model_version: str,
    bundle_version: str,
) -> list[dict[str, Any]]:  # fmt: skip
    """The served-log records of one request's ``placements``, each with a new impression id.

    ``columns`` is the ranker's batch that was scored, ``pctr`` its calibrated pCTRs, and
    ``campaign_ids`` and ``bids`` the candidates' (all aligned with the candidates, which a
    placement's ``index`` points into). ``now`` (UTC) is the request's time.
    """
    ts = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    records = []
    for p in placements:
        features = {name: _json_value(columns[name][p.index]) for name in FEATURE_NAMES}
        fields = {
            "impression_id": uuid.uuid4().hex,
            "request_id": request_id,
            "ts": ts,
            **{k: features[k] for k in ("user_id", "ad_id", "advertiser_id")},
            "campaign_id": campaign_ids[p.index],
            **{f.name: features[f.name] for f in CONTEXT},
            "position": p.slot,
            "bid": float(bids[p.index]),
            "model_version": model_version,
            "pctr_served": float(pctr[p.index]),
        }
        records.append(served_record(fields, features, price=p.price, explore=p.explore, bundle_version=bundle_version))
    return records


def _json_value(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
