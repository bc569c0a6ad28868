"""check_data: the night's data checks, after build_sequences and before training. A failed check fails the run
loudly, with the table, the figure and the threshold, before a model or a recommendation is written.

    attnrec check --date 2026-01-05 [--warehouse warehouse] [--max-quarantine-share 0.1]

No Spark: every figure is a per-partition count, read from the Delta log (accepted events per day) or from one
or two small columns (the quarantine's reasons, the item index's first-seen dates, the snapshot records). A cold
spark-submit cost this step ~20 s a night for a few counts; it now runs in a second or two.

Checks on data day D (each threshold a flag, so a deployment sets its own):
- quarantine_share: records of D in events_quarantine (duplicates and empty files left out: a re-delivered file
  is not bad data) over all of D's records <= --max-quarantine-share (0.10).
- volume: D's accepted events >= --min-volume-ratio (0.2) x the median of the trailing --trailing-days (14)
  non-empty days (skipped with fewer than --min-trailing-days (3) such days: a new deployment).
- empty_day: a day without events passes unless it makes more than --max-empty-days-in-a-row (2) empty days
  in a row (0: no empty day is allowed).
- new_items / new_users: items first indexed on D (item_index) and users new in D's snapshot (sequence_snapshots)
  <= --max-new-ratio (10) x the trailing median of new ones per day, when they are at least --min-new-for-jump
  (100): a sudden flood of unknown ids is usually an id format change upstream. Not judged before there are
  --min-trailing-days known days (the index's first day, which indexes everything, does not count).
The defaults pass MovieLens-100K's day-to-day swings (quiet days at 0.4 of the median, two empty days).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace

from attnmodel.columns import (
    AS_OF_DATE,
    EVENTS_QUARANTINE_TABLE,
    EVENTS_TABLE,
    FIRST_SEEN_DATE,
    ITEM_INDEX_TABLE,
    SEQUENCE_SNAPSHOTS_TABLE,
    SNAPSHOT_USERS,
)
from attnmodel.delta_io import TableMissing, as_date, partition_row_counts, read_delta, read_partitions
from jobs import raw_contract as rc
from jobs.common import JobInputError, StageClock, add_job_args, print_report
from jobs.warehouse import table_path

# quarantine rows that are not bad records: a copy of an event already kept, an empty file
NOT_BAD = (rc.DUPLICATE, rc.EMPTY_FILE)


@dataclass(frozen=True)
class CheckThresholds:
    max_quarantine_share: float = 0.10
    min_volume_ratio: float = 0.2
    trailing_days: int = 14
    min_trailing_days: int = 3
    max_empty_days_in_a_row: int = 2
    max_new_ratio: float = 10.0
    min_new_for_jump: int = 100


@dataclass(frozen=True)
class DayFigures:
    day: dt.date
    accepted: int
    bad: int  # quarantined records, duplicates and empty files left out
    new_items: int | None  # None: not known (no item_index / snapshot for that day)
    new_users: int | None


@dataclass(frozen=True)
class CheckResult:
    check: str
    table: str
    figure: float | None
    threshold: float
    passed: bool
    message: str


@dataclass(frozen=True)
class CheckParams:
    logical_date: dt.date
    warehouse: str = "warehouse"
    thresholds: CheckThresholds = CheckThresholds()


@dataclass(frozen=True)
class CheckReport:
    logical_date: str
    passed: bool
    checks: list
    figures: dict
    seconds: float
    stage_seconds: dict


def _median(values: list[int]) -> float | None:
    return statistics.median(values) if values else None


def evaluate(figures: list[DayFigures], day: dt.date, t: CheckThresholds) -> list[CheckResult]:
    """The checks for `day` from the figures of it and the days before it (pure: every branch is unit-tested)."""
    by_day = {f.day: f for f in figures}
    today = by_day.get(day) or DayFigures(day, 0, 0, None, None)
    trailing = [by_day[d] for d in sorted(by_day) if day - dt.timedelta(days=t.trailing_days) <= d < day]
    busy = [f for f in trailing if f.accepted > 0]
    out = []
    records = today.accepted + today.bad
    share = today.bad / records if records else 0.0
    out.append(CheckResult(
        "quarantine_share", EVENTS_QUARANTINE_TABLE, round(share, 4), t.max_quarantine_share,
        share <= t.max_quarantine_share,
        f"{today.bad} of {day}'s {records} records were quarantined: share {share:.3f} "
        f"(threshold {t.max_quarantine_share})"))
    if today.accepted == 0:
        run = 1
        while by_day.get(day - dt.timedelta(days=run)) is not None and by_day[day - dt.timedelta(days=run)].accepted == 0:
            run += 1
        ok = run <= t.max_empty_days_in_a_row
        out.append(CheckResult(
            "empty_day", EVENTS_TABLE, run, t.max_empty_days_in_a_row, ok,
            f"{day} has no accepted events: {run} empty day(s) in a row (threshold {t.max_empty_days_in_a_row})"))
    elif len(busy) >= t.min_trailing_days:
        median = _median([f.accepted for f in busy])
        ratio = today.accepted / median
        out.append(CheckResult(
            "volume", EVENTS_TABLE, round(ratio, 4), t.min_volume_ratio, ratio >= t.min_volume_ratio,
            f"{day} has {today.accepted} accepted events, {ratio:.2f} x the median {median:g} of the "
            f"{len(busy)} non-empty days before it (threshold {t.min_volume_ratio})"))
    for name, table, value, history in (
            ("new_items", ITEM_INDEX_TABLE, today.new_items, [f.new_items for f in busy if f.new_items is not None]),
            ("new_users", SEQUENCE_SNAPSHOTS_TABLE, today.new_users,
             [f.new_users for f in busy if f.new_users is not None])):
        if value is None or value < t.min_new_for_jump or len(history) < t.min_trailing_days:
            continue
        median = max(_median(history), 1)
        ratio = value / median
        out.append(CheckResult(
            name, table, round(ratio, 4), t.max_new_ratio, ratio <= t.max_new_ratio,
            f"{value} {name.replace('_', ' ')} on {day}, {ratio:.1f} x the median {median:g} of the days before "
            f"(threshold {t.max_new_ratio})"))
    return out


def day_figures(warehouse: str, first: dt.date, last: dt.date) -> list[DayFigures]:
    """Per-day figures for the days first..last. Accepted events per day come from the Delta log's per-file
    row counts (no data read); the quarantine's reasons, the item index's first-seen dates and the snapshot
    records are small reads of the needed columns only."""
    accepted, bad, new_items, users = {}, {}, {}, {}
    try:
        accepted = {d: n for d, n in partition_row_counts(table_path(warehouse, EVENTS_TABLE), "event_date").items()
                    if first <= d <= last}
    except TableMissing:
        pass
    try:
        q = read_partitions(table_path(warehouse, EVENTS_QUARANTINE_TABLE), "event_date", first, last,
                            ["event_date", "reason"])
        bad = Counter(d for d, reason in zip(q.column("event_date").to_pylist(), q.column("reason").to_pylist())
                      if reason not in NOT_BAD)
    except TableMissing:
        pass
    index_start = None  # the index's first day indexed every item known then: not "new" in the sense checked
    try:
        seen = read_delta(table_path(warehouse, ITEM_INDEX_TABLE), columns=[FIRST_SEEN_DATE]).column(FIRST_SEEN_DATE)
        seen = [as_date(d) for d in seen.to_pylist()]
        index_start = min(seen) if seen else None
        new_items = Counter(d for d in seen if first <= d <= last)
    except TableMissing:
        pass
    try:
        snaps = read_delta(table_path(warehouse, SEQUENCE_SNAPSHOTS_TABLE), columns=[AS_OF_DATE, SNAPSHOT_USERS])
        users = {as_date(d): n for d, n in zip(snaps.column(AS_OF_DATE).to_pylist(), snaps.column(SNAPSHOT_USERS).to_pylist())
                 if first - dt.timedelta(days=1) <= as_date(d) <= last}
    except TableMissing:
        pass
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    out = []
    for d in days:
        prev = users.get(d - dt.timedelta(days=1))
        out.append(DayFigures(
            d, accepted.get(d, 0), bad.get(d, 0),
            new_items.get(d, 0) if index_start is not None and d > index_start else None,
            users[d] - prev if d in users and prev is not None else None))
    return out


def run(params: CheckParams) -> CheckReport:
    stage = StageClock()
    day, t = params.logical_date, params.thresholds
    figures = day_figures(params.warehouse, day - dt.timedelta(days=t.trailing_days), day)
    stage.lap("figures")
    results = evaluate(figures, day, t)
    today = figures[-1]
    return CheckReport(logical_date=day.isoformat(), passed=all(r.passed for r in results),
                       checks=[asdict(r) for r in results], figures={k: v for k, v in asdict(today).items() if k != "day"},
                       seconds=stage.total(), stage_seconds=stage.seconds)


def build_parser(prog: str = "check_data") -> argparse.ArgumentParser:
    d = CheckThresholds()
    p = argparse.ArgumentParser(prog=prog, description="The night's data checks: fail loudly before training.")
    add_job_args(p, date_help="the data day to check")
    p.add_argument("--max-quarantine-share", type=float, default=d.max_quarantine_share)
    p.add_argument("--min-volume-ratio", type=float, default=d.min_volume_ratio,
                   help="accepted events >= this x the trailing median of non-empty days")
    p.add_argument("--trailing-days", type=int, default=d.trailing_days)
    p.add_argument("--min-trailing-days", type=int, default=d.min_trailing_days)
    p.add_argument("--max-empty-days-in-a-row", type=int, default=d.max_empty_days_in_a_row,
                   help="0: no day without events is allowed")
    p.add_argument("--max-new-ratio", type=float, default=d.max_new_ratio,
                   help="new items / new users on D <= this x the trailing median per day")
    p.add_argument("--min-new-for-jump", type=int, default=d.min_new_for_jump)
    p.add_argument("--thresholds", default="{}",
                   help='JSON object of thresholds by field name, over the flags (the DAG\'s check_thresholds '
                        'param), e.g. \'{"max_quarantine_share": 0.05}\'')
    return p


def main(argv: list[str] | None = None, spark=None, prog: str = "check_data") -> int:
    """`spark` is accepted like every job's, and not used: the checks read the Delta log and small columns."""
    a = build_parser(prog).parse_args(argv)
    try:
        thresholds = CheckThresholds(a.max_quarantine_share, a.min_volume_ratio, a.trailing_days,
                                     a.min_trailing_days, a.max_empty_days_in_a_row, a.max_new_ratio,
                                     a.min_new_for_jump)
        try:
            overrides = json.loads(a.thresholds)
            thresholds = replace(thresholds, **overrides)
        except (ValueError, TypeError) as exc:
            raise JobInputError(f"--thresholds {a.thresholds!r}: {exc} (fields: "
                                f"{', '.join(f.name for f in fields(CheckThresholds))})") from None
        report = run(CheckParams(a.logical_date, a.warehouse, thresholds))
    except JobInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_report("check", report)
    failed = [c for c in report.checks if not c["passed"]]
    for c in failed:
        print(f"error: data check {c['check']} failed on {c['table']}: {c['message']}", file=sys.stderr)
    from attnmodel import runlog

    runlog.record_step(a.warehouse, "check", a.logical_date, a.run_id, asdict(report),
                       status=runlog.FAILED if failed else runlog.SUCCESS,
                       message="; ".join(f"{c['check']} on {c['table']}: {c['message']}" for c in failed) or None)
    return 3 if failed else 0


if __name__ == "__main__":  # also under spark-submit, which this job no longer needs
    sys.exit(main())
