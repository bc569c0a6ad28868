"""A small warehouse with two snapshots and a model trained on the older one, shared by the scoring and export tests.

D1, D2: generated logs (120 users, 60 items). Model A is trained on the D2 snapshot. D3 adds hand-written events:
known users meet three items never seen before (indexed after model A was trained), and user `cold1` has only
those new items, so the model knows none of its history.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from attnmodel.cli import train_main
from jobs.build_sequences import SequenceParams
from jobs.build_sequences import run as build_sequences
from jobs.generate_events import GenerateParams, generate
from jobs.ingest_events import IngestParams
from jobs.ingest_events import run as ingest
from tests.jobs.rawdata import event, write_partition

D1, D2, D3 = dt.date(2026, 4, 1), dt.date(2026, 4, 2), dt.date(2026, 4, 3)
NEW_ITEMS = ("new-1", "new-2", "new-3")
TINY_MODEL = ["--device", "cpu", "--quiet", "--d-model", "16", "--blocks", "1", "--heads", "1", "--max-len", "30",
              "--batch-size", "64", "--epochs", "3"]


@dataclass(frozen=True)
class World:
    root: Path
    warehouse: str
    models: Path
    model_a: str  # trained on the D2 snapshot


def train_model(warehouse: str, models: Path, day: dt.date, version: str) -> str:
    """The model `version` trained on the snapshot of `day` (trained once per test session)."""
    if (models / version).exists():
        return str(models / version)
    assert train_main(["--table", f"{warehouse}/user_sequences", "--as-of-date", day.isoformat(), "--out", str(models),
                       "--model-version", version, *TINY_MODEL]) == 0
    return str(models / version)


def build_world(spark, root: Path) -> World:
    raw, warehouse, models = root / "raw", str(root / "wh"), root / "models"
    generate(spark, GenerateParams(out=str(raw), users=120, items=60, days=2, events=3000, seed=11, start_date=D1))
    for day in (D1, D2):
        ingest(spark, IngestParams(logical_date=day, raw_root=str(raw), warehouse=warehouse))
    build_sequences(spark, SequenceParams(logical_date=D2, warehouse=warehouse))
    model_a = train_model(warehouse, models, D2, "model-a")
    day3 = [event(f"d3-{i}", user=f"u{i + 1}", item=NEW_ITEMS[i % 3], ts=f"{D3}T0{i % 9}:00:00+00:00") for i in range(12)]
    day3 += [event("d3-cold-1", user="cold1", item="new-1", ts=f"{D3}T10:00:00+00:00"),
             event("d3-cold-2", user="cold1", item="new-2", ts=f"{D3}T11:00:00+00:00")]
    write_partition(str(raw), D3, {"part-0.json": "\n".join(day3) + "\n"})
    ingest(spark, IngestParams(logical_date=D3, raw_root=str(raw), warehouse=warehouse))
    build_sequences(spark, SequenceParams(logical_date=D3, warehouse=warehouse))
    return World(root, warehouse, models, model_a)


def last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])
