"""The raw-log schema (the fields of impression and click records) and the reader of raw JSON lines.

The impression schema is defined here once: the join reads it (``IMPRESSION_FIELDS``), the simulator
writes its JSON lines with these keys in this order (``IMPRESSION_RECORD_KEYS``), and the service's
served log (``serving.served_log``) writes the same fields, so the same readers take both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

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


def read_raw_events(spark: SparkSession, paths: list[str], fields: tuple[tuple[str, str], ...]) -> DataFrame:
    """Raw JSON lines -> one row per line with the parsed fields, the raw line and a parse verdict.

    Lines are read as text so that a malformed line is kept (and quarantined) rather than dropped by
    the JSON reader. One permissive parse tells the verdicts apart: a line that is not a JSON object
    yields no field and sets the corrupt-record column; a mistyped field is null while the others
    parse, and also sets it. (A line whose only fields are all mistyped counts as malformed.)
    """
    from pyspark.sql import functions as F

    schema = ", ".join(f"{name} {dtype}" for name, dtype in fields) + ", _corrupt string"
    lines = (
        spark.read.option("recursiveFileLookup", "true")
        .text(paths)
        .withColumnRenamed("value", "raw")
        .withColumn("source_file", F.input_file_name())
    )
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
