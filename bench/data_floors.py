"""Floors of the ingest job: what its unavoidable pieces cost alone, on one day of raw logs.

    python -m bench.data_floors --workdir DIR [--date YYYY-MM-DD] [--rounds 3]

Reads what `python -m bench.data_pipeline --workdir DIR` left there (raw logs under DIR/raw, the
`events` table under DIR/warehouse) and times, on one day, each piece that any ingest built on Spark
and Delta must pay, with nothing else around it:

- read_raw: the Python reader hands every line to the JVM (no parsing), counted;
- from_json: Spark's JSON parse of the cached lines, every field used;
- classify: parse plus every validation rule (classify_records, with_dedup_key) on the cached lines;
- duplicate_keys: the aggregation that finds repeated event ids, on cached classified records;
- delta_write: that day's accepted events, already typed and cached, replacing a partition of a
  scratch Delta table (the same writer and table properties as ingest);
- distinct_users_items: the distinct counts, on the cached events.

The best of --rounds is kept for each (the first round also pays the JVM's warm-up). The sum is a
floor for one day of ingest that skips nothing; ingest itself does a little more (the quarantine
write, the per-file scan). Prints one line per piece, then one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import time

from bench.data_pipeline import START_DATE


def _best_seconds(action, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.monotonic()
        action()
        best = min(best, time.monotonic() - started)
    return round(best, 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.data_floors", description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="a --workdir of bench.data_pipeline (raw/ and warehouse/)")
    ap.add_argument("--date", type=dt.date.fromisoformat, default=START_DATE + dt.timedelta(days=1),
                    help="the day to measure (default: the second day bench.data_pipeline generates, a full one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--driver-memory", default="6g")
    args = ap.parse_args(argv)

    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from attnmodel.columns import EVENTS_TABLE
    from jobs import raw_contract as rc
    from jobs import ingest_events as ingest
    from jobs.raw_files import list_partition_files, read_raw_records, scan_files
    from jobs.spark_session import SparkConfig, build_spark
    from jobs.warehouse import table_path

    raw_root, warehouse = os.path.join(args.workdir, "raw"), os.path.join(args.workdir, "warehouse")
    scratch = os.path.join(args.workdir, "floors_scratch")
    spark = build_spark(SparkConfig.from_env(app_name="bench-floors", driver_memory=args.driver_memory))
    files = list_partition_files(spark, rc.raw_partition_path(raw_root, args.date))
    if not files:
        raise SystemExit(f"no raw files for {args.date} under {raw_root}: run bench.data_pipeline with --workdir first")
    readable = [(path, n) for path, status, _, n in scan_files(spark, files, "json", rc.DEFAULT_MAX_RECORD_BYTES)
                if status is None]
    seconds: dict[str, float] = {}

    def raw_lines():
        return read_raw_records(spark, readable, "json", rc.DEFAULT_MAX_RECORD_BYTES)

    seconds["read_raw"] = _best_seconds(lambda: raw_lines().agg(F.sum(F.length("raw"))).collect(), args.rounds)
    lines = raw_lines().persist(StorageLevel.MEMORY_AND_DISK)
    records = lines.count()
    parsed = lines.select(F.from_json("raw", ingest.RAW_RECORD_SCHEMA).alias("r"))
    every_field = [F.sum(F.length(F.col(f"r.{name}"))) for name in ingest.RAW_RECORD_SCHEMA.fieldNames()]
    seconds["from_json"] = _best_seconds(lambda: parsed.agg(*every_field).collect(), args.rounds)
    classified = ingest.with_dedup_key(ingest.classify_records(
        lines, logical_date=args.date, event_types=rc.EVENT_TYPES, allowed_lateness_days=2))
    seconds["classify"] = _best_seconds(
        lambda: classified.agg(F.count("event_ts"), F.count("reason"), F.max("event_id"), F.sum("value")).collect(),
        args.rounds)
    cached_classified = classified.persist(StorageLevel.MEMORY_AND_DISK)
    cached_classified.count()
    lines.unpersist()
    seconds["duplicate_keys"] = _best_seconds(lambda: ingest.duplicate_keys(cached_classified).count(), args.rounds)
    cached_classified.unpersist()

    events = (
        spark.read.format("delta").load(table_path(warehouse, EVENTS_TABLE))
        .filter(F.col("event_date") == F.lit(args.date))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    accepted = events.count()
    shutil.rmtree(scratch, ignore_errors=True)
    seconds["delta_write"] = _best_seconds(
        lambda: ingest.replace_partition(events, scratch, column="event_date", value=args.date,
                                         table_properties=ingest.EVENTS_TABLE_PROPERTIES),
        args.rounds)
    seconds["distinct_users_items"] = _best_seconds(
        lambda: ingest.distinct_users_and_items(events).collect(), args.rounds)
    events.unpersist()
    spark.stop()
    shutil.rmtree(scratch, ignore_errors=True)

    # classify includes from_json; duplicate_keys, delta_write and distinct run on cached data, so the
    # pieces of one ingest day add up as read_raw + classify + duplicate_keys + delta_write + distinct.
    floor = round(sum(seconds[k] for k in ("read_raw", "classify", "duplicate_keys", "delta_write",
                                           "distinct_users_items")), 2)
    for name, value in seconds.items():
        print(f"{name}: {value} s", flush=True)
    print(f"floor for one day: {floor} s for {records:,} records ({accepted:,} accepted)", flush=True)
    print(json.dumps({
        "date": args.date.isoformat(), "records": records, "accepted": accepted, "cores": len(os.sched_getaffinity(0)),
        "rounds": args.rounds, "seconds": seconds, "day_floor_seconds": floor,
        "ingest_floor_events_per_second": round(accepted / floor),
    }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
