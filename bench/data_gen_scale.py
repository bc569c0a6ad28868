"""Scale check for `attnrec generate`: E events on local Spark, events/s and peak memory.

    python bench/data_gen_scale.py --events 10000000            # 10M events, local[2], 2 GB driver heap
    python bench/data_gen_scale.py --events 100000000 --keep    # the 100M check

Peak memory is the largest resident set (RSS) seen, sampled every 0.5 s, of the whole process tree
(this Python driver, the Spark JVM, Spark's Python workers), plus the largest of each kind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.memory import PeakRss  # noqa: E402
from jobs.generate_events import GenerateParams, generate  # noqa: E402
from jobs.spark_session import SparkConfig, build_spark  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/data_gen_scale.py")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=None, help="default: events // 100")
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--format", default="json.gz", choices=("json", "json.gz"))
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="2g")
    ap.add_argument("--out", default=None, help="default: a temporary folder, removed afterwards")
    ap.add_argument("--keep", action="store_true", help="keep the output")
    a = ap.parse_args(argv)
    out = a.out or tempfile.mkdtemp(prefix="attnrec-gen-")
    with PeakRss(interval=0.5) as sampler:
        spark = build_spark(SparkConfig.from_env(master=a.master, driver_memory=a.driver_memory, app_name="bench-gen"))
        params = GenerateParams(out=out, users=a.users or max(1, a.events // 100), items=a.items, days=a.days,
                                events=a.events, seed=1, format=a.format)
        t0 = time.monotonic()
        report = generate(spark, params)
        secs = time.monotonic() - t0
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"generate: {a.events} events ({report.lines_written} lines, {params.users} users, {a.items} items, "
          f"{a.days} days, {a.format}, {a.master}) in {secs:.1f} s = {a.events / secs:,.0f} events/s; "
          f"{size / 1e9:.2f} GB written")
    print(f"peak RSS: total {sampler.total / 2**30:.2f} GiB, JVM {sampler.jvm / 2**30:.2f} GiB, "
          f"Python workers {sampler.py_workers / 2**30:.2f} GiB")
    spark.stop()
    if not a.keep and a.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
