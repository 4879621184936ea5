"""When the daily run searches its hyperparameters, and what it trains with in between."""

from pathlib import Path

import pytest

from core.config import load_config
from jobs.train import horovod_placement, run_config, search_due, training_env

RECORD = {"searched_on": "2026-11-06", "learning_rate": 0.003, "embedding_weight_decay": 0.03, "baseline_c": 0.1}


@pytest.mark.parametrize(
    ("ds", "every", "due"),
    [
        ("2026-11-07", 7, False),
        ("2026-11-12", 7, False),
        ("2026-11-13", 7, True),  # a week after the last search
        ("2026-11-06", 7, True),  # a rerun of the search's own day searches again, as its first run did
        ("2026-10-20", 7, False),  # a backfill trains with the setting in force
        ("2026-12-31", 0, False),  # searches switched off
    ],
)
def test_a_search_is_due_every_search_every_days(tmp_path: Path, ds: str, every: int, due: bool) -> None:
    cfg = load_config(home=tmp_path, train={"search_every_days": every})
    assert search_due(cfg, ds, RECORD) is due


def test_the_first_run_searches_unless_searches_are_off(tmp_path: Path) -> None:
    assert search_due(load_config(home=tmp_path), "2026-11-06", None)
    assert not search_due(load_config(home=tmp_path, train={"search_every_days": 0}), "2026-11-06", None)


def test_between_searches_the_run_trains_with_the_recorded_setting_and_the_baseline_with_its_c(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path)
    between = run_config(cfg, RECORD, searching=False).train
    assert (between.learning_rate, between.embedding_weight_decay) == (0.003, 0.03)
    assert between.baseline_c_values == (0.1,)
    assert run_config(cfg, RECORD, searching=True) == cfg
    assert run_config(cfg, None, searching=False) == cfg


def test_workers_go_to_this_machine_unless_hosts_are_given(tmp_path: Path) -> None:
    assert horovod_placement(load_config(home=tmp_path, train={"num_proc": 2})) == ["-np", "2", "-H", "localhost:2"]


def test_workers_go_to_the_configured_hosts_over_ssh(tmp_path: Path) -> None:
    train = {"num_proc": 3, "hosts": ["pctr-a:2", "pctr-b"], "ssh_port": 2222, "ssh_identity_file": "/k/id"}
    assert horovod_placement(load_config(home=tmp_path, train=train)) == [
        "-np", "3", "-H", "pctr-a:2,pctr-b", "--ssh-port", "2222", "--ssh-identity-file", "/k/id",
    ]  # fmt: skip


def test_more_workers_than_the_hosts_slots_are_refused(tmp_path: Path) -> None:
    cfg = load_config(home=tmp_path, train={"num_proc": 3, "hosts": ["pctr-a:1", "pctr-b:1"]})
    with pytest.raises(ValueError, match="2 slots for train.num_proc=3"):
        horovod_placement(cfg)


def test_workers_get_the_launchers_environment_without_its_ssh_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_CONNECTION", "10.0.0.9 50000 10.0.0.1 22")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/agent.sock")  # horovodrun's own ssh may need the agent
    monkeypatch.setenv("PCTR_HOME", "/shared/pctr")
    env = training_env()
    assert "SSH_CONNECTION" not in env
    assert env["SSH_AUTH_SOCK"] == "/tmp/agent.sock" and env["PCTR_HOME"] == "/shared/pctr"
