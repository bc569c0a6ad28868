"""The `attnrec` command: every pipeline step, runnable locally with defaults that chain in one directory.

Raw logs go to ./raw/events/dt=YYYY-MM-DD/ and tables to ./warehouse/ unless --raw/--warehouse
(or ATTNREC_RAW / ATTNREC_WAREHOUSE) say otherwise. Each step prints what it read and wrote.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import json
import os
import subprocess
import sys
import time

from jobs.common import JobInputError, default_raw_root, default_warehouse, fail, parse_date
from jobs.dag_runner import BLOCKED_EXIT_CODE

# subcommand -> (module, function, one-line help). Modules are imported only when their command runs,
# so `attnrec train` never starts Spark and `attnrec ingest` never imports torch.
STEPS = {
    "generate": ("jobs.generate_events", "main", "write synthetic raw event logs (with planted bad records)"),
    "import-movielens": ("jobs.import_movielens", "main", "convert MovieLens u.data / ratings.dat / ml-1m.txt to raw logs"),
    "ingest": ("jobs.ingest_events", "main", "ingest one day of raw logs into the events table"),
    "sequences": ("jobs.build_sequences", "main", "build the user_sequences snapshot for one date"),
    "check": ("jobs.check_data", "main", "the night's data checks (quarantine share, volume, empty days, new ids)"),
    "train": ("attnmodel.cli", "train_main", "train the attention model and write a model artefact"),
    "train-nightly": ("attnmodel.nightly", "train_nightly_main",
                      "train tonight's candidate (warm start or full retrain, refit) and register it"),
    "gate": ("attnmodel.nightly", "gate_main", "judge tonight's candidate on D's last events: publish or reject it"),
    "publish": ("attnmodel.nightly", "publish_main", "publish a registered model for a date by hand (rollback)"),
    "models": ("attnmodel.nightly", "models_main", "print the model registry"),
    "score": ("jobs.score_users", "main", "score every user of a snapshot with a model: top-N to recommendations"),
    "export": ("jobs.export_recommendations", "main", "export a date's recommendations to files, Redis, PostgreSQL"),
    "maintenance": ("jobs.maintenance", "main", "OPTIMIZE a night's partitions, VACUUM, clean up leftovers"),
    "runs": ("jobs.runs", "runs_main", "per-date summary of the pipeline_runs table"),
    "record-run": ("jobs.runs", "record_run_main", "the DAG's last task: record steps that left no row, summary"),
    "report": ("attnmodel.report", "report_main", "write the HTML report on the nights up to a date (plots embedded)"),
}
DEMO_DAYS = 14
# A quick first taste: the nightly settings' 40 epochs take ~4 min on the demo on 2 cores (NDCG@10 0.62);
# 4 epochs keep `make run` under 5 minutes and still beat popularity by far (3 gave 0.35 vs 0.20).
DEMO_EPOCHS = 4
DEMO_SPARK_SUBMIT_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def _airflow_env(args: argparse.Namespace) -> dict:
    """The environment of the embedded Airflow: its own home (SQLite metadata DB), this checkout's dags/, the
    `spark_default` connection (local[*] unless --master or the caller's own AIRFLOW_CONN_SPARK_DEFAULT), and
    the venv's bin/ first on PATH (SparkSubmitOperator runs the `spark-submit` it finds there)."""
    env = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    env.update(AIRFLOW_HOME=os.path.abspath(args.airflow_home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=os.path.join(PROJECT_DIR, "dags"), ATTNREC_HOME=PROJECT_DIR,
               ATTNREC_PYTHON=sys.executable, PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
               ATTNREC_TASK_RETRIES=str(args.retries))
    if args.demo and "SPARK_SUBMIT_OPTS" not in env:
        # Every step is a cold spark-submit on a few thousand rows: the JIT's first tier alone and the serial
        # GC start and finish such short jobs about 20% sooner (build_sequences 33.5 -> 27.6 s on 2 cores).
        # Not for real data sizes, where the optimising tier pays for itself.
        env["SPARK_SUBMIT_OPTS"] = DEMO_SPARK_SUBMIT_OPTS
    if args.master or "AIRFLOW_CONN_SPARK_DEFAULT" not in env:
        env["AIRFLOW_CONN_SPARK_DEFAULT"] = json.dumps({"conn_type": "spark", "host": args.master or "local[*]"})
    return env


def _ensure_metadata_db(env: dict) -> None:
    home = env["AIRFLOW_HOME"]
    stamp = os.path.join(home, ".migrated")
    if os.path.exists(stamp):
        return
    os.makedirs(home, exist_ok=True)
    print(f"$ airflow db migrate  (AIRFLOW_HOME={home})", flush=True)
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "airflow"), "db", "migrate"], env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise JobInputError(f"airflow db migrate failed in {home}:\n{out.stderr[-2000:]}")
    open(stamp, "w").close()


def run_pipeline(args: argparse.Namespace) -> int:
    """Load history (optional, in-process), then run the nightly DAG for every date from --from-date to --date."""
    started = time.monotonic()
    first_night = args.from_date or args.date
    history_from = args.load_history_from
    if args.demo:
        demo_start = args.date - dt.timedelta(days=DEMO_DAYS - 1)
        if not _has_raw_partitions(args.raw_root):
            rc = _call("generate", ["--out", args.raw_root, "--users", "500", "--items", "300",
                                    "--days", str(DEMO_DAYS), "--events", "40000", "--seed", "7",
                                    "--start-date", demo_start.isoformat()])
            if rc:
                return rc
        history_from = history_from or demo_start
    if first_night > args.date:
        return fail("--from-date is after --date")
    try:
        check_thresholds = json.loads(args.check_thresholds)
        assert isinstance(check_thresholds, dict)
    except (ValueError, AssertionError):
        return fail(f"--check-thresholds must be a JSON object, got {args.check_thresholds!r}")
    ran = []
    if history_from is not None and history_from < first_night:
        # One ingest over the whole range: the same rows as one nightly ingest per day, in one Spark job
        # and one transaction per table. Only the events are loaded; the DAG builds the sequences of its nights.
        last = first_night - dt.timedelta(days=1)
        rc = _call("ingest", ["--from-date", history_from.isoformat(), "--date", last.isoformat(),
                              "--raw", args.raw_root, "--warehouse", args.warehouse]
                   + (["--master", args.master] if args.master else []) + (["--allow-empty"] if args.allow_empty else []))
        if rc:
            return rc
        from pyspark.sql import SparkSession

        if SparkSession.getActiveSession() is not None:  # its JVM would sit idle beside every DAG task
            SparkSession.getActiveSession().stop()
        ran.append(f"history {history_from}..{first_night - dt.timedelta(days=1)} (ingest)")
    nights = [first_night + dt.timedelta(days=i) for i in range((args.date - first_night).days + 1)]
    epochs = args.epochs or (DEMO_EPOCHS if args.demo and "--epochs" not in args.train_args else None)
    train_args = args.train_args + (f" --epochs {epochs}" if epochs else "") + (
        f" --device {args.device}" if args.device else "")
    conf = {"raw": os.path.abspath(args.raw_root), "warehouse": os.path.abspath(args.warehouse),
            "models": os.path.abspath(os.path.join(args.artifacts, "models")), "exports": os.path.abspath(args.exports),
            "reports": os.path.abspath(args.reports),
            "export_to": args.export_to, "top_n": args.top_n, "train_args": train_args.strip(),
            "gate_args": args.gate_args, "check_thresholds": check_thresholds}
    env = _airflow_env(args)
    _ensure_metadata_db(env)
    dates = ",".join(d.isoformat() for d in nights)
    print(f"$ python -m jobs.dag_runner --dates {dates}  (dags/attnrec_nightly.py, one dag.test per night)", flush=True)
    out = subprocess.run([sys.executable, "-m", "jobs.dag_runner", "--dates", dates, "--conf", json.dumps(conf)],
                         env=env, cwd=PROJECT_DIR)
    if out.returncode == BLOCKED_EXIT_CODE:
        return fail("the night is held by an earlier failed night (see above): fix and rerun that night first",
                    code=out.returncode)
    if out.returncode:
        return fail("the nightly DAG failed (see the task logs above); rerun `attnrec run --date ...` for the "
                    "failed date once it is fixed: later dates were not run", code=out.returncode)
    ran.append(f"DAG attnrec_nightly for {nights[0]}..{nights[-1]} ({len(nights)} nights)")
    _call("runs", ["--from-date", nights[0].isoformat(), "--date", nights[-1].isoformat(),
                   "--warehouse", args.warehouse])
    from attnmodel import report, runlog

    print(f"[run] ran: {'; '.join(ran)}; {time.monotonic() - started:.1f} s", flush=True)
    # last on screen: the night in ten seconds (the report was written by the DAG's record_run)
    path = report.report_path(os.path.abspath(args.reports), args.date)
    print("\n".join(runlog.night_summary_lines(runlog.read_runs(args.warehouse), args.date,
                                                path if os.path.exists(path) else None)), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnrec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_text) in STEPS.items():
        # arguments are parsed by the step itself (so `attnrec STEP --help` shows the step's own options)
        sub.add_parser(name, help=help_text, add_help=False)
    run = sub.add_parser("run", help="run the nightly DAG (dags/attnrec_nightly.py) for --date, or every date "
                                      "from --from-date to --date (a backfill)")
    run.add_argument("--date", "--logical-date", dest="date", type=parse_date, required=True,
                     help="the (last) data day to process")
    run.add_argument("--from-date", type=parse_date, default=None,
                     help="run every data day from this one to --date through the DAG, replacing dates already done")
    run.add_argument("--load-history-from", type=parse_date, default=None,
                     help="first ingest the raw days from this date up to the first night in one job "
                          "(`attnrec ingest --from-date`: a bulk history load, no model, no scoring for those days)")
    run.add_argument("--demo", action="store_true",
                     help=f"generate demo logs for the {DEMO_DAYS} days ending on --date if the raw root is empty, "
                          "load the days before --date as history, and run the DAG for --date")
    run.add_argument("--raw", dest="raw_root", default=default_raw_root())
    run.add_argument("--warehouse", default=default_warehouse())
    run.add_argument("--artifacts", default=os.environ.get("ATTNREC_ARTIFACTS", "artifacts"),
                     help="models go to ARTIFACTS/models (default ./artifacts)")
    run.add_argument("--airflow-home", default=os.environ.get("ATTNREC_AIRFLOW_HOME", "airflow-home"),
                     help="AIRFLOW_HOME of the embedded Airflow (SQLite metadata DB; default ./airflow-home)")
    run.add_argument("--master", default=None, help="Spark master for every step (sets the spark_default connection)")
    run.add_argument("--epochs", type=int, default=None, help=f"training epochs (default: the nightly settings'; {DEMO_EPOCHS} with --demo)")
    run.add_argument("--train-args", default=os.environ.get("ATTNREC_TRAIN_ARGS", ""),
                     help="extra `attnrec train-nightly` options")
    run.add_argument("--gate-args", default=os.environ.get("ATTNREC_GATE_ARGS", ""), help="extra `attnrec gate` options")
    run.add_argument("--check-thresholds", default=os.environ.get("ATTNREC_CHECK_THRESHOLDS", "{}"),
                     help='check_data thresholds over its defaults (JSON), e.g. \'{"max_quarantine_share": 0.05}\'')
    run.add_argument("--top-n", type=int, default=100)
    run.add_argument("--export-to", default="files", help="export targets (files,redis,postgres; default files); "
                     "redis and postgres read the Airflow connections attnrec_redis / attnrec_postgres")
    run.add_argument("--exports", default=os.environ.get("ATTNREC_EXPORTS", "exports"),
                     help="root of the file exports (env ATTNREC_EXPORTS; default ./exports)")
    run.add_argument("--reports", default=os.environ.get("ATTNREC_REPORTS", "reports"),
                     help="where each night's HTML report goes (REPORTS/attnrec-DATE.html; default ./reports)")
    run.add_argument("--device", default=None, help="training device (default: cuda when available, else cpu)")
    run.add_argument("--retries", type=int, default=0,
                     help="Airflow retries per task (default 0 here: fail now and say why; the deployed DAG retries)")
    run.add_argument("--allow-empty", action="store_true", help="a history day without raw files is not an error")
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
