"""bench.serving's pure parts: the wrk script's bodies, reading wrk's output, and the bundle copies it publishes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.serving import copy_bundle, parse_wrk, point_current, rank_bodies, wrk_script
from core.bundle import MANIFEST, current_bundle_dir, file_checksums, verify
from core.io import write_json_atomic
from core.layout import Layout

# wrk 4.1.0 against a server answering 9 of 92 requests with 302 or 503 (5 of them 503s)
WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:18777/v1/rank
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    42.08ms    8.76ms  47.80ms   95.65%
    Req/Sec    46.00      9.40    60.00     70.00%
  Latency Distribution
     50%   43.97ms
     75%   44.03ms
     90%   44.09ms
     99%   47.80ms
  92 requests in 1.00s, 11.22KB read
  Non-2xx or 3xx responses: 5
Requests/sec:     91.81
Transfer/sec:     11.20KB
PCTR_WRK_JSON {"requests": 92, "duration_us": 1002102, "bytes": 11489, "non_200": 9, "errors": {"connect": 0, \
"read": 0, "write": 0, "status": 5, "timeout": 0}, "latency_us": {"p50": 43970.0, "p90": 44089.0, "p99": 47797.0, \
"max": 47797.0, "mean": 42077.4}}
"""


def test_wrk_output_gives_latencies_in_ms_qps_and_every_answer_but_200_as_failed() -> None:
    run = parse_wrk(WRK_OUTPUT)
    assert run["requests"] == 92
    assert run["qps"] == pytest.approx(91.8, abs=0.05)
    assert (run["p50_ms"], run["p90_ms"], run["p99_ms"], run["max_ms"]) == (43.97, 44.089, 47.797, 47.797)
    assert run["failed"] == 9  # the 302s too, which wrk's "Non-2xx or 3xx" line leaves out
    assert run["latency_table_ms"] == {"p50": 43.97, "p75": 44.03, "p90": 44.09, "p99": 47.8}


def test_socket_errors_and_timeouts_are_failures_and_units_are_converted() -> None:
    totals = {"requests": 10, "duration_us": 2_000_000, "bytes": 1, "non_200": 0,
              "errors": {"connect": 1, "read": 2, "write": 0, "status": 0, "timeout": 3},
              "latency_us": {"p50": 900.0, "p90": 1000.0, "p99": 1_500_000.0, "max": 2e6, "mean": 1e4}}  # fmt: skip
    table = "  Latency Distribution\n     50%  900.00us\n     99%    1.50s\n"
    socket_errors = "  Socket errors: connect 1, read 2, write 0, timeout 3\n"
    run = parse_wrk(f"{table}{socket_errors}PCTR_WRK_JSON {json.dumps(totals)}\n")
    assert run["failed"] == 6
    assert run["qps"] == 5.0
    assert run["p50_ms"] == 0.9 and run["p99_ms"] == 1500.0
    assert run["latency_table_ms"] == {"p50": 0.9, "p99": 1500.0}
    with pytest.raises(ValueError, match="no PCTR_WRK_JSON line"):
        parse_wrk("Running 1s test @ http://127.0.0.1:1/v1/rank\n")


def test_the_script_posts_every_body_in_turn_and_prints_the_totals() -> None:
    bodies = rank_bodies(["u1", "bench-unknown-0"])
    assert [json.loads(b) for b in bodies] == [
        {"user_id": u, "context": {"placement": "feed", "device": "ios", "os": "ios", "country": "US"}, "slots": 3}
        for u in ("u1", "bench-unknown-0")
    ]  # no request_time: the service refuses it outside replay mode
    script = wrk_script(bodies)
    assert all(f"[==[{b}]==]" in script for b in bodies)
    assert 'wrk.format("POST", "/v1/rank"' in script and "PCTR_WRK_JSON " in script
    with pytest.raises(ValueError, match="long string"):
        wrk_script(['{"user_id": "]==]"}'])


def _bundle(bundles: Path, version: str) -> Path:
    bundle = bundles / version
    (bundle / "ranker" / "variables").mkdir(parents=True)
    (bundle / "ranker" / "saved_model.pb").write_bytes(bytes(range(256)) * 4)
    (bundle / "ranker" / "variables" / "variables.index").write_bytes(b"index")
    (bundle / "calibrator.json").write_text('{"a": 1}')
    manifest = {"version": version, "model_version": "1", "checksums": file_checksums(bundle)}
    write_json_atomic(bundle / MANIFEST, manifest)
    return bundle


def test_a_copy_with_a_new_version_verifies_and_can_go_live(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    live = _bundle(layout.bundles, "2026-11-06-v1")
    copy = copy_bundle(live, "2026-11-06-v1-swap1")
    assert copy == layout.bundles / "2026-11-06-v1-swap1"
    manifest = verify(copy)  # the checksums leave the manifest out: rewriting its version keeps them
    assert manifest["version"] == "2026-11-06-v1-swap1"
    assert manifest["checksums"] == verify(live)["checksums"]
    assert verify(live)["version"] == "2026-11-06-v1"
    point_current(tmp_path, "2026-11-06-v1-swap1")
    assert current_bundle_dir(layout) == copy
    assert sorted(p.name for p in layout.bundles.iterdir()) == ["2026-11-06-v1", "2026-11-06-v1-swap1"]  # no staging
    with pytest.raises(FileExistsError):
        copy_bundle(live, "2026-11-06-v1-swap1")


def test_a_corrupted_copy_fails_verification_and_the_original_stays_intact(tmp_path: Path) -> None:
    live = _bundle(Layout(tmp_path).bundles, "2026-11-06-v1")
    corrupted = copy_bundle(live, "2026-11-06-v1-corrupt", corrupt="ranker/saved_model.pb")
    size = (live / "ranker" / "saved_model.pb").stat().st_size
    assert (corrupted / "ranker" / "saved_model.pb").stat().st_size == size  # one byte changed, none added
    with pytest.raises(ValueError, match=r"does not match its manifest: \['ranker/saved_model.pb'\]"):
        verify(corrupted)
    verify(live)
    with pytest.raises(ValueError, match="not a checksummed file"):
        copy_bundle(live, "2026-11-06-v1-bad", corrupt="missing.bin")
    assert not (live.parent / "2026-11-06-v1-bad").exists()
