"""Run the nightly DAG file for a list of data days with `dag.test()` on an embedded metadata DB.

`attnrec run` starts this module in a child process with its own AIRFLOW_HOME (Airflow reads it when first
imported); it lists no step itself: whatever dags/attnrec_nightly.py wires is what runs.

    python -m jobs.dag_runner --dates 2026-01-13,2026-01-14 --conf '{"warehouse": "..."}'

Data day D is the DAG run whose data interval is [D, D+1): logical date D+1 00:00 UTC under the DAG's
data-interval timetable. A date already run is replaced (dag.test clears the earlier run of that date).
Prints `TASK <date> <task> <state> <seconds>` per task and `DAGRUN <date> <state> <failed tasks>` per date,
and stops at the first failed night: a later night must not fold a broken day into its sequences.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import runpy
import sys

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAG_FILE = os.path.join(PROJECT_DIR, "dags", "attnrec_nightly.py")


def logical_date_for(day: dt.date):
    import pendulum

    nxt = day + dt.timedelta(days=1)
    return pendulum.datetime(nxt.year, nxt.month, nxt.day, tz="UTC")


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jobs.dag_runner")
    p.add_argument("--dates", required=True, help="comma-separated data days, in order")
    p.add_argument("--conf", default="{}", help="DAG params for every run (JSON)")
    a = p.parse_args(argv)
    dag = runpy.run_path(DAG_FILE, run_name="attnrec_dag")["dag"]
    conf = json.loads(a.conf)
    for text in a.dates.split(","):
        day = dt.date.fromisoformat(text)
        run = dag.test(logical_date=logical_date_for(day), run_conf=conf)
        tis = task_instances(run.dag_id, run.run_id)
        for task_id, state, seconds in tis:  # per-step seconds, for people and for bench/nightly.py
            print(f"TASK {day} {task_id} {state} {'-' if seconds is None else f'{seconds:.1f}'}", flush=True)
        failed = sorted(task_id for task_id, state, _ in tis if state not in ("success", "skipped"))
        print(f"DAGRUN {day} {run.state} {','.join(failed) or '-'}", flush=True)
        if str(run.state) != "success":
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
