"""Small pieces every job shares: the input-error type, date parsing, report printing."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import os
import sys
import time


class JobInputError(Exception):
    """Bad input the operator can fix (missing partition, wrong format...). main() prints it in one line."""


def parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def default_raw_root() -> str:
    return os.environ.get("ATTNREC_RAW", "raw")


def default_warehouse() -> str:
    return os.environ.get("ATTNREC_WAREHOUSE", "warehouse")


def add_job_args(parser: argparse.ArgumentParser, *, date_help: str, raw: bool = False) -> None:
    """The arguments every pipeline job takes: its logical date, then where its tables live."""
    parser.add_argument("--logical-date", "--date", dest="logical_date", type=parse_date, required=True, help=date_help)
    add_location_args(parser, raw=raw)


def event_types_arg(text: str) -> tuple[str, ...]:
    """`--event-types view,Click` -> ("view", "click")."""
    return tuple(t.strip().lower() for t in text.split(",") if t.strip())


def add_location_args(parser: argparse.ArgumentParser, *, raw: bool = False) -> None:
    if raw:
        parser.add_argument("--raw", dest="raw_root", default=default_raw_root(),
                            help="raw log root holding events/dt=YYYY-MM-DD/ (env ATTNREC_RAW; default ./raw)")
    parser.add_argument("--warehouse", default=default_warehouse(),
                        help="Delta warehouse root, local path or Hadoop URI (env ATTNREC_WAREHOUSE; default ./warehouse)")
    parser.add_argument("--run-id", default="", help="the scheduler's run id, recorded in pipeline_runs (default: manual)")
    parser.add_argument("--master", default=None,
                        help="Spark master (env ATTNREC_SPARK_MASTER; default local[*]; under spark-submit, its --master)")


class StageClock:
    """Wall seconds per named step of a job: `clock.lap("read")` closes the step that ran since the last lap;
    `clock.total()` is the whole job so far."""

    def __init__(self):
        self._started = self._last = time.monotonic()
        self.seconds: dict[str, float] = {}

    def total(self) -> float:
        return round(time.monotonic() - self._started, 2)

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._last, 2)
        self._last = now


_SHOWN_ENTRIES = 10


def print_report(step: str, report) -> None:
    """One human line per field, then the report as one JSON line (for scripts)."""
    fields = dataclasses.asdict(report)
    shown = {k: (f"<{len(v)} entries: see the JSON line>" if isinstance(v, dict) and len(v) > _SHOWN_ENTRIES else v)
             for k, v in fields.items()}  # a 200-day history load's per-day figures stay out of the human line
    print(f"[{step}] " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    print(json.dumps({"step": step, **fields}, default=str), flush=True)


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def run_job(step: str, make_params, run, *, app_name: str, master: str | None = None, spark=None,
            run_id: str | None = None, lazy_spark: bool = False) -> int:
    """The shared tail of every Spark job's main(): build params, start (or reuse) a session, run, report, and
    append the step's row to pipeline_runs (success, or failed with the reason).
    Bad input the operator can fix becomes one line on stderr and exit code 2.
    lazy_spark: `run` gets a function that starts the session on first call (a job that may have no Spark work)."""
    params = None
    started = time.monotonic()
    try:
        params = make_params()
        if spark is None:
            from jobs.spark_session import SparkConfig, build_spark

            def start():
                return build_spark(SparkConfig.from_env(master=master, app_name=app_name))

            spark = functools.cache(start) if lazy_spark else start()
        elif lazy_spark:
            spark = functools.partial(lambda session: session, spark)
        report = run(spark, params)
    except JobInputError as exc:
        if params is not None and run_id is not None:
            _record(step, params, run_id, None, status="failed", message=str(exc),
                    seconds=round(time.monotonic() - started, 2))
        return fail(str(exc))
    print_report(step, report)
    if run_id is not None:
        _record(step, params, run_id, dataclasses.asdict(report))
    return 0


def _record(step: str, params, run_id: str, report: dict | None, **kw) -> None:
    from attnmodel import runlog

    runlog.record_step(params.warehouse, step, params.logical_date, run_id, report, **kw)
