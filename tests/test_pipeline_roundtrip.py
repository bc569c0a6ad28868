"""200 users through generate -> ingest (3 days, one ranged job) -> sequences, driven through the attnrec CLI."""

import datetime as dt
import json

import pytest
from pyspark.sql import functions as F

from jobs import generate_events as gen
from jobs.cli import main as attnrec

START = dt.date(2026, 3, 1)
DAYS = 3
EVENTS = 6000
USERS = 200


@pytest.mark.slow
def test_generate_ingest_sequences_round_trip(spark, tmp_path, capsys):
    raw, warehouse = str(tmp_path / "raw"), str(tmp_path / "wh")
    end = START + dt.timedelta(days=DAYS - 1)
    assert attnrec(["generate", "--out", raw, "--users", str(USERS), "--items", "150", "--days", str(DAYS),
                    "--events", str(EVENTS), "--seed", "3", "--start-date", START.isoformat()]) == 0
    assert attnrec(["ingest", "--from-date", START.isoformat(), "--date", end.isoformat(), "--raw", raw,
                    "--warehouse", warehouse]) == 0
    assert attnrec(["sequences", "--date", end.isoformat(), "--warehouse", warehouse, "--max-len", "1000"]) == 0
    out = capsys.readouterr().out
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    (ingest,) = [r for r in reports if r["step"] == "ingest"]
    ingests = list(ingest["days"].values())
    assert list(ingest["days"]) == [(START + dt.timedelta(days=i)).isoformat() for i in range(DAYS)]

    # every generated good event is accepted exactly once, every planted bad record is quarantined by kind
    assert sum(r["accepted"] for r in ingests) == EVENTS
    quarantined: dict[str, int] = {}
    for r in ingests:
        for reason, n in r["quarantined"].items():
            quarantined[reason] = quarantined.get(reason, 0) + n
    assert quarantined == {k: v for k, v in gen.planted_bad_counts(EVENTS, gen.DEFAULT_BAD_SHARE).items() if v}

    events = spark.read.format("delta").load(f"{warehouse}/events")
    assert events.count() == EVENTS
    assert events.select("event_id").distinct().count() == EVENTS

    seqs = spark.read.format("delta").load(f"{warehouse}/user_sequences").filter(F.col("as_of_date") == end)
    index = spark.read.format("delta").load(f"{warehouse}/item_index")
    rows = seqs.collect()
    assert len(rows) == events.select("user_id").distinct().count() == USERS
    assert sum(r["length"] for r in rows) == EVENTS
    n_items = index.count()
    assert n_items == events.select("item_id").distinct().count()
    assert sorted(r["item_idx"] for r in index.collect()) == list(range(1, n_items + 1))
    for r in rows:
        assert len(r["item_idx"]) == len(r["event_ts"]) == r["length"]
        assert all(1 <= i <= n_items for i in r["item_idx"])
        assert r["event_ts"] == sorted(r["event_ts"])
