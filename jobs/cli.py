"""The `attnrec` command: every pipeline step, runnable locally with defaults that chain in one directory.

Raw logs go to ./raw/events/dt=YYYY-MM-DD/ and tables to ./warehouse/ unless --raw/--warehouse
(or ATTNREC_RAW / ATTNREC_WAREHOUSE) say otherwise. Each step prints what it read and wrote.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import os
import sys
import time

from jobs.common import JobInputError, default_raw_root, default_warehouse, fail, parse_date

# subcommand -> (module, function, one-line help). Modules are imported only when their command runs,
# so `attnrec train` never starts Spark and `attnrec ingest` never imports torch.
STEPS = {
    "generate": ("jobs.generate_events", "main", "write synthetic raw event logs (with planted bad records)"),
    "import-movielens": ("jobs.import_movielens", "main", "convert MovieLens u.data / ratings.dat / ml-1m.txt to raw logs"),
    "ingest": ("jobs.ingest_events", "main", "ingest one day of raw logs into the events table"),
    "sequences": ("jobs.build_sequences", "main", "build the user_sequences snapshot for one date"),
    "train": ("attnmodel.cli", "train_main", "train the attention model and write a model artefact"),
    "score": ("jobs.score_users", "main", "score every user of a snapshot with a model: top-N to recommendations"),
    "export": ("jobs.export_recommendations", "main", "export a date's recommendations to files, Redis, PostgreSQL"),
}
DEMO_DAYS = 14


def _step(name: str):
    module, func, _ = STEPS[name]
    return getattr(importlib.import_module(module), func)


def _invoke(name: str, argv: list[str], **kwargs) -> int:
    """Call a step's main(argv, ...), passing only the keywords (prog, spark) that it accepts."""
    target = _step(name)
    accepted = inspect.signature(target).parameters
    kwargs = {k: v for k, v in {"prog": f"attnrec {name}", **kwargs}.items() if k in accepted}
    return target(argv, **kwargs)


def _call(name: str, argv: list[str], **kwargs) -> int:
    print(f"$ attnrec {name} {' '.join(argv)}", flush=True)
    return _invoke(name, argv, **kwargs)


def _has_raw_partitions(raw_root: str) -> bool:
    import glob

    return bool(glob.glob(os.path.join(raw_root, "events", "dt=*")))


def run_pipeline(args: argparse.Namespace) -> int:
    """Every step that exists, for one logical date (or a range of ingest dates ending on it)."""
    started = time.monotonic()
    first_day = args.from_date or args.date
    if args.demo:
        first_day = args.from_date or args.date - dt.timedelta(days=DEMO_DAYS - 1)
        if not _has_raw_partitions(args.raw_root):
            rc = _call("generate", ["--out", args.raw_root, "--users", "500", "--items", "300",
                                    "--days", str(DEMO_DAYS), "--events", "40000", "--seed", "7",
                                    "--start-date", first_day.isoformat()])
            if rc:
                return rc
    if first_day > args.date:
        return fail("--from-date is after --date")
    ran = []
    from jobs.spark_session import SparkConfig, build_spark

    spark = build_spark(SparkConfig.from_env(master=args.master, app_name="attnrec-run"))
    day = first_day
    while day <= args.date:
        rc = _call("ingest", ["--date", day.isoformat(), "--raw", args.raw_root, "--warehouse", args.warehouse]
                   + (["--allow-empty"] if args.allow_empty else []), spark=spark)
        if rc:
            return rc
        day += dt.timedelta(days=1)
    ran.append(f"ingest {first_day}..{args.date}")
    rc = _call("sequences", ["--date", args.date.isoformat(), "--warehouse", args.warehouse,
                             "--max-len", str(args.max_len)], spark=spark)
    if rc:
        return rc
    ran.append(f"sequences {args.date}")
    if not args.skip_train:
        from attnmodel.artifact import new_model_version

        models_root = f"{args.artifacts.rstrip('/')}/models"
        model_version = new_model_version()
        train_argv = ["--table", f"{args.warehouse.rstrip('/')}/user_sequences", "--as-of-date", args.date.isoformat(),
                      "--out", models_root, "--model-version", model_version, "--epochs", str(args.epochs),
                      "--max-len", str(args.max_len)]
        if args.device:
            train_argv += ["--device", args.device]
        rc = _call("train", train_argv)
        if rc:
            return rc
        ran.append(f"train -> {models_root}/{model_version}")
        rc = _call("score", ["--date", args.date.isoformat(), "--warehouse", args.warehouse,
                             "--model", f"{models_root}/{model_version}", "--top-n", str(args.top_n)], spark=spark)
        if rc:
            return rc
        ran.append(f"score {args.date}")
        rc = _call("export", ["--date", args.date.isoformat(), "--warehouse", args.warehouse, "--to", args.export_to,
                              "--exports", args.exports], spark=spark)
        if rc:
            return rc
        ran.append(f"export {args.date} -> {args.export_to}")
    print(f"[run] ran: {'; '.join(ran)}; {time.monotonic() - started:.1f} s", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnrec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_text) in STEPS.items():
        # arguments are parsed by the step itself (so `attnrec STEP --help` shows the step's own options)
        sub.add_parser(name, help=help_text, add_help=False)
    run = sub.add_parser("run", help="run every step for --date (ingest, sequences, train, score, export)")
    run.add_argument("--date", "--logical-date", dest="date", type=parse_date, required=True)
    run.add_argument("--from-date", type=parse_date, default=None,
                     help="also ingest every day from this date (a backfill); default: --date only")
    run.add_argument("--demo", action="store_true",
                     help=f"generate demo logs for the {DEMO_DAYS} days ending on --date if the raw root is empty, "
                          "and ingest all of them")
    run.add_argument("--raw", dest="raw_root", default=default_raw_root())
    run.add_argument("--warehouse", default=default_warehouse())
    run.add_argument("--artifacts", default="artifacts", help="where model artefacts go (default ./artifacts)")
    run.add_argument("--master", default=None)
    run.add_argument("--max-len", type=int, default=200)
    run.add_argument("--epochs", type=int, default=5)
    run.add_argument("--skip-train", action="store_true", help="stop after sequences (no training, scoring, export)")
    run.add_argument("--top-n", type=int, default=100)
    run.add_argument("--export-to", default="files", help="export targets (files,redis,postgres; default files)")
    run.add_argument("--exports", default=os.environ.get("ATTNREC_EXPORTS", "exports"),
                     help="root of the file exports (env ATTNREC_EXPORTS; default ./exports)")
    run.add_argument("--device", default=None, help="training device (default: cuda when available, else cpu)")
    run.add_argument("--allow-empty", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    command, rest = argv[0], argv[1:]
    if command in STEPS:
        return _invoke(command, rest)
    args = parser.parse_args(argv)
    try:
        return run_pipeline(args)
    except JobInputError as exc:
        return fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
