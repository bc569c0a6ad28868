"""attnrec nightly: the whole pipeline for the data day that has just ended, and the only place its steps are listed.

    ingest_events -> build_sequences -> check_data -> train -> evaluate_and_gate -> score_users -> export
    -> maintenance, then record_run (whatever happened: the night's pipeline_runs rows, summary and HTML report)

Wiring only: every task runs a job's own command line. Spark steps go through SparkSubmitOperator and the
`spark_default` connection (`local[*]` for the embedded default: `attnrec run` sets
AIRFLOW_CONN_SPARK_DEFAULT; a standalone cluster, YARN or Kubernetes is a connection change) with the
Spark settings of infra/spark-defaults.conf; the train and gate steps are plain Python (PyTorch, no Spark).
Every task depends on its own success the night before (depends_on_past): a failed night blocks the nights
after it until it is fixed and rerun, so D+1 never folds a bad day D into its sequences.
Export endpoints and credentials come from the connections `attnrec_redis` and `attnrec_postgres`, only
read when `export_to` names them. Locations and options are DAG params (defaults from ATTNREC_* variables).
"""

from __future__ import annotations

import os
import sys

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, chain

# The run that starts just after midnight covers the day that has just ended: Airflow 3's plain "@daily" is a
# trigger whose logical date is the day that is beginning (an empty interval), whose logs are not there yet.
NIGHTLY = CronDataIntervalTimetable("@daily", timezone="UTC")
DATA_DAY = "{{ data_interval_start | ds }}"  # the data day a run processes

PROJECT_DIR = os.environ.get("ATTNREC_HOME") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.environ.get("ATTNREC_PYTHON") or sys.executable  # the interpreter with the project installed
SPARK_PROPERTIES = os.path.join(PROJECT_DIR, "infra", "spark-defaults.conf")


def _location(env: str, default: str) -> str:
    return os.path.abspath(os.path.join(PROJECT_DIR, os.environ.get(env, default)))


WAREHOUSE = _location("ATTNREC_WAREHOUSE", "warehouse")
ASSETS = {name: Asset(name=f"attnrec_{name}", uri=f"file://{WAREHOUSE}/{name}")
          for name in ("events", "user_sequences", "model_registry", "recommendations")}


def _conn_env(target: str, conn_id: str, fields: dict[str, str]) -> dict[str, str]:
    """Env entries rendered from an Airflow connection, only when `export_to` names the target (a deployment
    without Redis needs no Redis connection). Passwords go through the environment, never the command line."""
    return {env: f"{{{{ conn.{conn_id}.{expr} if '{target}' in params.export_to.split(',') else '{default}' }}}}"
            for env, (expr, default) in fields.items()}


EXPORT_ENV = {
    **_conn_env("redis", "attnrec_redis", {
        "ATTNREC_REDIS_HOST": ("host", "localhost"), "ATTNREC_REDIS_PORT": ("port", "6379"),
        "ATTNREC_REDIS_DB": ("extra_dejson.get('db', 0)", "0"), "ATTNREC_REDIS_PASSWORD": ("password or ''", "")}),
    **_conn_env("postgres", "attnrec_postgres", {
        "ATTNREC_PG_HOST": ("host", "localhost"), "ATTNREC_PG_PORT": ("port", "5432"),
        "ATTNREC_PG_DB": ("schema", "attnrec"), "ATTNREC_PG_USER": ("login", "attnrec"),
        "ATTNREC_PG_PASSWORD": ("password or ''", "")}),
}


def spark_step(task_id: str, job: str, args: list[str], env: dict | None = None, **kwargs) -> SparkSubmitOperator:
    return SparkSubmitOperator(
        task_id=task_id, conn_id="spark_default", application=os.path.join(PROJECT_DIR, "jobs", f"{job}.py"),
        application_args=args, properties_file=SPARK_PROPERTIES, name=f"attnrec-{task_id}-{DATA_DAY}",
        env_vars={"PYSPARK_PYTHON": PYTHON, "PYSPARK_DRIVER_PYTHON": PYTHON, "PYTHONPATH": PROJECT_DIR, **(env or {})},
        **kwargs,
    )


def python_step(task_id: str, command: str, **kwargs) -> BashOperator:
    return BashOperator(task_id=task_id, bash_command=f'"{PYTHON}" -m jobs.cli {command}', cwd=PROJECT_DIR,
                        env={"PYTHONPATH": PROJECT_DIR}, append_env=True, **kwargs)


with DAG(
    dag_id="attnrec_nightly",
    description="raw events -> events -> user_sequences -> model (gated) -> recommendations -> exports",
    schedule=NIGHTLY,
    # the earliest data day a backfill may process (Airflow makes no task for a date before it: a 1998 replay
    # would be an empty success); catchup=False keeps the scheduler from running that past on its own
    start_date=pendulum.datetime(1970, 1, 1, tz="UTC"),
    catchup=False,  # backfills are explicit: `attnrec run --from-date` or `airflow backfill create`
    max_active_runs=1,  # build_sequences numbers new items and training warm-starts from yesterday: one night at a time
    # `attnrec run` sets ATTNREC_TASK_RETRIES=0: at a terminal a failure should stop now, not wait for a retry
    # depends_on_past + wait_for_downstream: a task runs only when its own run and its direct downstream tasks
    # succeeded the night before, so after a failed check_data on D, D+1's build_sequences waits (D's bad day is
    # never folded into a snapshot); as every step's downstream includes record_run, which fails with the night,
    # all of D+1 waits in practice
    default_args={"retries": int(os.environ.get("ATTNREC_TASK_RETRIES", "2")), "retry_delay": pendulum.duration(minutes=5),
                  "depends_on_past": True, "wait_for_downstream": True},
    params={
        "raw": Param(_location("ATTNREC_RAW", "raw"), type="string"),
        "warehouse": Param(WAREHOUSE, type="string"),
        "models": Param(_location("ATTNREC_MODELS", "artifacts/models"), type="string"),
        "exports": Param(_location("ATTNREC_EXPORTS", "exports"), type="string"),
        "reports": Param(_location("ATTNREC_REPORTS", "reports"), type="string",
                         description="each night's HTML report goes to REPORTS/attnrec-DATE.html"),
        "export_to": Param(os.environ.get("ATTNREC_EXPORT_TO", "files"), type="string"),
        "top_n": Param(100, type="integer"),
        "train_args": Param(os.environ.get("ATTNREC_TRAIN_ARGS", ""), type="string",
                            description="extra `attnrec train-nightly` options, e.g. --full-retrain-every-days 7"),
        "check_thresholds": Param({}, type="object",
                                  description="check_data thresholds over its defaults, e.g. {\"max_quarantine_share\": 0.05}"),
        "gate_args": Param(os.environ.get("ATTNREC_GATE_ARGS", ""), type="string",
                           description="extra `attnrec gate` options, e.g. --gate-tolerance 0.1 --gate-min-users 50"),
    },
    tags=["attnrec"],
) as dag:
    wh, day, run_id = "{{ params.warehouse }}", DATA_DAY, "{{ run_id }}"
    # --allow-empty: a day without raw files is recorded as empty; check_data decides whether that is allowed
    ingest_events = spark_step("ingest_events", "ingest_events",
                               ["--logical-date", day, "--raw", "{{ params.raw }}", "--warehouse", wh, "--allow-empty",
                                "--run-id", run_id],
                               outlets=[ASSETS["events"]])
    build_sequences = spark_step("build_sequences", "build_sequences",
                                 ["--logical-date", day, "--warehouse", wh, "--run-id", run_id],
                                 inlets=[ASSETS["events"]], outlets=[ASSETS["user_sequences"]])
    # counts from the Delta log and small columns: plain Python (a cold spark-submit cost it ~20 s a night)
    check_data = python_step("check_data", f"check --date {day} --warehouse {wh} --run-id '{run_id}' "
                                           "--thresholds '{{ params.check_thresholds | tojson }}'",
                             retries=0)  # a failed check is not transient
    # --resume: an Airflow retry continues this training from its checkpoint
    train = python_step("train", f"train-nightly --date {day} --warehouse {wh} --models '{{{{ params.models }}}}' "
                                 f"--run-id '{run_id}' --resume {{{{ params.train_args }}}}",
                        inlets=[ASSETS["user_sequences"]])
    evaluate_and_gate = python_step("evaluate_and_gate", f"gate --date {day} --warehouse {wh} --run-id '{run_id}' "
                                                         "{{ params.gate_args }}",
                                    outlets=[ASSETS["model_registry"]])
    score_users = spark_step("score_users", "score_users",
                             ["--logical-date", day, "--warehouse", wh, "--top-n", "{{ params.top_n }}",
                              "--run-id", run_id],
                             inlets=[ASSETS["user_sequences"], ASSETS["model_registry"]],
                             outlets=[ASSETS["recommendations"]])
    export = spark_step("export", "export_recommendations",
                        ["--logical-date", day, "--warehouse", wh, "--to", "{{ params.export_to }}",
                         "--exports", "{{ params.exports }}", "--run-id", run_id],
                        env=EXPORT_ENV, inlets=[ASSETS["recommendations"]])
    maintenance = spark_step("maintenance", "maintenance",
                             ["--logical-date", day, "--warehouse", wh, "--models", "{{ params.models }}",
                              "--exports", "{{ params.exports }}", "--to", "{{ params.export_to }}", "--run-id", run_id],
                             env=EXPORT_ENV)
    # whatever happened before it: rows for the steps that crashed or never ran, the night's summary; it fails
    # when the night did, so the run stays failed (a leaf that succeeds would mark it a success)
    record_run = python_step("record_run", f"record-run --date {day} --warehouse {wh} --run-id '{run_id}' "
                                           "--reports '{{ params.reports }}' "
                                           "--task-states '{{ ti.get_task_states(dag_id=dag.dag_id, run_ids=[run_id]) "
                                           "| tojson }}'", trigger_rule="all_done", retries=0, depends_on_past=False,
                             wait_for_downstream=False)
    steps = [ingest_events, build_sequences, check_data, train, evaluate_and_gate, score_users, export, maintenance]
    chain(*steps)
    steps >> record_run

if __name__ == "__main__":
    dag.test()
