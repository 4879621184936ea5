"""The HTTP service: ranking, TF-Serving-compatible predict and status, health, readiness, metrics, reload.

``create_app`` returns the FastAPI app without loading anything; once it starts, a background
thread loads the bundle named by CURRENT, retrying every ``RETRY_SECONDS`` (so the service may start
before the first publish) while ``/readyz`` answers 503, then follows CURRENT: a new bundle named there
is loaded and swapped in while the old one serves. ``POST /admin/reload`` builds an engine on
the bundle CURRENT names now and swaps it in by one assignment: requests in flight finish on the
engine they started with. Endpoints are plain ``def``: FastAPI runs them in its thread pool, and the
TensorFlow and FAISS calls release the GIL.

The server's clock decides the hour, the frequency-cap day and the served-log day: a request may set
its ``request_time`` only in replay mode (``serving.replay``). Requests over the configured limits
(``serving.max_*``) are refused, and ``/admin/*`` needs the admin token (``serving.guards``).

With ``serving.ads_refresh_seconds`` set, another background thread reads the current ads (bids,
statistics, ads launched after the publish: ``serving.fresh_ads``) that often and swaps them, with an
index that holds the new ads, into the live engine; a bundle that loads gets its first refresh before it
goes live. A refresh that fails is logged and counted, and the previous table and index keep serving.
``/metrics`` gives the age of the served ads table and of the index.

``serve`` runs it in ``serving.workers`` uvicorn processes, each building its own app (``app_from_env``)
with its own engine, metrics, served-log file and ad refreshes; the frequency-cap counts are shared
through Redis.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, create_model, model_validator

from core.bundle import current_bundle_dir, current_version
from core.config import PctrConfig, ServingConfig, load_config
from core.layout import Layout
from models.features import MODEL_FEATURES
from serving.engine import RankingEngine
from serving.frequency_cap import frequency_cap
from serving.fresh_ads import CurrentAds, Merged
from serving.guards import TF_SERVING_PREFIX, BodySizeLimit, admin_guard, error_response
from serving.request_features import CONTEXT, OnlineFeatures
from serving.scoring import MODEL_NAME, ModelVersionUnavailable
from serving.served_log import ServedLog

logger = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
PREDICT_PATH = f"{TF_SERVING_PREFIX}{MODEL_NAME}:predict"
# TF Serving's routes of one version of the model: the live bundle's model version, its tf_serving_version as published
VERSION_PATH = f"{TF_SERVING_PREFIX}{MODEL_NAME}/versions/{{version:int}}"
VERSION_PREDICT_PATH = f"{VERSION_PATH}:predict"
_PY_TYPES: dict[str, Any] = {"string": str | int, "int64": int, "float32": float, "float64": float}
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Context = create_model(
    "Context",
    __config__=ConfigDict(extra="forbid"),
    **{f.name: (_PY_TYPES[f.dtype], f.default) for f in CONTEXT},  # type: ignore[call-overload]
)


class RankRequest(BaseModel):
    """Body of ``POST /v1/rank``; context fields left out take the spec defaults."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1)
    context: Context = Field(default_factory=Context)  # type: ignore[valid-type]
    slots: int = Field(ge=1)
    request_id: str | None = None
    # When the ad request was made (timezone required), accepted in replay mode only; the server's clock
    # if absent. Replays and simulated worlds set it: it decides the ``hour`` feature, the frequency-cap
    # day and the served-log day.
    request_time: AwareDatetime | None = None

    def refusal(self, cfg: ServingConfig) -> str | None:
        """Why the service refuses this request (past a limit, or a ``request_time`` outside replay mode), or None."""
        if self.request_time is not None and not cfg.replay:
            return "request_time is accepted in replay mode only (serving.replay = true); the server's clock decides"
        if self.slots > cfg.max_slots:
            return f"slots must be <= {cfg.max_slots}, got {self.slots}"
        strings = {"user_id": self.user_id, "request_id": self.request_id}
        return too_long(strings | {f"context.{k}": v for k, v in self.context.model_dump().items()}, cfg)


def _instance_field(dtype: str) -> Any:
    # TF Serving's row format gives each (None, 1) input as a one-element list; a bare value is accepted too.
    value = _PY_TYPES[dtype]
    return (value | Annotated[list[value], Field(min_length=1, max_length=1)] | None, None)


Instance = create_model(
    "Instance",
    __config__=ConfigDict(extra="forbid"),
    **{f.name: _instance_field(f.dtype) for f in MODEL_FEATURES},  # type: ignore[call-overload]
)


class PredictRequest(BaseModel):
    """Body of ``POST /v1/models/pctr:predict`` in TF Serving's row format; missing features take spec defaults."""

    instances: list[Instance] = Field(min_length=1)  # type: ignore[valid-type]
    signature_name: str = "serving_default"

    @model_validator(mode="after")
    def _only_default_signature(self) -> PredictRequest:
        if self.signature_name != "serving_default":
            raise ValueError(f"unknown signature_name {self.signature_name!r}; the model has serving_default only")
        return self

    def refusal(self, cfg: ServingConfig) -> str | None:
        """Why the service refuses this request (too many instances, a string too long), or None."""
        if len(self.instances) > cfg.max_predict_instances:
            return f"at most {cfg.max_predict_instances} instances per request, got {len(self.instances)}"
        for i, row in enumerate(self.rows()):
            message = too_long({f"instances.{i}.{k}": v for k, v in row.items()}, cfg)
            if message is not None:
                return message
        return None

    def rows(self) -> list[dict[str, Any]]:
        """Instances as ``{feature: scalar}``, unwrapped from one-element lists, without missing features."""
        return [
            {k: v[0] if isinstance(v, list) else v for k, v in instance.model_dump(exclude_none=True).items()}
            for instance in self.instances
        ]


def too_long(values: dict[str, Any], cfg: ServingConfig) -> str | None:
    """A message naming the first of ``values`` that is a string over ``cfg.max_string_length``, or None."""
    for name, value in values.items():
        if isinstance(value, str) and len(value) > cfg.max_string_length:
            return f"{name} is {len(value)} characters long, over the limit of {cfg.max_string_length}"
    return None


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (one per app, so tests can build many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pctr_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "pctr_request_seconds", "HTTP request latency", ["endpoint"], buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.phases = Histogram(
            "pctr_rank_phase_seconds", "Latency of each phase of /v1/rank", ["phase"], buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.reloads = Counter("pctr_bundle_reloads", "Bundle loads by result", ["result"], registry=self.registry)
        self.bundle = Info("pctr_bundle", "The bundle being served", registry=self.registry)
        self.ads_refreshes = Counter(
            "pctr_ads_refreshes", "Refreshes of the served ads table by result", ["result"], registry=self.registry
        )
        # Ages at scrape time, from the live engine (``Engines`` sets their functions); NaN before a bundle loads.
        self.ads_table_age = Gauge(
            "pctr_ads_table_age_seconds", "Seconds since the served ads table was read (last refresh, or publish)",
            registry=self.registry,
        )  # fmt: skip
        self.index_age = Gauge(
            "pctr_index_age_seconds",
            "Seconds since the FAISS index last held every listed ad (last refresh or build, or publish)",
            registry=self.registry,
        )


class Engines:
    """The live engine and its (re)loads; a load that fails leaves the live engine serving."""

    def __init__(self, cfg: PctrConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.engine: RankingEngine | None = None
        self.error: str | None = "not loaded yet"
        self._lock = threading.Lock()
        # Per process, not per bundle: they survive reloads.
        self._frequency = frequency_cap(cfg.serving)
        self._served_log = ServedLog(Layout(cfg.home).served_log)
        self._current_ads: CurrentAds | None = None  # opened at the first refresh, with a Feast store of its own
        self._ads_lock = threading.Lock()
        metrics.ads_table_age.set_function(lambda: self._age("ads_at"))
        metrics.index_age.set_function(lambda: self._age("index_at"))

    def _age(self, which: str) -> float:
        engine = self.engine
        return float("nan") if engine is None else max(0.0, time.time() - getattr(engine.side, which))

    def reload(self) -> RankingEngine:
        """Load the bundle CURRENT names and make it live; raises (and keeps the old engine) on failure."""
        with self._lock:  # one load at a time: each holds a whole bundle in memory
            layout = Layout(self.cfg.home)
            try:
                bundle = current_bundle_dir(layout)
                if bundle is None:
                    raise FileNotFoundError(f"nothing published yet: {layout.current_pointer} does not exist")
                engine = RankingEngine.load(bundle, self.cfg, frequency=self._frequency, served_log=self._served_log)
            except Exception as err:
                self.metrics.reloads.labels("error").inc()
                self.error = f"{type(err).__name__}: {err}"
                raise
            if self.cfg.serving.ads_refresh_seconds > 0:
                try:  # the publish's ads may be older than those the live engine serves
                    self.refresh_ads(engine)
                except Exception:
                    logger.warning("bundle %s serves the ads of its publish until a refresh succeeds", engine.version,
                                   exc_info=True)  # fmt: skip
            self.engine, self.error = engine, None
            self.metrics.reloads.labels("ok").inc()
            self.metrics.bundle.info({"version": engine.version, "model_version": engine.model_version})
            logger.info("serving bundle %s (model version %s)", engine.version, engine.model_version)
            return engine

    def follow_current(self, stop: threading.Event) -> None:
        """Load the bundle CURRENT names, then follow it: a publish, ``pctr promote`` or ``pctr rollback``
        goes live without a restart. Checked every ``serving.watch_seconds`` (``RETRY_SECONDS`` until the
        first load); a bundle that fails to load is not retried until CURRENT names another one, but for
        one whose model version TF Serving does not serve (yet: it may still be loading it)."""
        failed: str | None = None
        while not stop.is_set():
            wanted = current_version(Layout(self.cfg.home))
            live = self.engine.version if self.engine is not None else None
            if wanted != live and (wanted != failed or live is None):
                try:
                    self.reload()
                    failed = None
                except Exception as err:
                    failed = None if isinstance(err, ModelVersionUnavailable) else wanted
                    # before the first publish, or while TF Serving loads a version, this repeats: no traceback
                    quiet = isinstance(err, FileNotFoundError | ModelVersionUnavailable)
                    logger.warning("%s; still serving %s", self.error, live, exc_info=not quiet)
            stop.wait(RETRY_SECONDS if self.engine is None else self.cfg.serving.watch_seconds)

    def refresh_ads(self, engine: RankingEngine | None = None) -> Merged:
        """Merge the current ads into ``engine`` (default: the live one) and swap them in; returns what changed.

        Raises on failure (no engine, no listing, Feast, the ad tower...), and the engine keeps its table and index.
        """
        with self._ads_lock:  # one refresh at a time: the background one, or a loading bundle's
            try:
                engine = engine or self.engine
                if engine is None:
                    raise RuntimeError(f"no bundle loaded: {self.error}")
                if self._current_ads is None:
                    from feature_repo.store import feature_store

                    self._current_ads = CurrentAds(Layout(self.cfg.home), OnlineFeatures(feature_store(self.cfg)))
                merged = engine.refresh_ads(self._current_ads.read())
            except Exception:
                self.metrics.ads_refreshes.labels("error").inc()
                raise
        self.metrics.ads_refreshes.labels("ok").inc()
        if merged.added or merged.dropped or merged.pending:
            logger.info(
                "bundle %s serves %d ads: %d added, %d dropped, %d new ads pending (no ad tower to embed them)",
                engine.version, len(merged.ads["ad_id"]), len(merged.added), len(merged.dropped), len(merged.pending),
            )  # fmt: skip
        return merged

    def follow_ads(self, stop: threading.Event) -> None:
        """Refresh the live engine's ads every ``serving.ads_refresh_seconds``; a refresh that fails is logged,
        and the previous table and index keep serving until one succeeds."""
        while not stop.wait(self.cfg.serving.ads_refresh_seconds):
            engine = self.engine
            if engine is None:
                continue
            try:
                self.refresh_ads(engine)
            except Exception:
                logger.warning("ads refresh failed; the previous ads table and index keep serving", exc_info=True)

    def live(self) -> RankingEngine:
        engine = self.engine
        if engine is None:
            raise HTTPException(503, detail=f"no bundle loaded: {self.error}")
        return engine


def configuration_error(cfg: PctrConfig) -> str | None:
    """Why the service cannot run on ``cfg``, or None."""
    serving = cfg.serving
    if serving.max_slots > cfg.join.max_position:
        # the join drops impressions at later positions: their clicks would never reach training
        return f"serving.max_slots ({serving.max_slots}) exceeds join.max_position ({cfg.join.max_position})"
    if serving.workers > 1 and serving.state == "memory":
        return (
            f"serving.workers = {serving.workers} needs serving.state = 'redis': with 'memory' each worker keeps "
            "its own frequency-cap counts, and a user could see an ad frequency_cap times per worker"
        )
    return None


def create_app(cfg: PctrConfig) -> FastAPI:
    """The service over ``cfg.home``'s CURRENT bundle; the bundle loads in the background once the app starts.

    ``cfg.serving.host`` must be the host the service is bound to: admin routes trust a loopback one.
    """
    error = configuration_error(cfg)
    if error is not None:
        raise ValueError(error)
    metrics = Metrics()
    engines = Engines(cfg, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        threading.Thread(target=engines.follow_current, args=(stop,), name="bundle-loader", daemon=True).start()
        if cfg.serving.ads_refresh_seconds > 0:
            threading.Thread(target=engines.follow_ads, args=(stop,), name="ads-refresher", daemon=True).start()
        yield
        stop.set()

    app = FastAPI(title="pctr ranking service", lifespan=lifespan)
    app.state.engines = engines
    # added before ``observe``, so inside it: refused bodies are counted too
    app.add_middleware(BodySizeLimit, max_bytes=cfg.serving.max_request_bytes)

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            endpoint = getattr(route, "path", "unmatched")  # the template, never the raw path: bounded labels
            metrics.requests.labels(endpoint, str(status)).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if not request.url.path.startswith(TF_SERVING_PREFIX):
            return await request_validation_exception_handler(request, exc)
        # TF Serving answers a bad request with 400 and {"error": message}; its clients expect that.
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors())
        return error_response(request.url.path, 400, message)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Response:
        engine = engines.engine
        if engine is None:
            return JSONResponse({"status": "not ready", "error": engines.error}, status_code=503)
        return JSONResponse({"status": "ready", "version": engine.version, "model_version": engine.model_version})

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/rank")
    def rank(body: RankRequest) -> dict[str, Any]:
        refusal = body.refusal(cfg.serving)
        if refusal is not None:
            raise HTTPException(400, detail=refusal)
        result = engines.live().rank(
            body.user_id, body.context.model_dump(), body.slots, body.request_id, body.request_time
        )
        for phase, ms in result["timings_ms"].items():
            metrics.phases.labels(phase).observe(ms / 1000.0)
        return result

    def predict_on(body: PredictRequest, path: str, version: int | None) -> Response:
        refusal = body.refusal(cfg.serving)
        if refusal is not None:
            return error_response(path, 400, refusal)
        engine = engines.engine
        if engine is None:
            return JSONResponse({"error": f"model {MODEL_NAME} is not loaded: {engines.error}"}, status_code=503)
        if version is not None and str(version) != engine.model_version:
            return error_response(path, 404, f"Servable not found for request: Specific({MODEL_NAME}, {version})")
        # A single-output model's predictions in row format: one list of the output's (1,) values per instance.
        return JSONResponse({"predictions": [[p] for p in engine.predict(body.rows())]})

    @app.post(PREDICT_PATH)
    def predict(body: PredictRequest) -> Response:
        return predict_on(body, PREDICT_PATH, None)

    @app.post(VERSION_PREDICT_PATH)
    def predict_version(version: int, body: PredictRequest) -> Response:
        return predict_on(body, VERSION_PREDICT_PATH, version)

    def status_of(version: int | None) -> Response:
        engine = engines.engine
        if engine is None:
            return JSONResponse({"error": f"model {MODEL_NAME} is not loaded: {engines.error}"}, status_code=503)
        if version is not None and str(version) != engine.model_version:
            return JSONResponse({"error": f"Could not find version {version} of model {MODEL_NAME}"}, status_code=404)
        status = {"error_code": "OK", "error_message": ""}
        return JSONResponse(
            {"model_version_status": [{"version": engine.model_version, "state": "AVAILABLE", "status": status}]}
        )

    @app.get(f"/v1/models/{MODEL_NAME}")
    def model_status() -> Response:
        return status_of(None)

    @app.get(VERSION_PATH)
    def model_version_status(version: int) -> Response:
        return status_of(version)

    admin = APIRouter(prefix="/admin", dependencies=[Depends(admin_guard(cfg.serving))])

    @admin.post("/reload")
    def reload() -> dict[str, Any]:
        previous = engines.engine.version if engines.engine is not None else None
        try:
            engine = engines.reload()
        except Exception as err:
            raise HTTPException(500, detail=f"reload failed, still serving {previous}: {engines.error}") from err
        return {"version": engine.version, "model_version": engine.model_version, "previous": previous}

    app.include_router(admin)
    return app


def app_from_env() -> FastAPI:
    """The service on the configuration of the environment (``load_config``): the factory each uvicorn worker calls."""
    return create_app(load_config())


def serve(host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    """Run the service with uvicorn on the environment's configuration, ``host``, ``port`` and ``workers``
    overriding ``serving``'s.

    The overrides go into the environment (``PCTR_SERVING__*``), which the worker processes inherit and
    read. The app is built here first, so that a configuration error or an unreachable Redis stops
    the command before anything listens or any worker starts.
    """
    import uvicorn

    overrides = {"host": host, "port": port, "workers": workers}
    os.environ.update({f"PCTR_SERVING__{k.upper()}": str(v) for k, v in overrides.items() if v is not None})
    cfg = load_config()
    app = create_app(cfg)
    serving = cfg.serving
    if serving.workers == 1:
        uvicorn.run(app, host=serving.host, port=serving.port, workers=1)
    else:  # uvicorn starts workers from an import string; this process's app only checked the configuration
        factory = f"{__name__}:{app_from_env.__name__}"
        uvicorn.run(factory, factory=True, host=serving.host, port=serving.port, workers=serving.workers)
