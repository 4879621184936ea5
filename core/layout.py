"""Where every piece of state lives under ``PCTR_HOME``; the only place that spells out paths."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import PctrConfig

# Keras weights of the trained ranker, registered with the model so a later run can warm start from them.
RANKER_WEIGHTS = "ranker.weights.h5"
# the fitted logistic-regression baseline: its Keras weights (the ranker's first-order start) and how it was fitted
BASELINE_WEIGHTS = "baseline.weights.h5"
BASELINE_FIT = "baseline_fit.json"
CHECKPOINTS = "checkpoints"
HOUR_KEY_FORMAT = "%Y-%m-%dT%H"
FEATURE_STATS = "feature_stats.json"


def parse_ds(ds: str) -> dt.date:
    """Parse a ``YYYY-MM-DD`` partition date, with a clear error for anything else."""
    try:
        return dt.date.fromisoformat(ds)
    except ValueError as err:
        raise ValueError(f"ds must be YYYY-MM-DD, got {ds!r}") from err


def day_bounds(ds: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a day in UTC."""
    start = dt.datetime.combine(parse_ds(ds), dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def parse_hour(key: str) -> dt.datetime:
    """Parse a ``YYYY-MM-DDTHH`` hour key (UTC), with a clear error for anything else."""
    try:
        parsed = dt.datetime.strptime(key, HOUR_KEY_FORMAT)
    except ValueError:
        parsed = None
    if parsed is None or parsed.strftime(HOUR_KEY_FORMAT) != key:  # strptime also takes "T5"
        raise ValueError(f"an hour must be YYYY-MM-DDTHH, got {key!r}")
    return parsed.replace(tzinfo=dt.UTC)


def hour_key(at: dt.datetime) -> str:
    """The key of the hour that holds ``at`` (UTC)."""
    return at.astimezone(dt.UTC).strftime(HOUR_KEY_FORMAT)


def is_hour(key: str) -> bool:
    """Whether a period key names an hour (``YYYY-MM-DDTHH``) rather than a day (``YYYY-MM-DD``)."""
    return "T" in key


def period_bounds(key: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC of the day or the hour that ``key`` names."""
    if not is_hour(key):
        return day_bounds(key)
    start = parse_hour(key)
    return start, start + dt.timedelta(hours=1)


def period_day(key: str) -> str:
    """The day of a day or hour key."""
    return period_bounds(key)[0].date().isoformat()


def shift_hour(key: str, hours: int) -> str:
    return hour_key(parse_hour(key) + dt.timedelta(hours=hours))


def feature_window(ds: str, delay: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the event times of features computed over ``ds`` and ``delay`` later: ds shifted by it."""
    start, end = day_bounds(ds)
    return start + delay, end + delay


def feature_event_time(ds: str, delay: dt.timedelta) -> dt.datetime:
    """Event time of features computed over day ``ds``: when they can exist, ``delay`` after ds ends
    (``PctrConfig.feature_delay``: the attribution window and the feature job's lag), less a microsecond.

    It lies inside ``feature_window(ds)``, so materialising that window loads them; an impression sees
    them only from then on: one at 03:00 on the next day sees the features of the day before ds.
    """
    return feature_window(ds, delay)[1] - dt.timedelta(microseconds=1)


def shift_ds(ds: str, days: int) -> str:
    return (parse_ds(ds) + dt.timedelta(days=days)).isoformat()


def ds_range(start: str, days: int) -> list[str]:
    return [shift_ds(start, i) for i in range(days)]


@dataclass(frozen=True)
class Layout:
    """Paths of all pctr state below one home directory."""

    home: Path

    # raw logs: append-only, never rewritten by the pipeline
    def raw(self, event: str, ds: str | None = None) -> Path:
        base = self.home / "data" / "raw" / event
        return base if ds is None else base / f"dt={ds}"

    def raw_hour(self, event: str, ds: str, hour: int) -> Path:
        return self.raw(event, ds) / f"hour={hour:02d}"

    @property
    def public_data(self) -> Path:
        """Public data sets fetched for benchmarks (the repository does not carry them)."""
        return self.home / "data" / "public"

    def catalog(self, table: str) -> Path:
        """Slowly changing tables (``ads``, ``users``) as one Parquet file per change day."""
        return self.home / "data" / "raw" / table

    def truth(self, ds: str | None = None) -> Path:
        base = self.home / "data" / "truth"
        return base if ds is None else base / f"dt={ds}"

    def _partition(self, name: str, key: str | None) -> Path:
        """The partition of a day (``data/<name>/dt=D``) or of an hour (``data/hourly/<name>/dt=D/hour=HH``).

        Hours live in a tree of their own: closing a day replaces its whole ``dt=D`` directory at once.
        """
        if key is None:
            return self.home / "data" / name
        if not is_hour(key):
            return self.home / "data" / name / f"dt={key}"
        start = parse_hour(key)
        return self.hourly(name) / f"dt={start.date().isoformat()}" / f"hour={start.hour:02d}"

    def hourly(self, name: str) -> Path:
        """The tree of ``name``'s hour partitions (``joined``, ``eval_sample``, ``labelled``, ``quarantine``)."""
        return self.home / "data" / "hourly" / name

    def joined(self, ds: str | None = None) -> Path:
        return self._partition("joined", ds)

    def labelled(self, ds: str | None = None) -> Path:
        """Every clean impression of ds with its label, none downsampled: what counting features count."""
        return self._partition("labelled", ds)

    def eval_sample(self, ds: str | None = None) -> Path:
        return self._partition("eval_sample", ds)

    def quarantine(self, ds: str | None = None) -> Path:
        return self._partition("quarantine", ds)

    def daily_aggregates(self, entity: str, ds: str | None = None) -> Path:
        return self._partition(f"daily_{entity}", ds)

    def features(self, entity: str, ds: str | None = None) -> Path:
        """One directory per ds; Feast reads the Parquet files of every day (``feature_glob``) as one source."""
        return self._partition(f"features/{entity}", ds)

    def feature_files(self, entity: str, ds: str) -> Path:
        """The directory of ds's feature files, the part files as Spark wrote them (``feature_glob`` names them)."""
        return self.features(entity, ds) / "data"

    def feature_glob(self, entity: str) -> str:
        """Spark's part files of every day, not its markers (``_SUCCESS``, ``.*.crc``) beside them.

        Each day is committed by the rename of its whole directory (``core.io.staged_dir``), no file of its
        own: it works the same wherever Spark can write a directory.
        """
        return str(self.features(entity) / "dt=*" / "data" / "part-*.parquet")

    def stage_output(self, stage: str, ds: str) -> Path:
        """Where a stage whose outputs live in several places writes its ``_stats.json``."""
        return self.home / "stages" / stage / f"dt={ds}"

    def training_set(self, ds: str) -> Path:
        return self.run_dir(ds) / "training_set"

    def run_dir(self, key: str) -> Path:
        """The run closing a day (``runs/D``) or refreshing the model on an hour (``runs/hourly/DTHH``)."""
        return self.home / "runs" / ("hourly" if is_hour(key) else "") / key

    @property
    def ranker_setting(self) -> Path:
        """The hyperparameters the daily runs train with, as the last search chose them (``jobs.train``)."""
        return self.home / "runs" / "ranker_setting.json"

    @property
    def feast_repo(self) -> Path:
        return self.home / "feast"

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow" / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlflow" / "artifacts"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def ui_reports(self) -> Path:
        """Screenshots of the Airflow and MLflow UIs, one per page the browser test checked."""
        return self.reports / "ui"

    @property
    def bundles(self) -> Path:
        return self.home / "serving" / "bundles"

    @property
    def current_pointer(self) -> Path:
        return self.home / "serving" / "CURRENT"

    @property
    def served_log(self) -> Path:
        return self.home / "serving" / "served"

    def monitor_report(self, hour: str) -> Path:
        """The monitor's report of the hour ``YYYY-MM-DDTHH`` (HTML, plots and its ``_stats.json``)."""
        return self.reports / "monitor" / hour

    @property
    def demo(self) -> Path:
        return self.home / "demo"


# The daily run's model directories, shared by the stages that write and read them.
def ranker_dir(cfg: PctrConfig, ds: str) -> Path:
    return Layout(cfg.home).run_dir(ds) / "ranker"


def calibrator_path(cfg: PctrConfig, ds: str, model: str = "ranker") -> Path:
    return ranker_dir(cfg, ds) / f"{model}_calibrator.json"


def evaluation_dir(cfg: PctrConfig, ds: str) -> Path:
    return ranker_dir(cfg, ds) / "evaluation"


def retrieval_dir(cfg: PctrConfig, ds: str) -> Path:
    return Layout(cfg.home).run_dir(ds) / "retrieval"
