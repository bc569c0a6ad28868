"""Reading Delta tables without Spark: delta-rs for the log (which files make a version), pyarrow for the files.

Why not delta-rs's own dataset scanner: with deltalake 1.6 its reader threads can outlive a short process and
abort it at exit ("terminate called without an active exception", exit 134; delta-io/delta-rs#2184), which
turns a successful `attnrec gate` into a failed Airflow task. Reading the files the log names with pyarrow
gives the same rows and exits cleanly. (Tables here are written without deletion vectors or column mapping.)
"""

from __future__ import annotations

import datetime as dt
import warnings

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


class TableMissing(LookupError):
    """No Delta table at the path."""


def read_delta(path: str, *, version: int | None = None, columns: list[str] | None = None,
               where: tuple[str, object] | None = None) -> pa.Table:
    """Rows of the Delta table at `path` (as of `version`), optionally only those with column == value.
    A partition column is pruned by the log; any other is filtered after reading."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(path, version=version)
    except TableNotFoundError:
        raise TableMissing(f"no Delta table at {path}") from None
    partitioned = table.metadata().partition_columns
    files_filter = None
    if where is not None and where[0] in partitioned:
        value = where[1].isoformat() if isinstance(where[1], dt.date) else str(where[1])
        files_filter = [(where[0], "=", value)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # partition_filters: still the simple way in 1.x
        files = table.file_uris(partition_filters=files_filter)
    wanted = None if columns is None else [c for c in columns if c not in partitioned]
    if where is not None and files_filter is None and wanted is not None and where[0] not in wanted:
        wanted = [*wanted, where[0]]
    parts = [pq.ParquetFile(f).read(columns=wanted) for f in files]
    if not parts:
        return pa.table({c: pa.array([], pa.null()) for c in (columns or [])})
    out = pa.concat_tables(parts, promote_options="permissive")
    if where is not None and files_filter is None:
        column = out.column(where[0])
        out = out.filter(pc.equal(column, pa.scalar(where[1]).cast(column.type)))
    if columns is not None:
        out = out.select([c for c in columns if c in out.column_names])
    return out


def partition_row_counts(path: str, column: str) -> dict:
    """{partition value: rows} of a table partitioned by `column`, from the Delta log alone (each file's
    numRecords statistic; the file's Parquet footer when a writer left no statistics): no data is read."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(path)
    except TableNotFoundError:
        raise TableMissing(f"no Delta table at {path}") from None
    actions = pa.table(table.get_add_actions(flatten=True))
    counts: dict = {}
    root = table.table_uri.rstrip("/")
    for rel, n, value in zip(actions.column("path").to_pylist(), actions.column("num_records").to_pylist(),
                             actions.column(f"partition.{column}").to_pylist()):
        if n is None:
            n = pq.ParquetFile(rel if "://" in rel or rel.startswith("/") else f"{root.removeprefix('file://')}/{rel}").metadata.num_rows
        counts[value] = counts.get(value, 0) + n
    return counts


def read_files(path: str, partition_filters: list, columns: list[str], row_filter=None,
               partition_column: str | None = None) -> pa.Table:
    """`columns` (not partition columns) of the files the log lists for `partition_filters` (delta-rs's
    (column, op, ISO value) tuples), with an optional pyarrow row filter; with `partition_column` (a date
    partition), that column too, from each file's path. An empty table (string columns) when nothing matches.
    Raises TableMissing when there is no table."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(path)
    except TableNotFoundError:
        raise TableMissing(f"no Delta table at {path}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        files = table.file_uris(partition_filters=partition_filters or None)
    parts = []
    for f in files:
        part = pq.read_table(f, columns=columns, filters=row_filter)
        if part.num_rows and partition_column:  # the value lives in the log and the path, not in the file
            value = dt.date.fromisoformat(f.split(f"{partition_column}=")[1].split("/")[0])
            part = part.append_column(partition_column, pa.repeat(pa.scalar(value, pa.date32()), part.num_rows))
        if part.num_rows:
            parts.append(part)
    if not parts:
        empty = {c: pa.array([], pa.string()) for c in columns}
        if partition_column:
            empty[partition_column] = pa.array([], pa.date32())
        return pa.table(empty)
    return pa.concat_tables(parts, promote_options="permissive")


def read_partitions(path: str, column: str, first, last, columns: list[str]) -> pa.Table:
    """`columns` of the rows whose date partition `column` lies in [first, last] (pruned by the log)."""
    rows = read_files(path, [(column, ">=", first.isoformat()), (column, "<=", last.isoformat())],
                      [c for c in columns if c != column], partition_column=column if column in columns else None)
    return rows.select(columns)


# ---------------------------------------------------------------- small append-only log tables
# (model_registry, pipeline_runs): one row per event, appended with delta-rs, read whole.

def warehouse_table(warehouse: str, table: str) -> str:
    """The table's path under a warehouse root (a local root made absolute, as Delta wants)."""
    import os

    root = warehouse.rstrip("/")
    if "://" not in root and not root.startswith("/"):
        root = os.path.abspath(root)
    return f"{root}/{table}"


def as_date(value):
    import datetime as dt

    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def append_log_row(path: str, schema, fields: dict, *, dates: tuple[str, ...] = (),
                   json_columns: tuple[str, ...] = (), what: str = "log") -> dict:
    """Build one row of `schema` from `fields` (missing: null; recorded_at: now; dates coerced; dicts as JSON)
    and append it in one small Delta commit: readers see it whole or not at all. Returns the row."""
    import datetime as dt
    import json

    import pyarrow as pa
    from deltalake import write_deltalake

    row = {name: None for name in schema.names}
    unknown = set(fields) - set(row)
    if unknown:
        raise ValueError(f"not {what} columns: {sorted(unknown)}")
    row.update(fields)
    row["recorded_at"] = row["recorded_at"] or dt.datetime.now(dt.timezone.utc)
    for name in dates:
        row[name] = as_date(row[name])
    for name in json_columns:
        if row[name] is not None and not isinstance(row[name], str):
            row[name] = json.dumps(row[name], sort_keys=True, default=str)
    write_deltalake(path, pa.Table.from_pylist([row], schema=schema), mode="append")
    return row


def read_log_rows(path: str) -> list[dict]:
    """Every row, oldest first by recorded_at; [] when the table does not exist yet."""
    try:
        rows = read_delta(path).to_pylist()
    except TableMissing:
        return []
    return sorted(rows, key=lambda r: r["recorded_at"])
