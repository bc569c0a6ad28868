import datetime as dt
import gzip
import json

import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from jobs import raw_contract as rc
from jobs.ingest_events import IngestParams, classify_records, main, run
from jobs.raw_files import LINES_SCHEMA
from tests.jobs.rawdata import event, write_partition

DAY = dt.date(2026, 1, 5)
INGESTED_AT = dt.datetime(2026, 1, 6, 3, 0, 0)

GOOD = [
    event("g1", "u1", "i1", "view", "2026-01-05T10:00:00+02:00"),
    event("g2", "u1", "i2", "click", 1767607200),  # epoch seconds: 2026-01-05T10:00:00Z
    event("g3", "u2", "i1", "purchase", 1767607200500, value=19.5),  # epoch milliseconds
    event(None, 7, 42, "Rating", "2026-01-05T23:59:59Z", value="4"),  # integer ids, mixed-case type, numeric string
    event("g5", "u3", "i3", "add_to_cart", "2026-01-03T00:00:00Z"),  # two days early: inside the lateness window
]
# one bad record of each kind: (reason, line)
BAD = {
    rc.INVALID_JSON: '{"user_id": "u1", "item_id": ',
    rc.MISSING_USER_ID: event("b2", user="  "),
    rc.MISSING_ITEM_ID: json.dumps({"event_id": "b3", "user_id": "u1", "event_type": "view", "timestamp": 1767607200}),
    rc.BAD_TIMESTAMP: event("b4", ts="2026-01-05 10:00"),  # no offset
    rc.OUT_OF_WINDOW: event("b5", ts="2026-01-01T12:00:00Z"),  # more than 2 days early
    rc.UNKNOWN_EVENT_TYPE: event("b6", etype="teleport"),
    rc.BAD_VALUE: event("b7", etype="rating", value="five stars"),
    rc.OVERSIZED_RECORD: event("b8", note="x" * (rc.DEFAULT_MAX_RECORD_BYTES + 10)),
}
DUPLICATE_LINE = GOOD[0]  # same event_id g1 again, later in the file
CORRUPT_GZ = gzip.compress(("\n".join([event("c1"), event("c2")]) + "\n").encode())[:-12]  # truncated


@pytest.fixture(scope="module")
def ingested(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    raw, warehouse = str(root / "raw"), str(root / "warehouse")
    lines = GOOD[:3] + list(BAD.values()) + [DUPLICATE_LINE]
    write_partition(raw, DAY, {
        "part-0.json": "\n".join(lines) + "\n",
        "part-1.json.gz": "\n".join(GOOD[3:]) + "\n",
        "part-2.json.gz": CORRUPT_GZ,
        "part-3.json": "",
    })
    params = IngestParams(logical_date=DAY, raw_root=raw, warehouse=warehouse, ingested_at=INGESTED_AT)
    report = run(spark, params)
    events = spark.read.format("delta").load(f"{warehouse}/events")
    quarantine = spark.read.format("delta").load(f"{warehouse}/events_quarantine")
    return dict(params=params, report=report, events=events, quarantine=quarantine, raw=raw, warehouse=warehouse)


def _reasons(quarantine):
    return {r["reason"]: r for r in quarantine.collect()}


def test_every_good_record_is_accepted_and_normalised(ingested, spark):
    got = ingested["events"].select("event_id", "user_id", "item_id", "event_type", "event_ts", "event_date", "value")
    hashed_id = got.filter(F.col("user_id") == "7").first()["event_id"]
    assert len(hashed_id) == 64  # no event_id in the raw record: sha256 of (user, item, type, time)
    expected = spark.createDataFrame(
        [
            ("g1", "u1", "i1", "view", dt.datetime(2026, 1, 5, 8, 0), DAY, None),
            ("g2", "u1", "i2", "click", dt.datetime(2026, 1, 5, 10, 0), DAY, None),
            ("g3", "u2", "i1", "purchase", dt.datetime(2026, 1, 5, 10, 0, 0, 500000), DAY, 19.5),
            (hashed_id, "7", "42", "rating", dt.datetime(2026, 1, 5, 23, 59, 59), DAY, 4.0),
            ("g5", "u3", "i3", "add_to_cart", dt.datetime(2026, 1, 3, 0, 0), DAY, None),
        ],
        "event_id string, user_id string, item_id string, event_type string, event_ts timestamp, event_date date, value double",
    )
    assertDataFrameEqual(got, expected)


@pytest.mark.parametrize("reason", sorted(BAD))
def test_bad_record_is_quarantined_with_its_reason(ingested, reason):
    rows = [r for r in ingested["quarantine"].collect() if r["reason"] == reason]
    assert len(rows) == 1, f"expected one {reason} row"
    row = rows[0]
    assert row["source_file"].endswith("part-0.json")
    assert row["line_number"] == 4 + list(BAD).index(reason)
    assert row["raw"] == BAD[reason][: rc.QUARANTINE_RAW_MAX_CHARS]
    assert row["detail"]
    assert row["event_date"] == DAY


def test_duplicate_is_kept_once_and_counted(ingested):
    assert ingested["events"].filter(F.col("event_id") == "g1").count() == 1
    dup = _reasons(ingested["quarantine"])[rc.DUPLICATE]
    assert dup["line_number"] == 4 + len(BAD)
    assert "part-0.json:1" in dup["detail"]  # names the copy that was kept


def test_corrupt_gzip_is_quarantined_whole_by_name(ingested):
    corrupt = _reasons(ingested["quarantine"])[rc.CORRUPT_FILE]
    assert corrupt["source_file"].endswith("part-2.json.gz")
    assert corrupt["line_number"] is None
    # nothing from the readable head of the damaged file was ingested
    assert ingested["events"].filter(F.col("source_file").endswith("part-2.json.gz")).count() == 0


def test_empty_file_is_counted_not_an_error(ingested):
    empty = _reasons(ingested["quarantine"])[rc.EMPTY_FILE]
    assert empty["source_file"].endswith("part-3.json")


def test_report_counts_match_tables(ingested):
    report = ingested["report"]
    assert report.files_read == 4
    assert report.accepted == len(GOOD) == ingested["events"].count()
    expected = {reason: 1 for reason in BAD} | {rc.DUPLICATE: 1, rc.CORRUPT_FILE: 1, rc.EMPTY_FILE: 1}
    assert report.quarantined == expected
    assert sum(report.quarantined.values()) == ingested["quarantine"].count()
    assert report.records_read == len(GOOD) + len(BAD) + 1  # every record is either accepted or quarantined
    events = ingested["events"]
    assert (report.users, report.items) == (4, 4)  # u1, u2, 7, u3 and i1, i2, 42, i3
    assert report.users == events.select("user_id").distinct().count()
    assert report.items == events.select("item_id").distinct().count()


def test_report_counts_users_and_items_of_kept_copies_only(spark, tmp_path):
    """A redelivered event_id with other content is a duplicate: its user and item are not among the accepted."""
    raw, warehouse = str(tmp_path / "raw"), str(tmp_path / "wh")
    write_partition(raw, DAY, {"a.json": "\n".join([
        event("e1", "u1", "i1"), event("e2", "u2", "i2"), event("e1", "u9", "i9"), event("e3", "u1", "i2", value="x"),
    ]) + "\n"})
    report = run(spark, IngestParams(logical_date=DAY, raw_root=raw, warehouse=warehouse, ingested_at=INGESTED_AT))
    assert (report.records_read, report.accepted) == (4, 2)
    assert report.quarantined == {rc.DUPLICATE: 1, rc.BAD_VALUE: 1}
    assert (report.users, report.items) == (2, 2)


def test_rerun_same_date_leaves_identical_tables(ingested, spark):
    before_events = ingested["events"].collect()
    before_quarantine = ingested["quarantine"].collect()
    for _ in range(2):
        run(spark, ingested["params"])
    events = spark.read.format("delta").load(f"{ingested['warehouse']}/events")
    quarantine = spark.read.format("delta").load(f"{ingested['warehouse']}/events_quarantine")
    assertDataFrameEqual(events, spark.createDataFrame(before_events, events.schema))
    assertDataFrameEqual(quarantine, spark.createDataFrame(before_quarantine, quarantine.schema))


def test_rerun_replaces_only_its_own_date(spark, tmp_path):
    raw, warehouse = str(tmp_path / "raw"), str(tmp_path / "wh")
    other = DAY + dt.timedelta(days=1)
    write_partition(raw, DAY, {"a.json": "\n".join(GOOD[:2]) + "\n"})
    write_partition(raw, other, {"a.json": event("n1", ts="2026-01-06T01:00:00Z") + "\n"})
    for day in (DAY, other):
        run(spark, IngestParams(logical_date=day, raw_root=raw, warehouse=warehouse, ingested_at=INGESTED_AT))
    # the upstream fixes day DAY: one event left; rerun replaces exactly that day's rows
    write_partition(raw, DAY, {"a.json": GOOD[1] + "\n"})
    run(spark, IngestParams(logical_date=DAY, raw_root=raw, warehouse=warehouse, ingested_at=INGESTED_AT))
    events = spark.read.format("delta").load(f"{warehouse}/events")
    assert sorted((r["event_date"], r["event_id"]) for r in events.collect()) == [(DAY, "g2"), (other, "n1")]


def test_missing_partition_is_a_clear_error_naming_the_path(spark, tmp_path, capsys):
    code = main(["--logical-date", "2026-02-01", "--raw", str(tmp_path / "raw"), "--warehouse", str(tmp_path / "wh")],
                spark=spark)
    assert code == 2
    err = capsys.readouterr().err
    assert "raw partition not found" in err and str(tmp_path / "raw") + "/events/dt=2026-02-01" in err


def test_allow_empty_records_an_empty_day(spark, tmp_path):
    raw, warehouse = str(tmp_path / "raw"), str(tmp_path / "wh")
    write_partition(raw, DAY, {"a.json": GOOD[0] + "\n"})
    run(spark, IngestParams(logical_date=DAY, raw_root=raw, warehouse=warehouse, ingested_at=INGESTED_AT))
    import shutil

    shutil.rmtree(f"{raw}/events/dt={DAY.isoformat()}")
    report = run(spark, IngestParams(logical_date=DAY, raw_root=raw, warehouse=warehouse, allow_empty=True,
                                     ingested_at=INGESTED_AT))
    assert report.accepted == 0 and report.files_read == 0
    assert spark.read.format("delta").load(f"{warehouse}/events").count() == 0


def test_csv_and_parquet_inputs(spark, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw, warehouse = str(tmp_path / "raw"), str(tmp_path / "wh")
    csv_text = "event_id,user_id,item_id,event_type,timestamp,value\n" \
               "c1,u1,i1,view,2026-01-05T10:00:00Z,\n" \
               "c2,u1,i2,rating,1767607200,3.5\n" \
               "c3,u1,oops\n"
    write_partition(raw, DAY, {"a.csv": csv_text})
    report = run(spark, IngestParams(logical_date=DAY, raw_root=raw, warehouse=warehouse, input_format="csv",
                                     ingested_at=INGESTED_AT))
    assert report.accepted == 2 and report.quarantined == {rc.INVALID_CSV: 1}
    path = write_partition(raw, DAY, {})
    pq.write_table(pa.table({"event_id": ["p1", "p2"], "user_id": ["u1", ""], "item_id": [1, 2],
                             "event_type": ["view", "view"], "timestamp": [1767607200, 1767607201]}), f"{path}/a.parquet")
    report = run(spark, IngestParams(logical_date=DAY, raw_root=raw, warehouse=warehouse, input_format="parquet",
                                     ingested_at=INGESTED_AT))
    assert report.accepted == 1 and report.quarantined == {rc.MISSING_USER_ID: 1}
    row = spark.read.format("delta").load(f"{warehouse}/events").first()
    assert (row["event_id"], row["item_id"], row["event_ts"]) == ("p1", "1", dt.datetime(2026, 1, 5, 10, 0))


def test_classify_records_is_a_pure_transform(spark):
    lines = spark.createDataFrame(
        [Row(source_file="f", file_index=0, line_number=1, raw=None, record_json=event("e", ts="2026-01-05T10:00:00-05:00"),
             reader_reason=None, reader_detail=None, file_status=None),
         Row(source_file="f", file_index=0, line_number=2, raw=None, record_json=event("e2", ts="1767607200.25"),
             reader_reason=None, reader_detail=None, file_status=None)],
        LINES_SCHEMA,
    )
    got = classify_records(lines, logical_date=DAY, event_types=rc.EVENT_TYPES, allowed_lateness_days=0)
    expected = spark.createDataFrame(
        [("e", dt.datetime(2026, 1, 5, 15, 0), None, None), ("e2", dt.datetime(2026, 1, 5, 10, 0, 0, 250000), None, None)],
        "event_id string, event_ts timestamp, reason string, detail string",
    )
    assertDataFrameEqual(got.select("event_id", "event_ts", "reason", "detail"), expected)
    late = classify_records(lines.limit(1).withColumn("record_json", F.lit(event("x", ts="2026-01-06T00:00:00Z"))),
                            logical_date=DAY, event_types=rc.EVENT_TYPES, allowed_lateness_days=0)
    assert late.first()["reason"] == rc.OUT_OF_WINDOW


@pytest.mark.parametrize(
    "text, reason",
    [
        ('{"user_id": "u1", "item_id": tru}', rc.INVALID_JSON),  # brace-shaped but malformed
        ('[{"user_id": "u1"}]', rc.INVALID_JSON),  # JSON, but not an object
        ('{"user_id": "u1"} trailing', rc.INVALID_JSON),
        ("", rc.INVALID_JSON),
        ("{}", rc.MISSING_USER_ID),  # a valid object with none of our fields
        (event("t1", ts="2026-01-05T10:00:00"), rc.BAD_TIMESTAMP),  # naive time: no offset
        (event("t2", ts="2026-01-05"), rc.BAD_TIMESTAMP),
        (event("t3", ts="NaN"), rc.BAD_TIMESTAMP),
        (event("t4", ts="2026-01-05T10:00:00+0530"), None),
        (event("t5", ts=1767607200.5), None),
        (event("t6", value="NaN"), rc.BAD_VALUE),
    ],
)
def test_classify_records_edge_cases(spark, text, reason):
    lines = spark.createDataFrame(
        [Row(source_file="f", file_index=0, line_number=1, raw=text, record_json=None,
             reader_reason=None, reader_detail=None, file_status=None)],
        LINES_SCHEMA,
    )
    got = classify_records(lines, logical_date=DAY, event_types=rc.EVENT_TYPES, allowed_lateness_days=2).first()
    assert got["reason"] == reason, got


def test_range_ingest_gives_the_rows_of_one_ingest_per_day(spark, tmp_path):
    """--from-date A --date B: one job, one transaction per table, and exactly the rows (and per-day counts) that
    ingesting A, A+1, ..., B one by one gives; a record repeated on two days is a duplicate on neither."""
    from jobs.generate_events import GenerateParams, generate

    raw = str(tmp_path / "raw")
    days = [dt.date(2026, 2, 1) + dt.timedelta(days=i) for i in range(3)]
    generate(spark, GenerateParams(out=raw, users=40, items=30, days=3, events=900, seed=3, start_date=days[0]))
    same_on_two_days = event("x1", "u9", "i9", "view", "2026-02-02T23:00:00Z")
    for day in days[1:]:
        write_partition_extra = rc.raw_partition_path(raw, day) + "/extra.json"
        with open(write_partition_extra, "w") as fh:
            fh.write(same_on_two_days + "\n")
    one_by_one, ranged = str(tmp_path / "wh_days"), str(tmp_path / "wh_range")
    day_reports = [run(spark, IngestParams(logical_date=d, raw_root=raw, warehouse=one_by_one, ingested_at=INGESTED_AT))
                   for d in days]
    report = run(spark, IngestParams(from_date=days[0], logical_date=days[-1], raw_root=raw, warehouse=ranged,
                                     ingested_at=INGESTED_AT))
    for table in ("events", "events_quarantine"):
        expected = spark.read.format("delta").load(f"{one_by_one}/{table}")
        actual = spark.read.format("delta").load(f"{ranged}/{table}")
        assert actual.count() == expected.count() > 0
        assertDataFrameEqual(actual, expected)
    for d, r in zip(days, day_reports):
        assert report.days[d.isoformat()] == {"files_read": r.files_read, "records_read": r.records_read,
                                              "accepted": r.accepted, "quarantined": r.quarantined}
    assert report.accepted == sum(r.accepted for r in day_reports)
    history = spark.sql(f"DESCRIBE HISTORY delta.`{ranged}/events`").collect()
    assert len(history) == 1  # one commit for the three days
    events = spark.read.format("delta").load(f"{ranged}/events")
    assert events.filter(F.col("event_id") == "x1").count() == 2  # once on each day


def test_range_ingest_names_every_missing_day(spark, tmp_path, capsys):
    raw = str(tmp_path / "raw")
    write_partition(raw, dt.date(2026, 2, 1), {"a.json": event("e1", ts="2026-02-01T10:00:00Z") + "\n"})
    code = main(["--from-date", "2026-02-01", "--date", "2026-02-03", "--raw", raw,
                 "--warehouse", str(tmp_path / "wh")], spark=spark)
    err = capsys.readouterr().err
    assert code == 2
    assert "dt=2026-02-02" in err and "dt=2026-02-03" in err and "--allow-empty" in err


ID_CASES = [  # (raw line, expected reason, then user_id and item_id when accepted, else the field the detail names)
    ('{"user_id": "u1", "item_id": 7, "event_type": "view", "timestamp": 1767607200}', None, "u1", "7"),
    ('{"user_id": 12, "item_id": 7.0, "event_type": "view", "timestamp": 1767607200}', None, "12", "7"),
    ('{"user_id": 1.2e1, "item_id": "7", "event_type": "view", "timestamp": 1767607200}', None, "12", "7"),
    ('{"user_id": "1.5", "item_id": "i.e", "event_type": "view", "timestamp": 1767607200}', None, "1.5", "i.e"),
    ('{"user_id": "{not json}", "item_id": "[x]", "event_type": "view", "timestamp": 1767607200}', None,
     "{not json}", "[x]"),  # strings that look like JSON are strings
    ('{"user_id": "true", "item_id": 7, "event_type": "view", "timestamp": 1767607200}', None, "true", "7"),
    ('{"user_id": {"id": "u1"}, "item_id": 7, "event_type": "view", "timestamp": 1767607200}', rc.NON_SCALAR_ID,
     "user_id is a JSON object", None),
    ('{"user_id": "u1", "item_id": [7, 8], "event_type": "view", "timestamp": 1767607200}', rc.NON_SCALAR_ID,
     "item_id is a JSON array", None),
    ('{"user_id": "u1", "item_id": {}, "event_type": "view", "timestamp": 1767607200}', rc.NON_SCALAR_ID,
     "item_id is a JSON object", None),
    ('{"user_id": true, "item_id": 7, "event_type": "view", "timestamp": 1767607200}', rc.BAD_ID,
     "user_id is the boolean true", None),
    ('{"user_id": "u1", "item_id": 7.5, "event_type": "view", "timestamp": 1767607200}', rc.BAD_ID,
     "item_id is the number 7.5, not an integer", None),
    ('{"user_id": "u\\u00001", "item_id": 7, "event_type": "view", "timestamp": 1767607200}', rc.BAD_ID,
     "user_id contains control characters", None),
    ('{"user_id": "u1", "item_id": "a\\tb", "event_type": "view", "timestamp": 1767607200}', rc.BAD_ID,
     "item_id contains control characters", None),
]


def test_ids_must_be_strings_or_integers(spark):
    lines = spark.createDataFrame(
        [Row(source_file="f", file_index=0, line_number=i, raw=text, record_json=None, reader_reason=None,
             reader_detail=None, file_status=None) for i, (text, *_) in enumerate(ID_CASES)], LINES_SCHEMA)
    got = {r["line_number"]: r for r in classify_records(lines, logical_date=DAY, event_types=rc.EVENT_TYPES,
                                                         allowed_lateness_days=2).collect()}
    for i, (text, reason, first, second) in enumerate(ID_CASES):
        row = got[i]
        assert row["reason"] == reason, (text, row["detail"])
        if reason is None:
            assert (row["user_id"], row["item_id"]) == (first, second), text
        else:
            assert row["detail"].startswith(first), (text, row["detail"])


def test_utf8_bom_is_dropped_and_utf16_files_are_quarantined_whole(spark, tmp_path):
    raw, warehouse = str(tmp_path / "raw"), str(tmp_path / "wh")
    first, second = event("m1", "u1", "i1"), event("m2", "u2", "i2")
    write_partition(raw, DAY, {
        "bom.json": rc.UTF8_BOM + (first + "\n" + second + "\n").encode(),
        "bom.json.gz": gzip.compress(rc.UTF8_BOM + (event("m3", "u3", "i3") + "\n").encode()),
        "utf16.json": (event("m4", "u4", "i4") + "\n").encode("utf-16"),  # Python writes the LE mark first
    })
    report = run(spark, IngestParams(logical_date=DAY, raw_root=raw, warehouse=warehouse, ingested_at=INGESTED_AT))
    assert report.accepted == 3 and report.quarantined == {rc.UNSUPPORTED_ENCODING: 1}
    events = spark.read.format("delta").load(f"{warehouse}/events")
    assert sorted(r["event_id"] for r in events.collect()) == ["m1", "m2", "m3"]
    row = spark.read.format("delta").load(f"{warehouse}/events_quarantine").first()
    assert row["source_file"].endswith("utf16.json") and "UTF-16 LE" in row["detail"] and row["line_number"] is None
    csv_text = "event_id,user_id,item_id,event_type,timestamp\nc1,u1,i1,view,2026-01-05T10:00:00Z\n"
    write_partition(raw, DAY, {"bom.csv": rc.UTF8_BOM + csv_text.encode()})
    report = run(spark, IngestParams(logical_date=DAY, raw_root=raw, warehouse=warehouse, input_format="csv",
                                     ingested_at=INGESTED_AT))
    assert report.accepted == 1 and report.quarantined == {}
