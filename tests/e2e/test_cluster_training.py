"""The ranker's training with its Horovod workers on two hosts reached over ssh, as conf/cluster.toml places them.

``pctr-a`` and ``pctr-b`` are two loopback addresses of this machine behind an sshd of their own
(.ci/sshd.sh), so horovodrun starts each worker through ``ssh``, as on a cluster. The demo day's ranker is
trained twice, in copies of the demo's home: on the two hosts, and on localhost; same seed, same global batch.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.config import load_config
from core.io import read_json
from core.layout import RANKER_WEIGHTS, ranker_dir
from entrypoints.airflow_local import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

TWO_HOSTS = {"PCTR_TRAIN__HOSTS": '["pctr-a:1", "pctr-b:1"]', "PCTR_TRAIN__SSH_PORT": "2222"}
ONE_HOST = {"PCTR_TRAIN__HOSTS": '["localhost:2"]'}
# Measured: the two placements train bit-identical weights (largest difference 0.0, weights up to 3.3). The
# tolerance leaves room for another summation order, since a worker alone on its "host" takes both cores' threads.
WEIGHT_TOLERANCE = 1e-6


@pytest.fixture(scope="session")
def ssh_hosts() -> None:
    """``ssh pctr-a`` and ``ssh pctr-b`` work (.ci/sshd.sh installs and starts what is missing)."""
    subprocess.run([str(REPO / ".ci" / "sshd.sh")], check=True)


def _train(
    demo_home: Path, home: Path, demo_env: dict[str, str], placement: dict[str, str]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``pctr train`` of the demo's day in a copy of its home at ``home``, its workers placed as ``placement``
    says; the run's stats and the ranker's weights."""
    shutil.copytree(demo_home, home, symlinks=True)
    ds = read_json(home / "demo" / "summary.json")["ds"]
    # the setting the demo's search recorded for this day: trained once, not searched again
    env = {**os.environ, "PCTR_HOME": str(home), **demo_env, "PCTR_TRAIN__SEARCH_EVERY_DAYS": "0", **placement}
    command = [sys.executable, "-m", "entrypoints.cli", "train", "--ds", ds]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"pctr train --ds {ds}: {proc.stderr[-3000:]}"
    out = ranker_dir(load_config(home=home), ds)
    return read_json(out / "_stats.json"), _weights(out / RANKER_WEIGHTS)


def _weights(path: Path) -> dict[str, np.ndarray]:
    """Keras weights, by their path in the file."""
    import h5py

    arrays: dict[str, np.ndarray] = {}

    def keep(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            arrays[name] = item[()]

    with h5py.File(path) as weights:
        weights.visititems(keep)
    return arrays


def test_workers_on_two_hosts_over_ssh_train_what_one_host_trains(
    ssh_hosts: None, demo_home: Path, demo_env: dict[str, str], tmp_path: Path
) -> None:
    over_ssh, trained = _train(demo_home, tmp_path / "two_hosts", demo_env, TWO_HOSTS)
    local, reference = _train(demo_home, tmp_path / "one_host", demo_env, ONE_HOST)

    # each rank was started by the sshd of its host's address; horovodrun starts local ones itself
    assert over_ssh["workers"] == [
        {"rank": rank, "host": host, "ssh_server": f"{socket.gethostbyname(host)}:{TWO_HOSTS['PCTR_TRAIN__SSH_PORT']}"}
        for rank, host in enumerate(("pctr-a", "pctr-b"))
    ]
    assert local["workers"] == [{"rank": rank, "host": "localhost", "ssh_server": None} for rank in (0, 1)]
    assert not over_ssh["setting"]["searched"] and not local["setting"]["searched"]

    assert over_ssh["history"]["val_logloss"] == pytest.approx(local["history"]["val_logloss"], rel=1e-6)
    assert trained.keys() == reference.keys() and trained
    for name, values in reference.items():
        np.testing.assert_allclose(trained[name], values, rtol=0, atol=WEIGHT_TOLERANCE, err_msg=name)
