"""``pctr serve --workers 2`` as a real process on Redis state: the frequency cap holds across its workers."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from core.config import PctrConfig
from core.layout import Layout
from models.features import EXPOSURES_FEATURE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
VERSION = "2026-11-20-v1"
WORKERS = 2
USERS = ("w1", "w2", "w3", "w4")  # one client each, all at once
REQUESTS_PER_USER = 12  # of 5 slots: more impressions than the cap lets the 20 candidates have
SLOTS = 5
START_SECONDS = 240.0  # each worker imports TensorFlow and loads the bundle, on a small shared machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def pctr_serve(cfg: PctrConfig, port: int, log: Path) -> Iterator[str]:
    """``pctr serve --workers 2`` on ``cfg`` (given as ``PCTR_*`` variables) in a session of its own; its URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCTR_")}
    env["PCTR_HOME"] = str(cfg.home)
    env |= {f"PCTR_SERVING__{k.upper()}": str(v) for k, v in cfg.serving.model_dump(exclude_defaults=True).items()}
    command = [sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(port), "--workers", str(WORKERS)]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}"
        assert proc.poll() is None, log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)  # uvicorn's parent stops its workers
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the session started above: the parent and its workers
            proc.wait()


def wait_until_every_worker_is_ready(url: str, log: Path) -> None:
    """Until ``/readyz`` answers 200 on 10 new connections in a row: each may go to either worker."""
    deadline = time.monotonic() + START_SECONDS
    in_a_row = 0
    while in_a_row < 10:
        assert time.monotonic() < deadline, f"not ready within {START_SECONDS} s:\n{log.read_text()}"
        try:
            ready = httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        except httpx.TransportError:  # not listening yet
            ready = False
        in_a_row = in_a_row + 1 if ready else 0
        if not ready:
            time.sleep(0.5)


def ads_served(url: str, user_id: str) -> list[list[str]]:
    """The ads of each of ``user_id``'s requests, one after the other, each on a new connection (any worker's)."""
    served = []
    for _ in range(REQUESTS_PER_USER):
        response = httpx.post(f"{url}/v1/rank", json={"user_id": user_id, "slots": SLOTS}, timeout=60)
        assert response.status_code == 200, response.text
        served.append([ad["ad_id"] for ad in response.json()["ads"]])
    return served


def served_log_by_user_and_ad(cfg: PctrConfig) -> dict[tuple[str, str], list[tuple[str, str, int]]]:
    """(user, ad) -> its impressions as (time, writing worker's pid, exposures feature), in time order."""
    impressions = defaultdict(list)
    for path in Layout(cfg.home).served_log.glob("dt=*/*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            impression = (record["ts"], path.stem, record["served_features"][EXPOSURES_FEATURE])
            impressions[record["user_id"], record["ad_id"]].append(impression)
    return {pair: sorted(found) for pair, found in impressions.items()}


def test_the_frequency_cap_holds_across_two_worker_processes(make_home, publish, redis_state, tmp_path):
    cfg = make_home(**redis_state.model_dump(include={"state", "redis_url", "redis_key_prefix"}))
    cap = cfg.serving.frequency_cap
    publish(cfg, VERSION, "1")
    log = tmp_path / "serve.log"
    with pctr_serve(cfg, free_port(), log) as url:
        wait_until_every_worker_is_ready(url, log)
        with ThreadPoolExecutor(len(USERS)) as clients:
            served = dict(zip(USERS, clients.map(lambda user: ads_served(url, user), USERS), strict=True))

    for user, requests in served.items():
        shown = Counter(ad for ads in requests for ad in ads)
        assert max(shown.values()) == cap, (user, shown)  # the cap was reached, and never passed
    impressions = served_log_by_user_and_ad(cfg)
    assert len({pid for found in impressions.values() for _, pid, _ in found}) == WORKERS
    # a worker scored an ad with the impressions the other worker served, and capped it on them
    crossed = [pair for pair, found in impressions.items() if len({pid for _, pid, _ in found}) > 1]
    assert crossed
    for pair, found in impressions.items():
        assert [exposures for _, _, exposures in found] == list(range(len(found))), pair
