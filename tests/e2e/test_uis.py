"""The UIs as a user sees them: ``make ui`` over a copy of the tiny demo's state, in headless Chromium.

Airflow: every DAG of ``dags/`` is listed, with its latest run (pctr_daily: the demo's), and a backfill made
with the DAG's Trigger dialog exists in Airflow's REST API. MLflow: the registered ranker's versions and
aliases, and two daily runs compared side by side on the metrics the gate reads. Every checked page is
saved as a screenshot under ``$PCTR_HOME/reports/ui/``.

The demo registers one daily run. The second is the one a user would make to try another setting: the
closed day's ranker retrained with a smaller embedding (``pctr train``, ``calibrate``, ``evaluate``,
``register`` on the copy). The backfill is made with the DAG left paused: Airflow 3.3 schedules none of
its runs then, so the test creates the backfill without running the pipeline three more times (running a
backfill is tested in test_backfill.py).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import PctrConfig, load_config
from core.io import read_json
from core.layout import Layout, shift_ds
from core.processes import ChildProcesses
from core.tracking import EXPERIMENT
from entrypoints.airflow_local import REPO, airflow, free_port, wait_http_ready
from entrypoints.demo import DEMO_HOURLY_RUNS as HOURLY_RUNS
from jobs.evaluate import SUMMARY_METRICS

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

# a page of the UIs renders within seconds; a slow shared machine gets ten times that
PAGE_SECONDS = 60
BACKFILL_DAYS = 3
# the retrained candidate: a smaller embedding, trained once with the setting the demo's search chose
CANDIDATE_ENV = {"PCTR_TRAIN__EMBEDDING_DIM": "4", "PCTR_TRAIN__SEARCH_EVERY_DAYS": "0"}
# `make ui` stops its own children within their 30 s grace after Ctrl-C
UI_STOP_SECONDS = 60.0


@dataclass(frozen=True)
class Uis:
    """``make ui`` running over ``cfg.home``: the base URLs of its Airflow and MLflow UIs."""

    cfg: PctrConfig
    airflow: str
    mlflow: str

    @property
    def closed_day(self) -> str:
        return read_json(Layout(self.cfg.home).demo / "summary.json")["ds"]

    def airflow_api(self, path: str, **params: Any) -> dict[str, Any]:
        """Airflow's public REST API (v2); the UI's simple auth manager makes everyone an admin."""
        return _get_json(f"{self.airflow}/api/v2/{path}", params)

    def mlflow_api(self, path: str, **params: Any) -> dict[str, Any]:
        return _get_json(f"{self.mlflow}/api/2.0/mlflow/{path}", params)


def _get_json(url: str, params: dict[str, Any]) -> dict[str, Any]:
    response = httpx.get(url, params=params, timeout=30.0)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def uis(demo_home: Path, demo_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uis]:
    """``make ui`` on free ports over a copy of the demo's state, with a second daily run registered."""
    home = tmp_path_factory.mktemp("pctr-ui") / "home"
    shutil.copytree(demo_home, home, symlinks=True)
    env = {**os.environ, "PCTR_HOME": str(home), **demo_env}
    cfg = load_config(home=home)
    _register_candidate(env, read_json(Layout(home).demo / "summary.json")["ds"])
    airflow_port, mlflow_port = free_port(), free_port()
    children = ChildProcesses(grace=UI_STOP_SECONDS)
    with open(home.parent / "ui.log", "w") as log:
        command = ["-m", "entrypoints.ui", "--airflow-port", str(airflow_port), "--mlflow-port", str(mlflow_port)]
        ui = children.popen([sys.executable, *command], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            running = Uis(cfg, f"http://127.0.0.1:{airflow_port}", f"http://127.0.0.1:{mlflow_port}")
            wait_http_ready(f"{running.airflow}/api/v2/monitor/health", ui, "the Airflow UI", timeout=300)
            wait_http_ready(f"{running.mlflow}/health", ui, "the MLflow UI", timeout=120)
            yield running
        finally:
            children.stop()
    # Ctrl-C's way out: `make ui` stopped its children and returned 0 within the grace, no SIGKILL needed
    assert ui.returncode == 0, f"`make ui` ended with {ui.returncode}; see {home.parent / 'ui.log'}"


def _register_candidate(env: dict[str, str], ds: str) -> None:
    """Retrain the closed day's ranker as ``CANDIDATE_ENV`` says and register it: a second run of the day."""
    for stage in ("train", "calibrate", "evaluate", "register"):
        command = [sys.executable, "-m", "entrypoints.cli", stage, "--ds", ds]
        proc = subprocess.run(command, cwd=REPO, env={**env, **CANDIDATE_ENV}, capture_output=True, text=True)
        assert proc.returncode == 0, f"pctr {stage} --ds {ds}: {proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from Debian (installed by .ci/chromium.sh), driven through its own chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    subprocess.run([str(REPO / ".ci" / "chromium.sh")], check=True)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    # root in a container has no sandbox to drop into; /dev/shm is small there
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(argument)
    # a chromedriver given by path: Selenium Manager resolves and downloads nothing
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(PAGE_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, PAGE_SECONDS)


def _shown(locator: tuple[str, str], within: Any = None) -> Callable[[Any], Any]:
    """A wait condition: the first displayed element at ``locator`` (hidden popovers stay in the DOM)."""

    def condition(driver: Any) -> Any:
        shown = [e for e in (within or driver).find_elements(*locator) if e.is_displayed()]
        return shown[0] if shown else False

    return condition


def _found(locator: tuple[str, str], count: int, within: Any = None) -> Callable[[Any], Any]:
    """A wait condition: the elements at ``locator`` once there are at least ``count``."""

    def condition(driver: Any) -> Any:
        found = (within or driver).find_elements(*locator)
        return found if len(found) >= count else False

    return condition


def _screenshot(driver: Any, uis: Uis, name: str) -> None:
    folder = Layout(uis.cfg.home).ui_reports
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    assert path.stat().st_size > 0, path


def _dag_ids_of_the_dags_folder(cfg: PctrConfig) -> set[str]:
    """The DAGs Airflow finds in the files of ``dags/`` (parsed there and then, not read from the database)."""
    output = airflow(cfg, "dags", "list", "--local", "-o", "json")
    return {dag["dag_id"] for dag in json.loads([line for line in output.splitlines() if line.startswith("[")][-1])}


def test_airflow_lists_every_dag_of_the_dags_folder_with_its_latest_run(uis: Uis, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    expected = _dag_ids_of_the_dags_folder(uis.cfg)
    assert "pctr_daily" in expected
    # a DAG file new since the demo ran is listed once the UI's DAG processor has parsed it
    _wait(browser).until(lambda _: expected <= {d["dag_id"] for d in uis.airflow_api("dags", limit=100)["dags"]})
    browser.get(f"{uis.airflow}/dags")
    cards = {
        card.find_element(By.CSS_SELECTOR, "[data-testid=dag-id]").text: card
        for card in _wait(browser).until(_found((By.CSS_SELECTOR, "[data-testid=dag-card]"), len(expected)))
    }
    assert expected <= set(cards)
    latest_runs = {}
    for dag_id in expected:
        runs = uis.airflow_api(f"dags/{dag_id}/dagRuns", order_by="-run_after", limit=1)["dag_runs"]
        shown = cards[dag_id].find_elements(By.CSS_SELECTOR, "[data-testid=latest-run] a")
        if not runs:
            assert not shown, f"{dag_id} has no run, yet its card shows one"
            continue
        link, badge = shown[0], shown[0].find_element(By.CSS_SELECTOR, "[data-testid=state-badge]")
        assert link.get_attribute("href").endswith(f"/dags/{dag_id}/runs/{runs[0]['dag_run_id']}"), dag_id
        assert badge.get_attribute("aria-label") == runs[0]["state"], dag_id
        latest_runs[dag_id] = (runs[0]["logical_date"][:10], runs[0]["state"])
    # the demo closed its day with one run of pctr_daily
    assert latest_runs["pctr_daily"] == (uis.closed_day, "success")
    _screenshot(browser, uis, "airflow-dags")


def test_a_backfill_made_with_the_trigger_dialog_exists_in_airflows_api(uis: Uis, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC

    days = [shift_ds(uis.closed_day, offset) for offset in range(1 - BACKFILL_DAYS, 1)]
    wait = _wait(browser)
    browser.get(f"{uis.airflow}/dags/pctr_daily")
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label='Trigger Dag']"))).click()
    dialog = wait.until(_shown((By.CSS_SELECTOR, "[role=dialog]")))
    dialog.find_element(By.XPATH, ".//label[.//*[normalize-space()='Backfill']]").click()
    for label, ds in (("From", days[0]), ("To", days[-1])):
        field = dialog.find_element(By.XPATH, f".//*[@role='group'][label[normalize-space()='{label}']]")
        field.find_element(By.CSS_SELECTOR, "[aria-haspopup=dialog]").click()
        # the picker's own date input; its time input fills itself: the day's start (From), its end (To)
        date_input = wait.until(_shown((By.CSS_SELECTOR, "input[placeholder='YYYY/MM/DD']")))
        date_input.send_keys(ds.replace("-", "/"))
        date_input.send_keys(Keys.ESCAPE)
        wait.until(EC.invisibility_of_element(date_input))
    dialog.find_element(By.XPATH, ".//label[.//*[normalize-space()='All Runs']]").click()
    # the dialog's dry run: one run per day, the demo's run of the closed day included (reprocessed)
    wait.until(lambda _: f"{BACKFILL_DAYS} runs will be triggered." in dialog.text)
    unpause = dialog.find_element(By.XPATH, ".//label[.//*[normalize-space()='Unpause pctr_daily on trigger']]")
    assert unpause.get_attribute("data-state") == "checked"  # the dialog's default for a paused DAG
    unpause.click()
    wait.until(lambda _: unpause.get_attribute("data-state") == "unchecked")
    _screenshot(browser, uis, "airflow-backfill-dialog")
    _run_backfill(browser, dialog)
    wait.until(EC.text_to_be_present_in_element((By.TAG_NAME, "body"), "Backfill in progress"))
    _screenshot(browser, uis, "airflow-backfill-created")

    backfills = uis.airflow_api("backfills", dag_id="pctr_daily")["backfills"]
    assert [(b["from_date"][:10], b["to_date"][:10], b["reprocess_behavior"]) for b in backfills] == [
        (days[0], days[-1], "completed")
    ]
    runs = uis.airflow_api("dags/pctr_daily/dagRuns", run_type="backfill")["dag_runs"]
    assert sorted(run["logical_date"][:10] for run in runs) == days
    assert uis.airflow_api("dags/pctr_daily")["is_paused"]


# Airflow answers 503 "Database is locked. Backfill creation is not supported on SQLite under concurrent
# access" when the scheduler holds sqlite's lock (measured in make test, right after `make ui` started).
# The dialog keeps showing that error until a submission succeeds and closes it: a user clicks again, and so
# does the test, until the "Backfill generated" toast appears.
BACKFILL_ATTEMPTS = 3


def _run_backfill(browser: Any, dialog: Any) -> None:
    """Submit the backfill dialog until Airflow says the backfill was generated (again after a sqlite lock)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By

    generated = (By.XPATH, "//*[normalize-space()='Backfill generated']")
    locked = (By.XPATH, "//*[contains(normalize-space(), 'Database is locked')]")
    for _ in range(BACKFILL_ATTEMPTS):
        dialog.find_element(By.XPATH, ".//button[normalize-space()='Run Backfill']").click()
        try:
            _wait(browser).until(_shown(generated))
            return
        except TimeoutException:
            if not _shown(locked)(browser):
                raise
    raise AssertionError(f"Airflow's database stayed locked through {BACKFILL_ATTEMPTS} backfill submissions")


def _close_assistant(driver: Any) -> None:
    """Close the chat panel MLflow 3 opens beside its pages, if it is open: the screenshots show the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    for button in driver.find_elements(By.CSS_SELECTOR, "[data-component-id='mlflow.assistant.chat_panel.close']"):
        if button.is_displayed():
            button.click()
            _wait(driver).until(EC.invisibility_of_element(button))


def test_mlflow_shows_the_registered_models_versions_and_aliases(uis: Uis, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    name = uis.cfg.model_name
    registered = uis.mlflow_api("registered-models/get", name=name)["registered_model"]
    versions = uis.mlflow_api("model-versions/search", filter=f"name = '{name}'")["model_versions"]
    expected = {f"Version {v['version']}": set() for v in versions}
    for alias in registered.get("aliases", []):
        expected[f"Version {alias['version']}"].add(alias["alias"])
    # the demo's daily version 1, its hourly refreshes and the candidate's: champion is on one of them
    assert len(expected) == 2 + HOURLY_RUNS and "Version 1" in expected and {"champion"} in expected.values()

    browser.get(f"{uis.mlflow}/#/models/{name}")
    table = _wait(browser).until(_shown((By.CSS_SELECTOR, "[data-testid=model-version-table]")))
    _close_assistant(browser)
    rows = _wait(browser).until(_found((By.CSS_SELECTOR, "[role=row]"), 1 + len(expected), table))[1:]
    headers = [h.text for h in table.find_elements(By.CSS_SELECTOR, "[role=columnheader]")]
    shown = {}
    for row in rows:
        cells = dict(zip(headers, row.find_elements(By.CSS_SELECTOR, "[role=cell]"), strict=True))
        aliases = cells["Aliases"].find_elements(By.CSS_SELECTOR, "[role=status]")
        shown[cells["Version"].text] = {alias.get_attribute("title") for alias in aliases}
    assert shown == expected
    _screenshot(browser, uis, "mlflow-model")


def test_mlflow_compares_two_daily_runs_on_the_gate_metrics(uis: Uis, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    experiment_id = uis.mlflow_api("experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]["experiment_id"]
    versions = uis.mlflow_api("model-versions/search", filter=f"name = '{uis.cfg.model_name}'")["model_versions"]
    daily = [v for v in versions if {"key": "cadence", "value": "daily"} in v.get("tags", [])]
    run_ids = [v["run_id"] for v in sorted(daily, key=lambda v: int(v["version"]))]
    assert len(run_ids) == 2
    logged = {
        run_id: {m["key"]: m["value"] for m in uis.mlflow_api("runs/get", run_id=run_id)["run"]["data"]["metrics"]}
        for run_id in run_ids
    }

    wait = _wait(browser)
    browser.get(f"{uis.mlflow}/#/experiments/{experiment_id}/runs")
    _close_assistant(browser)
    for run_id in run_ids:  # the runs table's selection boxes, as a user ticks them
        wait.until(
            EC.element_to_be_clickable((By.CSS_SELECTOR, f"[row-id='{run_id}'] .ag-checkbox-input-wrapper"))
        ).click()
    wait.until(EC.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Compare']"))).click()
    wait.until(EC.url_contains("compare-runs"))
    columns = wait.until(_found((By.XPATH, "//tr[th[normalize-space()='Run ID:']]/th/a"), len(run_ids)))
    # side by side: one column per run, in the order of the Run ID row
    column_runs = [link.text for link in columns]
    assert sorted(column_runs) == sorted(run_ids)
    # the metrics grid: a column of metric names (links to their charts), beside a grid of their values, row by row
    names = wait.until(lambda d: d.find_elements(By.XPATH, "//div[@role='grid'][.//a[@title='Plot chart']]"))[0]
    values = names.find_element(By.XPATH, "following::div[@role='grid'][1]")
    keys = [link.get_attribute("textContent") for link in names.find_elements(By.CSS_SELECTOR, "a[title='Plot chart']")]
    cells = [
        cell.get_attribute("textContent") for cell in values.find_elements(By.XPATH, "./div[@role='rowgroup']/div")
    ]
    assert len(cells) == len(column_runs) * len(keys)
    rows = {key: cells[i * len(column_runs) : (i + 1) * len(column_runs)] for i, key in enumerate(keys)}
    for key in SUMMARY_METRICS:
        shown = dict(zip(column_runs, map(float, rows[key]), strict=True))
        for run_id in run_ids:
            # the page rounds to three decimals (values under 10)
            assert math.isclose(shown[run_id], logged[run_id][key], abs_tol=5e-4), (key, run_id, shown)
    browser.execute_script("arguments[0].scrollIntoView()", names)
    _screenshot(browser, uis, "mlflow-compare-runs")
