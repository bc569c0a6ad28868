"""attnrec nightly: ingest the day's raw logs, rebuild the sequence snapshot, retrain the model.

Wiring only: each task runs a job's own command line, exactly as an operator would by hand.
Paths come from the worker's environment at run time (ATTNREC_HOME, ATTNREC_RAW, ATTNREC_WAREHOUSE,
ATTNREC_ARTIFACTS, ATTNREC_TRAIN_ARGS), so nothing is read at import.
"""

from __future__ import annotations

import os

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, CronDataIntervalTimetable

# The run that starts just after midnight covers the day that has just ended: Airflow 3's plain "@daily" is a
# trigger whose logical date is the day that is beginning (an empty interval), whose logs are not there yet.
NIGHTLY = CronDataIntervalTimetable("@daily", timezone="UTC")
DATA_DAY = "{{ data_interval_start | ds }}"  # the data day a run processes

# The checkout this file lives in, unless the deployment says otherwise.
PROJECT_DIR = os.environ.get("ATTNREC_HOME") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP = (
    'cd "$ATTNREC_HOME" && PY="${ATTNREC_PYTHON:-$ATTNREC_HOME/.venv/bin/python}" && '
    'RAW="${ATTNREC_RAW:-raw}" && WH="${ATTNREC_WAREHOUSE:-warehouse}" && ART="${ATTNREC_ARTIFACTS:-artifacts}" && '
)

with DAG(
    dag_id="attnrec_nightly",
    description="raw events -> events -> user_sequences -> model",
    schedule=NIGHTLY,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,  # backfills are explicit: `airflow backfill create --dag-id attnrec_nightly ...`
    max_active_runs=1,  # build_sequences numbers new items: one run at a time per warehouse
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=10)},
    tags=["attnrec"],
) as dag:
    env = {"ATTNREC_HOME": PROJECT_DIR}
    ingest_events = BashOperator(
        task_id="ingest_events",
        bash_command=SETUP + 'PYTHON="$PY" infra/spark-submit.sh jobs/ingest_events.py '
        f'--logical-date {DATA_DAY} --raw "$RAW" --warehouse "$WH"',
        env=env, append_env=True,
    )
    build_sequences = BashOperator(
        task_id="build_sequences",
        bash_command=SETUP + 'PYTHON="$PY" infra/spark-submit.sh jobs/build_sequences.py '
        f'--logical-date {DATA_DAY} --warehouse "$WH"',
        env=env, append_env=True,
    )
    # Each model lands in $ART/models/<model_version>/; which one serves (and warm starts) is the registry's call.
    train_model = BashOperator(
        task_id="train_model",
        bash_command=SETUP + f'"$PY" -m jobs.cli train --table "$WH/user_sequences" --as-of-date {DATA_DAY} '
        '--out "$ART/models" ${ATTNREC_TRAIN_ARGS:-}',
        env=env, append_env=True,
    )
    ingest_events >> build_sequences >> train_model

if __name__ == "__main__":
    dag.test()
