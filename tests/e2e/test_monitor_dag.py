"""End to end: after serving, the demo's `airflow dags test pctr_monitor` run checks what was served."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_config
from core.io import read_json

pytestmark = pytest.mark.e2e


def test_the_monitor_watched_the_served_requests_and_wrote_its_report_and_mlflow_run(demo_home: Path) -> None:
    from core.bundle import current_version
    from core.layout import Layout
    from core.tracking import mlflow_client
    from jobs.monitor import EXPERIMENT

    cfg = load_config(home=demo_home)
    summary = read_json(demo_home / "demo" / "summary.json")
    monitor = summary["monitor"]
    assert monitor["status"] == "ok" and monitor["seconds"] > 0 and monitor["breaches"] == []
    assert monitor["hour"] == "2026-11-07T12" and monitor["bundle"] == current_version(Layout(demo_home))
    # the demo's nine served impressions (three users, three slots): reported, too few to gate
    assert monitor["served_impressions"] == 9 and monitor["drift_gated"] is False
    assert monitor["labelled_served_impressions"] == 0  # their clicks would come after the simulated hours
    # the newest joined data is the second hourly run's hour, 02:00 -> 13:00
    assert monitor["staleness_hours"]["joined"] == pytest.approx(11.0)
    report = Path(monitor["report"])
    assert report.is_file() and report == Layout(demo_home).monitor_report(monitor["hour"]) / "index.html"
    # PSI bars; no reliability or O/E plot without a labelled impression
    assert {p.name for p in report.parent.glob("*.png")} == {"psi.png"}
    client = mlflow_client(cfg, EXPERIMENT)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.hour = '{monitor['hour']}'")
    assert len(runs) == 1 and runs[0].data.metrics["served_impressions"] == 9
