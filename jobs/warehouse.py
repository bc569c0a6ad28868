"""Table locations under a warehouse root (a local path or any Hadoop URI)."""

from __future__ import annotations

import os


def latest_version(spark, path: str) -> int:
    """The current version of the Delta table at `path`."""
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def table_path(warehouse_root: str, table: str) -> str:
    root = warehouse_root.rstrip("/")
    if "://" not in root and not root.startswith("/"):
        root = os.path.abspath(root)  # Delta wants absolute local paths
    return f"{root}/{table}"
