"""attnrec generate: determinism, partitions, planted bad records, popularity and successor structure."""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from jobs import raw_contract as rc
from jobs.generate_events import (
    BAD_LINE_KINDS,
    CORRUPT_FILE_NAME,
    EMPTY_FILE_NAME,
    P_SUCCESSOR,
    GenerateParams,
    generate,
    item_tables,
    main,
    parse_args,
    planted_bad_counts,
)

pytestmark = pytest.mark.spark

PARAMS = dict(users=150, items=200, days=4, events=4000, seed=7, bad_share=0.05,
              start_date=dt.date(2026, 3, 1), block_events=1000)


def _read_partition(day_dir: Path) -> list[str]:
    lines = []
    for f in sorted(day_dir.iterdir()):
        if f.name.startswith((".", "_")) or f.name in (CORRUPT_FILE_NAME, EMPTY_FILE_NAME):
            continue
        data = gzip.decompress(f.read_bytes()) if f.name.endswith(".gz") else f.read_bytes()
        lines += data.decode().splitlines()
    return lines


def _read_all(out: Path) -> dict[str, list[str]]:
    root = out / rc.RAW_EVENTS_DIR
    return {d.name.removeprefix("dt="): _read_partition(d) for d in sorted(root.iterdir()) if d.name.startswith("dt=")}


def _parse_ts(ts) -> dt.datetime | None:
    if isinstance(ts, bool):
        return None
    if isinstance(ts, (int, float)):
        secs = ts / 1000 if ts > 1e11 else ts
        return dt.datetime.fromtimestamp(secs, dt.timezone.utc)
    if isinstance(ts, str):
        try:
            parsed = dt.datetime.fromisoformat(ts)
        except ValueError:
            return None
        return parsed.astimezone(dt.timezone.utc) if parsed.tzinfo else None
    return None


def classify(line: str, day: str) -> tuple[str, dict | None]:
    """Independent re-implementation of the contract's checks: (reason or 'ok', record)."""
    if len(line.encode()) > rc.DEFAULT_MAX_RECORD_BYTES:
        return rc.OVERSIZED_RECORD, None
    try:
        rec = json.loads(line)
    except ValueError:
        return rc.INVALID_JSON, None
    if not isinstance(rec, dict):
        return rc.INVALID_JSON, None
    if rec.get(rc.RAW_USER_ID) is None or not str(rec[rc.RAW_USER_ID]).strip():
        return rc.MISSING_USER_ID, rec
    if isinstance(rec[rc.RAW_USER_ID], (dict, list)):
        return rc.NON_SCALAR_ID, rec
    if rec.get(rc.RAW_ITEM_ID) is None or not str(rec[rc.RAW_ITEM_ID]).strip():
        return rc.MISSING_ITEM_ID, rec
    if isinstance(rec[rc.RAW_ITEM_ID], (dict, list)):
        return rc.NON_SCALAR_ID, rec
    ts = _parse_ts(rec.get(rc.RAW_TIMESTAMP))
    if ts is None:
        return rc.BAD_TIMESTAMP, rec
    lo = dt.datetime.fromisoformat(day).replace(tzinfo=dt.timezone.utc) - dt.timedelta(days=2)
    if not lo <= ts < lo + dt.timedelta(days=5):
        return rc.OUT_OF_WINDOW, rec
    if rec.get(rc.RAW_EVENT_TYPE) not in rc.EVENT_TYPES:
        return rc.UNKNOWN_EVENT_TYPE, rec
    if rc.RAW_VALUE in rec and not isinstance(rec[rc.RAW_VALUE], (int, float)):
        return rc.BAD_VALUE, rec
    rec["_ts"] = ts
    return "ok", rec


@pytest.fixture(scope="module")
def run(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "raw"
    params = GenerateParams(out=str(out), format="json.gz", **PARAMS)
    report = generate(spark, params)
    by_day = _read_all(out)
    good, reasons = [], collections.Counter()
    seen_lines = collections.Counter()
    for day, lines in by_day.items():
        for line in lines:
            reason, rec = classify(line, day)
            if reason != "ok":
                reasons[reason] += 1
                continue
            seen_lines[line] += 1
            if seen_lines[line] > 1:
                reasons[rc.DUPLICATE] += 1
                continue
            rec["_day"] = day
            good.append(rec)
    return params, report, out, by_day, good, reasons


def test_partitions_and_counts(run):
    params, report, out, by_day, good, _ = run
    days = [(params.start_date + dt.timedelta(days=d)) for d in range(params.days)]
    for day in days:
        path = Path(rc.raw_partition_path(str(out), day))
        assert path.is_dir()
        assert any(f.name.endswith(".json.gz") and f.name.startswith("part-0") for f in path.iterdir())
    assert list(by_day) == [d.isoformat() for d in days]
    assert len(good) == params.events == sum(report.events_per_day.values())
    per_day = collections.Counter(r["_day"] for r in good)
    assert dict(per_day) == {d: n for d, n in report.events_per_day.items() if n}
    # every good event lies in its partition's (UTC) day
    assert all(r["_ts"].date().isoformat() == r["_day"] for r in good)
    assert sum(len(v) for v in by_day.values()) == report.lines_written


def test_each_bad_kind_planted_in_documented_share(run):
    params, report, out, _, _, reasons = run
    expected = planted_bad_counts(params.events, params.bad_share)
    assert report.bad_per_kind == expected
    per_kind = expected[rc.DUPLICATE]
    assert per_kind == round(params.events * params.bad_share / len(BAD_LINE_KINDS))
    assert {k: reasons[k] for k in BAD_LINE_KINDS} == {k: per_kind for k in BAD_LINE_KINDS}
    # file-level: one truncated gzip, one empty file
    corrupt = Path(report.corrupt_file)
    assert corrupt.name == CORRUPT_FILE_NAME and corrupt.parent.name == f"dt={report.days[params.days // 2]}"
    with pytest.raises((EOFError, OSError)):
        gzip.decompress(corrupt.read_bytes())
    empty = Path(report.empty_file)
    assert empty.name == EMPTY_FILE_NAME and empty.stat().st_size == 0


def test_duplicates_share_event_id_and_good_records_have_unique_ids(run):
    _, _, _, by_day, good, _ = run
    ids = [r[rc.RAW_EVENT_ID] for r in good if rc.RAW_EVENT_ID in r]
    assert len(ids) == len(set(ids))
    assert 0.9 < len(ids) / len(good) < 1.0  # a few good records come without event_id
    lines = [ln for lines in by_day.values() for ln in lines]
    dups = [ln for ln, n in collections.Counter(lines).items() if n > 1]
    assert dups and all(json.loads(ln)[rc.RAW_EVENT_ID] for ln in dups)


def test_mixed_timestamp_formats_and_event_types(run):
    _, _, _, _, good, _ = run
    kinds = collections.Counter(
        "iso" if isinstance(r["timestamp"], str) else ("ms" if r["timestamp"] > 1e11 else "s") for r in good
    )
    assert min(kinds["iso"], kinds["s"], kinds["ms"]) > 0.15 * len(good)
    types = collections.Counter(r["event_type"] for r in good)
    assert set(types) == set(rc.EVENT_TYPES) and types["view"] > 0.5 * len(good)
    assert all(1 <= r["value"] <= 5 for r in good if r["event_type"] == "rating")
    assert all("value" not in r for r in good if r["event_type"] in ("view", "click"))


def test_zipf_popularity(run):
    params, _, _, _, good, _ = run
    counts = np.array(sorted(collections.Counter(str(r["item_id"]) for r in good).values(), reverse=True))
    top = counts[: params.items // 20].sum() / counts.sum()  # top 5% of items
    assert top > 3 * 0.05, top
    assert counts[0] > 10 * np.median(counts)


def _user_sequences(good):
    seqs = collections.defaultdict(list)
    for r in good:
        seqs[r["user_id"]].append((r["_ts"], r.get(rc.RAW_EVENT_ID, ""), int(r["item_id"])))
    return {u: [i for _, _, i in sorted(v)] for u, v in seqs.items()}


def test_planted_successor_structure(run):
    params, _, _, _, good, _ = run
    tables = item_tables(params)
    succ = dict(zip(tables.item_id.tolist(), tables.item_id[tables.successor].tolist()))
    pairs = [(a, b) for seq in _user_sequences(good).values() for a, b in zip(seq, seq[1:])]
    share = np.mean([succ[a] == b for a, b in pairs])
    rng = np.random.default_rng(0)
    nexts = [b for _, b in pairs]
    shuffled = np.mean([succ[a] == b for (a, _), b in zip(pairs, rng.permutation(nexts))])
    assert share > 0.8 * P_SUCCESSOR, share
    assert share > 5 * shuffled, (share, shuffled)


def test_interests_drift(run):
    """A user's early and late events differ in interest clusters more than interleaved halves do."""
    params, _, _, _, good, _ = run
    tables = item_tables(params)
    cluster = dict(zip(tables.item_id.tolist(), tables.cluster.tolist()))

    def tvd(a, b):
        ca, cb = collections.Counter(a), collections.Counter(b)
        return 0.5 * sum(abs(ca[k] / len(a) - cb[k] / len(b)) for k in set(ca) | set(cb))

    drift, interleaved = [], []
    for seq in _user_sequences(good).values():
        if len(seq) >= 40:
            cl = [cluster[i] for i in seq]
            third = len(cl) // 3
            drift.append(tvd(cl[:third], cl[-third:]))
            interleaved.append(tvd(cl[0::3][:third], cl[2::3][:third]))  # same sizes, no drift
    assert len(drift) >= 10
    assert np.mean(drift) > np.mean(interleaved) + 0.1, (np.mean(drift), np.mean(interleaved))


def test_same_seed_same_data_and_rerun_replaces(spark, run, tmp_path):
    params, _, out, by_day, _, _ = run
    again = GenerateParams(**{**params.__dict__, "out": str(tmp_path / "raw")})
    generate(spark, again)
    generate(spark, again)  # rerun into the same folder: partitions replaced, not appended
    assert {d: sorted(v) for d, v in _read_all(tmp_path / "raw").items()} == {d: sorted(v) for d, v in by_day.items()}
    other = GenerateParams(**{**again.__dict__, "out": str(tmp_path / "other"), "seed": 8})
    generate(spark, other)
    assert _read_all(tmp_path / "other") != by_day


def test_cli_clean_run(spark, tmp_path, capsys):
    out = tmp_path / "raw"
    rc_ = main(["--out", str(out), "--users", "20", "--items", "50", "--days", "2", "--events", "300",
                "--seed", "3", "--start-date", "2026-01-05", "--bad-share", "0"])
    assert rc_ == 0
    assert "300 good events" in capsys.readouterr().out
    lines = _read_all(out)
    assert list(lines) == ["2026-01-05", "2026-01-06"]
    assert sum(len(v) for v in lines.values()) == 300
    assert all(classify(ln, d)[0] == "ok" for d, v in lines.items() for ln in v)
    assert not any(f.name in (CORRUPT_FILE_NAME, EMPTY_FILE_NAME) for f in out.rglob("*"))
    assert all(f.name.endswith(".json") for f in out.rglob("part-*"))


def test_parse_args():
    p = parse_args(["--out", "x", "--users", "5", "--items", "6", "--days", "7", "--events", "8", "--seed", "9",
                    "--start-date", "2026-02-03", "--bad-share", "0.02", "--format", "json.gz"])
    assert p == GenerateParams(out="x", users=5, items=6, days=7, events=8, seed=9,
                               start_date=dt.date(2026, 2, 3), bad_share=0.02, format="json.gz")
    with pytest.raises(SystemExit):
        parse_args(["--users", "0"])


def test_planted_bad_counts():
    expected = {**{k: 900 for k in BAD_LINE_KINDS}, rc.CORRUPT_FILE: 1, rc.EMPTY_FILE: 1}
    assert planted_bad_counts(900_000, 0.01) == expected
    assert rc.NON_SCALAR_ID in BAD_LINE_KINDS  # the demo plants non-scalar ids like the other kinds
    assert set(planted_bad_counts(100, 0.0).values()) == {0}
    assert planted_bad_counts(100, 0.01)[rc.DUPLICATE] == 1  # at least one of each kind
