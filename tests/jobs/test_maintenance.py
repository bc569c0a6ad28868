"""maintenance: which VACUUM runs when, what counts as a leftover, and one real run on a small warehouse."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest

from jobs.maintenance import MaintenanceParams, run, stale_local_paths, vacuum_mode

SUNDAY, MONDAY = dt.date(2026, 3, 8), dt.date(2026, 3, 9)


@pytest.mark.parametrize("age_hours, day, expected", [
    (10, SUNDAY, "skipped: younger than retention"),  # nothing in a 10-hour-old table can be 30 days old
    (800, MONDAY, "lite"),
    (800, SUNDAY, "full"),
])
def test_vacuum_mode(age_hours, day, expected):
    assert vacuum_mode(age_hours, 720, day, full_weekday=6) == expected


def test_retention_below_a_week_is_refused():
    from jobs.common import JobInputError

    with pytest.raises(JobInputError, match="--retention-days must be >= 7"):
        MaintenanceParams(logical_date=MONDAY, retention_days=3)


def _touch_dir(path, age_seconds, now):
    os.makedirs(path, exist_ok=True)
    os.utime(path, (now - age_seconds, now - age_seconds))


def test_stale_leftovers_are_listed_by_kind_and_fresh_ones_kept(tmp_path):
    now = time.time()
    models, exports = tmp_path / "models", tmp_path / "exports"
    _touch_dir(models / ".checkpoints" / "old", 3 * 86400, now)
    _touch_dir(models / ".checkpoints" / "running", 600, now)  # a training in progress
    _touch_dir(models / ".tmp-abc", 3 * 86400, now)
    _touch_dir(exports / "recommendations" / "_staging" / "x", 3 * 86400, now)
    _touch_dir(models / "20260101T000000Z-aaaaaa", 30 * 86400, now)  # a model: never a leftover
    found = stale_local_paths(str(models), str(exports), 48 * 3600, now)
    assert {k: [os.path.basename(p) for p in v] for k, v in found.items()} == {
        "checkpoints": ["old"], "partial_artefacts": [".tmp-abc"], "export_staging": ["x"]}


@pytest.mark.slow
def test_maintenance_compacts_vacuums_and_cleans(spark, tmp_path):
    from jobs.generate_events import GenerateParams, generate
    from jobs.ingest_events import IngestParams
    from jobs.ingest_events import run as ingest

    raw, wh = str(tmp_path / "raw"), str(tmp_path / "wh")
    generate(spark, GenerateParams(out=raw, users=30, items=20, days=1, events=300, seed=2, start_date=MONDAY))
    for _ in range(3):  # reruns: the same rows, more files in the log's history
        ingest(spark, IngestParams(logical_date=MONDAY, raw_root=raw, warehouse=wh))
    before = spark.read.format("delta").load(f"{wh}/events").count()
    models = tmp_path / "models"

    def no_spark():
        raise AssertionError("a night with nothing to compact or vacuum must not start Spark")

    # today: the tables are younger than the retention and D's partitions are small -> no Spark session at all
    quiet = run(no_spark, MaintenanceParams(logical_date=MONDAY, warehouse=wh, models_root=str(models),
                                            exports_root=str(tmp_path / "exports"), optimize_min_files=1000))
    assert set(quiet.vacuum_mode.values()) == {"skipped: younger than retention"}
    assert quiet.optimized == {"events": 0, "events_quarantine": 0}
    _touch_dir(models / ".checkpoints" / "old", 3 * 86400, time.time())
    now = time.time() + 40 * 86400  # forty days later: the old files of the reruns are past the retention
    report = run(spark, MaintenanceParams(logical_date=MONDAY, warehouse=wh, models_root=str(models),
                                          exports_root=str(tmp_path / "exports"), now=now, optimize_min_files=2))
    assert report.vacuum_mode == {"events": "lite", "events_quarantine": "lite"}
    assert report.vacuum_retention_hours["events"] == 720
    assert report.removed["checkpoints"] == 1 and not (models / ".checkpoints" / "old").exists()
    assert set(report.optimized) == {"events", "events_quarantine"}
    assert spark.read.format("delta").load(f"{wh}/events").count() == before
