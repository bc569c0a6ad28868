import datetime as dt

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs.build_sequences import (
    SequenceParams,
    apply_min_counts,
    main,
    new_index_entries,
    run,
    sequences_from_events,
)
from jobs.ingest_events import IngestParams
from jobs.ingest_events import run as ingest
from tests.jobs.rawdata import event, write_partition

D1 = dt.date(2026, 1, 5)
D2 = dt.date(2026, 1, 6)
EV_SCHEMA = "event_id string, user_id string, item_id string, event_ts timestamp"
SEQ_SCHEMA = "user_id string, item_idx array<int>, event_ts array<timestamp>, length int, as_of_date date"


def ts(hour, minute=0):
    return dt.datetime(2026, 1, 5, hour, minute)


@pytest.fixture()
def index(spark):
    return spark.createDataFrame([("a", 1, D1), ("b", 2, D1), ("c", 3, D1), ("d", 4, D1)],
                                 "item_id string, item_idx int, first_seen_date date")


def test_sequences_are_time_ordered_with_event_id_tie_break_and_truncated(spark, index):
    events = spark.createDataFrame(
        [
            ("e3", "u1", "c", ts(12)),
            ("e1", "u1", "a", ts(10)),
            ("e2b", "u1", "d", ts(11)),  # same time as e2a: event_id breaks the tie
            ("e2a", "u1", "b", ts(11)),
            ("x1", "u2", "d", ts(9)),
        ],
        EV_SCHEMA,
    )
    got = sequences_from_events(events, index, logical_date=D1, max_len=3, dedupe_consecutive=False)
    expected = spark.createDataFrame(
        [("u1", [2, 4, 3], [ts(11), ts(11), ts(12)], 3, D1), ("u2", [4], [ts(9)], 1, D1)], SEQ_SCHEMA
    )
    assertDataFrameEqual(got, expected)


def test_redelivered_event_counts_once_and_consecutive_repeats_can_be_dropped(spark, index):
    events = spark.createDataFrame(
        [("e1", "u1", "a", ts(10)), ("e1", "u1", "a", ts(10)), ("e2", "u1", "a", ts(11)), ("e3", "u1", "b", ts(12)),
         ("e1", "u1", "c", ts(13)),  # a later redelivery of e1 with other content: the earliest copy wins
         ("e0", "u1", "d", ts(9)), ("e0", "u1", "b", ts(9))],  # same event, same time: the lower item_idx wins
        EV_SCHEMA,
    )
    keep = sequences_from_events(events, index, logical_date=D1, max_len=10, dedupe_consecutive=False)
    assert keep.first()["item_idx"] == [2, 1, 1, 2]
    drop = sequences_from_events(events, index, logical_date=D1, max_len=10, dedupe_consecutive=True)
    assert drop.first()["item_idx"] == [2, 1, 2] and drop.first()["length"] == 3


def test_min_counts_drop_rare_items_then_short_users(spark):
    events = spark.createDataFrame(
        [("1", "u1", "a", ts(1)), ("2", "u1", "b", ts(2)), ("3", "u2", "a", ts(3)), ("4", "u2", "a", ts(4)),
         ("5", "u3", "a", ts(5))],
        EV_SCHEMA,
    )
    got = apply_min_counts(events, min_user_events=2, min_item_events=2)
    # b has 1 event -> gone; then u1 has 1 event left and u3 has 1 -> gone
    assert sorted(r["event_id"] for r in got.collect()) == ["3", "4"]


def test_new_items_are_appended_after_the_current_maximum(spark, index):
    events = spark.createDataFrame([("1", "u", "b", ts(1)), ("2", "u", "f", ts(2)), ("3", "u", "e", ts(3))], EV_SCHEMA)
    got = new_index_entries(events, index, logical_date=D2)
    expected = spark.createDataFrame([("e", 5, D2), ("f", 6, D2)], "item_id string, item_idx int, first_seen_date date")
    assertDataFrameEqual(got, expected)


def _ingest_day(spark, raw, warehouse, day, lines):
    write_partition(raw, day, {"a.json": "\n".join(lines) + "\n"})
    ingest(spark, IngestParams(logical_date=day, raw_root=raw, warehouse=warehouse, ingested_at=dt.datetime(2026, 2, 1)))


def _table(spark, warehouse, name):
    return spark.read.format("delta").load(f"{warehouse}/{name}")


def test_index_is_stable_across_dates_and_reruns_are_identical(spark, tmp_path):
    raw, warehouse = str(tmp_path / "raw"), str(tmp_path / "wh")
    _ingest_day(spark, raw, warehouse, D1, [
        event("1", "u1", "m", ts="2026-01-05T10:00:00Z"),
        event("2", "u1", "k", ts="2026-01-05T11:00:00Z"),
        event("3", "u2", "k", ts="2026-01-05T12:00:00Z"),
    ])
    hash_aggregate_setting = spark.conf.get("spark.sql.execution.useObjectHashAggregateExec")
    report1 = run(spark, SequenceParams(logical_date=D1, warehouse=warehouse))
    # the job tunes one SQL setting for its own write and hands the session back as it found it
    assert spark.conf.get("spark.sql.execution.useObjectHashAggregateExec") == hash_aggregate_setting
    assert (report1.users, report1.new_items, report1.items_indexed) == (2, 2, 2)
    index1 = {r["item_id"]: r["item_idx"] for r in _table(spark, warehouse, "item_index").collect()}
    assert sorted(index1.values()) == [1, 2]

    _ingest_day(spark, raw, warehouse, D2, [
        event("4", "u1", "a", ts="2026-01-06T09:00:00Z"),  # 'a' sorts before the old items: must still get a new index
        event("5", "u3", "z", ts="2026-01-06T10:00:00Z"),
        event("6", "u2", "m", ts="2026-01-06T11:00:00Z"),
    ])
    report2 = run(spark, SequenceParams(logical_date=D2, warehouse=warehouse))
    assert report2.new_items == 2
    index2 = {r["item_id"]: r["item_idx"] for r in _table(spark, warehouse, "item_index").collect()}
    assert {k: index2[k] for k in index1} == index1  # never renumbered
    assert sorted([index2["a"], index2["z"]]) == [3, 4]

    snap = {r["user_id"]: r["item_idx"] for r in _table(spark, warehouse, "user_sequences")
            .filter(F.col("as_of_date") == D2).collect()}
    assert snap == {"u1": [index2["m"], index2["k"], index2["a"]], "u2": [index2["k"], index2["m"]], "u3": [index2["z"]]}

    before = _table(spark, warehouse, "user_sequences").collect()
    index_before = _table(spark, warehouse, "item_index").collect()
    rerun = run(spark, SequenceParams(logical_date=D2, warehouse=warehouse))
    assert rerun.new_items == 0
    seqs = _table(spark, warehouse, "user_sequences")
    assertDataFrameEqual(seqs, spark.createDataFrame(before, seqs.schema))
    idx = _table(spark, warehouse, "item_index")
    assertDataFrameEqual(idx, spark.createDataFrame(index_before, idx.schema))
    # the D1 snapshot is still there, unchanged
    assert seqs.filter(F.col("as_of_date") == D1).count() == 2


def test_event_types_and_lookback_window(spark, tmp_path):
    raw, warehouse = str(tmp_path / "raw"), str(tmp_path / "wh")
    _ingest_day(spark, raw, warehouse, D1, [event("1", "u1", "old", ts="2026-01-05T10:00:00Z")])
    _ingest_day(spark, raw, warehouse, D2, [
        event("2", "u1", "new", ts="2026-01-06T10:00:00Z"),
        event("3", "u1", "bought", "purchase", ts="2026-01-06T11:00:00Z"),
    ])
    run(spark, SequenceParams(logical_date=D2, warehouse=warehouse, lookback_days=1, event_types=("view",)))
    index = {r["item_id"]: r["item_idx"] for r in _table(spark, warehouse, "item_index").collect()}
    row = _table(spark, warehouse, "user_sequences").first()
    assert row["item_idx"] == [index["new"]] and "old" not in index and "bought" not in index


def test_missing_events_table_is_a_clear_error(spark, tmp_path, capsys):
    code = main(["--logical-date", "2026-01-05", "--warehouse", str(tmp_path / "nothing")], spark=spark)
    assert code == 2
    assert "events table not found" in capsys.readouterr().err


def test_parameters_are_validated():
    from jobs.build_sequences import build_parser, params_from_args
    from jobs.common import JobInputError

    args = build_parser().parse_args(["--date", "2026-01-05", "--max-len", "50", "--event-types", "View, click"])
    params = params_from_args(args)
    assert params.max_len == 50 and params.event_types == ("view", "click") and params.logical_date == D1
    with pytest.raises(JobInputError):
        SequenceParams(logical_date=D1, max_len=0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--date", "05/01/2026"])
