"""export_recommendations to files, a real Redis and a real PostgreSQL (started by infra/services.sh)."""

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.export_recommendations import ExportParams, PostgresTarget, RedisTarget, main, redis_keys, run
from jobs.score_users import ScoreParams
from jobs.score_users import run as score
from tests.jobs.scoring_world import D2, D3, last_json, train_model

TOP_N = 5


@pytest.fixture(scope="module")
def world(spark, scoring_world):
    """D2 and D3 scored with model A; model B (trained on D3) is there to make a second, different D3."""
    for day in (D2, D3):
        score(spark, ScoreParams(logical_date=day, model=scoring_world.model_a, warehouse=scoring_world.warehouse,
                                 top_n=TOP_N))
    train_model(scoring_world.warehouse, scoring_world.models, D3, "model-b")
    return scoring_world


def _partition(spark, world, day):
    return (spark.read.format("delta").load(f"{world.warehouse}/recommendations")
            .filter(F.col("as_of_date") == F.lit(day)))


def _expected_lists(spark, world, day) -> dict:
    out = {}
    for r in sorted(_partition(spark, world, day).collect(), key=lambda r: (r["user_id"], r["rank"])):
        d = out.setdefault(r["user_id"], {"items": [], "scores": [], "because": [], "model_version": r["model_version"],
                                          "as_of_date": day.isoformat()})
        d["items"].append(r["item_id"]), d["scores"].append(r["score"]), d["because"].append(r["because"])
    return out


def _params(world, day, tmp_path, *targets, **kw):
    return ExportParams(logical_date=day, targets=targets, warehouse=world.warehouse,
                        exports_root=str(tmp_path / "exports"), redis=RedisTarget.from_env(grace_seconds=600),
                        postgres=PostgresTarget.from_env(), **kw)


def test_files_export_is_complete_checksummed_and_replaced_on_rerun(spark, world, tmp_path):
    report = run(spark, _params(world, D3, tmp_path, "files"))
    out = Path(report.targets["files"]["path"])
    manifest = json.loads((out / "_MANIFEST.json").read_text())
    partition = _partition(spark, world, D3)
    assert manifest["rows"] == partition.count() == report.rows
    assert manifest["users"] == partition.select("user_id").distinct().count()
    for f in manifest["files"]:
        assert hashlib.sha256((out / f["path"]).read_bytes()).hexdigest() == f["sha256"]
        assert (out / f["path"]).stat().st_size == f["bytes"]
    assert {f["path"].split("/")[0] for f in manifest["files"]} == {"parquet", "jsonl"}
    assertDataFrameEqual(spark.read.parquet(str(out / "parquet")), partition)
    lines = [json.loads(line) for p in sorted((out / "jsonl").glob("*.json")) for line in p.read_text().splitlines()]
    expected = _expected_lists(spark, world, D3)
    assert len(lines) == len(expected) == manifest["users"]
    for line in lines:
        want = expected[line["user_id"]]
        assert line["items"] == want["items"] and line["model_version"] == want["model_version"]
        assert line["as_of_date"] == D3.isoformat() and line["because"] == want["because"]
        assert line["scores"] == pytest.approx(want["scores"], rel=1e-6)
    # rerun: D3's directory is replaced whole; nothing staged or trashed is left
    again = run(spark, _params(world, D3, tmp_path, "files"))
    manifest2 = json.loads((out / "_MANIFEST.json").read_text())
    assert manifest2["rows"] == manifest["rows"] and manifest2["checksum"] == again.targets["files"]["checksum"]
    assert sorted(f["path"] for f in manifest2["files"]) == sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith(("_", ".")))
    assertDataFrameEqual(spark.read.parquet(str(out / "parquet")), partition)
    base = out.parent
    assert not list((base / "_staging").glob("*")) and not list((base / "_trash").glob("*"))


def _redis():
    return RedisTarget.from_env().client()


def _read_live(client, prefix, users):
    """What a reader does: the pointer, then each user's key under it."""
    namespace = client.get(f"{prefix}:live")
    if namespace is None:
        return None, {}
    return namespace.decode(), {u: client.get(f"{namespace.decode()}:u:{u}") for u in users}


def test_redis_reader_never_sees_a_mixed_or_empty_list_and_backfills_stay_behind(spark, world, tmp_path, services):
    prefix = RedisTarget.prefix
    client = _redis()
    first = run(spark, _params(world, D3, tmp_path, "redis"))
    assert first.targets["redis"]["live"]
    expected_a = _expected_lists(spark, world, D3)
    users = sorted(expected_a)
    ns_a, got = _read_live(client, prefix, users)
    assert ns_a == first.targets["redis"]["namespace"]
    for u in users:
        v = json.loads(got[u])
        assert v["items"] == expected_a[u]["items"] and v["model_version"] == expected_a[u]["model_version"]

    # a different D3 (model B), exported while a reader polls the live lists
    score(spark, ScoreParams(logical_date=D3, model=str(world.models / "model-b"), warehouse=world.warehouse, top_n=TOP_N))
    expected_b = _expected_lists(spark, world, D3)
    assert any(expected_b[u]["items"] != expected_a[u]["items"] for u in users)
    seen, problems, stop = [], [], threading.Event()

    def poll():
        reader = _redis()
        while not stop.is_set():
            namespace, values = _read_live(reader, prefix, users)
            lists = {u: json.loads(v)["items"] if v else None for u, v in values.items()}
            if lists == {u: expected_a[u]["items"] for u in users}:
                seen.append("a")
            elif lists == {u: expected_b[u]["items"] for u in users}:
                seen.append("b")
            else:
                problems.append((namespace, lists))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        second = run(spark, _params(world, D3, tmp_path, "redis"))
        time.sleep(0.2)
    finally:
        stop.set()
        reader.join()
    assert problems == [] and seen[0] == "a" and seen[-1] == "b" and len(seen) > 5
    assert seen == sorted(seen)  # never back from b to a
    # the superseded namespace expires after the grace period, the live one never
    ns_b = second.targets["redis"]["namespace"]
    assert ns_a in second.targets["redis"]["expiring_namespaces"]
    assert 0 < client.ttl(f"{ns_a}:u:{users[0]}") <= 600 and client.ttl(f"{ns_b}:u:{users[0]}") == -1

    # a backfill of D2 writes D2's lists but leaves D3 live, unless asked explicitly
    back = run(spark, _params(world, D2, tmp_path, "redis"))
    assert not back.targets["redis"]["live"] and _read_live(client, prefix, users)[0] == ns_b
    ns_d2 = back.targets["redis"]["namespace"]
    assert client.hget(redis_keys(prefix)["dates"], D2.isoformat()).decode() == ns_d2
    assert client.ttl(f"{ns_d2}:u:u1") == -1  # a recent date's latest lists are kept
    forced = run(spark, _params(world, D2, tmp_path, "redis", force_live=True))
    assert forced.targets["redis"]["live"] and _read_live(client, prefix, users)[0] == forced.targets["redis"]["namespace"]
    run(spark, _params(world, D3, tmp_path, "redis"))
    assert client.get(f"{prefix}:live_date").decode() == D3.isoformat()


def test_redis_export_that_fails_mid_write_leaves_the_previous_lists_live(spark, world, tmp_path, services):
    prefix, client = RedisTarget.prefix, _redis()
    # long lists (about 5 KB a user), so that the namespace is large next to a connection's own memory
    score(spark, ScoreParams(logical_date=D3, model=world.model_a, warehouse=world.warehouse, top_n=100))
    live = run(spark, _params(world, D3, tmp_path, "redis")).targets["redis"]["namespace"]
    users = sorted(_expected_lists(spark, world, D3))
    before = _read_live(client, prefix, users)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(used + 300_000))  # room for some of the keys, not for the whole namespace
    try:
        with pytest.raises(Exception, match="OOM|maxmemory"):
            run(spark, _params(world, D3, tmp_path, "redis", run_token="killed"))
    finally:
        client.config_set("maxmemory", "0")
    half = f"{prefix}:{D3.isoformat()}:killed"
    assert 0 < len(list(client.scan_iter(match=f"{half}:u:*"))) < len(users)  # it died mid-write
    assert _read_live(client, prefix, users) == before and before[0] == live
    # the next export succeeds and sets the half-written namespace (and the one it replaces) to expire
    after = run(spark, _params(world, D3, tmp_path, "redis"))
    assert after.targets["redis"]["live"] and {half, live} <= set(after.targets["redis"]["expiring_namespaces"])
    assert 0 < client.ttl(next(client.scan_iter(match=f"{half}:u:*")))


def _pg_rows(conn, sql, *args):
    return conn.execute(sql, args).fetchall()


def test_postgres_keeps_one_copy_per_date_and_the_view_moves_forward_only(spark, world, tmp_path, services, capsys):
    target = PostgresTarget.from_env()
    partition = {(r["user_id"], r["rank"]): r["item_id"] for r in _partition(spark, world, D3).collect()}
    for _ in range(2):
        report = run(spark, _params(world, D3, tmp_path, "postgres"))
        assert report.targets["postgres"]["rows"] == len(partition) and report.targets["postgres"]["live"]
    with target.connect() as conn:
        rows = _pg_rows(conn, "SELECT user_id, rank, item_id FROM recommendations WHERE as_of_date = %s", D3)
        assert len(rows) == len(partition) and {(u, r): i for u, r, i in rows} == partition
        assert _pg_rows(conn, "SELECT count(*) FROM recommendations_current")[0][0] == len(partition)
    run(spark, _params(world, D2, tmp_path, "postgres"))  # a backfill: written, not made current
    with target.connect() as conn:
        assert {d for (d,) in _pg_rows(conn, "SELECT DISTINCT as_of_date FROM recommendations_current")} == {D3}
        assert _pg_rows(conn, "SELECT count(*) FROM recommendations WHERE as_of_date = %s", D2)[0][0] > 0
        assert _pg_rows(conn, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'recommendations_staging_%%'")[0][0] == 0
    # through the command line: the report names the server, never the password
    assert main(["--date", D2.isoformat(), "--to", "postgres", "--warehouse", world.warehouse, "--force-live"], spark=spark) == 0
    out = capsys.readouterr()
    assert services["ATTNREC_PG_PASSWORD"] not in out.out + out.err
    assert last_json(out.out)["targets"]["postgres"]["live"] is True
    with target.connect() as conn:
        assert {d for (d,) in _pg_rows(conn, "SELECT DISTINCT as_of_date FROM recommendations_current")} == {D2}
    run(spark, _params(world, D3, tmp_path, "postgres"))


def test_bad_input_is_one_line(spark, world, tmp_path, capsys):
    cases = [
        (["--date", "2020-01-01", "--to", "files"], "no recommendations for 2020-01-01"),
        (["--date", D3.isoformat(), "--to", "files,ftp"], "--to takes"),
        (["--date", D3.isoformat(), "--to", "redis", "--redis-port", "1"], "redis at 127.0.0.1:1 is not reachable"),
    ]
    for argv, message in cases:
        assert main([*argv, "--warehouse", world.warehouse, "--exports", str(tmp_path / "x")], spark=spark) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
