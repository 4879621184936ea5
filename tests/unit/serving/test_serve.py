"""``pctr serve`` and its worker factory: the configuration reaches the workers, and what cannot run is refused."""

import socket

import pytest

from core.config import ServingConfig, load_config
from entrypoints.cli import main
from serving.app import app_from_env, configuration_error, create_app


@pytest.fixture
def environment(monkeypatch, tmp_path):
    """A home of its own, and ``serve``'s overrides of the environment undone afterwards."""
    monkeypatch.delenv("PCTR_CONFIG", raising=False)
    monkeypatch.setenv("PCTR_HOME", str(tmp_path))
    for name in ("HOST", "PORT", "WORKERS"):
        monkeypatch.setenv(f"PCTR_SERVING__{name}", str(ServingConfig.model_fields[name.lower()].default))
    return monkeypatch


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("state", "workers", "refused"), [("memory", 1, False), ("memory", 2, True), ("redis", 2, False)]
)
def test_several_workers_need_the_shared_redis_state(tmp_path, state, workers, refused):
    cfg = load_config(home=tmp_path, serving=ServingConfig(state=state, workers=workers))
    error = configuration_error(cfg)
    assert (error is not None) == refused
    if refused:
        assert "serving.workers = 2 needs serving.state = 'redis'" in error
        with pytest.raises(ValueError, match="each worker keeps its own frequency-cap counts"):
            create_app(cfg)


def test_pctr_serve_refuses_several_workers_over_memory_state(environment, capsys):
    assert main(["serve", "--workers", "2"]) == 1
    assert "serving.workers = 2 needs serving.state = 'redis'" in capsys.readouterr().err


def test_pctr_serve_stops_at_start_when_redis_does_not_answer(environment, capsys):
    url = f"redis://:s3cret@127.0.0.1:{closed_port()}/0"
    environment.setenv("PCTR_SERVING__STATE", "redis")
    environment.setenv("PCTR_SERVING__REDIS_URL", url)
    assert main(["serve", "--workers", "2"]) == 1
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("pctr serve: ConnectionError: frequency-cap state: no Redis answers at")
    assert url.replace("s3cret", "***") in last_line
    assert "s3cret" not in last_line


def test_the_worker_factory_builds_the_app_on_the_environments_configuration(environment, tmp_path):
    environment.setenv("PCTR_SERVING__MAX_SLOTS", "7")
    cfg = app_from_env().state.engines.cfg
    assert (cfg.home, cfg.serving.max_slots) == (tmp_path.resolve(), 7)
