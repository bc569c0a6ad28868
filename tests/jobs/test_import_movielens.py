"""attnrec import-movielens: formats, dates, event ids in file order, per-user order of pairs files."""

from __future__ import annotations

import collections
import datetime as dt
import json
from pathlib import Path

import pytest

from jobs import raw_contract as rc
from jobs.import_movielens import (
    PAIRS,
    RATINGS_DAT,
    UDATA,
    ImportParams,
    detect_format,
    import_movielens,
    main,
    parse_args,
)

pytestmark = pytest.mark.spark

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
UDATA_REAL = DATA / "ml-100k" / "u.data"
ML1M_REAL = DATA / "ml-1m" / "ml-1m.txt"


def _read_raw(out: Path) -> dict[str, list[dict]]:
    by_day = {}
    for day_dir in sorted((out / rc.RAW_EVENTS_DIR).glob("dt=*")):
        recs = []
        for f in sorted(day_dir.glob("part-*.json")):
            recs += [json.loads(line) for line in f.read_text().splitlines()]
        by_day[day_dir.name.removeprefix("dt=")] = recs
    return by_day


def _utc_day(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).date().isoformat()


def _per_user_order(by_day: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Each user's records in the order ingest uses: event timestamp, then event_id."""
    users = collections.defaultdict(list)
    for recs in by_day.values():
        for r in recs:
            users[r["user_id"]].append(r)
    return {u: sorted(v, key=lambda r: (r["timestamp"], r["event_id"])) for u, v in users.items()}


def test_detect_format():
    assert detect_format("/x/u.data", []) == UDATA
    assert detect_format("/x/ratings.dat", []) == RATINGS_DAT
    assert detect_format("/x/ml-1m.txt", ["1 1", "1 2"]) == PAIRS
    assert detect_format("/x/file", ["", "1::2::5::978300760"]) == RATINGS_DAT
    assert detect_format("/x/file", ["196\t242\t3\t881250949"]) == UDATA
    with pytest.raises(ValueError):
        detect_format("/x/file", ["a,b,c"])


def test_parse_args():
    p = parse_args(["in.txt", "--out", "r", "--start-date", "2001-02-03", "--days", "5"])
    assert p == ImportParams(path="in.txt", out="r", start_date=dt.date(2001, 2, 3), days=5)


def test_udata_counts_dates_and_tie_order(spark, tmp_path):
    rows = [
        (7, 10, 4, 881250949),
        (7, 11, 3, 881250949),  # same second as the line above: must stay after it
        (7, 12, 5, 881250000),  # earlier in time, later in the file
        (8, 10, 1, 881337600),  # 1997-12-05T00:00:00Z exactly
        (8, 13, 2, 881337599),  # one second earlier: the day before
    ]
    src = tmp_path / "u.data"
    src.write_text("\n".join("\t".join(map(str, r)) for r in rows) + "\nbroken line\n")
    report = import_movielens(spark, ImportParams(path=str(src), out=str(tmp_path / "raw")))
    assert (report.format, report.lines_read, report.events_written, report.skipped_lines) == (UDATA, 6, 5, 1)
    assert (report.users, report.items) == (2, 4)
    by_day = _read_raw(tmp_path / "raw")
    assert report.events_per_day == {d: len(v) for d, v in by_day.items()}
    for day, recs in by_day.items():
        assert all(_utc_day(r["timestamp"]) == day for r in recs)
        assert all(r["event_type"] == "rating" for r in recs)
    assert _utc_day(881337600) in by_day and _utc_day(881337599) in by_day
    order = _per_user_order(by_day)
    assert [(r["item_id"], r["value"]) for r in order["7"]] == [("12", 5.0), ("10", 4.0), ("11", 3.0)]
    assert [r["event_id"] for r in order["7"]] == ["ml-7-0000000", "ml-7-0000001", "ml-7-0000002"]
    assert [r["item_id"] for r in order["8"]] == ["13", "10"]


def test_ratings_dat(spark, tmp_path):
    src = tmp_path / "ratings.dat"
    src.write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1357::5::978298709\n")
    report = import_movielens(spark, ImportParams(path=str(src), out=str(tmp_path / "raw")))
    assert (report.format, report.events_written, report.users) == (RATINGS_DAT, 3, 2)
    recs = [r for v in _read_raw(tmp_path / "raw").values() for r in v]
    assert sorted((r["user_id"], r["item_id"], r["value"], r["timestamp"]) for r in recs) == [
        ("1", "1193", 5.0, 978300760), ("1", "661", 3.0, 978302109), ("2", "1357", 5.0, 978298709)
    ]


def test_pairs_keep_per_user_order_over_chosen_days(spark, tmp_path):
    # users interleaved; user 1 has many lines, user 3 one line; item ids not sorted
    lines = [(1, 50), (2, 9), (1, 40), (1, 60), (3, 1), (2, 8)] + [(1, 100 + i) for i in range(40)]
    src = tmp_path / "pairs.txt"
    src.write_text("".join(f"{u} {i}\n" for u, i in lines))
    start, days = dt.date(2001, 5, 1), 3
    params = ImportParams(path=str(src), out=str(tmp_path / "raw"), start_date=start, days=days)
    report = import_movielens(spark, params)
    assert (report.format, report.events_written, report.users) == (PAIRS, len(lines), 3)
    by_day = _read_raw(tmp_path / "raw")
    assert set(by_day) <= {(start + dt.timedelta(d)).isoformat() for d in range(days)}
    order = _per_user_order(by_day)
    for user in ("1", "2", "3"):
        expected = [str(i) for u, i in lines if str(u) == user]
        got = order[user]
        assert [r["item_id"] for r in got] == expected
        ts = [r["timestamp"] for r in got]
        assert all(a < b for a, b in zip(ts, ts[1:]))  # strictly increasing
        assert [r["event_id"] for r in got] == [f"ml-{user}-{k:07d}" for k in range(len(expected))]
        assert all(r["event_type"] == "view" and "value" not in r for r in got)
        # the last event of every user lies on the last day
        assert _utc_day(ts[-1]) == (start + dt.timedelta(days - 1)).isoformat()


def test_missing_file_is_a_clear_error(spark, tmp_path, capsys):
    assert main([str(tmp_path / "nope.txt"), "--out", str(tmp_path / "raw")]) == 2
    assert "nope.txt" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not UDATA_REAL.exists(), reason="ml-100k not available")
def test_real_udata(spark, tmp_path):
    report = import_movielens(spark, ImportParams(path=str(UDATA_REAL), out=str(tmp_path / "raw")))
    assert (report.events_written, report.users, report.items, report.skipped_lines) == (100_000, 943, 1682, 0)
    days = sorted(report.events_per_day)
    assert (days[0], days[-1]) == ("1997-09-20", "1998-04-22")
    assert sorted(p.name for p in (tmp_path / "raw" / "events").glob("dt=*")) == [f"dt={d}" for d in days]


@pytest.mark.slow
@pytest.mark.skipif(not ML1M_REAL.exists(), reason="ml-1m not available")
def test_real_ml1m_preserves_order_and_counts(spark, tmp_path):
    report = import_movielens(spark, ImportParams(path=str(ML1M_REAL), out=str(tmp_path / "raw")))
    assert (report.format, report.events_written, report.users, report.items) == (PAIRS, 999_611, 6040, 3416)
    assert len(report.events_per_day) == 30
    expected = collections.defaultdict(list)
    for line in ML1M_REAL.read_text().splitlines():
        u, i = line.split()
        expected[u].append(i)
    order = _per_user_order(_read_raw(tmp_path / "raw"))
    assert {u: [r["item_id"] for r in v] for u, v in order.items()} == expected
