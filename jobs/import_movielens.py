"""Convert a MovieLens file into daily raw event partitions: `attnrec import-movielens PATH --out raw/`.

Formats (detected from the file name, else from the first lines):
* `u.data` (ML-100K): `user<TAB>item<TAB>rating<TAB>unix_seconds`
* `ratings.dat` (ML-1M/10M): `user::item::rating::unix_seconds`
* ordered pairs, e.g. `ml-1m.txt` (SASRec's file): `user item` per line, a user's lines in time order,
  no timestamps.

Every line becomes one raw record (see jobs/raw_contract.py) with `user_id` and `item_id` as strings:
* u.data / ratings.dat: `event_type` "rating", `value` = the rating, `timestamp` = the file's unix seconds;
  the partition is the UTC date of that timestamp (`--start-date/--days` are not used).
* pairs: `event_type` "view", no value, and a synthetic timestamp that keeps each user's order.
  Synthetic timestamp scheme: every user's history is spread evenly over the same window of
  `--days` days starting at `--start-date` 00:00 UTC (span S = days * 86400 s). The k-th line
  (0-based) of a user with n lines gets

      timestamp = start + floor((k + 1) * S / n) - 1      (unix seconds)

  i.e. the last second of the k-th of n equal slots. Timestamps are strictly increasing per user
  whenever n <= S (always, for real files: 30 days are 2.6M seconds); every user's last event is at
  the window's last second (so a snapshot as of the last day holds every full history, as the
  leave-one-out protocol wants), and a snapshot as of an earlier day holds about the same share of
  every user's history.

`event_id` = "ml-<user>-<k>" with k the 0-based position of the line among that user's lines,
zero-padded to 7 digits; for rating files k follows (timestamp, file position). Ingest orders a
user's events by event_ts then event_id, so ties on the same second keep file order.
Output: JSON lines written by Spark (`--gzip` for .json.gz), one file per day under
`<out>/events/dt=YYYY-MM-DD/`; a rerun replaces exactly the days it writes (dynamic partition
overwrite), so other days under the same raw root are left alone. Blank or malformed lines are
skipped and counted (ImportReport.skipped_lines).
File position comes from `monotonically_increasing_id()` over the text scan, which increases in file
order for a single input file (Spark reads a file's splits in offset order).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from dataclasses import dataclass, field

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs import raw_contract as rc

UDATA, RATINGS_DAT, PAIRS = "u.data", "ratings.dat", "pairs"
FORMATS = (UDATA, RATINGS_DAT, PAIRS)
DEFAULT_START_DATE = dt.date(2000, 1, 1)
DEFAULT_DAYS = 30
EVENT_ID_PREFIX = "ml-"
EVENT_ID_DIGITS = 7

_SPLIT = {UDATA: r"\t", RATINGS_DAT: "::", PAIRS: r"\s+"}
_FIELDS = {UDATA: 4, RATINGS_DAT: 4, PAIRS: 2}


@dataclass(frozen=True)
class ImportParams:
    path: str
    out: str = "raw"
    start_date: dt.date = DEFAULT_START_DATE
    days: int = DEFAULT_DAYS
    format: str | None = None  # None: detect
    compress: bool = False  # write .json.gz

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ValueError("days must be >= 1")
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")


@dataclass(frozen=True)
class ImportReport:
    path: str
    format: str
    events_root: str
    lines_read: int
    events_written: int
    skipped_lines: int  # blank or malformed lines
    users: int
    items: int
    events_per_day: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        days = sorted(self.events_per_day)
        span = f"{days[0]} .. {days[-1]}" if days else "none"
        return (
            f"import-movielens: read {self.lines_read} lines of {self.path} ({self.format}), "
            f"wrote {self.events_written} events ({self.users} users, {self.items} items) into "
            f"{len(days)} daily partitions {span} under {self.events_root}; skipped {self.skipped_lines} lines; "
            f"{self.seconds:.1f} s"
        )


def detect_format(path: str, first_lines: list[str]) -> str:
    """The file's format, from its name, else from its first non-blank lines."""
    name = os.path.basename(path.rstrip("/"))
    if name == "u.data" or name.endswith(".data"):
        return UDATA
    if name.endswith(".dat"):
        return RATINGS_DAT
    sample = [ln for ln in first_lines if ln.strip()]
    if not sample:
        raise ValueError(f"{path}: empty file, cannot detect the MovieLens format")
    line = sample[0]
    if "::" in line and len(line.split("::")) == 4:
        return RATINGS_DAT
    if "\t" in line and len(line.split("\t")) == 4:
        return UDATA
    if len(line.split()) == 2:
        return PAIRS
    raise ValueError(f"{path}: not a MovieLens u.data, ratings.dat or 'user item' pairs file: {line[:80]!r}")


def parse_lines(lines: DataFrame, fmt: str) -> DataFrame:
    """(value, pos) text lines -> (pos, user, item, rating, ts); malformed lines get user = null."""
    parts = F.split(F.trim(F.col("value")), _SPLIT[fmt])
    ok = F.size(parts) == _FIELDS[fmt]
    as_long = lambda i: F.when(ok, parts.getItem(i).try_cast("long"))  # noqa: E731
    cols = [
        F.col("pos"),
        as_long(0).alias("user"),
        as_long(1).alias("item"),
    ]
    if fmt == PAIRS:
        cols += [F.lit(None).cast("double").alias("rating"), F.lit(None).cast("long").alias("ts")]
    else:
        cols += [F.when(ok, parts.getItem(2).try_cast("double")).alias("rating"), as_long(3).alias("ts")]
    parsed = lines.select(*cols)
    bad = F.col("user").isNull() | F.col("item").isNull()
    if fmt != PAIRS:
        bad = bad | F.col("rating").isNull() | F.col("ts").isNull()
    return parsed.withColumn("user", F.when(~bad, F.col("user")))


def to_raw_events(parsed: DataFrame, fmt: str, *, start_date: dt.date, days: int) -> DataFrame:
    """Parsed lines -> raw records plus their partition `dt` (string YYYY-MM-DD, the UTC date)."""
    good = parsed.where(F.col("user").isNotNull())
    if fmt == PAIRS:
        per_user = Window.partitionBy("user").orderBy("pos")
        n = F.count(F.lit(1)).over(Window.partitionBy("user"))
        k = F.row_number().over(per_user) - 1
        start = int(dt.datetime.combine(start_date, dt.time(), tzinfo=dt.timezone.utc).timestamp())
        span = days * 86_400
        good = (
            good.withColumn("k", k)
            .withColumn("n", n.cast("long"))
            .withColumn("ts", F.expr(f"{start}L + ((k + 1L) * {span}L) div n - 1L"))
        )
        event_type = F.lit("view")
    else:
        good = good.withColumn("k", F.row_number().over(Window.partitionBy("user").orderBy("ts", "pos")) - 1)
        event_type = F.lit("rating")
    day = F.date_add(F.lit(dt.date(1970, 1, 1)), F.floor(F.col("ts") / 86_400).cast("int"))
    return good.select(
        F.date_format(day, "yyyy-MM-dd").alias("dt"),
        F.concat(
            F.lit(EVENT_ID_PREFIX), F.col("user").cast("string"), F.lit("-"),
            F.lpad(F.col("k").cast("string"), EVENT_ID_DIGITS, "0"),
        ).alias(rc.RAW_EVENT_ID),
        F.col("user").cast("string").alias(rc.RAW_USER_ID),
        F.col("item").cast("string").alias(rc.RAW_ITEM_ID),
        event_type.alias(rc.RAW_EVENT_TYPE),
        F.col("ts").alias(rc.RAW_TIMESTAMP),
        F.col("rating").alias(rc.RAW_VALUE),
    )


def read_lines(spark: SparkSession, path: str) -> DataFrame:
    """(value, pos): the file's lines with an id that increases in file order."""
    return spark.read.text(path).select("value", F.monotonically_increasing_id().alias("pos"))


def import_movielens(spark: SparkSession, params: ImportParams) -> ImportReport:
    started = time.monotonic()
    lines = read_lines(spark, params.path)
    fmt = params.format or detect_format(params.path, [r.value for r in lines.limit(20).collect()])
    parsed = parse_lines(lines, fmt)
    events = to_raw_events(parsed, fmt, start_date=params.start_date, days=params.days).persist()
    events_root = f"{params.out.rstrip('/')}/{rc.RAW_EVENTS_DIR}"
    try:
        (
            events.repartition("dt")  # one file per day
            .write.mode("overwrite")
            .option("partitionOverwriteMode", "dynamic")
            .option("compression", "gzip" if params.compress else "none")
            .partitionBy("dt")
            .json(events_root)
        )
        per_day = {r["dt"]: r["count"] for r in events.groupBy("dt").count().collect()}
        totals = events.agg(
            F.countDistinct(rc.RAW_USER_ID).alias("users"), F.countDistinct(rc.RAW_ITEM_ID).alias("items")
        ).first()
    finally:
        events.unpersist()
    lines_read = lines.count()
    written = sum(per_day.values())
    return ImportReport(
        path=params.path,
        format=fmt,
        events_root=events_root,
        lines_read=lines_read,
        events_written=written,
        skipped_lines=lines_read - written,
        users=totals["users"],
        items=totals["items"],
        events_per_day=dict(sorted(per_day.items())),
        seconds=time.monotonic() - started,
    )


def parse_args(argv: list[str] | None = None) -> ImportParams:
    ap = argparse.ArgumentParser(
        prog="attnrec import-movielens",
        description="Convert MovieLens u.data, ratings.dat or 'user item' pairs (ml-1m.txt) into daily raw partitions.",
    )
    ap.add_argument("path", help="the MovieLens file")
    ap.add_argument("--out", default="raw", help="raw root: writes <out>/events/dt=YYYY-MM-DD/ (default: raw)")
    ap.add_argument("--start-date", type=dt.date.fromisoformat, default=DEFAULT_START_DATE,
                    help="pairs files only: first day of the synthetic timestamps (default 2000-01-01)")
    ap.add_argument("--days", type=int, default=DEFAULT_DAYS,
                    help="pairs files only: days the synthetic timestamps span (default 30)")
    ap.add_argument("--format", choices=FORMATS, default=None, help="override format detection")
    ap.add_argument("--gzip", action="store_true", help="write .json.gz")
    a = ap.parse_args(argv)
    try:
        return ImportParams(path=a.path, out=a.out, start_date=a.start_date, days=a.days, format=a.format,
                            compress=a.gzip)
    except ValueError as e:
        ap.error(str(e))


def main(argv: list[str] | None = None) -> int:
    params = parse_args(argv)
    from jobs.spark_session import SparkConfig, build_spark

    spark = build_spark(SparkConfig.from_env(app_name="attnrec-import-movielens"))
    try:
        report = import_movielens(spark, params)
    except (ValueError, AnalysisException) as e:
        print(f"attnrec import-movielens: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    from jobs.import_movielens import main as _main

    sys.exit(_main())
