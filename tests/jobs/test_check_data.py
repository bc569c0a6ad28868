"""check_data: each check's rule (pure), and the job on a real warehouse where a day has half its records bad."""

from __future__ import annotations

import datetime as dt

import pytest

from jobs.check_data import CheckThresholds, DayFigures, evaluate

D = dt.date(2026, 2, 20)
T = CheckThresholds()


def _history(accepted=(1000,) * 14, new_items=20, new_users=30):
    return [DayFigures(D - dt.timedelta(days=len(accepted) - i), n, 0, new_items, new_users)
            for i, n in enumerate(accepted)]


def _by_name(results):
    return {r.check: r for r in results}


def test_a_normal_day_passes_every_check():
    got = _by_name(evaluate(_history() + [DayFigures(D, 900, 9, 25, 35)], D, T))
    assert set(got) == {"quarantine_share", "volume"} and all(r.passed for r in got.values())


def test_half_the_records_bad_fails_and_names_table_figure_threshold():
    r = _by_name(evaluate(_history() + [DayFigures(D, 500, 500, 20, 30)], D, T))["quarantine_share"]
    assert not r.passed and r.table == "events_quarantine" and r.figure == 0.5 and r.threshold == 0.10
    assert "share 0.500" in r.message and "threshold 0.1" in r.message


def test_quiet_day_at_04_of_the_median_passes_and_at_01_fails():
    assert _by_name(evaluate(_history() + [DayFigures(D, 400, 0, 5, 5)], D, T))["volume"].passed
    r = _by_name(evaluate(_history() + [DayFigures(D, 100, 0, 5, 5)], D, T))["volume"]
    assert not r.passed and r.table == "events" and r.figure == 0.1 and r.threshold == 0.2


def test_volume_is_not_judged_without_enough_history():
    got = _by_name(evaluate(_history(accepted=(1000, 1000)) + [DayFigures(D, 10, 0, 1, 1)], D, T))
    assert "volume" not in got


def test_empty_days_pass_up_to_the_limit_in_a_row():
    two_empty = _history(accepted=(1000,) * 12 + (0,)) + [DayFigures(D, 0, 0, 0, 0)]
    assert _by_name(evaluate(two_empty, D, T))["empty_day"].passed
    three_empty = _history(accepted=(1000,) * 11 + (0, 0)) + [DayFigures(D, 0, 0, 0, 0)]
    r = _by_name(evaluate(three_empty, D, T))["empty_day"]
    assert not r.passed and r.figure == 3 and r.threshold == 2
    strict = CheckThresholds(max_empty_days_in_a_row=0)
    assert not _by_name(evaluate(_history() + [DayFigures(D, 0, 0, 0, 0)], D, strict))["empty_day"].passed


def test_a_flood_of_new_items_or_users_fails():
    got = _by_name(evaluate(_history() + [DayFigures(D, 1000, 0, 5000, 30)], D, T))
    assert not got["new_items"].passed and got["new_items"].table == "item_index" and got["new_items"].figure == 250
    assert "new_users" not in got  # 30 new users: below min_new_for_jump, not judged
    got = _by_name(evaluate(_history(new_users=40) + [DayFigures(D, 1000, 0, 20, 350)], D, T))
    assert got["new_users"].passed  # 8.75 x the median: under the 10 x threshold


@pytest.mark.slow
def test_job_fails_loudly_on_a_day_with_half_its_records_bad(spark, tmp_path, capsys):
    from jobs.check_data import main
    from jobs.ingest_events import IngestParams
    from jobs.ingest_events import run as ingest
    from tests.jobs.rawdata import event, write_partition

    raw, wh = str(tmp_path / "raw"), str(tmp_path / "wh")
    good = [event(f"g{i}", f"u{i % 7}", f"i{i % 5}", ts="2026-02-20T10:00:00Z") for i in range(20)]
    bad = [event(f"b{i}", f"u{i}", f"i{i}", etype="teleport", ts="2026-02-20T10:00:00Z") for i in range(20)]
    write_partition(raw, D, {"a.json": "\n".join(good + bad) + "\n"})
    ingest(spark, IngestParams(logical_date=D, raw_root=raw, warehouse=wh))
    assert main(["--date", D.isoformat(), "--warehouse", wh], spark=spark) == 3
    err = capsys.readouterr().err
    assert "data check quarantine_share failed on events_quarantine" in err and "share 0.500" in err
    assert main(["--date", D.isoformat(), "--warehouse", wh, "--max-quarantine-share", "0.6"], spark=spark) == 0


ML100K = __import__("pathlib").Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ml-100k" / "u.data"


@pytest.mark.skipif(not ML100K.exists(), reason="needs ../shared/data/ml-100k/u.data")
def test_defaults_pass_the_real_swings_of_the_last_7_days_of_movielens_100k():
    """Real day-to-day counts (quiet days at 0.37-0.5 of the trailing median) pass the default thresholds; the
    same days with half their records bad do not. The counts are MovieLens' own (UTC days of its timestamps)."""
    import collections

    counts, first_item, first_user = collections.Counter(), {}, {}
    for line in ML100K.read_text().splitlines():
        user, item, _, ts = line.split("\t")
        day = dt.datetime.fromtimestamp(int(ts), dt.timezone.utc).date()
        counts[day] += 1
        first_item[item] = min(first_item.get(item, day), day)
        first_user[user] = min(first_user.get(user, day), day)
    new_items, new_users = collections.Counter(first_item.values()), collections.Counter(first_user.values())
    start, end = min(counts), max(counts)
    figures = [DayFigures(d, counts[d], 0, new_items[d], new_users[d])
               for d in (start + dt.timedelta(days=k) for k in range((end - start).days + 1))]
    nights = [f.day for f in figures[-7:]]
    for night in nights:
        results = evaluate(figures, night, T)
        assert {r.check for r in results} >= {"quarantine_share", "volume"}
        assert all(r.passed for r in results), [r.message for r in results if not r.passed]
    half_bad = [DayFigures(f.day, f.accepted, f.accepted, f.new_items, f.new_users) if f.day == nights[-1] else f
                for f in figures]
    assert not _by_name(evaluate(half_bad, nights[-1], T))["quarantine_share"].passed


def _warehouse(wh, accepted: dict, first_seen: dict, snapshot_users: dict) -> None:
    """The columns check_data reads, written with delta-rs as the jobs lay them out (events and quarantine
    partitioned by event_date; nothing quarantined)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    def dates(counts):
        return [d for d, n in sorted(counts.items()) for _ in range(n)]

    events = dates(accepted)
    write_deltalake(f"{wh}/events", pa.table({"event_date": pa.array(events, pa.date32()),
                                              "user_id": [str(i) for i in range(len(events))]}),
                    partition_by=["event_date"])
    write_deltalake(f"{wh}/events_quarantine", pa.table({"event_date": pa.array([], pa.date32()),
                                                         "reason": pa.array([], pa.string())}),
                    partition_by=["event_date"])
    seen = dates(first_seen)
    write_deltalake(f"{wh}/item_index", pa.table({"item_id": [str(i) for i in range(len(seen))],
                                                  "first_seen_date": pa.array(seen, pa.date32())}))
    write_deltalake(f"{wh}/sequence_snapshots", pa.table({"as_of_date": pa.array(sorted(snapshot_users), pa.date32()),
                                                          "users": [snapshot_users[d] for d in sorted(snapshot_users)]}))


def _days(n):
    return [D - dt.timedelta(days=n - i) for i in range(n)]


# each check failing on day D at job level: exit 3 (the DAG's check_data task fails, so nothing downstream of it
# runs: no training, no scoring; the DAG test shows the next night waiting), the table, the figure and the
# threshold on stderr and in the check's pipeline_runs row
FAILING_DAYS = {
    "volume": dict(accepted={**{d: 100 for d in _days(14)}, D: 10}, text="10 accepted events, 0.10 x the median 100",
                   threshold="(threshold 0.2)", table="events"),
    "empty_day": dict(accepted={d: 100 for d in _days(14)[:-2]}, text="3 empty day(s) in a row",
                      threshold="(threshold 2)", table="events"),
    "new_items": dict(accepted={**{d: 100 for d in _days(14)}, D: 100}, new_items=500,
                      text="500 new items on 2026-02-20, 50.0 x the median 10", threshold="(threshold 10.0)",
                      table="item_index"),
    "new_users": dict(accepted={**{d: 100 for d in _days(14)}, D: 100}, new_users=400,
                      text="400 new users on 2026-02-20, 40.0 x the median 10", threshold="(threshold 10.0)",
                      table="sequence_snapshots"),
}


@pytest.mark.parametrize("check", sorted(FAILING_DAYS))
def test_each_check_fails_the_job_and_pipeline_runs_says_why(check, tmp_path, capsys):
    from attnmodel import runlog
    from jobs.check_data import main

    case, wh = FAILING_DAYS[check], str(tmp_path / "wh")
    history = _days(14)
    first_seen = {history[0] - dt.timedelta(days=1): 50, **{d: 10 for d in history}, D: case.get("new_items", 10)}
    users, total = {}, 1000
    for d in history + [D]:
        total += case.get("new_users", 10) if d == D else 10
        users[d] = total
    _warehouse(wh, case["accepted"], first_seen, users)
    assert main(["--date", D.isoformat(), "--warehouse", wh, "--run-id", "r1"]) == 3
    err = capsys.readouterr().err
    assert f"data check {check} failed on {case['table']}" in err
    assert case["text"] in err and case["threshold"] in err, err
    (row,) = [r for r in runlog.read_runs(wh) if r["step"] == "check"]
    assert row["status"] == runlog.FAILED and row["run_id"] == "r1" and row["data_date"] == D
    assert row["message"].startswith(f"{check} on {case['table']}: ") and case["text"] in row["message"]
    # the same day passes once the deployment's threshold allows it
    loose = {"volume": '{"min_volume_ratio": 0.05}', "empty_day": '{"max_empty_days_in_a_row": 3}',
             "new_items": '{"max_new_ratio": 60}', "new_users": '{"max_new_ratio": 60}'}[check]
    assert main(["--date", D.isoformat(), "--warehouse", wh, "--thresholds", loose]) == 0
