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


def test_a_date_before_the_dags_start_date_is_an_error_not_an_empty_success(tmp_path):
    """Airflow makes no task for a logical date before the DAG's start_date and calls that run a success; the
    runner says it is no night."""
    env = _airflow_env(tmp_path)
    out = subprocess.run([str(BIN / "airflow"), "db", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    out = subprocess.run([sys.executable, "-m", "jobs.dag_runner", "--dates", "1969-06-01"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, (out.stdout + out.stderr)[-3000:]
    assert "DAGRUN 1969-06-01 failed -" in out.stdout
    assert "the DAG made no task for 1969-06-01 (is it before the DAG's start_date?)" in out.stderr


# ---------------------------------------------------------------- the real-data replay (MovieLens-100K)

ML100K = ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"
REPLAY_NIGHTS = 7
TRAIN_ARGS = ("--epochs 40 --warm-epochs 4 --d-model 32 --blocks 1 --heads 1 --max-len 50 --batch-size 32 "
              "--patience 10 --device cpu")
GATE_ARGS = "--gate-min-users 5"
TABLES = ("events", "events_quarantine", "item_index", "user_sequences", "sequence_snapshots", "recommendations")
# a rerun writes new table versions with the same rows: what differs is when and which version, not content
VOLATILE = {"ingested_at", "user_sequences_version", "item_index_version", "events_version"}


def _run_cli(args: list[str], env: dict, timeout: int = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", "run", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _raw_days(raw: str) -> list[dt.date]:
    return sorted(dt.date.fromisoformat(part.name[3:]) for part in (Path(raw) / "events").glob("dt=*"))


def _raw_records(raw: str, day: dt.date) -> list[dict]:
    """The well-formed JSON-object records of a raw partition (generated logs also hold planted bad ones)."""
    import gzip

    out = []
    for f in sorted((Path(raw) / "events" / f"dt={day}").iterdir()):
        if f.name.startswith((".", "_")):
            continue
        text = gzip.decompress(f.read_bytes()).decode() if f.name.endswith(".gz") else f.read_text()
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("timestamp"), (int, str)) and rec.get("user_id"):
                out.append(rec)
    return out


def _copy_day(raw: str, source: dt.date, day: dt.date, bad_every: int = 0) -> int:
    """A raw partition for `day` made of `source`'s records moved to `day` (new event ids, timestamps shifted by
    whole days); with bad_every = k, every k-th record is replaced by one whose user_id is a JSON object.
    Returns the records written."""
    shift = dt.timedelta(days=(day - source).days)
    out = []
    for i, rec in enumerate(_raw_records(raw, source)):
        ts = rec["timestamp"]
        ts = (int(ts) + int(shift.total_seconds()) if str(ts).lstrip("-").isdigit()
              else (dt.datetime.fromisoformat(ts.replace("Z", "+00:00")) + shift).isoformat())
        rec = dict(rec, event_id=f"{rec.get('event_id') or i}-{day}", timestamp=ts)
        if bad_every and i % bad_every == 0:
            rec["user_id"] = {"id": rec["user_id"]}
        out.append(json.dumps(rec))
    part = Path(raw) / "events" / f"dt={day}"
    part.mkdir(parents=True)
    (part / "part-00000.json").write_text("\n".join(out) + "\n")
    return len(out)


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


@pytest.fixture(scope="module")
def replay(tmp_path_factory, spark, services):
    """MovieLens-100K (real timestamps, about 210 days) imported into daily raw partitions; the history before
    its last 7 days loaded in one ranged ingest, then those 7 nights backfilled through the DAG
    (`attnrec run --load-history-from --from-date --date`) with exports to files, Redis and PostgreSQL whose
    endpoints and credentials come from Airflow connections only; then a rerun of every step of the last night.
    Without ../shared, generated demo logs stand in (the hit-rate test then skips)."""
    from attnmodel import report

    root = tmp_path_factory.mktemp("replay")
    world = {"raw": str(root / "raw"), "warehouse": str(root / "wh"), "artifacts": root / "art",
             "exports": root / "exports", "reports": root / "reports", "airflow": root / "airflow",
             "services": services}
    if ML100K.exists():
        from jobs.import_movielens import ImportParams, import_movielens

        import_movielens(spark, ImportParams(path=str(ML100K), out=world["raw"]))
        world["source"] = "ml-100k"
    else:
        from jobs.generate_events import GenerateParams, generate

        generate(spark, GenerateParams(out=world["raw"], users=300, items=120, days=20, events=20000, seed=5,
                                       start_date=dt.date(2026, 3, 1)))
        world["source"] = "generated"
    world["raw_records"] = {day: len(_raw_records(world["raw"], day)) for day in _raw_days(world["raw"])}
    last = max(world["raw_records"])
    nights = [last - dt.timedelta(days=REPLAY_NIGHTS - 1 - i) for i in range(REPLAY_NIGHTS)]
    world.update(history_from=min(world["raw_records"]), nights=nights)
    # the days after the replay, for the tests that break a night: copies of the last night's records
    world["zeroed_night"], world["bad_night"], world["held_night"] = (last + dt.timedelta(days=k) for k in (1, 2, 3))

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
    world["env"] = env
    world["common"] = ["--raw", world["raw"], "--warehouse", world["warehouse"], "--artifacts", str(world["artifacts"]),
                       "--exports", str(world["exports"]), "--reports", str(world["reports"]),
                       "--airflow-home", str(world["airflow"]), "--master", "local[2]",
                       "--export-to", "files,redis,postgres", "--top-n", "10", "--train-args", TRAIN_ARGS,
                       "--gate-args", GATE_ARGS, "--allow-empty"]
    backfill = _run_cli(["--load-history-from", world["history_from"].isoformat(), "--from-date",
                         nights[0].isoformat(), "--date", nights[-1].isoformat(), *world["common"]], env)
    assert backfill.returncode == 0, (backfill.stdout + backfill.stderr)[-8000:]
    world["backfill_stdout"] = backfill.stdout
    world["hit_rates"] = {day: report.next_day_hit_rates(world["warehouse"], day) for day in nights}
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

    wh, day, models, exports = world["warehouse"], world["nights"][-1].isoformat(), str(
        world["artifacts"] / "models"), str(world["exports"])
    targets = ["--to", "files,redis,postgres", "--exports", exports]
    run_id = ["--run-id", "manual__rerun"]
    assert ingest(["--date", day, "--raw", world["raw"], "--warehouse", wh, "--allow-empty", *run_id], spark=spark) == 0
    assert sequences(["--date", day, "--warehouse", wh, *run_id], spark=spark) == 0
    assert check(["--date", day, "--warehouse", wh, *run_id]) == 0
    assert train_nightly_main(["--date", day, "--warehouse", wh, "--models", models, "--resume", *run_id,
                               *TRAIN_ARGS.split()]) == 0
    assert gate_main(["--date", day, "--warehouse", wh, *run_id, *GATE_ARGS.split()]) == 0
    assert score(["--date", day, "--warehouse", wh, "--top-n", "10", *run_id], spark=spark) == 0
    assert export(["--date", day, "--warehouse", wh, *run_id, *targets], spark=spark) == 0
    assert maintenance(["--date", day, "--warehouse", wh, "--models", models, *run_id, *targets], spark=spark) == 0


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the shared replay is built in this test's setup: about 12 minutes on 2 cores
def test_backfill_runs_every_night_through_the_dag(replay, spark):
    from pyspark.sql import functions as F

    from attnmodel import registry as reg

    nights, wh = replay["nights"], replay["warehouse"]
    for day in nights:
        assert f"DAGRUN {day} success -" in replay["backfill_stdout"]
    # each date's tables: every raw record of every day is an event or a quarantine row of that day
    def per_day(table):
        df = spark.read.format("delta").load(f"{wh}/{table}")
        return {r[0]: r[1] for r in df.groupBy("event_date").count().collect()}

    events, quarantine = per_day("events"), per_day("events_quarantine")
    assert sorted(events) == sorted(replay["raw_records"])
    if replay["source"] == "ml-100k":  # real logs: each record is one event of its day, none quarantined
        assert events == replay["raw_records"] and quarantine == {} and sum(events.values()) == 100_000
        days = (nights[-1] - replay["history_from"]).days + 1
        assert len(events) == days - 2
    dates = lambda table, col: sorted(  # noqa: E731
        r[0] for r in spark.read.format("delta").load(f"{wh}/{table}").select(col).distinct().collect())
    assert dates("user_sequences", "as_of_date") == nights  # the history was loaded, not run night by night
    assert dates("recommendations", "as_of_date") == nights
    rows = reg.read_registry(wh)
    recs = spark.read.format("delta").load(f"{wh}/recommendations")
    state = replay["before_rerun"]
    for day in nights:
        served = {r[0] for r in recs.filter(F.col("as_of_date") == day).select("model_version").distinct().collect()}
        assert served == {reg.published_for(rows, day)["model_version"]}
        assert f"as_of_date={day}" in state["files"]
        assert len(state["redis"][day.isoformat()]) == state["files"][f"as_of_date={day}"]["users"] > 100
    # every step of every night left its own row in pipeline_runs, the gate decided every night, and `attnrec
    # run` ended with the summary of the nights
    from attnmodel import runlog
    from jobs.runs import TASK_STEPS

    runs = runlog.read_runs(wh)
    for day in nights:
        steps = runlog.latest_per_step(runs, day)
        assert set(steps) == set(TASK_STEPS.values()) | {"report"} and {r["status"] for r in steps.values()} == {"success"}
        assert steps["score"]["model_version"] == reg.published_for(rows, day)["model_version"]
        assert steps["gate"]["gate_decision"] in ("published", "rejected")
        assert steps["gate"]["gate_candidate_ndcg10"] is not None and steps["gate"]["gate_popularity_ndcg10"] is not None
        assert steps["ingest"]["rows_read"] > 0 and 0 < steps["check"]["rows_read"] <= steps["ingest"]["rows_read"]
        assert json.loads(steps["score"]["tables_written"])["recommendations"] >= 0
        assert f"{day}  OK" in replay["backfill_stdout"]
    # Redis and PostgreSQL were reached with the Airflow connections alone (no ATTNREC_REDIS_*/PG_* in the env)
    assert state["redis"]["live_date"] == nights[-1].isoformat()
    assert state["postgres"][-1] == ["live", nights[-1].isoformat()]
    assert len(state["postgres"]) - 1 == sum(f["rows"] for f in state["files"].values())
    # `attnrec run` ends with the last night in ten seconds, and every night wrote its HTML report
    tail = replay["backfill_stdout"].split(f"== night {nights[-1]}: OK", 1)[1]
    for line in ("rows        events +", "quarantine  ", "gate        ", "scored      ", "exports     files:", "report      "):
        assert line in tail, line
    from tests.browser import open_page

    page = open_page(replay["reports"] / f"attnrec-{nights[-1]}.html")
    assert len(page["images"]) == 6 and all(i["decoded"] and i["width"] > 100 for i in page["images"]), page["images"]
    assert [m for m in page["console"] if m["level"] in ("SEVERE", "WARNING")] == []
    assert all(str(day) in page["text"] for day in nights)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "measured 2026-12-01: on MovieLens-100K's last nights (57 users active on a next day) the published models' "
    "pooled next-day hit rate@10 was 0.298 vs 0.404 for the 30-day popularity baseline; one model trained offline on "
    "1998-04-16 gave 0.351 vs 0.386 (d=64, 2 blocks, L=200: 0.333), and adding the 30-day popularity prior to its "
    "scores 0.386-0.404: not beyond one user's noise. The target is open (see issue 12's note); strict, so a model "
    "that beats popularity turns this into a failure to remove the mark"))
def test_published_models_next_day_hit_rate_beats_popularity_on_movielens(replay):
    if replay["source"] != "ml-100k":
        pytest.skip(f"needs {ML100K} (generated logs stood in)")
    rates = replay["hit_rates"]
    assert rates[replay["nights"][-1]] is None  # the last night has no next day yet
    scored = [r for r in rates.values() if r is not None]
    users = sum(n for _, _, n in scored)
    model = sum(m * n for m, _, n in scored) / users
    popularity = sum(p * n for _, p, n in scored) / users
    assert users >= 30 and len(scored) == REPLAY_NIGHTS - 1, rates
    assert model > popularity, (model, popularity, rates)


@pytest.mark.slow
def test_registry_records_every_night_and_warm_starts_only_from_published_earlier_models(replay):
    from attnmodel import registry as reg

    nights = replay["nights"]
    rows = [r for r in reg.read_registry(replay["warehouse"]) if r["data_date"] in nights]
    snapshots = {json.loads(r)["as_of_date"]: json.loads(r)
                 for r in replay["before_rerun"]["tables"]["sequence_snapshots"]}
    for i, day in enumerate(nights):
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
    from attnmodel import runlog

    before, after = replay["before_rerun"], replay["after_rerun"]
    for key in before:
        assert after[key] == before[key], key
    # pipeline_runs keeps both runs of the date: the DAG's and the rerun's, under its own run id
    day = replay["nights"][-1]
    runs = [r for r in runlog.read_runs(replay["warehouse"]) if r["data_date"] == day]
    by_run = {}
    for r in runs:
        by_run.setdefault(r["run_id"], set()).add(r["step"])
    assert len(by_run) == 2 and by_run["manual__rerun"] >= {"ingest", "sequences", "check", "train-nightly", "gate",
                                                           "score", "export", "maintenance"}
    latest = runlog.latest_per_step(runs, day)
    assert latest["score"]["run_id"] == "manual__rerun"
    # the rerun reused the gate's decision and records the figures it rests on
    dag_gate = next(r for r in runs if r["step"] == "gate" and r["run_id"] != "manual__rerun")
    for figure in ("gate_decision", "gate_candidate_ndcg10", "gate_published_ndcg10", "gate_popularity_ndcg10"):
        assert latest["gate"][figure] == dag_gate[figure], figure


@pytest.mark.slow
def test_gate_rejects_a_zeroed_model_and_the_published_one_keeps_serving(replay, spark, capsys):
    """A night at job level whose candidate's weights are zeroed before the gate."""
    import torch
    from pyspark.sql import functions as F

    from attnmodel import registry as reg
    from attnmodel.nightly import gate_main, train_nightly_main
    from jobs.build_sequences import main as sequences_main
    from jobs.ingest_events import main as ingest_main
    from jobs.score_users import main as score_main

    wh, day = replay["warehouse"], replay["zeroed_night"]
    _copy_day(replay["raw"], replay["nights"][-1], day)
    assert ingest_main(["--date", str(day), "--raw", replay["raw"], "--warehouse", wh], spark=spark) == 0
    assert sequences_main(["--date", str(day), "--warehouse", wh], spark=spark) == 0
    assert train_nightly_main(["--date", str(day), "--warehouse", wh, "--models", str(replay["artifacts"] / "models"),
                               *TRAIN_ARGS.split()]) == 0
    candidate = reg.latest_candidate(reg.read_registry(wh), day)
    for weights in ("candidate.pt", "model.pt"):
        path = Path(candidate["model_dir"]) / weights
        state = torch.load(path, map_location="cpu", weights_only=True)
        torch.save({k: torch.zeros_like(v) for k, v in state.items()}, path)
    assert gate_main(["--date", str(day), "--warehouse", wh, *GATE_ARGS.split()]) == 0
    capsys.readouterr()
    assert score_main(["--date", str(day), "--warehouse", wh, "--top-n", "10"], spark=spark) == 0
    out = capsys.readouterr()

    rows = reg.read_registry(wh)
    decision = reg.decision_for(rows, candidate["model_version"], day)
    assert decision["status"] == reg.REJECTED and "popularity" in decision["reason"]
    serving = reg.published_for(rows, day)
    assert serving["model_version"] == reg.published_for(rows, replay["nights"][-1])["model_version"]
    assert serving["model_version"] != candidate["model_version"]
    recs = spark.read.format("delta").load(f"{wh}/recommendations")
    served = {r[0] for r in recs.filter(F.col("as_of_date") == day).select("model_version").distinct().collect()}
    assert served == {serving["model_version"]}
    # the visible mark: a WARNING line, and the report's gate field
    assert f"WARNING: the candidate for {day}" in out.err
    assert json.loads(out.out.strip().splitlines()[-1])["gate"].startswith("rejected")


@pytest.mark.slow
def test_a_day_with_half_its_records_bad_stops_before_training_and_holds_the_next_night(replay):
    """Through the DAG: the quarantine-share check fails the night before a model is trained, pipeline_runs
    says why, and the next night is held until it is fixed (`attnrec run` says so instead of waiting forever)."""
    from attnmodel import registry as reg
    from attnmodel import runlog
    from jobs.runs import TASK_STEPS

    wh, bad, held = replay["warehouse"], replay["bad_night"], replay["held_night"]
    source = replay["nights"][-1]
    records = _copy_day(replay["raw"], source, bad, bad_every=2)
    _copy_day(replay["raw"], source, held)
    out = _run_cli(["--date", bad.isoformat(), *replay["common"]], replay["env"], timeout=600)
    assert out.returncode != 0
    assert f"DAGRUN {bad} failed" in out.stdout and "check_data" in out.stdout.split(f"DAGRUN {bad} failed", 1)[1]
    steps = runlog.latest_per_step(runlog.read_runs(wh), bad)
    check = steps["check"]
    assert check["status"] == runlog.FAILED
    for said in ("quarantine_share on events_quarantine", "(threshold 0.1)",
                 f"{(records + 1) // 2} of {bad}'s {records} records were quarantined: share 0.5"):
        assert said in check["message"], (said, check["message"])
    assert steps["train-nightly"]["status"] == runlog.NOT_RUN and steps["score"]["status"] == runlog.NOT_RUN
    assert [r for r in reg.read_registry(wh) if r["data_date"] == bad] == []  # no model, no decision
    assert f"== night {bad}: FAILED" in out.stdout

    held_out = _run_cli(["--date", held.isoformat(), *replay["common"]], replay["env"], timeout=600)
    assert held_out.returncode == 3, (held_out.stdout + held_out.stderr)[-4000:]
    assert f"BLOCKED {held} by {bad} (check_data" in held_out.stdout
    assert f"night {held} is held: night {bad} failed at check_data" in held_out.stderr
    # every step of D+1 waits: each one's downstream in D includes record_run, which failed with the night
    assert f"TASK {held} ingest_events None" in held_out.stdout
    held_steps = runlog.latest_per_step(runlog.read_runs(wh), held)
    assert set(held_steps) == set(TASK_STEPS.values())
    assert all(r["status"] == runlog.NOT_RUN and r["message"] == f"held: night {bad} failed at check_data"
               for r in held_steps.values()), held_steps
    from attnmodel.delta_io import partition_row_counts

    assert str(held) not in {str(k) for k in partition_row_counts(f"{wh}/user_sequences", "as_of_date")}
