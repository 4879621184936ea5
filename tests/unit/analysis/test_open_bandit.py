"""The Open Bandit Dataset reader on a small archive laid out as obp's (two policies, two campaigns)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import open_bandit


def _log(campaign: str, start: str, items: int, rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range(start, periods=rows, freq="37min", tz="UTC").astype(str),
            "item_id": rng.integers(0, items, rows),
            "position": rng.integers(1, 4, rows),
            "click": rng.integers(0, 2, rows),
            "propensity_score": 1.0 / items,
            **{f"user_feature_{i}": [f"u{i}-{v}" for v in rng.integers(0, 3, rows)] for i in range(4)},
        }
    )
    affinity = {f"user-item_affinity_{i}": np.where(frame["item_id"] == i, i + 0.5, 0.0) for i in range(items)}
    return frame.assign(**affinity)


def _items(items: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": np.arange(items),
            "item_feature_0": np.arange(items) / 10,
            **{f"item_feature_{i}": [f"f{i}-{v % 2}" for v in range(items)] for i in range(1, 4)},
        }
    )


def _archive(path: Path, members: dict[str, pd.DataFrame]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, frame in members.items():
            data = frame.to_csv().encode()  # obp's files carry a leading index column
            info = tarfile.TarInfo(f"obp-0.5.7/obp/dataset/obd/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return _archive(
        tmp_path / "obp.tar.gz",
        {
            "random/men/men.csv": _log("men", "2019-11-24", 3, 20, seed=1),
            "random/men/item_context.csv": _items(3),
            "bts/women/women.csv": _log("women", "2019-11-24 00:10", 4, 20, seed=2),
            "bts/women/item_context.csv": _items(4),
        },
    )


def test_every_log_is_read_in_time_order_with_its_items_features(archive: Path) -> None:
    frame = open_bandit.read(archive, None)
    assert list(frame.columns) == [open_bandit.LABEL, *open_bandit.CATEGORICAL, *open_bandit.NUMERIC]
    assert len(frame) == 40
    # the two logs interleave in time (37-minute steps, 10 minutes apart)
    assert list(frame["campaign"][:4]) == ["men", "women", "men", "women"]
    # item ids are per campaign; the affinity is the user's to the item shown; the item's own features join
    item_id = frame["item"].str.split(":").str[1].astype(int)
    assert set(frame["item"].str.split(":").str[0]) == {"men", "women"}
    np.testing.assert_allclose(frame["user_item_affinity"], item_id + 0.5)
    np.testing.assert_allclose(frame["item_feature_0"], item_id / 10, rtol=1e-6)
    assert all(isinstance(frame[c].dtype, pd.CategoricalDtype) for c in open_bandit.CATEGORICAL)


def test_max_rows_keeps_the_earliest(archive: Path) -> None:
    earliest = open_bandit.read(archive, None).head(5)
    pd.testing.assert_frame_equal(open_bandit.read(archive, 5), earliest, check_categorical=False)


def test_a_zip_reads_like_the_tar(archive: Path, tmp_path: Path) -> None:
    with tarfile.open(archive) as tar, zipfile.ZipFile(tmp_path / "obd.zip", "w") as zipped:
        for member in tar.getmembers():
            zipped.writestr(member.name, tar.extractfile(member).read())
    assert open_bandit.read(tmp_path / "obd.zip", None).equals(open_bandit.read(archive, None))


def test_an_archive_without_the_sample_or_with_a_log_missing_its_items_is_refused(tmp_path: Path) -> None:
    unrelated = _archive(tmp_path / "other.tar.gz", {"readme/x/notes.csv": _items(2)})
    with pytest.raises(ValueError, match="no Open Bandit Dataset logs"):
        open_bandit.read(unrelated, None)
    no_items = _archive(tmp_path / "partial.tar.gz", {"random/men/men.csv": _log("men", "2019-11-24", 3, 5, seed=3)})
    with pytest.raises(ValueError, match="no Open Bandit Dataset logs"):
        open_bandit.read(no_items, None)
    (tmp_path / "plain.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="neither a tar nor a zip"):
        open_bandit.read(tmp_path / "plain.csv", None)
