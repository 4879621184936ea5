"""The raw-log contract: the schema of impression and click records, the hourly partitions and their
completion markers, the check that raw files read through, and the reader of raw JSON lines.

The impression schema is defined here once: the join reads it (``IMPRESSION_FIELDS``), the simulator
writes its JSON lines with these keys in this order (``IMPRESSION_RECORD_KEYS``), and the service's
served log (``serving.served_log``) writes the same fields, so the same readers take both; its records
are read back by ``read_served_log`` (the skew report, the monitor).

Raw logs land in hour partitions (``Layout.raw_hour``). The log writer puts ``COMPLETE_MARKER`` in an
hour once every file of that hour is written, and last: a reader that sees the marker sees the whole hour.
"""

from __future__ import annotations

import gzip
import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.layout import Layout

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame, SparkSession

    from core.config import PctrConfig

# Spark's file listing skips names that start with "_" or ".", so the marker is never read as data.
COMPLETE_MARKER = "_COMPLETE"
RAW_EVENTS = ("impressions", "clicks", "conversions")

IMPRESSION_FIELDS: tuple[tuple[str, str], ...] = (
    ("impression_id", "string"),
    ("request_id", "string"),
    ("ts", "string"),
    ("user_id", "string"),
    ("ad_id", "string"),
    ("advertiser_id", "string"),
    ("campaign_id", "string"),
    ("placement", "string"),
    ("position", "int"),
    ("device", "string"),
    ("os", "string"),
    ("country", "string"),
    ("bid", "double"),
    ("model_version", "string"),
    ("pctr_served", "double"),
)
IMPRESSION_KEYS: tuple[str, ...] = tuple(name for name, _ in IMPRESSION_FIELDS)
# The features the ranker scored an impression with (a JSON object), after the schema fields of a record:
# null in a log written without the ranker (the simulator's legacy server). The join does not read it.
SERVED_FEATURES = "served_features"
# The keys of an impression record, in the order they are written.
IMPRESSION_RECORD_KEYS: tuple[str, ...] = (*IMPRESSION_KEYS, SERVED_FEATURES)
CLICK_FIELDS: tuple[tuple[str, str], ...] = (("impression_id", "string"), ("ts", "string"))
REQUIRED_IMPRESSION = ("impression_id", "ts", "user_id", "ad_id", "advertiser_id", "position", "bid")


@dataclass(frozen=True)
class RawHour:
    """One hour partition of one raw event log; prints as ``clicks dt=2026-03-03/hour=05``."""

    event: str
    ds: str
    hour: int

    def __str__(self) -> str:
        return f"{self.event} dt={self.ds}/hour={self.hour:02d}"

    def path(self, layout: Layout) -> Path:
        return layout.raw_hour(self.event, self.ds, self.hour)

    def is_complete(self, layout: Layout) -> bool:
        return (self.path(layout) / COMPLETE_MARKER).is_file()


def day_hours(event: str, ds: str, through_hour: int = 23) -> list[RawHour]:
    """The hours of ``event`` on ``ds`` from 00 to ``through_hour``."""
    return [RawHour(event, ds, hour) for hour in range(through_hour + 1)]


def data_files(hour_dir: Path) -> list[Path]:
    """The data files of an hour partition, as Spark lists them (no marker, no hidden temporary file)."""
    if not hour_dir.is_dir():
        return []
    return sorted(p for p in hour_dir.iterdir() if p.is_file() and not p.name.startswith(("_", ".")))


class IncompleteLogsError(RuntimeError):
    """Raw hours that a stage reads are not complete yet; the one-line message names the first of them."""


class UnreadableRawFileError(RuntimeError):
    """A raw file cannot be read (a torn gzip, say); the one-line message names the file, its hour and the cause."""


def incomplete_hours(layout: Layout, hours: list[RawHour]) -> list[RawHour]:
    """The hours among ``hours`` without their completion marker, in the given order."""
    return [hour for hour in hours if not hour.is_complete(layout)]


def require_complete(layout: Layout, hours: list[RawHour], what: str) -> None:
    """Raise :class:`IncompleteLogsError` (``<what>: <first missing hour> not complete``) unless every hour is."""
    missing = incomplete_hours(layout, hours)
    if not missing:
        return
    first = missing[0]
    more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
    # Logs written before pctr had markers look like hours still being written; tell that case apart,
    # since waiting will not fix it.
    unmarked = not any(hour.is_complete(layout) for hour in hours) and bool(data_files(first.path(layout)))
    hint = (
        f"; its hours hold logs but none carries a {COMPLETE_MARKER} marker: logs written by a simulator "
        f"older than the markers? Re-simulate them (pctr simulate --start {first.ds} ...)"
        if unmarked
        else ""
    )
    raise IncompleteLogsError(f"{what}: {first} not complete{more}{hint}")


@dataclass(frozen=True)
class RawFile:
    """A data file of a raw hour and what reading it through found.

    ``lines``: the complete lines (newline-terminated) decompressed, up to the error if there is one: an
    unreadable file held at least that many. ``error``: the cause, ``None`` if the file reads through.
    """

    path: Path
    hour: RawHour
    size_bytes: int
    lines: int
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "file": str(self.path), "hour": str(self.hour), "cause": self.error, "bytes": self.size_bytes,
            "complete_lines_before_error": self.lines,
        }  # fmt: skip


def scan_files(layout: Layout, hours: list[RawHour]) -> list[RawFile]:
    """Read every data file of ``hours`` through once (gzip ones decompressed, streaming), in hour order.

    Spark stops a whole job on the first unreadable file with a stack trace that names neither file nor
    hour; this finds them first, a block at a time (memory stays small), and counts their lines. Measured
    on a small-scale day: 0.55 s for its 24 impression files (1M lines, 36 MB), 1.2 s for the 114 files
    the join reads (2M lines); two threads were no faster.
    """
    return [_scan(path, hour) for hour in hours for path in data_files(hour.path(layout))]


def _scan(path: Path, hour: RawHour) -> RawFile:
    lines, size = 0, 0
    try:
        size = path.stat().st_size
        with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as stream:
            while block := stream.read1(1 << 20):  # read1: the data before a tear is returned, not dropped
                lines += block.count(b"\n")
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        cause = " ".join(str(err).split()) or "no detail"
        return RawFile(path, hour, size, lines, f"{type(err).__name__}: {cause}")
    return RawFile(path, hour, size, lines)


def readable_files(cfg: PctrConfig, hours: list[RawHour]) -> tuple[list[RawFile], list[RawFile]]:
    """The data files of ``hours`` that read through, and those that do not.

    Fails closed (:class:`UnreadableRawFileError` naming the first unreadable file) unless
    ``cfg.join.unreadable_files == "quarantine"``, in which case the caller proceeds without them.
    """
    scanned = scan_files(Layout(cfg.home), hours)
    unreadable = [f for f in scanned if f.error is not None]
    if unreadable and cfg.join.unreadable_files == "fail":
        first = unreadable[0]
        more = f" (+{len(unreadable) - 1} more unreadable)" if len(unreadable) > 1 else ""
        raise UnreadableRawFileError(
            f"{first.path} ({first.hour}) cannot be read: {first.error}{more}; "
            'join.unreadable_files = "quarantine" proceeds without it'
        )
    return [f for f in scanned if f.error is None], unreadable


def copy_unreadable(raw_file: RawFile, layout: Layout, dest: Path) -> Path:
    """Copy an unreadable file under ``dest`` (by its path below the raw logs), its cause beside it as ``.reason``.

    Raw logs are append-only: the original stays where it is.
    """
    target = dest / raw_file.path.relative_to(layout.raw(raw_file.hour.event).parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(raw_file.path, target)
    target.with_name(target.name + ".reason").write_text(f"{raw_file.hour}: {raw_file.error}\n")
    return target


def read_served_log(directory: Path) -> tuple[pd.DataFrame, int]:
    """The served impressions in the ``*.jsonl`` files of ``directory`` (a served-log day: ``Layout.served_log /
    dt=D``) as a frame, ``ts`` parsed to UTC, and the count of unusable lines (an empty frame without files).

    A line that is not a JSON object with a parseable ``ts`` and a ``served_features`` object (e.g. a
    line torn by a crash) is skipped and counted rather than failing the reader.
    """
    import pandas as pd

    records, malformed = [], 0
    for path in sorted(directory.glob("*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    malformed += 1
                    continue
                if isinstance(record, dict) and isinstance(record.get(SERVED_FEATURES), dict) and "ts" in record:
                    records.append(record)
                else:
                    malformed += 1
    log = pd.DataFrame.from_records(records)
    if log.empty:
        return log, malformed
    log["ts"] = pd.to_datetime(log["ts"], utc=True, format="ISO8601", errors="coerce").astype("datetime64[us, UTC]")
    valid = log["ts"].notna().to_numpy()
    return log[valid].reset_index(drop=True), malformed + int((~valid).sum())


def read_raw_events(spark: SparkSession, paths: list[str], fields: tuple[tuple[str, str], ...]) -> DataFrame:
    """Raw JSON lines -> one row per line with the parsed fields, the raw line and a parse verdict.

    Lines are read as text so that a malformed line is kept (and quarantined) rather than dropped by
    the JSON reader. One permissive parse tells the verdicts apart: a line that is not a JSON object
    yields no field and sets the corrupt-record column; a mistyped field is null while the others
    parse, and also sets it. (A line whose only fields are all mistyped counts as malformed.)
    """
    from pyspark.sql import functions as F

    schema = ", ".join(f"{name} {dtype}" for name, dtype in fields) + ", _corrupt string"
    reader = spark.read.option("recursiveFileLookup", "true")
    # no paths (no click file in the hours read, or none readable): no lines, the same columns
    text = reader.text(paths) if paths else spark.createDataFrame([], "value string")
    lines = text.withColumnRenamed("value", "raw").withColumn("source_file", F.input_file_name())
    parsed = lines.withColumn("parsed", F.from_json("raw", schema, {"columnNameOfCorruptRecord": "_corrupt"}))
    no_field = all_of([F.col(f"parsed.{name}").isNull() for name, _ in fields])
    corrupt = F.col("parsed._corrupt").isNotNull()
    json_ok = F.col("parsed").isNotNull() & ~(corrupt & no_field) & F.ltrim("raw").startswith("{")
    return parsed.select(
        "raw",
        "source_file",
        *[F.col(f"parsed.{name}").alias(name) for name, _ in fields],
        F.when(~json_ok, "malformed").when(corrupt, "schema_violation").alias("parse_error"),
    )


def all_of(conditions: list[Column]) -> Column:
    """The conjunction of Spark conditions (``&`` of them all)."""
    out = conditions[0]
    for cond in conditions[1:]:
        out = out & cond
    return out
