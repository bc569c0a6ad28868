"""Benchmark of the data layer: generate E synthetic events, then time ingest and build_sequences separately.

    python -m bench.data_pipeline --events 10000000 [--days 5] [--users N] [--items M] [--workdir DIR]

Prints one line per step and, last, one JSON object with events/s for ingest, for sequences and for
both together, and the peak resident memory of the whole process tree (driver JVM, Python driver and
Python workers), sampled every 0.2 s. Uses one local Spark session (ATTNREC_SPARK_* env applies).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import tempfile
import time

from bench.memory import PeakRss

START_DATE = dt.date(2026, 1, 1)  # the first day of the generated logs (bench.data_floors reads its second)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.data_pipeline", description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--users", type=int, default=None, help="default: events / 100")
    ap.add_argument("--items", type=int, default=None, help="default: min(100000, events / 200)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--format", default="json.gz", choices=("json", "json.gz"))
    ap.add_argument("--workdir", default=None, help="keep raw logs and tables here (default: a temp dir, removed)")
    ap.add_argument("--skip-generate", action="store_true", help="reuse the raw logs already in --workdir")
    ap.add_argument("--driver-memory", default="6g")
    args = ap.parse_args(argv)
    users = args.users or max(10, args.events // 100)
    items = args.items or max(10, min(100_000, args.events // 200))

    from jobs.build_sequences import SequenceParams
    from jobs.build_sequences import run as build_sequences
    from jobs.generate_events import GenerateParams, generate
    from jobs.ingest_events import IngestParams
    from jobs.ingest_events import run as ingest
    from jobs.spark_session import SparkConfig, build_spark

    workdir = args.workdir or tempfile.mkdtemp(prefix="attnrec-bench-")
    raw, warehouse = os.path.join(workdir, "raw"), os.path.join(workdir, "warehouse")
    days = [START_DATE + dt.timedelta(days=i) for i in range(args.days)]
    cores = len(os.sched_getaffinity(0))  # the CPUs this process may run on (a taskset limit counts)
    result: dict = {"events": args.events, "users": users, "items": items, "days": args.days, "cores": cores}
    with PeakRss() as mem:
        spark = build_spark(SparkConfig.from_env(app_name="bench-data", driver_memory=args.driver_memory))
        if not args.skip_generate:
            shutil.rmtree(raw, ignore_errors=True)
            t = time.monotonic()
            generate(spark, GenerateParams(out=raw, users=users, items=items, days=args.days, events=args.events,
                                           seed=args.seed, start_date=START_DATE, format=args.format))
            result["generate_seconds"] = round(time.monotonic() - t, 1)
            print(f"generate: {args.events:,} events in {result['generate_seconds']} s", flush=True)
        shutil.rmtree(warehouse, ignore_errors=True)
        t = time.monotonic()
        accepted = 0
        ingest_stages: dict[str, float] = {}
        for day in days:
            report = ingest(spark, IngestParams(logical_date=day, raw_root=raw, warehouse=warehouse,
                                                ingested_at=dt.datetime(2026, 2, 1)))
            accepted += report.accepted
            for stage, seconds in report.stage_seconds.items():
                ingest_stages[stage] = round(ingest_stages.get(stage, 0.0) + seconds, 2)
            print(f"ingest {day}: accepted {report.accepted:,}, quarantined {sum(report.quarantined.values()):,} "
                  f"in {report.seconds} s {report.stage_seconds}", flush=True)
        ingest_seconds = time.monotonic() - t
        t = time.monotonic()
        seq = build_sequences(spark, SequenceParams(logical_date=days[-1], warehouse=warehouse))
        seq_seconds = time.monotonic() - t
        print(f"sequences {days[-1]}: {seq.events_read:,} events, {seq.users:,} users in {seq_seconds:.1f} s "
              f"{seq.stage_seconds}", flush=True)
        spark.stop()
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    result.update(
        accepted_events=accepted,
        ingest_seconds=round(ingest_seconds, 1),
        ingest_events_per_second=round(accepted / ingest_seconds),
        ingest_stage_seconds=ingest_stages,
        sequences_seconds=round(seq_seconds, 1),
        sequences_events_per_second=round(seq.events_read / seq_seconds),
        sequences_stage_seconds=seq.stage_seconds,
        total_events_per_second=round(accepted / (ingest_seconds + seq_seconds)),
        peak_rss_mb=round(mem.total / 2**20),
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
