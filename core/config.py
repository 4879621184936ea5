"""The one typed configuration of pctr, read by every stage, Spark, training, serving and the DAGs.

Values come, lowest precedence first, from the field defaults below, the TOML file named by
``PCTR_CONFIG`` (if set), and ``PCTR_*`` environment variables; nested fields use ``__``, e.g.
``PCTR_TRAIN__EPOCHS=3`` or ``PCTR_SPARK__MASTER=spark://host:7077``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class SimulationConfig(BaseModel):
    """Sizes of the simulated world; ``scale`` picks one of ``scales``."""

    seed: int = 7
    # users, ads, advertisers, impressions per day. Above tiny (tests), each scale keeps the design's
    # traffic per entity (10B impressions a day over 100M users and 10M ads: 100 a user, 1,000 an
    # ad), so that a user's or an ad's history carries as much signal as it would at full scale.
    scales: dict[str, tuple[int, int, int, int]] = {
        "tiny": (2_000, 300, 30, 20_000),
        "small": (10_000, 1_000, 60, 1_000_000),
        "medium": (100_000, 10_000, 600, 10_000_000),
        "large": (1_000_000, 100_000, 6_000, 100_000_000),
    }
    new_ads_per_day_fraction: float = 0.03
    base_ctr: float = 0.015


class JoinConfig(BaseModel):
    """Log join: attribution window and negative downsampling."""

    attribution_window_hours: int = 6
    neg_rate: float = Field(0.1, gt=0.0, le=1.0)
    eval_sample_rate: float = Field(0.2, gt=0.0, le=1.0)
    max_bid: float = 100.0
    max_position: int = 50
    # A raw file that cannot be read (a torn gzip hour): "fail" stops the raw gate and the join, naming it;
    # "quarantine" copies it into the day's quarantine with its cause and closes the day without it.
    unreadable_files: Literal["fail", "quarantine"] = "fail"


class ValidationConfig(BaseModel):
    """Great Expectations gate tolerances."""

    min_valid_fraction: float = 0.95
    ctr_band: tuple[float, float] = (0.002, 0.08)
    trailing_days: int = 7
    row_count_band: tuple[float, float] = (0.5, 2.0)
    neg_rate_tolerance: float = 0.02


class FeatureConfig(BaseModel):
    """Feast settings; the features themselves (and their windows) live in ``models.features``."""

    ttl_days: int = 45
    # Features of day D exist once its clicks are in (attribution_window_hours after D ends) and the
    # feature job has run: this lag. Their event time is then, not the end of D (see ``feature_delay``).
    processing_lag_hours: int = 1
    offline_store: Literal["file", "duckdb", "spark"] = "duckdb"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection: str = "127.0.0.1:6379"
    project: str = "pctr"


class TrainConfig(BaseModel):
    """Ranker and retrieval training."""

    num_proc: int = 2
    history_days: int = 7
    epochs: int = 6
    batch_size: int = 1024
    learning_rate: float = 1e-3
    embedding_dim: int = 8
    # decoupled weight decay (AdamW) of the ranker's field vectors, the FM's and the DNN's input: each step
    # shrinks them by learning_rate x this. An L2 term in the loss does not work with Adam: on a row that
    # no example of the batch touches, the penalty is the whole gradient, and Adam's normalised step
    # moves it by the full learning rate (measured: 1e-5 kept the ranker at its starting point)
    embedding_weight_decay: float = 0.0
    # the grid of the ranker's hyperparameter search (models.search) on the validation split: every
    # setting trains the ranker once, the lowest validation loss wins (benchmark-dataset, and the daily run)
    search_learning_rates: tuple[float, ...] = (1e-3, 3e-3)
    search_embedding_weight_decay: tuple[float, ...] = (0.0, 0.03, 0.3)
    # The daily run searches (the grid above and the baseline's C) when the recorded setting is this many days
    # old or there is none, and trains with the recorded one on the days between: searches cost a training
    # run per setting. 0: never search; train with learning_rate, embedding_weight_decay, baseline_c_values.
    search_every_days: int = Field(7, ge=0)
    # the cap of any categorical's hash buckets, which are sized from its distinct training values
    max_hash_buckets: int = 1_000_000
    hidden_units: tuple[int, ...] = (128, 64)
    # Epochs without a better validation log loss before training stops. With 1, one noisy epoch ended the
    # demo's training after epoch 2 of 6 for one seed in three (holdout AUC 0.7459 against 0.7476-0.7502).
    early_stopping_patience: int = Field(2, ge=1)
    # validation checks per epoch (the last at its end), so that training on small data can stop inside an epoch
    validations_per_epoch: int = Field(2, ge=1)
    # a check replaces the best so far only if its per-example validation losses are lower by this many
    # standard errors of their paired mean difference: a chance improvement on a small validation split does
    # not lead the ranker away from its starting point (the fitted baseline) or an earlier, better-regularised epoch
    min_improvement_z: float = Field(1.0, ge=0.0)
    seed: int = 42
    # L2 strengths of the logistic-regression baseline (scikit-learn's C: the inverse, on the summed log
    # loss), tried from the strongest; the validation log loss picks one
    baseline_c_values: tuple[float, ...] = (1e-4, 3e-4, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
    baseline_max_iterations: int = 1000
    retrieval_dim: int = 32
    retrieval_epochs: int = 2
    retrieval_index: Literal["flat", "hnsw"] = "flat"
    calibration: Literal["isotonic", "platt"] = "isotonic"
    horovodrun: str = "horovodrun"
    # Where horovodrun starts the num_proc workers, as "host:slots" (its -H); empty: this machine, num_proc
    # slots. Other hosts are reached over ssh (on ssh_port, with ssh_identity_file if given) and must have
    # this checkout and its virtualenv at the same paths, and the pctr home on shared storage.
    hosts: tuple[str, ...] = ()
    ssh_port: int | None = None
    ssh_identity_file: str | None = None
    # Initialise the ranker from a registered version: an alias (e.g. "champion"; none yet = cold
    # start) or a version number (must exist). None: train from scratch, so reruns do not depend on
    # what was promoted in between.
    warm_start: str | None = None


class TrackingConfig(BaseModel):
    """The MLflow tracking store and model registry."""

    # None: sqlite under the home, artifacts in the home (embedded). A tracking server (`mlflow server` on a
    # PostgreSQL backend store, e.g. "http://mlflow:5000") keeps runs, the registry and, through its
    # artifact proxy, the artifacts: every stage and `make ui` then go through it.
    uri: str | None = None


class GateConfig(BaseModel):
    """Promotion gate on the un-downsampled holdout; it fails closed, champion or not.

    Calibration bounds are widened by the sampling noise of the holdout (``models.metrics.calibration_noise``):
    a calibrated model on a small holdout must not be refused for noise, a miscalibrated one on a large
    holdout must not pass.
    """

    # the candidate's AUC may trail the logistic-regression baseline's by at most this
    baseline_auc_tolerance: float = 0.002
    # observed/expected clicks, widened by oe_noise_z standard deviations of a calibrated model's O/E
    oe_band: tuple[float, float] = (0.9, 1.1)
    oe_noise_z: float = 3.0
    # log loss relative to always predicting the base rate: 1 means no better than the base rate
    max_normalized_entropy: float = 1.0
    # ECE as a share of the base rate (an absolute ECE bound passes a model that predicts 0 at 1.5% CTR),
    # plus ece_noise_multiple times the ECE a calibrated model shows on this holdout
    max_relative_ece: float = 0.1
    ece_noise_multiple: float = 2.0
    # against an eligible champion (trained on data before the holdout day), scored on the same rows
    max_auc_drop: float = 0.002
    max_relative_logloss_increase: float = 0.01


class ServingConfig(BaseModel):
    """The ranking service."""

    host: str = "127.0.0.1"
    port: int = 8500
    retrieval_k: int = 200
    default_position: int = 1
    max_ads_per_advertiser: int = 1
    frequency_cap: int = 3
    reserve_price: float = 0.01
    exploration_epsilon: float = 0.0
    tf_serving_url: str | None = None
    # how often the service checks CURRENT for a new live bundle (publish, promote, rollback)
    watch_seconds: float = 5.0
    # honour a request's request_time (replays, simulated worlds); live clients must not set the server's clock
    replay: bool = False
    # bearer token of /admin/*; without one, admin routes answer only when the service is bound to loopback
    admin_token: SecretStr | None = Field(default=None, min_length=1)
    # a larger request body is refused (413) before it is read further or parsed
    max_request_bytes: int = 4 * 1024 * 1024
    # instances per TF-Serving predict call: bounds the scoring work of one call
    max_predict_instances: int = 1000
    # ids and context values are hashed into buckets: longer strings carry nothing but cost
    max_string_length: int = 256
    # slots per rank request; must not exceed join.max_position (the positions the join keeps)
    max_slots: int = 10
    # users whose frequency-cap counts one process keeps per day; the least recently served go first
    frequency_cap_max_users: int = 100_000
    # where the frequency-cap counts live: "memory" is per process; "redis" is shared by workers and replicas
    state: Literal["memory", "redis"] = "memory"
    # the Redis of state = "redis"; the service refuses to start if it does not answer
    redis_url: str = "redis://127.0.0.1:6379/0"
    # keeps the cap's keys apart from other users of the same Redis (another service, a test run)
    redis_key_prefix: str = "pctr:frequency-cap"
    # a Redis that stops answering fails the request after this long instead of holding a worker thread
    redis_timeout_seconds: float = Field(1.0, gt=0.0)
    # uvicorn worker processes of `pctr serve`; more than one needs state = "redis" (one set of counts)
    workers: int = Field(1, ge=1)
    # how often the service reads the current ads (bids, statistics, new ads) instead of serving the publish's; 0 = off
    ads_refresh_seconds: float = Field(0.0, ge=0.0)


class OrchestrationConfig(BaseModel):
    """Airflow DAG settings (the DAG files read them; no schedule logic lives elsewhere)."""

    start_date: str = "2026-11-01"
    catchup: bool = True
    # for failures that may pass (a lost worker, a busy store); waiting for logs is the sensor's job
    retries: int = 3
    retry_delay_minutes: int = 30
    max_active_runs: int = 1
    # Airflow's metadata database (SQLAlchemy URL); None: sqlite under the home, which runs one task at a
    # time. PostgreSQL (e.g. "postgresql+psycopg2://airflow@db/airflow") lets LocalExecutor run tasks in parallel.
    database_url: str | None = None
    # The first task waits until every raw hour that ds needs is complete (its clicks arrive until
    # attribution_window_hours after ds), checking this often and giving its worker slot back in between;
    # it fails once this long has passed without them.
    sensor_poke_interval_seconds: int = 300
    sensor_timeout_hours: float = 12


class HourlyConfig(BaseModel):
    """pctr_hourly: the live ranker warm-started and refreshed on the newest closed hours between daily runs.

    An hour H is closed once its clicks' attribution window has passed (``join.attribution_window_hours``
    after H ends). The run of the hour ending at T closes H = T - 1h - window. Going back from H: it
    evaluates on the ``holdout_hours`` ending at H, validates and fits the calibrator on the
    ``calibration_hours`` before them (un-downsampled sample), and trains on the ``train_hours`` before
    those. One hour each is enough at the design's traffic (a few million clicks an hour); a small world
    needs more hours for a calibrator and a gate that are not noise.
    """

    train_hours: int = Field(6, ge=1)
    calibration_hours: int = Field(1, ge=1)
    holdout_hours: int = Field(1, ge=1)
    epochs: int = Field(1, ge=1)
    # a fine-tune of an already trained ranker: smaller steps than a day's training from the baseline
    learning_rate: float = Field(3e-4, gt=0.0)
    # An hour holds few clicks (the demo's first calibration hour: 5,629 sampled impressions, 70 clicks): isotonic
    # regression's steps follow their noise (holdout log loss 0.0789 against Platt's 0.0764 on the next hour)
    calibration: Literal["isotonic", "platt"] = "platt"


class MonitorConfig(BaseModel):
    """pctr_monitor: drift of the served features, calibration of what was served, staleness.

    A threshold crossed fails the monitor's task (red in the Airflow UI); the report says which.
    """

    # the served impressions of this many hours before the run's end are compared with the live model's training set
    lookback_hours: int = Field(24, ge=1)
    psi_bins: int = Field(10, ge=2)
    # population stability index per feature: 0.1 is a moderate shift, 0.25 a large one by the usual reading
    max_psi: float = 0.25
    # Kolmogorov-Smirnov statistic per numeric feature
    max_ks: float = 0.2
    # observed/expected clicks of the served predictions, overall and per segment with enough impressions,
    # widened by oe_noise_z standard deviations of a calibrated model's O/E on those impressions (1,000
    # impressions at 1.5% CTR hold 15 clicks: a calibrated O/E strays by 0.26 there)
    oe_band: tuple[float, float] = (0.8, 1.25)
    oe_noise_z: float = 3.0
    # ECE as a share of the base rate, plus ece_noise_multiple times the ECE a calibrated model shows there
    max_relative_ece: float = 0.25
    ece_noise_multiple: float = 2.0
    # fewer served (or, for calibration, labelled) impressions than this are reported but not gated: noise
    min_segment_impressions: int = Field(1000, ge=1)
    # staleness: the live bundle, each online feature view and the newest joined partition (from the end of
    # the data it holds). With daily partitions only, the newest day's age peaks at 24 h + the attribution
    # window + the join's own time, just before the next day is joined; hourly partitions would allow ~12.
    max_bundle_age_hours: float = 48.0
    max_feature_age_hours: float = 48.0
    max_joined_age_hours: float = 36.0


class SparkConfig(BaseModel):
    """Spark session settings; any ``spark.*`` key can be added under ``conf``."""

    master: str = "local[2]"
    # Local mode runs everything in the driver, whose heap the JVM grows towards this cap rather than
    # collect, and holds until it exits: enough for a small day (1M impressions) inside the demo's 8 GiB
    # budget. A medium day (10M impressions) needs 8g (PCTR_SPARK__DRIVER_MEMORY=8g).
    driver_memory: str = "3g"
    shuffle_partitions: int = 8
    conf: dict[str, str] = {}


class PctrConfig(BaseSettings):
    """Root configuration."""

    model_config = SettingsConfigDict(env_prefix="PCTR_", env_nested_delimiter="__", extra="forbid")

    home: Path = Path("var")
    model_name: str = "pctr-ranker"
    simulation: SimulationConfig = SimulationConfig()
    join: JoinConfig = JoinConfig()
    validation: ValidationConfig = ValidationConfig()
    features: FeatureConfig = FeatureConfig()
    train: TrainConfig = TrainConfig()
    gate: GateConfig = GateConfig()
    tracking: TrackingConfig = TrackingConfig()
    serving: ServingConfig = ServingConfig()
    spark: SparkConfig = SparkConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    hourly: HourlyConfig = HourlyConfig()
    monitor: MonitorConfig = MonitorConfig()

    @property
    def feature_delay(self) -> dt.timedelta:
        """How long after the end of a day the features computed over it exist (their event time's offset)."""
        return dt.timedelta(hours=self.join.attribution_window_hours + self.features.processing_lag_hours)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("PCTR_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


def load_config(**overrides: object) -> PctrConfig:
    """Read the configuration (defaults < ``PCTR_CONFIG`` file < ``PCTR_*`` env < ``overrides``).

    ``home`` is made absolute so that subprocesses (horovodrun workers, Airflow tasks) agree on it.
    """
    config_file = os.environ.get("PCTR_CONFIG")
    if config_file and not Path(config_file).is_file():
        raise FileNotFoundError(f"PCTR_CONFIG names {config_file}, which is not a file")
    cfg = PctrConfig(**overrides)
    cfg.home = cfg.home.expanduser().resolve()
    return cfg
