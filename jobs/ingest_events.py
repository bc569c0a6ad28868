"""ingest_events: one day's raw event logs -> the `events` Delta table, rejects -> `events_quarantine`.

    spark-submit jobs/ingest_events.py --logical-date 2026-01-05 [--raw raw] [--warehouse warehouse]
    spark-submit jobs/ingest_events.py --from-date 2026-01-01 --logical-date 2026-01-05   # a range, one job

Reads <raw>/events/dt=D/ (JSON lines by default, .gz allowed; --format csv|parquet), validates and
normalises every record, deduplicates, and replaces the rows of `events` with event_date = D in one
Delta transaction (replaceWhere); the quarantine rows for D are replaced the same way. A rerun for
the same date therefore leaves both tables exactly as one run does.

event_date is the date of the raw partition the event arrived in (its processing date), not the
date of event_ts: that is what makes a per-day replace exact when events arrive late.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from attnmodel.columns import EVENT_TS, EVENTS_QUARANTINE_TABLE, EVENTS_TABLE, ITEM_ID, USER_ID
from jobs import raw_contract as rc
from jobs.common import JobInputError, StageClock, add_job_args, event_types_arg, parse_date, run_job
from jobs.raw_files import (
    FILE_CORRUPT,
    FILE_FOREIGN_ENCODING,
    list_partition_files,
    read_raw_records,
    scan_files,
)
from jobs.warehouse import replace_partition, table_path

INPUT_FORMATS = ("json", "csv", "parquet")

# every raw field is read as a string (numbers keep their JSON text) and validated afterwards
RAW_RECORD_SCHEMA = T.StructType([T.StructField(name, T.StringType()) for name in rc.RAW_FIELDS])
_EPOCH_NUMBER = r"^-?\d+(\.\d+)?([eE][+-]?\d+)?$"
_MAX_EPOCH_SECONDS = 253402300799  # 9999-12-31
_BROADCAST_DUPLICATE_KEYS = 2_000_000  # above this, join duplicate keys with a shuffle instead
_EPOCH_MILLIS_FROM = 1e11  # 1e11 seconds is the year 5138: anything larger is milliseconds


@dataclass(frozen=True)
class IngestParams:
    logical_date: dt.date
    raw_root: str = "raw"
    warehouse: str = "warehouse"
    input_format: str = "json"
    event_types: tuple[str, ...] = rc.EVENT_TYPES
    allowed_lateness_days: int = 2
    max_record_bytes: int = rc.DEFAULT_MAX_RECORD_BYTES
    allow_empty: bool = False
    ingested_at: dt.datetime = dt.datetime(1970, 1, 1)  # main() stamps the wall clock here, at the edge
    from_date: dt.date | None = None  # ingest every day from here to logical_date in one job (a history load)

    @property
    def days(self) -> list[dt.date]:
        first = self.from_date or self.logical_date
        return [first + dt.timedelta(days=i) for i in range((self.logical_date - first).days + 1)]

    def __post_init__(self):
        if self.from_date is not None and self.from_date > self.logical_date:
            raise JobInputError(f"--from-date {self.from_date} is after --date {self.logical_date}")
        if self.input_format not in INPUT_FORMATS:
            raise JobInputError(f"--format must be one of {', '.join(INPUT_FORMATS)}, got {self.input_format!r}")
        if self.allowed_lateness_days < 0:
            raise JobInputError("--allowed-lateness-days must be >= 0")


@dataclass(frozen=True)
class IngestReport:
    logical_date: str
    source: str
    files_read: int
    records_read: int
    accepted: int
    quarantined: dict
    users: int
    items: int
    seconds: float
    stage_seconds: dict  # wall seconds per step of the job, to see where a slow night went
    from_date: str = ""  # the first day ingested (= logical_date for one day)
    days: dict = field(default_factory=dict)  # a range's figures per day (empty for one day)


# ---------------------------------------------------------------- pure transforms

def _blank_to_null(col: Column) -> Column:
    trimmed = F.trim(col)
    return F.when(trimmed == "", F.lit(None)).otherwise(trimmed)


def _has_utc_offset(ts_text: Column) -> Column:
    """Ends in Z, +hh:mm or +hhmm (cheap character tests; a regex or a failed parse costs far more per row)."""
    return (
        ts_text.endswith("Z")
        | (F.substring(ts_text, -6, 1).isin("+", "-") & (F.substring(ts_text, -3, 1) == ":"))
        | (F.substring(ts_text, -5, 1).isin("+", "-") & (F.length(ts_text) >= 20))
    ) & (F.length(ts_text) >= 16)


_CONTROL_CHARACTERS = "[\\x00-\\x1f\\x7f]"


def _looks_non_string(id_text: Column) -> Column:
    """Cheap character tests for an id whose JSON value may not be a string or an integer: an object, an array,
    a boolean, or a number with a fraction or exponent. Only these rows pay for parsing their JSON type."""
    first = F.substring(id_text, 1, 1)
    return (first.isin("{", "[") | id_text.isin("true", "false")
            | (first.isin(*"-0123456789") & (id_text.contains(".") | id_text.contains("e") | id_text.contains("E"))))


def checked_id(json_text: Column, field: str, id_text: Column) -> tuple[Column, Column]:
    """(the id to keep, a (reason, detail) struct or null) for one id field of a record.

    Strings are kept as they are (trimmed), integers as their JSON text. An integral number written with a
    fraction or exponent (7.0, 7e0: exporters that write every number as a double) is the integer ("7"),
    so one user does not become two. Objects and arrays are non_scalar_id; booleans, numbers with a
    fraction, and ids holding control characters are bad_id."""
    kind = F.when(_looks_non_string(id_text), F.schema_of_variant(
        F.try_variant_get(F.try_parse_json(json_text), f"$.{field}", "variant")))
    number = id_text.try_cast("decimal(38,6)")
    is_number = kind.startswith("DECIMAL") | kind.isin("DOUBLE", "FLOAT")
    integral = is_number & number.isNotNull() & (number == F.floor(number))

    def problem(code: str, what: Column) -> Column:
        return F.struct(F.lit(code).alias("reason"), F.concat(F.lit(f"{field} "), what).alias("detail"))

    verdict = (
        F.when(kind.startswith("OBJECT") | kind.startswith("ARRAY"),
               problem(rc.NON_SCALAR_ID, F.concat(F.lit("is a JSON "), F.lower(F.split(kind, "<")[0]),
                                                  F.lit(": ids must be JSON strings or integers"))))
        .when(kind == "BOOLEAN", problem(rc.BAD_ID, F.concat(F.lit("is the boolean "), id_text)))
        .when(is_number & ~integral, problem(rc.BAD_ID, F.concat(F.lit("is the number "), id_text,
                                                                   F.lit(", not an integer"))))
        .when(id_text.rlike(_CONTROL_CHARACTERS), problem(rc.BAD_ID, F.lit("contains control characters")))
    )
    kept = F.when(integral, F.floor(number).cast("decimal(38,0)").cast("string")).otherwise(id_text)
    return kept, verdict


def classify_records(
    records: DataFrame,
    *,
    logical_date: dt.date | Column,
    event_types: tuple[str, ...],
    allowed_lateness_days: int,
) -> DataFrame:
    """Parse and validate raw records (LINES_SCHEMA rows without file-status rows).

    logical_date: the day the records arrived for (their raw partition's dt=): a date, or a date column when
    one plan validates several days (a range ingest); it becomes each row's `event_date`.
    Returns every record with `event_date`, the normalised event columns, `reason` (null = accepted) and
    `detail`. Duplicates are not marked here (see duplicate_keys and mark_duplicates_of).
    """
    event_date = F.lit(logical_date) if isinstance(logical_date, dt.date) else logical_date
    json_text = F.coalesce(F.col("record_json"), F.col("raw"))
    fields = RAW_RECORD_SCHEMA.fieldNames()
    parsed = records.withColumn("rec", F.from_json(json_text, RAW_RECORD_SCHEMA))
    text = F.trim(json_text)
    any_field = F.greatest(*[F.col(f"rec.{f}").isNotNull() for f in fields])
    # Malformed JSON parses to all-null fields; an object with none of our fields is valid JSON (then
    # missing_user_id). get_json_object tells them apart and only runs on those rare rows.
    is_json_object = (
        F.col("rec").isNotNull() & text.startswith("{") & text.endswith("}")
        & (any_field | F.get_json_object(json_text, "$").isNotNull())
    )
    ts_text = F.col("_ts_text")
    is_epoch = ts_text.rlike(_EPOCH_NUMBER)
    epoch = F.when(is_epoch, ts_text.try_cast("double"))
    epoch_seconds = F.when(F.abs(epoch) >= _EPOCH_MILLIS_FROM, epoch / 1000).otherwise(epoch)
    event_ts = (
        F.when(is_epoch & (F.abs(epoch_seconds) <= _MAX_EPOCH_SECONDS),
               F.timestamp_micros((epoch_seconds * 1_000_000).try_cast("long")))
        .when(~is_epoch & _has_utc_offset(ts_text), ts_text.try_cast("timestamp"))
    )
    value_text = F.col("_value_text")
    value = value_text.try_cast("double")
    bad_value = value_text.isNotNull() & (value.isNull() | F.isnan(value) | (F.abs(value) == float("inf")))

    # the window in UTC from the date's day number (time-zone free; constant-folded for one day)
    day_start = F.timestamp_seconds((F.unix_date(F.col("event_date")) - allowed_lateness_days) * 86_400)
    day_end = F.timestamp_seconds((F.unix_date(F.col("event_date")) + 1 + allowed_lateness_days) * 86_400)
    ts = F.col("_event_ts")
    etype = F.col("_event_type")

    def verdict(code: str | Column, detail: Column) -> Column:
        return F.struct((F.lit(code) if isinstance(code, str) else code).alias("reason"), detail.alias("detail"))

    # One CASE yields reason and detail together, so no condition is evaluated twice.
    judged = (
        F.when(F.col("reader_reason").isNotNull(), verdict(F.col("reader_reason"), F.col("reader_detail")))
        .when(~F.col("_is_json_object"), verdict(rc.INVALID_JSON, F.lit("not a JSON object")))
        .when(F.col(USER_ID).isNull(), verdict(rc.MISSING_USER_ID, F.lit("user_id is missing or empty")))
        .when(F.col("_user_problem").isNotNull(), F.col("_user_problem"))
        .when(F.col(ITEM_ID).isNull(), verdict(rc.MISSING_ITEM_ID, F.lit("item_id is missing or empty")))
        .when(F.col("_item_problem").isNotNull(), F.col("_item_problem"))
        .when(etype.isNull() | ~etype.isin(list(event_types)),
              verdict(rc.UNKNOWN_EVENT_TYPE, F.concat(F.lit("event_type '"), F.coalesce(etype, F.lit("<missing>")),
                                                      F.lit(f"' is not one of {','.join(event_types)}"))))
        .when(ts.isNull(),
              verdict(rc.BAD_TIMESTAMP, F.concat(F.lit("timestamp '"), F.coalesce(ts_text, F.lit("<missing>")),
                                                 F.lit("' is not ISO-8601 with a UTC offset nor epoch seconds/milliseconds"))))
        .when((ts < day_start) | (ts >= day_end),
              verdict(rc.OUT_OF_WINDOW, F.concat(F.lit("event time "), ts.cast("string"),
                                                 F.lit(f" UTC is more than {allowed_lateness_days} days outside "),
                                                 F.col("event_date").cast("string"))))
        .when(F.col("_bad_value"),
              verdict(rc.BAD_VALUE, F.concat(F.lit("value '"), value_text, F.lit("' is not a finite number"))))
    )
    return (
        parsed.select(
            event_date.alias("event_date"), "file_index", "line_number", "raw", "reader_reason", "reader_detail",
            is_json_object.alias("_is_json_object"), json_text.alias("_json"),
            _blank_to_null(F.col(f"rec.{rc.RAW_EVENT_ID}")).alias("event_id"),
            _blank_to_null(F.col(f"rec.{rc.RAW_USER_ID}")).alias(USER_ID),
            _blank_to_null(F.col(f"rec.{rc.RAW_ITEM_ID}")).alias(ITEM_ID),
            F.lower(_blank_to_null(F.col(f"rec.{rc.RAW_EVENT_TYPE}"))).alias("_event_type"),
            _blank_to_null(F.col(f"rec.{rc.RAW_TIMESTAMP}")).alias("_ts_text"),
            _blank_to_null(F.col(f"rec.{rc.RAW_VALUE}")).alias("_value_text"),
        )
        .withColumns(dict(zip(("_user_kept", "_user_problem"), checked_id(F.col("_json"), rc.RAW_USER_ID, F.col(USER_ID)))))
        .withColumns(dict(zip(("_item_kept", "_item_problem"), checked_id(F.col("_json"), rc.RAW_ITEM_ID, F.col(ITEM_ID)))))
        .withColumn(USER_ID, F.col("_user_kept"))
        .withColumn(ITEM_ID, F.col("_item_kept"))
        .withColumn("_event_ts", event_ts)
        .withColumn("value", value)
        .withColumn("_bad_value", bad_value)
        .withColumn("_verdict", judged)
        .select(
            "event_date", "file_index", "line_number", "raw", "event_id", USER_ID, ITEM_ID,
            F.col("_event_type").alias("event_type"),
            F.col("_event_ts").alias(EVENT_TS),
            "value",
            F.col("_verdict.reason").alias("reason"),
            F.col("_verdict.detail").alias("detail"),
        )
    )


def with_dedup_key(classified: DataFrame) -> DataFrame:
    """Accepted records get their dedup key as event_id: the raw event_id, else a hash of
    (user, item, type, timestamp)."""
    fallback_key = F.sha2(
        F.concat_ws("\u001f", F.col(USER_ID), F.col(ITEM_ID), F.col("event_type"),
                    F.unix_micros(F.col(EVENT_TS)).cast("string")), 256
    )
    return classified.withColumn(
        "event_id", F.when(F.col("reason").isNull(), F.coalesce(F.col("event_id"), fallback_key)).otherwise(F.col("event_id"))
    )


_LINE_BITS = 36  # a record's position: file_index << 36 | line_number (files up to 2^36 lines)


def _position(file_index: Column, line_number: Column) -> Column:
    return F.shiftleft(file_index.cast("long"), _LINE_BITS) + line_number


def _with_source_file(df: DataFrame, files: DataFrame) -> DataFrame:
    """Adds source_file by file_index from `files` (file_index, source_file): a broadcast join, which stays
    cheap for any number of files (an array literal of 20,000 paths took half a minute to plan)."""
    return df.join(F.broadcast(files), "file_index", "left")


_DEDUP_KEYS = ["event_date", "event_id"]  # a key repeats only within one day: one ingest per day sees one day


def duplicate_keys(keyed: DataFrame) -> DataFrame:
    """(event_date, event_id) seen more than once among accepted records, with the position of the first copy.

    One long for (file, line) keeps this a hash aggregation (a struct minimum sorts every record)."""
    return (
        keyed.filter(F.col("reason").isNull())
        .groupBy(*_DEDUP_KEYS)
        .agg(F.count(F.lit(1)).alias("_copies"), F.min(_position(F.col("file_index"), F.col("line_number"))).alias("_first"))
        .filter(F.col("_copies") > 1)
        .select(*_DEDUP_KEYS, "_first")
    )


def mark_duplicates_of(keyed: DataFrame, dup_keys: DataFrame, files: DataFrame, *, broadcast: bool = True) -> DataFrame:
    """Mark every accepted copy but the first (in file, line order) as a duplicate; reruns keep the same copy.
    Raw text is then kept only where it is needed: on rows that go to the quarantine.
    `files`: (file_index, source_file) of the files the records were read from."""
    first_files = files.select(F.col("file_index").alias("_first_file"), F.col("source_file").alias("_first_source"))
    located = (
        dup_keys.withColumn("_first_file", F.shiftright(F.col("_first"), _LINE_BITS).cast("int"))
        .join(F.broadcast(first_files), "_first_file", "left")
        .drop("_first_file")
    )
    joined = keyed.join(F.broadcast(located) if broadcast else located, _DEDUP_KEYS, "left")
    is_dup = (
        F.col("reason").isNull() & F.col("_first").isNotNull()
        & (_position(F.col("file_index"), F.col("line_number")) != F.col("_first"))
    )
    first_location = F.concat(F.col("_first_source"), F.lit(":"), F.col("_first").bitwiseAND((1 << _LINE_BITS) - 1).cast("string"))
    return (
        joined.withColumn("_dup", is_dup)
        .withColumn("reason", F.when(F.col("_dup"), F.lit(rc.DUPLICATE)).otherwise(F.col("reason")))
        .withColumn("detail", F.when(F.col("_dup"), F.concat(F.lit("duplicate of event_id "), F.col("event_id"),
                                                             F.lit(" first seen at "), first_location))
                    .otherwise(F.col("detail")))
        .withColumn("raw", F.when(F.col("reason").isNotNull(), F.col("raw")))
        .drop("_dup", "_first", "_first_source")
    )


def to_events(deduplicated: DataFrame, files: DataFrame, *, ingested_at: dt.datetime) -> DataFrame:
    return _with_source_file(deduplicated.filter(F.col("reason").isNull()), files).select(
        "event_id", USER_ID, ITEM_ID, "event_type", EVENT_TS, "event_date", "value", "source_file",
        F.lit(ingested_at).cast("timestamp").alias("ingested_at"),
    )


def to_quarantine(deduplicated: DataFrame, files: DataFrame, file_rows: DataFrame, *,
                  ingested_at: dt.datetime) -> DataFrame:
    """Rejected records, plus one row per corrupt or empty file.
    file_rows: (source_file, event_date, reader_detail, file_status) of the files not read."""
    rejected = _with_source_file(deduplicated.filter(F.col("reason").isNotNull()), files).select(
        "event_date", "source_file", "line_number", "raw", "reason", "detail")
    whole_files = file_rows.select(
        "event_date", "source_file",
        F.lit(None).cast("long").alias("line_number"),
        F.lit(None).cast("string").alias("raw"),
        F.when(F.col("file_status") == FILE_CORRUPT, F.lit(rc.CORRUPT_FILE))
        .when(F.col("file_status") == FILE_FOREIGN_ENCODING, F.lit(rc.UNSUPPORTED_ENCODING))
        .otherwise(F.lit(rc.EMPTY_FILE)).alias("reason"),
        F.col("reader_detail").alias("detail"),
    )
    return rejected.unionByName(whole_files).select(
        "event_date", "source_file", "line_number",
        F.substring("raw", 1, rc.QUARANTINE_RAW_MAX_CHARS).alias("raw"), "reason", "detail",
        F.lit(ingested_at).cast("timestamp").alias("ingested_at"),
    )


def quarantined_per_reason(quarantine: DataFrame, by_day: bool = False) -> DataFrame:
    """(reason, n), or (event_date, reason, n): rows of the quarantine per reason code (rejected records, and
    whole files)."""
    keys = ["event_date", "reason"] if by_day else ["reason"]
    return quarantine.groupBy(*keys).agg(F.count(F.lit(1)).alias("n"))


def distinct_users_and_items(events: DataFrame) -> DataFrame:
    """One row (users, items): distinct users and items among the accepted events."""
    return events.agg(F.count_distinct(USER_ID).alias("users"), F.count_distinct(ITEM_ID).alias("items"))


# ---------------------------------------------------------------- I/O

# Readers select events by event_date (the partition column); min/max statistics on every other
# column cost 3-4 s per 2M-event day to collect and would skip nothing, so only event_ts gets them.
EVENTS_TABLE_PROPERTIES = {"delta.dataSkippingStatsColumns": EVENT_TS}


def _missing_days(spark: SparkSession, params: IngestParams) -> tuple[dict, list[dt.date]]:
    """{day: its raw files} for every day of the run, and the days whose raw partition is missing."""
    files, missing = {}, []
    for day in params.days:
        found = list_partition_files(spark, rc.raw_partition_path(params.raw_root, day))
        if found is None:
            missing.append(day)
        files[day] = found or []
    return files, missing


def _range_frames(spark: SparkSession, params: IngestParams, statuses_by_day: dict, cached: list):
    """(events, quarantine, records read per day) of every day of the run in one plan, each record validated
    and deduplicated within its own day (its raw partition's dt=), as a nightly ingest of that day does.
    One plan for a 200-day history load instead of 200 unioned ones (which took longer to plan than to run).
    DataFrames to unpersist go to `cached`."""
    readable, readable_days, bad_files = [], [], []
    for day, statuses in statuses_by_day.items():
        for path, status, detail, n_lines in statuses:
            if status is None:
                readable.append((path, n_lines))
                readable_days.append(day)
            else:
                bad_files.append((path, day, detail, status))
    lines = read_raw_records(spark, readable, params.input_format, params.max_record_bytes)
    read_files = spark.createDataFrame([(i, path) for i, (path, _) in enumerate(readable)],
                                       "file_index int, source_file string")
    days = list(statuses_by_day)
    if len(days) == 1:
        event_date = F.lit(days[0])
    else:  # each file's day by its position in the list of files read: a broadcast lookup, one row per file
        file_days = spark.createDataFrame(list(enumerate(readable_days)), "file_index int, event_date date")
        lines = lines.join(F.broadcast(file_days), "file_index", "left")
        event_date = F.col("event_date")
    file_rows = spark.createDataFrame(sorted(bad_files),
                                      "source_file string, event_date date, reader_detail string, file_status string")
    classified = classify_records(lines, logical_date=event_date, event_types=params.event_types,
                                  allowed_lateness_days=params.allowed_lateness_days)
    keyed = with_dedup_key(classified).persist(StorageLevel.MEMORY_AND_DISK)
    dup_keys = duplicate_keys(keyed).persist(StorageLevel.MEMORY_AND_DISK)
    cached += [keyed, dup_keys]
    records_read = {r["event_date"]: r["n"]
                    for r in keyed.groupBy("event_date").agg(F.count(F.lit(1)).alias("n")).collect()}
    # broadcast the (usually few) duplicated keys so the records themselves are never shuffled
    deduplicated = mark_duplicates_of(keyed, dup_keys, read_files,
                                      broadcast=dup_keys.count() <= _BROADCAST_DUPLICATE_KEYS)
    events = to_events(deduplicated, read_files, ingested_at=params.ingested_at)
    quarantine = to_quarantine(deduplicated, read_files, file_rows, ingested_at=params.ingested_at)
    return events, quarantine, {day: records_read.get(day, 0) for day in days}


def run(spark: SparkSession, params: IngestParams) -> IngestReport:
    stage = StageClock()
    days = params.days
    files, missing = _missing_days(spark, params)
    if missing and not params.allow_empty:
        shown = ", ".join(rc.raw_partition_path(params.raw_root, d) for d in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise JobInputError(f"raw partition not found: {shown}{more} (pass --allow-empty to record an empty day)")
    # Damaged and empty files are found by a cheap first pass (one Spark job for every day's files), so a
    # corrupt file is skipped whole and the records are read (and cached) once.
    all_statuses = scan_files(spark, [f for day in days for f in files[day]], params.input_format,
                              params.max_record_bytes)
    by_file = {status[0]: status for status in all_statuses}
    stage.lap("scan_files")
    cached = []
    quarantine = None
    try:
        events, quarantine, records_read = _range_frames(
            spark, params, {day: [by_file[f] for f in files[day]] for day in days}, cached)
        stage.lap("read_and_validate")
        # The quarantine is a small share of the records: kept after its write, it gives the counts per
        # reason at almost no cost (a third pass over all records measured 4-5 s per 2M-event day).
        quarantine = quarantine.persist(StorageLevel.MEMORY_AND_DISK)
        # One transaction per table for the whole range: the same rows as one ingest per day.
        replace_partition(events, table_path(params.warehouse, EVENTS_TABLE), column="event_date", value=days[0],
                          value_to=days[-1], table_properties=EVENTS_TABLE_PROPERTIES)
        stage.lap("write_events")
        replace_partition(quarantine, table_path(params.warehouse, EVENTS_QUARANTINE_TABLE), column="event_date",
                          value=days[0], value_to=days[-1])
        stage.lap("write_quarantine")
        per_day_reason = quarantined_per_reason(quarantine, by_day=True).collect()
        totals = distinct_users_and_items(events).first()
        stage.lap("count")
    finally:
        for df in cached:
            df.unpersist()
        if quarantine is not None:
            quarantine.unpersist()
    per_day = {}
    for day in days:
        reasons = dict(sorted((r["reason"], r["n"]) for r in per_day_reason if r["event_date"] == day))
        rejected = sum(n for reason, n in reasons.items() if reason not in rc.FILE_REASONS)
        per_day[day.isoformat()] = {"files_read": len(files[day]), "records_read": records_read[day],
                                    "accepted": records_read[day] - rejected, "quarantined": reasons}
    quarantined = {}
    for d in per_day.values():
        for reason, n in d["quarantined"].items():
            quarantined[reason] = quarantined.get(reason, 0) + n
    return IngestReport(
        logical_date=params.logical_date.isoformat(),
        source=(rc.raw_partition_path(params.raw_root, days[0]) if len(days) == 1
                else f"{rc.raw_partition_path(params.raw_root, days[0])} .. dt={days[-1].isoformat()}"),
        files_read=sum(d["files_read"] for d in per_day.values()),
        records_read=sum(d["records_read"] for d in per_day.values()),
        accepted=sum(d["accepted"] for d in per_day.values()),
        quarantined=dict(sorted(quarantined.items())),
        users=totals["users"],
        items=totals["items"],
        seconds=stage.total(),
        stage_seconds=stage.seconds,
        from_date=days[0].isoformat(),
        days=per_day if len(days) > 1 else {},
    )


# ---------------------------------------------------------------- command line

def build_parser(prog: str = "ingest_events") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Ingest one day of raw event logs into the events Delta table.")
    add_job_args(parser, date_help="the day to ingest (YYYY-MM-DD): reads <raw>/events/dt=DATE/", raw=True)
    parser.add_argument("--format", dest="input_format", default="json", choices=INPUT_FORMATS,
                        help="raw file format: json lines (.gz allowed), csv with a header row, or parquet")
    parser.add_argument("--event-types", default=",".join(rc.EVENT_TYPES), help="comma-separated accepted event types")
    parser.add_argument("--allowed-lateness-days", type=int, default=2,
                        help="events more than this many days outside the partition's day are quarantined")
    parser.add_argument("--max-record-bytes", type=int, default=rc.DEFAULT_MAX_RECORD_BYTES)
    parser.add_argument("--allow-empty", action="store_true", help="a missing raw partition is an empty day, not an error")
    parser.add_argument("--from-date", type=parse_date, default=None,
                        help="ingest every day from this one to --date in one job (the same rows as one ingest per "
                             "day, in one transaction per table: a history load or a backfill of the events)")
    return parser


def params_from_args(args: argparse.Namespace, ingested_at: dt.datetime) -> IngestParams:
    return IngestParams(
        logical_date=args.logical_date,
        raw_root=args.raw_root,
        warehouse=args.warehouse,
        input_format=args.input_format,
        event_types=event_types_arg(args.event_types),
        allowed_lateness_days=args.allowed_lateness_days,
        max_record_bytes=args.max_record_bytes,
        allow_empty=args.allow_empty,
        ingested_at=ingested_at,
        from_date=args.from_date,
    )


def main(argv: list[str] | None = None, spark: SparkSession | None = None, prog: str = "ingest_events") -> int:
    args = build_parser(prog).parse_args(argv)
    # ingested_at is the one wall-clock value, stamped here at the edge
    ingested_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return run_job("ingest", lambda: params_from_args(args, ingested_at), run,
                   app_name="ingest_events", master=args.master, spark=spark, run_id=args.run_id)


if __name__ == "__main__":
    sys.exit(main())
