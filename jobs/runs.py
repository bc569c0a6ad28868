"""`attnrec runs` (a per-date summary of pipeline_runs) and `attnrec record-run` (the DAG's last task: rows for
the steps that crashed or never ran, then the night's summary; it fails when the night did, so the run's state
stays failed).

    attnrec runs [--from-date A] [--date B] [--warehouse W]
    attnrec record-run --date D --run-id R --task-states '{"ingest_events": "success", ...}' [--reports DIR]

With --reports, record-run also writes the HTML report on the nights up to D (attnmodel/report.py) and records
it as step `report`; a report that cannot be written is a WARNING and a failed `report` row, not a failed night
(the data and the recommendations are fine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from attnmodel import runlog
from jobs.common import parse_date

# DAG task -> the step name its job records itself under
TASK_STEPS = {"ingest_events": "ingest", "build_sequences": "sequences", "check_data": "check", "train": "train-nightly",
              "evaluate_and_gate": "gate", "score_users": "score", "export": "export", "maintenance": "maintenance"}


def _warehouse_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warehouse", default=os.environ.get("ATTNREC_WAREHOUSE", "warehouse"))


def runs_main(argv: list[str] | None = None, prog: str = "attnrec runs") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Per-date summary of the pipeline_runs table.")
    p.add_argument("--from-date", type=parse_date, default=None)
    p.add_argument("--date", type=parse_date, default=None, help="the last date shown")
    _warehouse_arg(p)
    a = p.parse_args(argv)
    lines = runlog.summary_lines(runlog.read_runs(a.warehouse), a.from_date, a.date)
    print("\n".join(lines) if lines else f"no runs recorded in {runlog.runs_path(a.warehouse)} for those dates")
    return 0


def missing_rows(task_states: dict, recorded_steps: set[str]) -> list[tuple[str, str]]:
    """(step, status) rows to add: tasks that did not succeed and whose job left no row of its own."""
    out = []
    for task_id, state in task_states.items():
        step = TASK_STEPS.get(task_id)
        if step is None or state == "success" or step in recorded_steps:
            continue
        out.append((step, runlog.CRASHED if state == "failed" else runlog.NOT_RUN))
    return out


def record_run_main(argv: list[str] | None = None, prog: str = "attnrec record-run") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Record the steps of a night that left no row; summary.")
    p.add_argument("--date", type=parse_date, required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--task-states", required=True, help="JSON {task_id: state} (or {run_id: {task_id: state}})")
    p.add_argument("--reports", default=None, help="write the HTML report to REPORTS/attnrec-DATE.html")
    _warehouse_arg(p)
    a = p.parse_args(argv)
    states = json.loads(a.task_states)
    if states and all(isinstance(v, dict) for v in states.values()):  # keyed by run id
        states = states.get(a.run_id) or next(iter(states.values()))
    states = {k: (v or "none") for k, v in states.items() if k in TASK_STEPS}
    rows = [r for r in runlog.read_runs(a.warehouse) if r["data_date"] == a.date and r["run_id"] == a.run_id]
    for step, status in missing_rows(states, {r["step"] for r in rows}):
        runlog.record_step(a.warehouse, step, a.date, a.run_id, status=status,
                           message=f"task state {states[next(t for t, s in TASK_STEPS.items() if s == step)]}: "
                                   "the job wrote no record (see its task log)")
    report = write_night_report(a.warehouse, a.date, a.run_id, a.reports) if a.reports else None
    rows = runlog.read_runs(a.warehouse)
    print("\n".join(runlog.summary_lines(rows, a.date, a.date)))
    print("\n".join(runlog.night_summary_lines(rows, a.date, report)))
    failed = sorted(t for t, s in states.items() if s != "success")
    if failed:
        print(f"error: the night of {a.date} failed: {', '.join(failed)} did not succeed", file=sys.stderr)
        return 1
    return 0


def write_night_report(warehouse: str, day, run_id: str, reports_dir: str) -> str | None:
    from attnmodel import report

    started = time.monotonic()
    try:
        path, _ = report.write_report(warehouse, day, report.report_path(reports_dir, day))
    except Exception as exc:  # noqa: BLE001 -- a report is monitoring: it must not fail a night whose data is fine
        message = f"{type(exc).__name__}: {exc}"
        print(f"WARNING: the report for {day} could not be written: {message}", file=sys.stderr)
        runlog.record_step(warehouse, "report", day, run_id, status=runlog.FAILED, message=message,
                           seconds=time.monotonic() - started)
        return None
    runlog.record_step(warehouse, "report", day, run_id, message=path, seconds=time.monotonic() - started)
    return path
