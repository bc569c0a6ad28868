"""The nightly DAG: imports cleanly, has the documented graph, its real timetable processes the day that has
ended, and one small multi-night replay runs the whole pipeline through it (shared by the DAG-level checks).

Airflow reads AIRFLOW_HOME when it is first imported, so every Airflow check runs in a fresh interpreter with
its own AIRFLOW_HOME (a SQLite metadata DB in a temp dir).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

INSPECT = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder="dags")
dag = bag.dags["attnrec_nightly"]
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": sorted(bag.dags),
    "edges": sorted([t.task_id, d] for t in dag.tasks for d in sorted(t.downstream_task_ids)),
    "operators": {t.task_id: type(t).__name__ for t in dag.tasks},
    "spark": {t.task_id: [t._conn_id, t.properties_file] for t in dag.tasks if hasattr(t, "properties_file")},
    "outlets": {t.task_id: sorted(a.name for a in t.outlets) for t in dag.tasks if t.outlets},
    "retries": {t.task_id: t.retries for t in dag.tasks},
    "depends_on_past": {t.task_id: t.depends_on_past for t in dag.tasks},
    "wait_for_downstream": {t.task_id: t.wait_for_downstream for t in dag.tasks},
    "trigger_rules": {t.task_id: str(t.trigger_rule.value if hasattr(t.trigger_rule, "value") else t.trigger_rule)
                      for t in dag.tasks},
    "max_active_runs": dag.max_active_runs,
}))
"""

PIPELINE = ["ingest_events", "build_sequences", "check_data", "train", "evaluate_and_gate", "score_users", "export", "maintenance"]


def _airflow_env(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ)
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"), ATTNREC_HOME=str(ROOT), **extra)
    return env


def _python(code: str, env: dict, timeout: int = 300) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dagbag_imports_and_the_graph_is_the_documented_pipeline(tmp_path):
    info = _python(INSPECT, _airflow_env(tmp_path))
    assert info["errors"] == {}
    assert info["dags"] == ["attnrec_nightly"]
    assert info["edges"] == sorted([[a, b] for a, b in zip(PIPELINE, PIPELINE[1:])]
                                   + [[step, "record_run"] for step in PIPELINE])
    spark_steps = {"ingest_events", "build_sequences", "score_users", "export", "maintenance"}
    assert {t for t, op in info["operators"].items() if op == "SparkSubmitOperator"} == spark_steps
    properties = str(ROOT / "infra" / "spark-defaults.conf")
    assert info["spark"] == {t: ["spark_default", properties] for t in spark_steps}
    assert info["outlets"] == {"ingest_events": ["attnrec_events"], "build_sequences": ["attnrec_user_sequences"],
                               "evaluate_and_gate": ["attnrec_model_registry"],
                               "score_users": ["attnrec_recommendations"]}
    # the deployed DAG retries (`attnrec run` sets 0), except a failed data check, which is not transient, and
    # the record of the night
    assert info["retries"].pop("check_data") == info["retries"].pop("record_run") == 0
    assert all(n >= 1 for n in info["retries"].values())
    # a failed night blocks the nights after it until it is fixed and rerun; the record runs whatever happened
    assert info["depends_on_past"].pop("record_run") is False and set(info["depends_on_past"].values()) == {True}
    assert info["wait_for_downstream"].pop("record_run") is False
    assert set(info["wait_for_downstream"].values()) == {True}
    assert info["trigger_rules"]["record_run"] == "all_done"
    assert info["max_active_runs"] == 1


def test_dag_module_imports_no_heavy_packages(tmp_path):
    code = ("import sys, json, runpy; runpy.run_path('dags/attnrec_nightly.py', run_name='dag_check'); "
            "print(json.dumps(sorted(m for m in ('torch', 'pyspark', 'jobs', 'attnmodel') if m in sys.modules)))")
    assert _python(code, _airflow_env(tmp_path)) == []


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
context = {"data_interval_start": info.data_interval.start, "run_id": "scheduled__x",
           "params": {"raw": "R", "warehouse": "W", "models": "M", "train_args": ""}}
rendered = {}
for task_id in ("ingest_events", "train"):
    task = dag.get_task(task_id)
    field = task.application_args if task_id == "ingest_events" else task.bash_command
    rendered[task_id] = task.render_template(field, context)
print(json.dumps({"start": info.data_interval.start.isoformat(), "end": info.data_interval.end.isoformat(),
                  "run_after": info.run_after.isoformat(), "rendered": rendered}))
"""


def test_the_real_timetable_processes_the_day_that_has_ended(tmp_path):
    info = _python(TIMETABLE, _airflow_env(tmp_path))
    # the run that starts at midnight on 03-04 covers 03-03, the day that has just ended, and ingests that day
    assert info["run_after"].startswith("2026-03-04T00:00:00")
    assert info["start"].startswith("2026-03-03T00:00:00") and info["end"].startswith("2026-03-04T00:00:00")
    args = info["rendered"]["ingest_events"]
    assert args[args.index("--logical-date") + 1] == "2026-03-03"
    assert "train-nightly --date 2026-03-03 " in info["rendered"]["train"]


def test_airflow_backfill_create_dry_run_lists_the_data_days(tmp_path):
    """`airflow backfill create` (documented for deployments with a scheduler) plans one run per data day:
    the run for data day D has the interval [D, D+1)."""
    env = _airflow_env(tmp_path)
    for cmd in (["db", "migrate"], ["dags", "reserialize"]):
        out = subprocess.run([str(BIN / "airflow"), *cmd], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
    out = subprocess.run([str(BIN / "airflow"), "backfill", "create", "--dag-id", "attnrec_nightly",
                          "--from-date", "2026-03-02", "--to-date", "2026-03-04", "--reprocess-behavior", "completed",
                          "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    # its table of runs: one row per logical date, which for this timetable is the data interval's start
    listed = re.findall(r"^\| (\d{4}-\d\d-\d\d) 00:00:00\+00:00 ", out.stdout + out.stderr, re.M)
    assert listed == ["2026-03-02", "2026-03-03", "2026-03-04"], (out.stdout + out.stderr)[-3000:]


# ---------------------------------------------------------------- the shared multi-night replay

HISTORY_DAY, NIGHTS, BROKEN_NIGHT = dt.date(2026, 3, 1), [dt.date(2026, 3, d) for d in (2, 3, 4)], dt.date(2026, 3, 5)
TRAIN_ARGS = ("--epochs 15 --warm-epochs 5 --d-model 32 --blocks 1 --heads 1 --max-len 30 --batch-size 64 "
              "--patience 10 --device cpu")
GATE_ARGS = "--gate-min-users 5"
TABLES = ("events", "events_quarantine", "item_index", "user_sequences", "sequence_snapshots", "recommendations")
# a rerun writes new table versions with the same rows: what differs is when and which version, not content
VOLATILE = {"ingested_at", "user_sequences_version", "item_index_version", "events_version"}


def _run_cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", "run", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1500)


def _table_rows(spark, path: str) -> list:
    df = spark.read.format("delta").load(path)
    df = df.drop(*[c for c in df.columns if c in VOLATILE])
    return sorted(json.dumps(r.asDict(recursive=True), default=str, sort_keys=True) for r in df.collect())


def _redis_lists(settings: dict) -> dict:
    import redis

    client = redis.Redis(host=settings["ATTNREC_REDIS_HOST"], port=int(settings["ATTNREC_REDIS_PORT"]),
                         password=settings["ATTNREC_REDIS_PASSWORD"])
    out = {}
    for day, namespace in sorted(client.hgetall("attnrec:recs:dates").items()):
        keys = sorted(client.scan_iter(match=f"{namespace.decode()}:u:*", count=1000))
        out[day.decode()] = {k.decode().rsplit(":u:", 1)[1]: json.loads(client.get(k)) for k in keys}
    out["live_date"] = (client.get("attnrec:recs:live_date") or b"").decode()
    client.close()
    return out


def _postgres_rows(settings: dict) -> list:
    import psycopg

    with psycopg.connect(host=settings["ATTNREC_PG_HOST"], port=settings["ATTNREC_PG_PORT"],
                         dbname=settings["ATTNREC_PG_DB"], user=settings["ATTNREC_PG_USER"],
                         password=settings["ATTNREC_PG_PASSWORD"]) as conn:
        rows = conn.execute("SELECT * FROM recommendations ORDER BY as_of_date, user_id, rank").fetchall()
        live = conn.execute("SELECT DISTINCT as_of_date FROM recommendations_current").fetchall()
    return [[str(v) for v in r] for r in rows] + [["live", *sorted(str(d) for (d,) in live)]]


def _file_exports(exports: Path) -> dict:
    import pyarrow.parquet as pq

    out = {}
    for day_dir in sorted((exports / "recommendations").glob("as_of_date=*")):
        parquet = sorted(json.dumps(r, default=str, sort_keys=True)
                         for f in sorted((day_dir / "parquet").glob("*.parquet")) for r in pq.read_table(f).to_pylist())
        lines = sorted(line for f in sorted((day_dir / "jsonl").glob("*.json")) for line in f.read_text().splitlines())
        manifest = json.loads((day_dir / "_MANIFEST.json").read_text())
        out[day_dir.name] = {"parquet": parquet, "jsonl": lines, "rows": manifest["rows"], "users": manifest["users"]}
    return out


def _state(spark, world: dict) -> dict:
    """Everything a rerun must leave as it was: every table's rows, the registry, the model artefacts, and
    every export as its readers see it."""
    from attnmodel import registry as reg

    wh = world["warehouse"]
    return {
        "tables": {t: _table_rows(spark, f"{wh}/{t}") for t in TABLES},
        "registry": [json.dumps(r, default=str, sort_keys=True) for r in reg.read_registry(wh)],
        "models": sorted(p.name for p in (world["artifacts"] / "models").iterdir() if not p.name.startswith(".")),
        "files": _file_exports(world["exports"]),
        "redis": _redis_lists(world["services"]),
        "postgres": _postgres_rows(world["services"]),
    }


def _broken_night(spark, world: dict, capsys) -> dict:
    """D5 at job level: ingest and sequences, a candidate whose weights are then zeroed, the gate, scoring."""
    import torch

    from attnmodel import registry as reg
    from attnmodel.nightly import gate_main, train_nightly_main
    from jobs.build_sequences import main as sequences_main
    from jobs.ingest_events import main as ingest_main
    from jobs.score_users import main as score_main

    wh, day = world["warehouse"], BROKEN_NIGHT.isoformat()
    assert ingest_main(["--date", day, "--raw", world["raw"], "--warehouse", wh], spark=spark) == 0
    assert sequences_main(["--date", day, "--warehouse", wh], spark=spark) == 0
    assert train_nightly_main(["--date", day, "--warehouse", wh, "--models", str(world["artifacts"] / "models"),
                               *TRAIN_ARGS.split()]) == 0
    candidate = reg.latest_candidate(reg.read_registry(wh), BROKEN_NIGHT)
    for weights in ("candidate.pt", "model.pt"):
        path = Path(candidate["model_dir"]) / weights
        state = torch.load(path, map_location="cpu", weights_only=True)
        torch.save({k: torch.zeros_like(v) for k, v in state.items()}, path)
    assert gate_main(["--date", day, "--warehouse", wh, *GATE_ARGS.split()]) == 0
    capsys.readouterr()
    assert score_main(["--date", day, "--warehouse", wh, "--top-n", "10"], spark=spark) == 0
    out = capsys.readouterr()
    return {"candidate": candidate["model_version"], "stderr": out.err, "stdout": out.out}


@pytest.fixture(scope="module")
def replay(tmp_path_factory, spark, services):
    """A history day, then three nights through the DAG (`attnrec run --from-date --date`: a backfill) with
    exports to files, Redis and PostgreSQL whose endpoints and credentials come from Airflow connections only;
    then a rerun of every step of the last night; then (in its test) a broken fourth night at job level."""
    from jobs.generate_events import GenerateParams, generate

    root = tmp_path_factory.mktemp("replay")
    world = {"raw": str(root / "raw"), "warehouse": str(root / "wh"), "artifacts": root / "art",
             "exports": root / "exports", "services": services}
    generate(spark, GenerateParams(out=world["raw"], users=150, items=80, days=5, events=7500, seed=5,
                                   start_date=HISTORY_DAY))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATTNREC_REDIS_", "ATTNREC_PG_"))}
    from jobs.cli import DEMO_SPARK_SUBMIT_OPTS

    env.update(ATTNREC_SHUFFLE_PARTITIONS="2", AIRFLOW__CORE__LOAD_EXAMPLES="False",
               SPARK_SUBMIT_OPTS=DEMO_SPARK_SUBMIT_OPTS,  # small data: short jobs start sooner (see jobs/cli.py)
               AIRFLOW_CONN_ATTNREC_REDIS=json.dumps({
                   "conn_type": "redis", "host": services["ATTNREC_REDIS_HOST"],
                   "port": int(services["ATTNREC_REDIS_PORT"]), "password": services["ATTNREC_REDIS_PASSWORD"],
                   "extra": {"db": 0}}),
               AIRFLOW_CONN_ATTNREC_POSTGRES=json.dumps({
                   "conn_type": "postgres", "host": services["ATTNREC_PG_HOST"],
                   "port": int(services["ATTNREC_PG_PORT"]), "schema": services["ATTNREC_PG_DB"],
                   "login": services["ATTNREC_PG_USER"], "password": services["ATTNREC_PG_PASSWORD"]}))
    common = ["--raw", world["raw"], "--warehouse", world["warehouse"], "--artifacts", str(world["artifacts"]),
              "--exports", str(world["exports"]), "--reports", str(root / "reports"), "--airflow-home", str(root / "airflow"), "--master", "local[2]",
              "--export-to", "files,redis,postgres", "--top-n", "10", "--train-args", TRAIN_ARGS,
              "--gate-args", GATE_ARGS]
    backfill = _run_cli(["--load-history-from", HISTORY_DAY.isoformat(), "--from-date", NIGHTS[0].isoformat(),
                         "--date", NIGHTS[-1].isoformat(), *common], env)
    assert backfill.returncode == 0, (backfill.stdout + backfill.stderr)[-8000:]
    world["backfill_stdout"] = backfill.stdout
    world["before_rerun"] = _state(spark, world)
    _rerun_last_night(spark, world)
    world["after_rerun"] = _state(spark, world)
    return world


def _rerun_last_night(spark, world: dict) -> None:
    """Every step of the last night again, with the arguments the DAG gives it, in this process (the same jobs
    the DAG runs; a second pass through Airflow would add minutes of spark-submit start-ups to the suite)."""
    from attnmodel.nightly import gate_main, train_nightly_main
    from jobs.build_sequences import main as sequences
    from jobs.check_data import main as check
    from jobs.export_recommendations import main as export
    from jobs.ingest_events import main as ingest
    from jobs.maintenance import main as maintenance
    from jobs.score_users import main as score

    wh, day, models, exports = world["warehouse"], NIGHTS[-1].isoformat(), str(world["artifacts"] / "models"), str(
        world["exports"])
    targets = ["--to", "files,redis,postgres", "--exports", exports]
    assert ingest(["--date", day, "--raw", world["raw"], "--warehouse", wh, "--allow-empty"], spark=spark) == 0
    assert sequences(["--date", day, "--warehouse", wh], spark=spark) == 0
    assert check(["--date", day, "--warehouse", wh]) == 0
    assert train_nightly_main(["--date", day, "--warehouse", wh, "--models", models, "--resume",
                               *TRAIN_ARGS.split()]) == 0
    assert gate_main(["--date", day, "--warehouse", wh, *GATE_ARGS.split()]) == 0
    assert score(["--date", day, "--warehouse", wh, "--top-n", "10"], spark=spark) == 0
    assert export(["--date", day, "--warehouse", wh, *targets], spark=spark) == 0
    assert maintenance(["--date", day, "--warehouse", wh, "--models", models, *targets], spark=spark) == 0


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the shared replay is built in this test's setup: about 12 minutes on 2 cores
def test_backfill_runs_every_night_through_the_dag(replay, spark):
    from pyspark.sql import functions as F

    from attnmodel import registry as reg

    for day in NIGHTS:
        assert f"DAGRUN {day} success -" in replay["backfill_stdout"]
    wh = replay["warehouse"]
    dates = lambda table, col: sorted(  # noqa: E731
        r[0] for r in spark.read.format("delta").load(f"{wh}/{table}").select(col).distinct().collect())
    assert dates("events", "event_date") == [HISTORY_DAY, *NIGHTS]
    assert dates("user_sequences", "as_of_date") == NIGHTS  # the history day was loaded, not a night
    assert dates("recommendations", "as_of_date") == NIGHTS
    rows = reg.read_registry(wh)
    recs = spark.read.format("delta").load(f"{wh}/recommendations")
    state = replay["before_rerun"]
    for day in NIGHTS:
        served = {r[0] for r in recs.filter(F.col("as_of_date") == day).select("model_version").distinct().collect()}
        assert served == {reg.published_for(rows, day)["model_version"]}
        assert f"as_of_date={day}" in state["files"]
        assert len(state["redis"][day.isoformat()]) == state["files"][f"as_of_date={day}"]["users"] > 100
    # every step left its own row in pipeline_runs, and `attnrec run` ended with the summary of the nights
    from attnmodel import runlog
    from jobs.runs import TASK_STEPS

    runs = runlog.read_runs(wh)
    for day in NIGHTS:
        steps = runlog.latest_per_step(runs, day)
        assert set(steps) == set(TASK_STEPS.values()) | {"report"} and {r["status"] for r in steps.values()} == {"success"}
        assert steps["score"]["model_version"] == reg.published_for(rows, day)["model_version"]
        assert steps["gate"]["gate_decision"] in ("published", "rejected")
        assert steps["ingest"]["rows_read"] > 0 and 0 < steps["check"]["rows_read"] <= steps["ingest"]["rows_read"]
        assert json.loads(steps["score"]["tables_written"])["recommendations"] >= 0
        assert f"{day}  OK" in replay["backfill_stdout"]
    # Redis and PostgreSQL were reached with the Airflow connections alone (no ATTNREC_REDIS_*/PG_* in the env)
    assert state["redis"]["live_date"] == NIGHTS[-1].isoformat()
    assert state["postgres"][-1] == ["live", NIGHTS[-1].isoformat()]
    assert len(state["postgres"]) - 1 == sum(f["rows"] for f in state["files"].values())
    # `attnrec run` ends with the last night in ten seconds, and every night wrote its HTML report
    tail = replay["backfill_stdout"].split(f"== night {NIGHTS[-1]}: OK", 1)[1]
    for line in ("rows        events +", "quarantine  ", "gate        ", "scored      ", "exports     files:", "report      "):
        assert line in tail, line
    from tests.browser import open_page

    page = open_page(Path(replay["warehouse"]).parent / "reports" / f"attnrec-{NIGHTS[-1]}.html")
    assert len(page["images"]) == 6 and all(i["decoded"] and i["width"] > 100 for i in page["images"]), page["images"]
    assert [m for m in page["console"] if m["level"] in ("SEVERE", "WARNING")] == []
    assert all(str(day) in page["text"] for day in NIGHTS)


@pytest.mark.slow
def test_registry_records_every_night_and_warm_starts_only_from_published_earlier_models(replay):
    from attnmodel import registry as reg

    rows = [r for r in reg.read_registry(replay["warehouse"]) if r["data_date"] in NIGHTS]
    snapshots = {json.loads(r)["as_of_date"]: json.loads(r)
                 for r in replay["before_rerun"]["tables"]["sequence_snapshots"]}
    for i, day in enumerate(NIGHTS):
        night = [r for r in rows if r["data_date"] == day]
        candidates = [r for r in night if r["status"] == reg.CANDIDATE]
        decisions = [r for r in night if r["status"] in reg.DECISIONS]
        assert len(candidates) == 1 and len(decisions) == 1, night
        cand = candidates[0]
        assert json.loads(cand["trained_on"])["content_hash"] == snapshots[day.isoformat()]["content_hash"]
        assert cand["code_version"] and json.loads(cand["metrics"])["valid"]
        assert decisions[0]["gate_users"] >= 5 and decisions[0]["candidate_ndcg10"] is not None
        parent = reg.published_before(rows, day)
        if i == 0:
            assert cand["warm_start_from"] == "" and parent is None  # the first night trains from scratch
        else:
            assert cand["warm_start_from"] == parent["model_version"]
            assert parent["data_date"] < day and parent["status"] == reg.PUBLISHED


@pytest.mark.slow
def test_rerunning_a_finished_date_leaves_tables_registry_and_exports_as_they_were(replay):
    before, after = replay["before_rerun"], replay["after_rerun"]
    for key in before:
        assert after[key] == before[key], key


@pytest.mark.slow
def test_gate_rejects_a_zeroed_model_and_the_published_one_keeps_serving(replay, spark, capsys):
    from pyspark.sql import functions as F

    from attnmodel import registry as reg

    broken = _broken_night(spark, replay, capsys)
    rows = reg.read_registry(replay["warehouse"])
    decision = reg.decision_for(rows, broken["candidate"], BROKEN_NIGHT)
    assert decision["status"] == reg.REJECTED and "popularity" in decision["reason"]
    serving = reg.published_for(rows, BROKEN_NIGHT)
    assert serving["model_version"] == reg.published_for(rows, NIGHTS[-1])["model_version"] != broken["candidate"]
    recs = spark.read.format("delta").load(f"{replay['warehouse']}/recommendations")
    served = {r[0] for r in recs.filter(F.col("as_of_date") == BROKEN_NIGHT).select("model_version").distinct().collect()}
    assert served == {serving["model_version"]}
    # the visible mark: a WARNING line, and the report's gate field
    assert f"WARNING: the candidate for {BROKEN_NIGHT}" in broken["stderr"]
    report = json.loads(broken["stdout"].strip().splitlines()[-1])
    assert report["gate"].startswith("rejected")
