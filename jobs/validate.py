"""Great Expectations gate on the raw impressions of a day (before the join) or on its joined rows (after it).

Every run validates Spark DataFrames through a file-backed GX context under ``reports/gx`` (one
datasource, one dataframe asset per dataset, suites and checkpoints named by dataset and ds, so a rerun
replaces them), rebuilds the Data Docs there and writes its summary to
``reports/validation/<stage>/dt=<ds>/_stats.json``. A failed gate writes the same summary and raises
:class:`DataQualityError`, whose one-line message names the first failed check.

Row-count checks compare with the mean of the trailing ``cfg.validation.trailing_days`` days that passed
this gate (their counts are read back from those summaries); a day with no such history skips the check
and says so in its summary.

The raw gate reads the impressions of ds only once its 24 hours are complete (it raises
:class:`core.raw_logs.IncompleteLogsError` naming the first that is not) and only files that read through:
an unreadable one fails it with a line naming the file, unless ``join.unreadable_files = "quarantine"``,
which validates the day without it and lists it under ``unreadable_files`` (the join quarantines it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from core.config import PctrConfig
from core.io import Stats, read_json, write_stats
from core.layout import Layout, shift_ds
from core.raw_logs import IMPRESSION_FIELDS, day_hours, read_raw_events, readable_files, require_complete
from core.spark import spark_session
from jobs.join_logs import OUTPUT_COLUMNS, ROW_COLUMNS

if TYPE_CHECKING:
    from great_expectations.data_context import AbstractDataContext
    from great_expectations.expectations import Expectation
    from pyspark.sql import DataFrame

Stage = Literal["raw", "joined"]
DATASOURCE = "pctr_spark"
BATCH_DEFINITION = "whole_dataframe"
RAW_COLUMNS = ("impression_id", "ts", "user_id", "ad_id", "bid", "position", "parse_error")
EVAL_COLUMNS = ROW_COLUMNS  # the eval sample is not downsampled: no sampling weight
# how many standard errors of the eval-sample CTR the positive-share band allows for sampling noise
CTR_SIGMAS = 3.0


class DataQualityError(RuntimeError):
    """A data-quality gate failed; the message is one line: first reason, count of others, report path."""


def report_dir(layout: Layout, stage: Stage, ds: str) -> Path:
    """The gate's output directory (holds ``_stats.json``)."""
    return layout.reports / "validation" / stage / f"dt={ds}"


def run(cfg: PctrConfig, ds: str, stage: Stage) -> Stats:
    """Validate the raw impressions (``stage="raw"``) or the joined rows and eval sample (``"joined"``) of ds.

    Returns the summary on success; writes it either way and raises :class:`DataQualityError` on failure.
    """
    if stage not in ("raw", "joined"):
        raise ValueError(f"stage must be 'raw' or 'joined', got {stage!r}")
    layout = Layout(cfg.home)
    stats: Stats = {"stage": f"validate_{stage}", "ds": ds}
    # each builder checks its inputs' files before it starts Spark: a missing hour fails in a second
    checks = _raw_checks(cfg, layout, ds, stats) if stage == "raw" else _joined_checks(cfg, layout, ds, stats)
    context = _context(layout)
    failed: list[str] = []
    n_expectations = 0
    try:
        for asset, df, expectations in checks:
            n_expectations += len(expectations)
            failed += _validate(context, asset, ds, df, expectations)
    finally:
        for _, df, _ in checks:
            df.unpersist()
    # each checkpoint's UpdateDataDocsAction rendered its own pages and the index (a full rebuild would
    # re-render every stored result, a cost that grows with every day validated)
    index = context.get_docs_sites_urls(only_if_exists=False)[0]["site_url"]
    stats.update(success=not failed, expectations=n_expectations, failed=failed, data_docs=_file_path(index))
    out = report_dir(layout, stage, ds)
    write_stats(out, stats)
    if failed:
        more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
        raise DataQualityError(f"validate {stage} ds={ds} failed: {failed[0]}{more}; report: {out / '_stats.json'}")
    return stats


def _raw_checks(
    cfg: PctrConfig, layout: Layout, ds: str, stats: Stats
) -> list[tuple[str, DataFrame, list[Expectation]]]:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    hours = day_hours("impressions", ds)
    require_complete(layout, hours, f"validate raw ds={ds}")
    files, unreadable = readable_files(cfg, hours)
    if not files:
        raise FileNotFoundError(f"no impressions for ds={ds} under {layout.raw('impressions', ds)}")
    stats["unreadable_files"] = [f.summary() for f in unreadable]
    paths = [str(f.path) for f in files]
    # the raw text is the bulk of a line and no check reads it; caching the rest spares a re-parse per metric
    df = read_raw_events(spark_session(cfg), paths, IMPRESSION_FIELDS).select(*RAW_COLUMNS).persist()
    lines = df.count()
    stats["lines"] = lines
    v, mostly, parsed = cfg.validation, cfg.validation.min_valid_fraction, Column("parse_error").is_null()
    exps: list[Expectation] = [
        gxe.ExpectColumnValuesToBeNull(column="parse_error", mostly=mostly, description="lines parse"),
        # among the lines that parse: a malformed line is null everywhere and already counted above
        *(
            gxe.ExpectColumnValuesToNotBeNull(
                column=c, mostly=mostly, row_condition=parsed, description=f"{c} not null in parsed lines"
            )
            for c in ("impression_id", "ts", "user_id", "ad_id")
        ),
        gxe.ExpectColumnValuesToBeUnique(column="impression_id", mostly=mostly, description="impression_id unique"),
        gxe.ExpectColumnValuesToBeBetween(
            column="bid", min_value=0, max_value=cfg.join.max_bid, strict_min=True, mostly=mostly,
            description=f"bid in (0, {cfg.join.max_bid:g}]",
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="position", min_value=1, max_value=cfg.join.max_position, mostly=mostly,
            description=f"position in [1, {cfg.join.max_position}]",
        ),
    ]  # fmt: skip
    exps += _row_count_check(layout, "raw", ds, "lines", v.trailing_days, v.row_count_band, stats)
    return [("raw_impressions", df, exps)]


def _joined_checks(
    cfg: PctrConfig, layout: Layout, ds: str, stats: Stats
) -> list[tuple[str, DataFrame, list[Expectation]]]:
    import great_expectations.expectations as gxe
    from pyspark.sql import functions as F

    for path in (layout.joined(ds) / "data", layout.eval_sample(ds) / "data"):
        if not path.exists():
            raise FileNotFoundError(f"no joined output for ds={ds}: {path} is missing")
    spark = spark_session(cfg)
    joined = spark.read.parquet(str(layout.joined(ds) / "data")).persist()
    sample = spark.read.parquet(str(layout.eval_sample(ds) / "data")).persist()
    v, w = cfg.validation, cfg.join.neg_rate

    def rows_and_positives(df: DataFrame) -> tuple[int, int]:
        if "label" not in df.columns:  # reported by the column check; counts of rows still help
            return df.count(), 0
        row = df.agg(F.count(F.lit(1)).alias("n"), F.sum((F.col("label") == 1).cast("long")).alias("p")).first()
        return int(row["n"]), int(row["p"] or 0)

    rows, positives = rows_and_positives(joined)
    eval_rows, eval_positives = rows_and_positives(sample)
    ctr = eval_positives / eval_rows if eval_rows else None
    stats.update(
        output_rows=rows, positives=positives, eval_rows=eval_rows, eval_positives=eval_positives, eval_ctr=ctr
    )
    stats["positive_share"] = positives / rows if rows else None

    joined_exps: list[Expectation] = [
        *(gxe.ExpectColumnToExist(column=c, description=f"column {c} present") for c in OUTPUT_COLUMNS),
        gxe.ExpectColumnValuesToNotBeNull(column="impression_id", description="impression_id not null"),
        gxe.ExpectColumnValuesToBeUnique(column="impression_id", description="impression_id unique"),
        gxe.ExpectColumnValuesToNotBeNull(column="label", description="label not null"),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1], description="label in {0, 1}"),
        gxe.ExpectColumnValuesToNotBeNull(column="neg_rate", description="neg_rate not null"),
        gxe.ExpectColumnValuesToBeInSet(column="neg_rate", value_set=[w], description=f"neg_rate equals {w:g}"),
    ]
    if ctr is not None:
        lo, hi = positive_share_band(ctr, eval_rows, w, v.neg_rate_tolerance)
        stats["expected_positive_share"] = _share(ctr, w)
        stats["positive_share_band"] = [lo, hi]
        joined_exps.append(
            gxe.ExpectColumnMeanToBeBetween(
                column="label", min_value=lo, max_value=hi,
                description=f"share of positives consistent with neg_rate {w:g} and eval CTR {ctr:.4f}",
            )
        )  # fmt: skip
    else:
        stats["positive_share_check"] = "skipped: the eval sample is empty"
    joined_exps += _row_count_check(layout, "joined", ds, "output_rows", v.trailing_days, v.row_count_band, stats)
    eval_exps: list[Expectation] = [
        *(gxe.ExpectColumnToExist(column=c, description=f"eval column {c} present") for c in EVAL_COLUMNS),
        gxe.ExpectTableRowCountToBeBetween(min_value=1, description="eval sample not empty"),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1], description="eval label in {0, 1}"),
        gxe.ExpectColumnMeanToBeBetween(
            column="label", min_value=v.ctr_band[0], max_value=v.ctr_band[1],
            description=f"eval-sample CTR in [{v.ctr_band[0]:g}, {v.ctr_band[1]:g}]",
        ),
    ]  # fmt: skip
    return [("joined", joined, joined_exps), ("eval_sample", sample, eval_exps)]


def _share(ctr: float, neg_rate: float) -> float:
    """Share of positives after keeping every positive and a ``neg_rate`` fraction of negatives."""
    return ctr / (ctr + (1.0 - ctr) * neg_rate) if ctr > 0 else 0.0


def positive_share_band(ctr: float, eval_rows: int, neg_rate: float, tolerance: float) -> tuple[float, float]:
    """Band for the share of positives in the downsampled rows, given the eval-sample CTR.

    The expected share is ``ctr / (ctr + (1 - ctr) * neg_rate)``. Two things move the observed share:
    the realised keep-rate of negatives, allowed to be ``neg_rate ± tolerance`` (absolute), and the
    estimate of the CTR itself, which comes from a sample and is widened by ``CTR_SIGMAS`` binomial
    standard errors (otherwise small days would fail on sampling noise alone). The share rises with the
    CTR and falls with the keep-rate, so the corners give the band.
    """
    se = math.sqrt(ctr * (1.0 - ctr) / eval_rows) if eval_rows else 0.0
    ctr_lo, ctr_hi = max(0.0, ctr - CTR_SIGMAS * se), min(1.0, ctr + CTR_SIGMAS * se)
    rate_lo, rate_hi = max(neg_rate - tolerance, 1e-9), min(neg_rate + tolerance, 1.0)
    return _share(ctr_lo, rate_hi), _share(ctr_hi, rate_lo)


def _row_count_check(
    layout: Layout, stage: Stage, ds: str, key: str, days: int, band: tuple[float, float], stats: Stats
) -> list[Expectation]:
    """Row count within ``band`` (multipliers) of the mean over the trailing days that passed this gate.

    Failed days are left out so that one bad day does not drag the reference towards itself.
    """
    import great_expectations.expectations as gxe

    history: dict[str, int] = {}
    for back in range(1, days + 1):
        day = shift_ds(ds, -back)
        path = report_dir(layout, stage, day) / "_stats.json"
        if path.is_file():
            earlier = read_json(path)
            if earlier.get("success") and isinstance(earlier.get(key), int):
                history[day] = earlier[key]
    stats["trailing_days_used"] = sorted(history)
    if not history:
        stats["row_count_check"] = f"skipped: no day in the {days} days before {ds} passed this gate"
        return []
    mean = sum(history.values()) / len(history)
    lo, hi = math.floor(band[0] * mean), math.ceil(band[1] * mean)
    stats.update(trailing_mean_rows=round(mean, 1), row_count_band=[lo, hi], row_count_check="checked")
    return [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=lo,
            max_value=hi,
            description=f"{key} within [{lo}, {hi}] ({band[0]:g}x-{band[1]:g}x trailing mean)",
        )
    ]


def _context(layout: Layout) -> AbstractDataContext:
    """The file-backed GX context under ``reports/gx``, created on first use, and its Spark datasource."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root = layout.reports / "gx"
    root.mkdir(parents=True, exist_ok=True)
    # get_context also makes this the process's current context, which gx.Checkpoint etc. resolve through;
    # calling it on every run keeps that right when one process validates several homes
    context = gx.get_context(mode="file", context_root_dir=root)
    if not context.variables.progress_bars:  # tqdm bars on stderr would bury the pipeline's own log
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
    try:
        context.data_sources.get(DATASOURCE)
    except KeyError:
        context.data_sources.add_spark(name=DATASOURCE)
    return context


def _validate(
    context: AbstractDataContext, asset_name: str, ds: str, df: DataFrame, expectations: list[Expectation]
) -> list[str]:
    """Run one suite on one DataFrame through a checkpoint (which stores the result and its Data Docs page)."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    source = context.data_sources.get(DATASOURCE)
    try:
        asset = source.get_asset(asset_name)
    except LookupError:
        asset = source.add_dataframe_asset(name=asset_name)
    try:
        batch_definition = asset.get_batch_definition(BATCH_DEFINITION)
    except KeyError:
        batch_definition = asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)

    name = f"{asset_name}_{ds}"
    suite = gx.ExpectationSuite(name=name, expectations=expectations)
    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs")],
            result_format={"result_format": "SUMMARY"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": df})
    # GX returns results grouped by metric, not in suite order; the suite order puts causes (a missing
    # column) before their consequences, and the first reason is the one the error message shows
    order = {e.description: i for i, e in enumerate(expectations)}
    failed = [r for suite_result in result.run_results.values() for r in suite_result.results if not r.success]
    failed.sort(key=lambda r: order.get(r.expectation_config.description, len(order)))
    return [_reason(r) for r in failed]


def _reason(result: Any) -> str:
    """One line for a failed expectation: its description and what was observed against what was allowed."""
    config = result.expectation_config
    label = config.description or config.type
    error = _exception_message(result.exception_info)
    if error is not None:
        return f"{label}: could not be evaluated ({error})"
    observed = result.result or {}
    if config.type == "expect_column_to_exist":
        return f"{label}: missing"
    if observed.get("unexpected_percent") is not None:
        mostly = config.kwargs.get("mostly", 1.0)
        # mostly is judged on non-null values (nulls have their own checks), so report that share
        pct = observed.get("unexpected_percent_nonmissing")
        pct = observed["unexpected_percent"] if pct is None else pct
        return f"{label}: {pct:.1f}% unexpected (allowed {100 * (1 - mostly):.1f}%)"
    if "observed_value" in observed:
        value = observed["observed_value"]
        return f"{label}: observed {value:.4g}" if isinstance(value, float) else f"{label}: observed {value}"
    return f"{label}: failed"


def _exception_message(info: dict[str, Any] | None) -> str | None:
    """First line of the error behind a result, if any.

    GX puts it either at the top of ``exception_info`` or, when a metric failed, under one key per metric.
    """
    if not info:
        return None
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for entry in entries:
        if entry.get("raised_exception") or entry.get("exception_message"):
            lines = str(entry.get("exception_message") or "error").strip().splitlines()
            return lines[0] if lines else "error"
    return None


def _file_path(url: str) -> str:
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(url).path) if url.startswith("file:") else url
