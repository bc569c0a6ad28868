"""Table plumbing every job shares: locations under a warehouse root (a local path or any Hadoop URI),
existence and versions of Delta tables, and the one way a job replaces a date's rows."""

from __future__ import annotations

import datetime as dt
import os


def table_path(warehouse_root: str, table: str) -> str:
    root = warehouse_root.rstrip("/")
    if "://" not in root and not root.startswith("/"):
        root = os.path.abspath(root)  # Delta wants absolute local paths
    return f"{root}/{table}"


def table_exists(spark, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def latest_version(spark, path: str) -> int:
    """The current version of the Delta table at `path`."""
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def read_version(spark, path: str, version: int):
    """The Delta table at `path` as of `version`: one pinned version for a whole job."""
    return spark.read.format("delta").option("versionAsOf", version).load(path)


def replace_partition(df, path: str, *, column: str, value: dt.date, partition: bool = True,
                      table_properties: dict[str, str] | None = None, merge_schema: bool = False,
                      value_to: dt.date | None = None) -> int:
    """Replace exactly the rows with column = value (or value <= column <= value_to), in one Delta transaction
    (creates the table if needed, with `table_properties`; an existing table keeps its own; merge_schema adds
    new columns to an existing table). Returns the table version it committed."""
    where = (f"{column} = DATE'{value.isoformat()}'" if value_to is None or value_to == value
             else f"{column} >= DATE'{value.isoformat()}' AND {column} <= DATE'{value_to.isoformat()}'")
    writer = df.write.format("delta").mode("overwrite").option("replaceWhere", where)
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    for key, prop in (table_properties or {}).items():
        writer = writer.option(key, prop)
    if partition:
        writer = writer.partitionBy(column)
    writer.save(path)
    return latest_version(df.sparkSession, path)
