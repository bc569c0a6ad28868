"""The nightly DAG: imports cleanly, has the expected graph, and dag.test() runs the pipeline on small data.

Airflow reads AIRFLOW_HOME when it is first imported, so each check runs in a fresh interpreter with
its own AIRFLOW_HOME (a SQLite metadata DB in a temp dir).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

INSPECT = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder="dags")
dag = bag.dags["attnrec_nightly"]
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": sorted(bag.dags),
    "edges": sorted([t.task_id, d] for t in dag.tasks for d in sorted(t.downstream_task_ids)),
    "retries": {t.task_id: t.retries for t in dag.tasks},
    "max_active_runs": dag.max_active_runs,
}))
"""


def _airflow_env(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ)
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"), ATTNREC_HOME=str(ROOT), **extra)
    return env


def test_dagbag_imports_and_graph(tmp_path):
    out = subprocess.run([sys.executable, "-c", INSPECT], cwd=ROOT, env=_airflow_env(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["errors"] == {}
    assert info["dags"] == ["attnrec_nightly"]
    assert info["edges"] == [["build_sequences", "train_model"], ["ingest_events", "build_sequences"]]
    assert all(n >= 1 for n in info["retries"].values())
    assert info["max_active_runs"] == 1


def test_dag_module_imports_no_heavy_packages(tmp_path):
    code = ("import sys, runpy; runpy.run_path('dags/attnrec_nightly.py', run_name='dag_check'); "
            "print(sorted(m for m in ('torch', 'pyspark', 'jobs', 'attnmodel') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_airflow_env(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_dag_test_runs_the_pipeline(tmp_path, spark):
    from jobs.generate_events import GenerateParams, generate

    raw, warehouse, artifacts = tmp_path / "raw", tmp_path / "wh", tmp_path / "art"
    generate(spark, GenerateParams(out=str(raw), users=150, items=80, days=1, events=3000, seed=5,
                                   start_date=__import__("datetime").date(2026, 3, 3)))
    env = _airflow_env(tmp_path, ATTNREC_RAW=str(raw), ATTNREC_WAREHOUSE=str(warehouse), ATTNREC_ARTIFACTS=str(artifacts),
                       ATTNREC_SPARK_MASTER="local[2]", ATTNREC_PYTHON=sys.executable,
                       ATTNREC_TRAIN_ARGS="--epochs 2 --quiet --d-model 16 --blocks 1 --heads 1 --max-len 30 --device cpu")
    migrate = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    run = subprocess.run(
        [sys.executable, "-c", "import pendulum, runpy; m = runpy.run_path('dags/attnrec_nightly.py', run_name='t'); "
                               "[setattr(t, 'retries', 0) for t in m['dag'].tasks]; "  # a failure must fail now, not wait for a retry
                               # the run after midnight on 03-04 processes 03-03, the day that has ended
                               "r = m['dag'].test(logical_date=pendulum.datetime(2026, 3, 4, tz='UTC')); print('STATE', r.state)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    assert "STATE success" in run.stdout, (run.stdout + run.stderr)[-5000:]
    models = list((artifacts / "models").glob("*/meta.json"))
    assert len(models) == 1
    meta = json.loads(models[0].read_text())
    assert meta["snapshot"]["as_of_date"] == "2026-03-03" and meta["item_index_version"] != ""
    assert spark.read.format("delta").load(str(warehouse / "user_sequences")).count() == 150


TIMETABLE = """
import json, pendulum
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.encoders import coerce_to_core_timetable
from airflow.timetables.base import DataInterval, TimeRestriction
dag = DagBag(dag_folder="dags").dags["attnrec_nightly"]
timetable = coerce_to_core_timetable(dag.timetable)
utc = pendulum.UTC
last = DataInterval(pendulum.datetime(2026, 3, 2, tz=utc), pendulum.datetime(2026, 3, 3, tz=utc))
info = timetable.next_dagrun_info(last_automated_data_interval=last,
                                  restriction=TimeRestriction(earliest=None, latest=None, catchup=True))
task = dag.get_task("ingest_events")
command = task.render_template(task.bash_command, {"data_interval_start": info.data_interval.start})
print(json.dumps({"start": info.data_interval.start.isoformat(), "end": info.data_interval.end.isoformat(),
                  "run_after": info.run_after.isoformat(), "command": command}))
"""


def test_the_real_timetable_processes_the_day_that_has_ended(tmp_path):
    out = subprocess.run([sys.executable, "-c", TIMETABLE], cwd=ROOT, env=_airflow_env(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    # the run that starts at midnight on 03-04 covers 03-03, the day that has just ended, and ingests that day
    assert info["run_after"].startswith("2026-03-04T00:00:00")
    assert info["start"].startswith("2026-03-03T00:00:00") and info["end"].startswith("2026-03-04T00:00:00")
    assert "--logical-date 2026-03-03 " in info["command"]
