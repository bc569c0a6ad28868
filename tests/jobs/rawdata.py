"""Helpers for tests that write raw event partitions by hand."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os

from jobs.raw_contract import raw_partition_path


def event(event_id=None, user="u1", item="i1", etype="view", ts="2026-01-05T10:00:00+00:00", value=None, **extra) -> str:
    rec = {"user_id": user, "item_id": item, "event_type": etype, "timestamp": ts}
    if event_id is not None:
        rec["event_id"] = event_id
    if value is not None:
        rec["value"] = value
    rec.update(extra)
    return json.dumps(rec)


def write_partition(raw_root: str, day: dt.date, files: dict[str, str | bytes]) -> str:
    """Write files (name -> text or bytes; .gz names are gzipped when given text) into the raw partition for day."""
    path = raw_partition_path(str(raw_root), day)
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        os.remove(os.path.join(path, name))
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        if name.endswith(".gz") and isinstance(content, str):
            data = gzip.compress(data)
        with open(os.path.join(path, name), "wb") as fh:
            fh.write(data)
    return path
