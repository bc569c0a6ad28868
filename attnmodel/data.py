"""Reading per-user item sequences (pairs file or the `user_sequences` Delta table) and leave-one-out splits."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from attnmodel.columns import (
    AS_OF_DATE,
    ITEM_IDX,
    LENGTH,
    MAX_ITEM_IDX,
    PADDING_IDX,
    SEQUENCE_SNAPSHOTS_TABLE,
    SNAPSHOT_COLUMNS,
    USER_ID,
    USER_SEQUENCES_VERSION,
)


class DataError(ValueError):
    """Input sequences that cannot be used (empty, out-of-range item indexes, malformed)."""


@dataclass(frozen=True)
class Sequences:
    """Per-user item sequences, oldest first; items are 1..n_items."""

    user_ids: np.ndarray  # (U,) str
    items: list  # U arrays of int64
    n_items: int
    data_version: str = ""  # where they came from, e.g. "delta:/path@v3/as_of_date=2026-11-21"

    def __len__(self) -> int:
        return len(self.items)

    @property
    def n_events(self) -> int:
        return int(sum(len(s) for s in self.items))


@dataclass(frozen=True)
class EvalSet:
    """Leave-one-out targets: each user's history (all earlier items) and the held-out next item."""

    user_ids: np.ndarray
    histories: list
    targets: np.ndarray  # (U,) int64


@dataclass(frozen=True)
class Split:
    train: Sequences  # items before the validation target
    valid: EvalSet  # second-to-last item
    test: EvalSet  # last item (history includes the validation item)


def _from_flat(users: np.ndarray, items: np.ndarray, n_items: int | None, version: str) -> Sequences:
    if len(items) == 0:
        raise DataError(f"no events in {version or 'input'}")
    if (items < 1).any():
        bad = int(items[items < 1][0])
        raise DataError(f"item index {bad} is not a real item (items are 1..n_items, {PADDING_IDX} is padding)")
    top = int(items.max())
    if n_items is None:
        n_items = top
    elif top > n_items:
        raise DataError(f"item index {top} is beyond the item table (n_items = {n_items})")
    order = np.argsort(users, kind="stable")  # group by user, keep each user's event order
    users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    return Sequences(users[starts], np.split(items, starts[1:]), int(n_items), version)


def read_pairs(path: str, n_items: int | None = None) -> Sequences:
    """An ordered `user item` file (space or tab separated, integer item indexes >= 1, oldest line first)."""
    import pyarrow.csv as pcsv

    with open(path, "rb") as f:
        head = f.readline()
    if not head.strip():
        raise DataError(f"{path}: empty pairs file")
    delim = "\t" if b"\t" in head else " "
    try:
        t = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(column_names=["user", "item"]),
            parse_options=pcsv.ParseOptions(delimiter=delim),
            convert_options=pcsv.ConvertOptions(column_types={"user": pa.string(), "item": pa.int64()}),
        )
    except pa.ArrowInvalid as e:
        raise DataError(f"{path}: not a `user item` pairs file ({str(e).splitlines()[0]})") from None
    if t.num_rows == 0:
        raise DataError(f"{path}: empty pairs file")
    users = t.column("user").to_numpy(zero_copy_only=False).astype(str)
    return _from_flat(users, t.column("item").to_numpy(), n_items, f"pairs:{path}")


def snapshot_record(sequences_table: str, as_of_date: str) -> dict:
    """What build_sequences recorded for the snapshot `as_of_date` of the user_sequences table at
    `sequences_table`: its version, the item_index version and largest item_idx, the events version.
    The record table sits beside the sequences table, under the same warehouse root."""
    from attnmodel.delta_io import TableMissing, read_delta

    path = f"{sequences_table.rstrip('/').rsplit('/', 1)[0]}/{SEQUENCE_SNAPSHOTS_TABLE}"
    try:
        rows = read_delta(path, columns=list(SNAPSHOT_COLUMNS),
                          where=(AS_OF_DATE, dt.date.fromisoformat(as_of_date))).to_pylist()
    except TableMissing:
        raise DataError(f"no snapshot record table at {path}: run build_sequences for {as_of_date}") from None
    if len(rows) != 1:
        raise DataError(f"no record of a user_sequences snapshot for {as_of_date} in {path}: "
                        f"run build_sequences --logical-date {as_of_date}")
    record = rows[0]
    record[AS_OF_DATE] = str(record[AS_OF_DATE])
    return record


def _snapshot_rows(path: str, record: dict, columns: list[str]) -> pa.Table:
    from attnmodel.delta_io import read_delta

    return read_delta(path, version=record[USER_SEQUENCES_VERSION], columns=columns,
                      where=(AS_OF_DATE, dt.date.fromisoformat(record[AS_OF_DATE])))


def read_sequence_table(path: str, as_of_date: str) -> tuple[Sequences, dict]:
    """The snapshot `as_of_date` of the `user_sequences` Delta table, exactly the version its record names,
    with the record; n_items is the record's largest item_idx (items indexed up to then, seen or not)."""
    record = snapshot_record(path, as_of_date)
    version = record[USER_SEQUENCES_VERSION]
    t = _snapshot_rows(path, record, [USER_ID, ITEM_IDX])
    tag = f"delta:{path}@v{version}/{AS_OF_DATE}={as_of_date}"
    return from_arrow(t, record[MAX_ITEM_IDX], tag), record


def from_arrow(t: pa.Table, n_items: int | None = None, data_version: str = "") -> Sequences:
    """A table with USER_ID (string) and ITEM_IDX (list<int>, oldest first) columns."""
    if t.num_rows == 0:
        raise DataError(f"no sequences in {data_version or 'table'}")
    lists = t.column(ITEM_IDX).combine_chunks()
    flat = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    lens = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    users = np.repeat(t.column(USER_ID).to_numpy(zero_copy_only=False).astype(str), lens)
    if LENGTH in t.column_names:
        declared = t.column(LENGTH).to_numpy(zero_copy_only=False)
        if (declared != lens).any():
            raise DataError(f"{data_version}: `{LENGTH}` disagrees with the length of `{ITEM_IDX}`")
    return _from_flat(users, flat, n_items, data_version)


def leave_one_out(seqs: Sequences) -> Split:
    """Standard protocol: test = last item, valid = second-to-last, train = the rest.

    Users with fewer than 3 items get no targets; their items all go to training.
    """
    tr, vh, vt, th, tt = [], [], [], [], []
    for s in seqs.items:
        if len(s) < 3:
            tr.append(s)
            continue
        tr.append(s[:-2])
        vh.append(s[:-2]), vt.append(s[-2]), th.append(s[:-1]), tt.append(s[-1])
    has = np.array([len(s) >= 3 for s in seqs.items], dtype=bool)
    users = seqs.user_ids[has]
    return Split(
        Sequences(seqs.user_ids, tr, seqs.n_items, seqs.data_version),
        EvalSet(users, vh, np.asarray(vt, dtype=np.int64)),
        EvalSet(users, th, np.asarray(tt, dtype=np.int64)),
    )


def pad_left(seqs: list, length: int) -> np.ndarray:
    """(N, length) int64, each row's most recent `length` items right-aligned, 0 (padding) on the left."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-length:]
        if len(s):
            out[i, length - len(s):] = s
    return out


def training_rows(train: Sequences, max_len: int) -> np.ndarray:
    """Rows (N, max_len + 1) for `SASRec.loss`; users with a single event have no pair and are left out."""
    keep = [s for s in train.items if len(s) >= 2]
    if not keep:
        raise DataError("no user has two or more events: nothing to train on")
    return pad_left(keep, max_len + 1)


def read_day_holdout(path: str, as_of_date: str) -> tuple[Sequences, EvalSet, dict]:
    """The gate's test set from the snapshot `as_of_date`: for each user whose last event falls on that date
    (UTC) and who has an earlier one, the target is that last event and the history everything before it.
    Returns (the snapshot's sequences, the holdout, the snapshot record)."""
    from attnmodel.columns import EVENT_TS

    record = snapshot_record(path, as_of_date)
    t = _snapshot_rows(path, record, [USER_ID, ITEM_IDX, EVENT_TS])
    seqs = from_arrow(t.select([USER_ID, ITEM_IDX]), record[MAX_ITEM_IDX],
                      f"delta:{path}@v{record[USER_SEQUENCES_VERSION]}/{AS_OF_DATE}={as_of_date}")
    stamps = t.column(EVENT_TS).combine_chunks()
    lens = pc.list_value_length(stamps).fill_null(0).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(stamps).cast(pa.timestamp("us", tz="UTC"))
    ends = np.cumsum(lens) - 1
    last_day = pc.cast(pc.cast(flat, pa.timestamp("us")).take(pa.array(np.maximum(ends, 0))), pa.date32())
    target_day = pa.scalar(as_of_date).cast(pa.date32())
    active_on_day = set(np.asarray(t.column(USER_ID).to_pylist())[
        (lens > 0) & pc.equal(last_day, target_day).to_numpy(zero_copy_only=False)])
    users, hist, targets = [], [], []
    for user, items in zip(seqs.user_ids, seqs.items):
        if user in active_on_day and len(items) >= 2:
            users.append(user), hist.append(items[:-1]), targets.append(items[-1])
    return seqs, EvalSet(np.asarray(users, dtype=str), hist, np.asarray(targets, dtype=np.int64)), record
