"""maintenance: the nightly housekeeping after export.

    spark-submit jobs/maintenance.py --logical-date 2026-01-05 [--warehouse warehouse] [--models artifacts/models]
        [--exports exports] [--to files,redis,postgres] [--retention-days 30]

1. OPTIMIZE the partitions D wrote (events, events_quarantine, user_sequences, recommendations) that hold at
   least --optimize-min-files (4) files: a night's small files become a few large ones. Fewer files are left
   alone: compacting two or three files saves readers little and rewrites the whole partition.
2. VACUUM every table with a retention of at least --retention-days (the backfill window: a backfill reads
   old versions through the snapshot records), and for user_sequences longer still when the model registry
   points at an older version (a model's training snapshot stays readable while the registry names it).
   Nightly it is VACUUM LITE (reads the log only, ~3 s a table); on --full-vacuum-weekday it is a full VACUUM,
   which also lists the directories for files no commit ever recorded (a killed writer's) and costs ~30 s a
   table on 2 cores. A table whose oldest commit is younger than the retention is skipped: nothing in it can be
   old enough to delete.
3. Clean what a killed run leaves behind: training checkpoints and half-written artefacts older than
   --stale-hours, staging and trash directories of the file export, Redis namespaces that are neither live
   nor kept (they get the grace TTL), PostgreSQL staging tables.
Every action is idempotent: a rerun finds less or nothing to do.

What to do is decided from the Delta logs through delta-rs (files per partition, commit ages); a Spark session
starts only when there is an OPTIMIZE or a VACUUM to run. On a night with neither (a young deployment, small
partitions) the step costs the spark-submit start and the cleanup, not a session and Delta's first query
(~20 s on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from attnmodel.columns import (
    AS_OF_DATE,
    EVENTS_QUARANTINE_TABLE,
    EVENTS_TABLE,
    ITEM_INDEX_TABLE,
    RECOMMENDATIONS_TABLE,
    SEQUENCE_SNAPSHOTS_TABLE,
    USER_SEQUENCES_TABLE,
)
from jobs.common import JobInputError, StageClock, add_job_args, run_job
from jobs.warehouse import table_path

# table -> the column its date partitions are keyed on (None: not partitioned, nothing to OPTIMIZE per date)
TABLES = {
    EVENTS_TABLE: "event_date",
    EVENTS_QUARANTINE_TABLE: "event_date",
    USER_SEQUENCES_TABLE: AS_OF_DATE,
    RECOMMENDATIONS_TABLE: AS_OF_DATE,
    ITEM_INDEX_TABLE: None,
    SEQUENCE_SNAPSHOTS_TABLE: None,
}


@dataclass(frozen=True)
class MaintenanceParams:
    logical_date: dt.date
    warehouse: str = "warehouse"
    models_root: str = "artifacts/models"
    exports_root: str = "exports"
    targets: tuple[str, ...] = ("files",)
    retention_days: int = 30
    stale_hours: float = 48.0
    full_vacuum_weekday: int = 6  # date.weekday() of the night that runs a full VACUUM (6 = Sunday); -1: never
    optimize_min_files: int = 4  # D's partition is compacted when it holds at least this many files
    now: float = field(default_factory=time.time)  # wall clock for "older than": a parameter, so tests can move it

    def __post_init__(self):
        if self.optimize_min_files < 2:
            raise JobInputError("--optimize-min-files must be >= 2 (one file is already compact)")
        if self.retention_days < 7:
            raise JobInputError("--retention-days must be >= 7 (Delta refuses a VACUUM under 7 days by default, and "
                                "a backfill needs the versions its snapshot records name)")


@dataclass(frozen=True)
class MaintenanceReport:
    logical_date: str
    optimized: dict  # table -> files removed by compaction in D's partition
    vacuum_retention_hours: dict  # table -> retention used
    vacuum_mode: dict  # table -> "lite" / "full" / "skipped: younger than retention"
    removed: dict  # what the cleanup removed, by kind
    seconds: float
    stage_seconds: dict


def _delta_table(path: str):
    """delta-rs handle on the table at `path`, None when there is none."""
    from deltalake import DeltaTable

    return DeltaTable(path) if DeltaTable.is_deltatable(path) else None


def _commit_times(table) -> dict[int, float]:
    """version -> commit time (unix seconds) of every commit still in the log."""
    return {h["version"]: h["timestamp"] / 1000 for h in table.history() if "version" in h and "timestamp" in h}


def vacuum_retention_hours(commit_times: dict[int, float], registry_versions: list[int], retention_days: int,
                           now: float) -> int:
    """At least the backfill window; for user_sequences, also older than the oldest commit the registry names."""
    hours = retention_days * 24
    if not registry_versions:
        return hours
    committed = commit_times.get(min(registry_versions))
    if committed is None:  # already gone from the log: nothing older to protect
        return hours
    return max(hours, int((now - committed) / 3600) + 24)


def vacuum_mode(oldest_commit_age_hours: float, retention_hours: int, day: dt.date, full_weekday: int) -> str:
    if oldest_commit_age_hours < retention_hours:
        return "skipped: younger than retention"
    return "full" if day.weekday() == full_weekday else "lite"


def _vacuum(spark: SparkSession, path: str, hours: int, mode: str) -> None:
    if mode == "lite":
        try:
            spark.sql(f"VACUUM delta.`{path}` RETAIN {hours} HOURS LITE")
            return
        except Exception as err:  # LITE refuses when the log no longer covers every removed file
            if "FULL" not in str(err):
                raise
    spark.sql(f"VACUUM delta.`{path}` RETAIN {hours} HOURS")


def _older_than(path: str, seconds: float, now: float) -> bool:
    try:
        return now - os.path.getmtime(path) > seconds
    except OSError:
        return False


def stale_local_paths(models_root: str, exports_root: str, stale_seconds: float, now: float) -> dict[str, list[str]]:
    """What a killed run left behind, by kind (pure: lists, removes nothing)."""
    kinds = {
        "checkpoints": glob.glob(os.path.join(models_root, ".checkpoints", "*")),
        "partial_artefacts": glob.glob(os.path.join(models_root, ".tmp-*")),
        "export_staging": glob.glob(os.path.join(exports_root, RECOMMENDATIONS_TABLE, "_staging", "*"))
        + glob.glob(os.path.join(exports_root, RECOMMENDATIONS_TABLE, "_trash", "*")),
    }
    return {k: sorted(p for p in v if _older_than(p, stale_seconds, now)) for k, v in kinds.items()}


def partition_file_count(table, column: str, day: dt.date) -> int:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return len(table.file_uris(partition_filters=[(column, "=", day.isoformat())]))


def run(spark, params: MaintenanceParams) -> MaintenanceReport:
    """`spark`: a session, or a zero-argument function that starts one (called only when there is Spark work)."""
    from attnmodel import registry as reg

    session = (lambda: spark) if isinstance(spark, SparkSession) else spark
    stage = StageClock()
    day = params.logical_date.isoformat()
    optimized, retention, modes = {}, {}, {}
    tables = {t: _delta_table(table_path(params.warehouse, t)) for t in TABLES}
    for table, column in TABLES.items():
        if tables[table] is None or column is None:
            continue
        files = partition_file_count(tables[table], column, params.logical_date)
        if files < params.optimize_min_files:
            optimized[table] = 0
            continue
        path = table_path(params.warehouse, table)
        metrics = session().sql(f"OPTIMIZE delta.`{path}` WHERE {column} = DATE'{day}'").first()["metrics"]
        optimized[table] = int(metrics["numFilesRemoved"])
    stage.lap("optimize")
    window_start = params.logical_date - dt.timedelta(days=params.retention_days)
    registry_versions = reg.referenced_sequence_versions(reg.read_registry(params.warehouse), since=window_start)
    for table in TABLES:
        if tables[table] is None:
            continue
        path = table_path(params.warehouse, table)
        times = _commit_times(tables[table])
        hours = (vacuum_retention_hours(times, registry_versions, params.retention_days, params.now)
                 if table == USER_SEQUENCES_TABLE else params.retention_days * 24)
        oldest_age_hours = (params.now - min(times.values())) / 3600 if times else 0.0
        mode = vacuum_mode(oldest_age_hours, hours, params.logical_date, params.full_vacuum_weekday)
        if not mode.startswith("skipped"):
            _vacuum(session(), path, hours, mode)
        retention[table], modes[table] = hours, mode
    stage.lap("vacuum")
    removed = {}
    for kind, paths in stale_local_paths(params.models_root, params.exports_root, params.stale_hours * 3600,
                                         params.now).items():
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)
        removed[kind] = len(paths)
    removed.update(_clean_export_stores(params))
    stage.lap("cleanup")
    return MaintenanceReport(logical_date=day, optimized=optimized, vacuum_retention_hours=retention,
                             vacuum_mode=modes,
                             removed=removed, seconds=stage.total(), stage_seconds=stage.seconds)


def _clean_export_stores(params: MaintenanceParams) -> dict:
    from jobs import export_recommendations as ex

    out = {}
    if "redis" in params.targets:
        target = ex.RedisTarget.from_env()
        out["redis_namespaces_expiring"] = len(ex._expire_superseded(target.client(), target, ex.redis_keys(target.prefix)))
    if "postgres" in params.targets:
        target = ex.PostgresTarget.from_env()
        with target.connect() as conn:
            names = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE %s",
                (f"{target.table}_staging_%",)).fetchall()]
            for name in names:  # a live export holds its staging table only inside its own run (max_active_runs=1)
                conn.execute(f"DROP TABLE IF EXISTS {ex._ident(name)}")
        out["postgres_staging_tables"] = len(names)
    return out


def build_parser(prog: str = "maintenance") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="OPTIMIZE D's partitions, VACUUM, clean up leftovers.")
    add_job_args(parser, date_help="the night whose partitions to compact")
    parser.add_argument("--models", default="artifacts/models", help="models root (training checkpoints live here)")
    parser.add_argument("--exports", default=os.environ.get("ATTNREC_EXPORTS", "exports"))
    parser.add_argument("--to", default="files", help="export targets whose leftovers to clean (files,redis,postgres)")
    parser.add_argument("--retention-days", type=int, default=30,
                        help="VACUUM keeps this many days of table versions (>= the backfill window)")
    parser.add_argument("--full-vacuum-weekday", type=int, default=6,
                        help="weekday (0=Monday..6=Sunday) of the data date whose night runs a full VACUUM; "
                             "other nights run VACUUM LITE; -1 never runs the full one")
    parser.add_argument("--optimize-min-files", type=int, default=4,
                        help="compact D's partition of a table when it holds at least this many files")
    parser.add_argument("--stale-hours", type=float, default=48.0,
                        help="leftover checkpoints / staging older than this are removed")
    return parser


def main(argv: list[str] | None = None, spark: SparkSession | None = None, prog: str = "maintenance") -> int:
    args = build_parser(prog).parse_args(argv)

    def params():
        return MaintenanceParams(logical_date=args.logical_date, warehouse=args.warehouse, models_root=args.models,
                                 exports_root=args.exports, targets=tuple(t for t in args.to.split(",") if t),
                                 retention_days=args.retention_days, stale_hours=args.stale_hours,
                                 full_vacuum_weekday=args.full_vacuum_weekday,
                                 optimize_min_files=args.optimize_min_files)

    return run_job("maintenance", params, run, app_name="maintenance", master=args.master, spark=spark,
                   run_id=args.run_id, lazy_spark=True)


if __name__ == "__main__":
    sys.exit(main())
