"""The model registry: a Delta table `model_registry` under the warehouse root, one row per event in a
model's life, appended and never updated.

    status     candidate  (trained for data_date; not yet judged)
               published  (serves data_date and the dates after it, until a later publish)
               rejected   (judged for data_date and kept out; the published model keeps serving)

Why a Delta table (and not MLflow): it lives beside the tables it points to, with the same storage, backups
and time travel; Spark, delta-rs and SQL read it; it needs no server. The model files themselves stay in
the models root (`artifacts/models/<model_version>/`), immutable.

Which model serves date D: the last `published` row with data_date <= D (by data_date, then recorded_at),
so a manual publish for D (a rollback) wins over the gate's decision for D and lasts until a later date's.
Pure pyarrow + delta-rs: no Spark, no Airflow.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from attnmodel.columns import MODEL_REGISTRY_TABLE
from attnmodel.delta_io import append_log_row, read_log_rows, warehouse_table

CANDIDATE, PUBLISHED, REJECTED = "candidate", "published", "rejected"
DECISIONS = (PUBLISHED, REJECTED)

SCHEMA = pa.schema([
    ("recorded_at", pa.timestamp("us", tz="UTC")),
    ("data_date", pa.date32()),  # the night the row is about
    ("model_version", pa.string()),
    ("model_dir", pa.string()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("run_id", pa.string()),
    ("train_key", pa.string()),  # same snapshot rows + settings + starting point -> same key (reuse on rerun)
    ("trained_on", pa.string()),  # JSON: the sequence snapshot record the model was trained on
    ("user_sequences_version", pa.int64()),
    ("code_version", pa.string()),
    ("warm_start_from", pa.string()),  # model_version it started from; "" = full retrain
    ("lineage_start_date", pa.date32()),  # data_date of the full retrain its warm-start chain began with
    ("metrics", pa.string()),  # JSON: training metrics (leave-one-out valid/test), settings
    ("gate_users", pa.int64()),
    ("candidate_ndcg10", pa.float64()),
    ("published_ndcg10", pa.float64()),
    ("popularity_ndcg10", pa.float64()),
    ("compared_with", pa.string()),  # model_version of the published model the gate compared against
])


def registry_path(warehouse: str) -> str:
    return warehouse_table(warehouse, MODEL_REGISTRY_TABLE)


def read_registry(warehouse: str) -> list[dict]:
    """Every row, oldest first; [] when there is no registry yet."""
    return read_log_rows(registry_path(warehouse))


def append(warehouse: str, **fields) -> dict:
    """Append one row (missing fields are null); returns it. One small Delta commit: readers see it or not."""
    if fields.get("status") not in (CANDIDATE, PUBLISHED, REJECTED):
        raise ValueError(f"unknown registry status {fields.get('status')!r}")
    return append_log_row(registry_path(warehouse), SCHEMA, fields, dates=("data_date", "lineage_start_date"),
                          json_columns=("trained_on", "metrics"), what="registry")


def _published(rows: list[dict], keep) -> dict | None:
    chosen = [r for r in rows if r["status"] == PUBLISHED and keep(r["data_date"])]
    return max(chosen, key=lambda r: (r["data_date"], r["recorded_at"])) if chosen else None


def published_for(rows: list[dict], date: dt.date) -> dict | None:
    """The publish row of the model that serves `date`, or None."""
    return _published(rows, lambda d: d <= date)


def published_before(rows: list[dict], date: dt.date) -> dict | None:
    """The model that served the last date before `date`: the only one a night for `date` may warm-start from
    (never a rejected candidate, never a model of a later date during a backfill)."""
    return _published(rows, lambda d: d < date)


def candidate_with_key(rows: list[dict], train_key: str) -> dict | None:
    found = [r for r in rows if r["status"] == CANDIDATE and r["train_key"] == train_key]
    return found[-1] if found else None


def latest_candidate(rows: list[dict], date: dt.date) -> dict | None:
    found = [r for r in rows if r["status"] == CANDIDATE and r["data_date"] == date]
    return found[-1] if found else None


def decision_for(rows: list[dict], model_version: str, date: dt.date) -> dict | None:
    """The gate's (or a person's) last decision about `model_version` for `date`, or None."""
    found = [r for r in rows if r["status"] in DECISIONS and r["model_version"] == model_version
             and r["data_date"] == date]
    return found[-1] if found else None


def candidate_row(rows: list[dict], model_version: str) -> dict | None:
    found = [r for r in rows if r["status"] == CANDIDATE and r["model_version"] == model_version]
    return found[-1] if found else None


def referenced_sequence_versions(rows: list[dict], since: dt.date | None = None) -> list[int]:
    """user_sequences versions that models the registry still points to were trained on (what VACUUM must keep
    readable): every model published for a date from `since` on, and the one serving on `since`. Older models
    are history: their training snapshots may go once the backfill window has passed them."""
    if since is None:
        kept = rows
    else:
        serving = published_for(rows, since)
        names = {r["model_version"] for r in rows if r["status"] == PUBLISHED and r["data_date"] >= since}
        names |= {serving["model_version"]} if serving else set()
        kept = [r for r in rows if r["model_version"] in names]
    return sorted({r["user_sequences_version"] for r in kept if r["user_sequences_version"] is not None})
