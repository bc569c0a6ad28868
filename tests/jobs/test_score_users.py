"""score_users on a real local Spark + Delta warehouse, with a tiny model trained in the test."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from attnmodel.artifact import load_artifact
from attnmodel.inference import pack_ragged, recommend
from jobs.score_users import ScoreParams, main, run
from jobs.warehouse import latest_version
from tests.jobs.scoring_world import D1, D2, D3, NEW_ITEMS, last_json, train_model

ROOT = Path(__file__).resolve().parents[2]
TOP_N = 10


@pytest.fixture(scope="module")
def world(scoring_world):
    return scoring_world


@pytest.fixture(scope="module")
def scored(spark, world):
    """D3 scored with model A (trained on D2): an older model on a newer snapshot."""
    report = run(spark, ScoreParams(logical_date=D3, model=world.model_a, warehouse=world.warehouse, top_n=TOP_N))
    return report, _partition(spark, world, D3)


def _partition(spark, world, day):
    return (spark.read.format("delta").load(f"{world.warehouse}/recommendations")
            .filter(F.col("as_of_date") == F.lit(day)).drop("as_of_date"))


def _table(spark, world, name):
    return spark.read.format("delta").load(f"{world.warehouse}/{name}")


def _by_user(rows):
    out = {}
    for r in sorted(rows, key=lambda r: (r["user_id"], r["rank"])):
        out.setdefault(r["user_id"], []).append(r)
    return out


def test_every_user_gets_exactly_n_valid_rows(spark, world, scored):
    report, recs = scored
    index = {r["item_id"]: (r["item_idx"], r["first_seen_date"]) for r in _table(spark, world, "item_index").collect()}
    seen = {}
    for r in _table(spark, world, "events").filter(F.col("event_date") <= D3).select("user_id", "item_id").collect():
        seen.setdefault(r["user_id"], set()).add(r["item_id"])
    snapshot_users = {r["user_id"] for r in _table(spark, world, "user_sequences").filter(F.col("as_of_date") == D3).collect()}
    n_items_a = load_artifact(world.model_a)[0].cfg.n_items
    rows = _by_user(recs.collect())
    assert set(rows) == snapshot_users and report.users == len(snapshot_users) and report.rows == TOP_N * len(rows)
    for user, mine in rows.items():
        assert [r["rank"] for r in mine] == list(range(1, TOP_N + 1))
        items = [r["item_id"] for r in mine]
        assert len(set(items)) == TOP_N and None not in items  # no duplicate, no padding
        assert all(i in index for i in items)  # no item unknown to item_index
        assert not set(items) & seen[user]  # --exclude-seen all: nothing seen on or before D3
        scores = [r["score"] for r in mine]
        assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))
        if mine[0]["model_version"] == "model-a":
            assert all(index[i][0] <= n_items_a for i in items)  # never an item the model does not know
            assert all(r["because"] and set(r["because"]) <= seen[user] for r in mine)


def test_ids_and_order_equal_calling_attnmodel_directly(spark, world, scored):
    _, recs = scored
    model, meta = load_artifact(world.model_a)
    n_items = model.cfg.n_items
    index = {r["item_id"]: r["item_idx"] for r in _table(spark, world, "item_index").collect()}
    ids = {v: k for k, v in index.items()}
    seqs = {r["user_id"]: [i for i in r["item_idx"] if i <= n_items]
            for r in _table(spark, world, "user_sequences").filter(F.col("as_of_date") == D3).collect()}
    seen = {}
    for r in _table(spark, world, "events").select("user_id", "item_id").collect():
        seen.setdefault(r["user_id"], set()).add(index[r["item_id"]])
    users = sorted(u for u, s in seqs.items() if s)
    direct = recommend(model, pack_ragged([np.array(seqs[u]) for u in users]), k=TOP_N,
                       exclude=[np.array(sorted(seen[u])) for u in users])
    rows = _by_user(recs.collect())
    for n, user in enumerate(users):
        got = rows[user]
        assert {r["model_version"] for r in got} == {meta["model_version"]}
        np.testing.assert_allclose([r["score"] for r in got], direct["score"][n], rtol=1e-5, atol=1e-6)
        want = [ids[i] for i in direct["item_idx"][n]]
        mismatched = [k for k, (a, b) in enumerate(zip([r["item_id"] for r in got], want)) if a != b]
        # equal up to ties in the last float bits: a swapped pair must have (almost) equal scores
        assert all(abs(direct["score"][n][k] - direct["score"][n][k ^ 1]) < 1e-5 for k in mismatched), (user, mismatched)


def test_cold_user_gets_the_popularity_list_without_seen_items(spark, world, scored):
    report, recs = scored
    cold = sorted(recs.filter(F.col("user_id") == "cold1").collect(), key=lambda r: r["rank"])
    assert report.cold_users == 1 and len(cold) == TOP_N
    assert {r["model_version"] for r in cold} == {f"popularity-{D3}"}
    items = [r["item_id"] for r in cold]
    assert not {"new-1", "new-2"} & set(items) and all(r["because"] == [] for r in cold)
    # most interacted items of the window first (the window holds every day here), counts as scores
    counts = {r["item_id"]: r["n"] for r in _table(spark, world, "events").groupBy("item_id").agg(F.count("*").alias("n")).collect()}
    assert [r["score"] for r in cold] == [float(counts[i]) for i in items]
    best_left = max(n for i, n in counts.items() if i not in ("new-1", "new-2"))
    assert cold[0]["score"] == best_left


def test_rerun_leaves_the_same_partition(spark, world, scored):
    _, before = scored
    rows_before = sorted(tuple(r) for r in before.collect())
    report = run(spark, ScoreParams(logical_date=D3, model=world.model_a, warehouse=world.warehouse, top_n=TOP_N))
    assert sorted(tuple(r) for r in _partition(spark, world, D3).collect()) == rows_before
    assert report.rows == len(rows_before)


def test_backfill_never_recommends_later_items_and_serves_listed_users(spark, world, scored):
    users = f"{world.root}/users_to_serve"
    spark.createDataFrame([("u1",), ("nobody",)], "user_id string").write.format("delta").mode("overwrite").save(users)
    blocklist = f"{world.root}/blocklist"
    top_item = scored[1].filter(F.col("user_id") == "cold1").filter(F.col("rank") == 1).first()["item_id"]
    spark.createDataFrame([(top_item,), ("4",)], "item_id string").write.format("delta").mode("overwrite").save(blocklist)
    report = run(spark, ScoreParams(logical_date=D2, model=world.model_a, warehouse=world.warehouse, top_n=TOP_N,
                                    users=users, blocklist=blocklist, explain=False))
    recs = _partition(spark, world, D2).collect()
    items = {r["item_id"] for r in recs}
    assert not items & set(NEW_ITEMS)  # indexed on D3: unknown on D2, even to the popularity list
    assert not items & {top_item, "4"}
    nobody = sorted((r for r in recs if r["user_id"] == "nobody"), key=lambda r: r["rank"])
    assert len(nobody) == TOP_N and nobody[0]["model_version"] == f"popularity-{D2}"
    assert all(r["because"] is None for r in recs)  # --no-explain
    assert report.users == report.snapshot["users"] + 1
    # D3's partition is untouched by D2's run
    assert _partition(spark, world, D3).count() == scored[0].rows


def test_exclude_seen_window_and_none(spark, world, scored):
    seqs = {r["user_id"]: set(r["item_idx"]) for r in _table(spark, world, "user_sequences").filter(F.col("as_of_date") == D3).collect()}
    index = {r["item_id"]: r["item_idx"] for r in _table(spark, world, "item_index").collect()}
    for mode in ("window", "none"):
        run(spark, ScoreParams(logical_date=D3, model=world.model_a, warehouse=world.warehouse, top_n=20,
                               exclude_seen=mode, explain=False))
        rows = _by_user(_partition(spark, world, D3).collect())
        leaked = sum(len({index[r["item_id"]] for r in mine} & seqs[u]) for u, mine in rows.items())
        assert all(len(mine) == 20 for mine in rows.values())
        assert (leaked == 0) if mode == "window" else (leaked > 0)
    run(spark, ScoreParams(logical_date=D3, model=world.model_a, warehouse=world.warehouse, top_n=TOP_N))  # restore


def test_bad_input_is_one_line_and_writes_nothing(spark, world, scored, tmp_path, capsys):
    model_b = train_model(world.warehouse, world.models, D3, "model-b")  # item_index of D3: newer than D2's
    from jobs.build_sequences import SequenceParams
    from jobs.build_sequences import run as build_sequences

    empty_day = D1 - dt.timedelta(days=1)
    build_sequences(spark, SequenceParams(logical_date=empty_day, warehouse=world.warehouse))
    path = f"{world.warehouse}/recommendations"
    version = latest_version(spark, path)
    capsys.readouterr()  # training's own output
    cases = [
        (D3, str(tmp_path / "no-such-model"), "is not a model artefact"),
        (D2, model_b, "newer than version"),
        (D3 + dt.timedelta(days=5), world.model_a, f"no user_sequences snapshot for {D3 + dt.timedelta(days=5)}"),
        (empty_day, world.model_a, "is empty"),
    ]
    for day, model, message in cases:
        assert main(["--date", day.isoformat(), "--model", model, "--warehouse", world.warehouse], spark=spark) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert latest_version(spark, path) == version


@pytest.mark.slow
def test_spark_submit_master_wins_and_remote_model_path_works(spark, world, scored):
    env = {**os.environ, "SPARK_MASTER": "local[1]", "ATTNREC_SPARK_MASTER": "local[2]", "PYTHON": sys.executable}
    out = subprocess.run(["infra/spark-submit.sh", "jobs/score_users.py", "--logical-date", D3.isoformat(),
                          "--model", f"file://{world.model_a}", "--warehouse", world.warehouse, "--top-n", str(TOP_N)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = last_json(out.stdout)
    assert report["spark_master"] == "local[1]" and report["users"] == scored[0].users
    assert json.loads(json.dumps(report["snapshot"]))["as_of_date"] == D3.isoformat()
