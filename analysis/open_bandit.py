"""The Open Bandit Dataset sample: public click logs that ``benchmark-dataset --format obd`` reads.

ZOZOTOWN's fashion recommendations (Saito et al., 2021): three campaigns (``all``, ``men``, ``women``;
item ids are per campaign) logged by two policies (uniform random and Bernoulli Thompson sampling),
10,000 impressions each in the sample, 287 clicks in all. Users come as four hashed categorical
features and one affinity per item; items as one numeric and three hashed features. The sample ships
in ``obp``'s source archive on PyPI (its licence, Apache 2.0 for the package, CC BY 4.0 for the data,
lets anyone fetch it; the repository does not carry it). ``obp`` itself is not installed: it needs
Python < 3.11, and only its data is used.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

ARCHIVE = "obp-0.5.7.tar.gz"
ARCHIVE_SHA256 = "3060d67fedfcfadf1e7a6f2608987f74412b5eb74d2c567edeb147595c68f2a0"
LABEL = "click"
CATEGORICAL = ("campaign", "item", "position", *(f"user_feature_{i}" for i in range(4)),
               *(f"item_feature_{i}" for i in range(1, 4)))  # fmt: skip
NUMERIC = ("item_feature_0", "user_item_affinity")
MEMBER = re.compile(r"(?:^|/)(random|bts)/(all|men|women)/(\w+)\.csv$")


def fetch(directory: Path) -> Path:
    """``directory/ARCHIVE``, downloaded from PyPI by pip unless a copy with the right checksum is there."""
    path = directory / ARCHIVE
    if not (path.is_file() and _sha256(path) == ARCHIVE_SHA256):
        path.unlink(missing_ok=True)  # pip keeps a file of the same name, whatever it holds
        directory.mkdir(parents=True, exist_ok=True)
        version = ARCHIVE.removeprefix("obp-").removesuffix(".tar.gz")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--ignore-requires-python",
             "--no-binary", ":all:", f"obp=={version}", "--dest", str(directory)],
            check=True,
        )  # fmt: skip
        if _sha256(path) != ARCHIVE_SHA256:
            raise ValueError(f"{path}: sha256 differs from the published archive's {ARCHIVE_SHA256}")
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read(path: Path, max_rows: int | None) -> pd.DataFrame:
    """Every campaign and policy of the Open Bandit sample in ``path`` (obp's sdist or wheel), in time order.

    Each impression gets its item's features and the user's affinity to the item shown (the log has
    one affinity column per item of the campaign). ``item`` is campaign-qualified: item 3 of
    ``men`` is not item 3 of ``women``.
    """
    import numpy as np
    import pandas as pd

    logs, contexts = _members(path)
    frames = []
    for (policy, campaign), log_csv in sorted(logs.items()):
        frame = pd.read_csv(log_csv, index_col=0)
        items = pd.read_csv(contexts[(policy, campaign)], index_col=0).set_index("item_id")
        affinity = frame.filter(like="user-item_affinity_").to_numpy()
        frame = frame.assign(
            campaign=campaign,
            user_item_affinity=affinity[np.arange(len(frame)), frame["item_id"].to_numpy()],
            **{c: items[c].reindex(frame["item_id"]).to_numpy() for c in items.columns},
        )
        frame["item"] = campaign + ":" + frame["item_id"].astype(str)
        frames.append(frame[["timestamp", LABEL, *CATEGORICAL, *NUMERIC]])
    frame = pd.concat(frames, ignore_index=True)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame = frame.sort_values("timestamp", kind="stable").drop(columns="timestamp").reset_index(drop=True)
    frame = frame.head(max_rows) if max_rows is not None else frame
    categories = {c: frame[c].astype(str).astype("category") for c in CATEGORICAL}
    return frame.assign(**categories).astype({LABEL: np.float32, **dict.fromkeys(NUMERIC, np.float32)})


def _members(path: Path) -> tuple[dict[tuple[str, str], Any], dict[tuple[str, str], Any]]:
    """``(policy, campaign) ->`` the logs and item contexts in ``path``: obp's source archive or wheel, or a zip
    of the full data set (the same ``<policy>/<campaign>/`` layout)."""
    import io
    import tarfile
    import zipfile

    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        members = {name: (lambda name=name: archive.read(name)) for name in archive.namelist()}
    elif tarfile.is_tarfile(path):
        tar = tarfile.open(path)
        members = {m.name: (lambda m=m: tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()}
    else:
        raise ValueError(f"{path} is neither a tar nor a zip archive (obp's source archive or wheel)")
    logs, contexts = {}, {}
    for name, read in members.items():
        match = MEMBER.search(name)
        if match:
            policy, campaign, stem = match.groups()
            if stem in (campaign, "item_context"):
                (logs if stem == campaign else contexts)[(policy, campaign)] = io.BytesIO(read())
    if not logs or set(logs) != set(contexts):
        expected = "<policy>/<campaign>/<campaign>.csv and item_context.csv"
        raise ValueError(f"{path} holds no Open Bandit Dataset logs ({expected})")
    return logs, contexts
