"""Run the nightly DAG file for a list of data days with `dag.test()` on an embedded metadata DB.

`attnrec run` starts this module in a child process with its own AIRFLOW_HOME (Airflow reads it when first
imported); it lists no step itself: whatever dags/attnrec_nightly.py wires is what runs.

    python -m jobs.dag_runner --dates 2026-01-13,2026-01-14 --conf '{"warehouse": "..."}'

Data day D is the DAG run whose data interval is [D, D+1): logical date D+1 00:00 UTC under the DAG's
data-interval timetable. A date already run is replaced (dag.test clears the earlier run of that date).
Prints `TASK <date> <task> <state> <seconds>` per task and `DAGRUN <date> <state> <failed tasks>` per date,
and stops at the first failed night: a later night must not fold a broken day into its sequences.

A night held by an earlier failed night (depends_on_past / wait_for_downstream: D+1's build_sequences waits for
D's check_data) would make dag.test() wait forever; the runner sees Airflow's "No tasks to run" while the
previous run has failed, prints `BLOCKED <date> by <earlier date> (<failed tasks>)` with what to do, records the
held steps in pipeline_runs, and exits with BLOCKED_EXIT_CODE. In practice all of D+1 waits: every step's downstream
in D includes record_run, which fails with the night.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import runpy
import sys

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAG_FILE = os.path.join(PROJECT_DIR, "dags", "attnrec_nightly.py")


def logical_date_for(day: dt.date):
    import pendulum

    nxt = day + dt.timedelta(days=1)
    return pendulum.datetime(nxt.year, nxt.month, nxt.day, tz="UTC")


def _run_id_for(dag_id: str, day: dt.date) -> str:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.logical_date == logical_date_for(day)).one()
        return run.run_id


def task_instances(dag_id: str, run_id: str) -> list[tuple[str, str, float | None]]:
    """(task_id, state, seconds) of a run's tasks in start order, read from the metadata DB (the run object
    dag.test() returns is detached from its session)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id).all()
        out = [(ti.task_id, str(ti.state.value if hasattr(ti.state, "value") else ti.state), ti.duration,
                ti.start_date) for ti in rows]
    far = dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    return [(t, s, d) for t, s, d, _ in sorted(out, key=lambda r: r[3] or far)]


BLOCKED_EXIT_CODE = 3
_UNRUNNABLE = "No tasks to run"  # dag.test()'s warning while every unfinished task waits on a dependency


class NightBlocked(Exception):
    def __init__(self, earlier: dt.date, failed: list[str]):
        super().__init__(f"held by the failed night {earlier}")
        self.earlier, self.failed = earlier, failed


def previous_failed_run(dag_id: str, logical_date) -> tuple[dt.date, list[str]] | None:
    """(data day, failed tasks) of the run just before logical_date when that run failed, else None."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        prev = (session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.logical_date < logical_date)
                .order_by(DagRun.logical_date.desc()).first())
        if prev is None or str(getattr(prev.state, "value", prev.state)) != "failed":
            return None
        run_id, day = prev.run_id, (prev.logical_date - dt.timedelta(days=1)).date()
    failed = sorted(t for t, state, _ in task_instances(dag_id, run_id) if state == "failed")
    # record_run fails because the night did: the cause is the other failed task
    return day, [t for t in failed if t != "record_run"] or failed


def record_held(warehouse: str, day: dt.date, run_id: str, task_states: dict, message: str) -> None:
    from attnmodel import runlog
    from jobs.runs import missing_rows

    recorded = {r["step"] for r in runlog.read_runs(warehouse) if r["data_date"] == day and r["run_id"] == run_id}
    for step, _ in missing_rows(task_states, recorded):
        runlog.record_step(warehouse, step, day, run_id, status=runlog.NOT_RUN, message=message)


def _print_tasks(day: dt.date, tis: list) -> None:
    for task_id, state, seconds in tis:  # per-step seconds, for people and for bench/nightly.py
        print(f"TASK {day} {task_id} {state} {'-' if seconds is None else f'{seconds:.1f}'}", flush=True)


class _HoldWatch(logging.Handler):
    """Turns dag.test()'s endless wait on a failed earlier night into NightBlocked (raised from the warning:
    logging calls a handler's emit without catching what it raises)."""

    def __init__(self, dag_id: str, logical_date):
        super().__init__(logging.WARNING)
        self.dag_id, self.logical_date = dag_id, logical_date

    def emit(self, record: logging.LogRecord) -> None:
        if _UNRUNNABLE in record.getMessage():
            held_by = previous_failed_run(self.dag_id, self.logical_date)
            if held_by is not None:  # else: a retry delay or a sensor, which passes on its own
                raise NightBlocked(*held_by)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jobs.dag_runner")
    p.add_argument("--dates", required=True, help="comma-separated data days, in order")
    p.add_argument("--conf", default="{}", help="DAG params for every run (JSON)")
    a = p.parse_args(argv)
    dag = runpy.run_path(DAG_FILE, run_name="attnrec_dag")["dag"]
    dag_log = logging.getLogger("airflow.sdk.definitions.dag")
    conf = json.loads(a.conf)
    for text in a.dates.split(","):
        day = dt.date.fromisoformat(text)
        watch = _HoldWatch(dag.dag_id, logical_date_for(day))
        dag_log.addHandler(watch)
        try:
            run = dag.test(logical_date=logical_date_for(day), run_conf=conf)
        except NightBlocked as held:
            failed = ",".join(held.failed) or "-"
            print(f"BLOCKED {day} by {held.earlier} ({failed})", flush=True)
            print(f"error: night {day} is held: night {held.earlier} failed at {failed}, and its steps wait for it "
                  f"(depends_on_past) so that {day}'s sequences never fold in a bad day. Fix what "
                  f"{held.earlier}'s failed task says (`attnrec runs --date {held.earlier}`), rerun "
                  f"`attnrec run --date {held.earlier}`, then this night.", file=sys.stderr, flush=True)
            run_id = _run_id_for(dag.dag_id, day)
            tis = task_instances(dag.dag_id, run_id)
            _print_tasks(day, tis)
            if conf.get("warehouse"):  # the held steps get their row, with the reason, as record_run would
                record_held(conf["warehouse"], day, run_id, {t: s for t, s, _ in tis},
                            f"held: night {held.earlier} failed at {failed}")
            return BLOCKED_EXIT_CODE
        finally:
            dag_log.removeHandler(watch)
        tis = task_instances(run.dag_id, run.run_id)
        if not tis:  # Airflow marks a run with no tasks a success: that is no night
            print(f"DAGRUN {day} failed -", flush=True)
            print(f"error: the DAG made no task for {day} (is it before the DAG's start_date?)", file=sys.stderr)
            return 1
        _print_tasks(day, tis)
        failed = sorted(task_id for task_id, state, _ in tis if state not in ("success", "skipped"))
        print(f"DAGRUN {day} {run.state} {','.join(failed) or '-'}", flush=True)
        if str(run.state) != "success":
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
