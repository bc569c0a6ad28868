import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from attnmodel.columns import (
    AS_OF_DATE,
    EVENTS_VERSION,
    ITEM_IDX,
    ITEM_INDEX_VERSION,
    LENGTH,
    MAX_ITEM_IDX,
    SEQUENCE_SNAPSHOTS_TABLE,
    USER_ID,
    USER_SEQUENCES_VERSION,
)
from attnmodel.data import DataError, leave_one_out, pad_left, read_pairs, read_sequence_table, training_rows


def _pairs(tmp_path, text):
    p = tmp_path / "pairs.txt"
    p.write_text(text)
    return str(p)


def test_read_pairs_keeps_order_and_groups_users(tmp_path):
    seqs = read_pairs(_pairs(tmp_path, "1 5\n2 7\n1 3\n1 9\n2 1\n"))
    d = dict(zip(seqs.user_ids, (s.tolist() for s in seqs.items)))
    assert d == {"1": [5, 3, 9], "2": [7, 1]}
    assert seqs.n_items == 9


def test_empty_pairs_file(tmp_path):
    with pytest.raises(DataError, match="empty"):
        read_pairs(_pairs(tmp_path, ""))


def test_item_beyond_table_is_named(tmp_path):
    with pytest.raises(ValueError, match="item index 12 .*n_items = 10"):
        read_pairs(_pairs(tmp_path, "1 5\n1 12\n"), n_items=10)


def test_padding_item_rejected(tmp_path):
    with pytest.raises(DataError, match="item index 0"):
        read_pairs(_pairs(tmp_path, "1 0\n"))


def test_single_event_users_are_kept_out_of_training_but_stay():
    from attnmodel.data import Sequences

    seqs = Sequences(np.array(["a", "b"]), [np.array([4]), np.array([1, 2, 3, 4])], 4)
    split = leave_one_out(seqs)
    assert [s.tolist() for s in split.train.items] == [[4], [1, 2]]
    assert split.valid.targets.tolist() == [3] and split.test.targets.tolist() == [4]
    assert split.test.histories[0].tolist() == [1, 2, 3]
    rows = training_rows(split.train, max_len=5)
    assert rows.shape == (1, 6)  # user a (one event) has no training pair
    with pytest.raises(DataError):
        training_rows(Sequences(np.array(["a"]), [np.array([4])], 4), max_len=5)


def test_truncation_keeps_most_recent():
    out = pad_left([np.arange(1, 11), np.array([3])], 4)
    assert out.tolist() == [[7, 8, 9, 10], [0, 0, 0, 3]]


def _write_table(path, rows, date_type=pa.string()):
    from deltalake import write_deltalake

    t = pa.table({
        USER_ID: pa.array([r[0] for r in rows], pa.string()),
        ITEM_IDX: pa.array([r[1] for r in rows], pa.list_(pa.int32())),
        LENGTH: pa.array([len(r[1]) for r in rows], pa.int32()),
        AS_OF_DATE: pa.array([r[2] for r in rows], date_type),
    })
    write_deltalake(str(path), t, partition_by=[AS_OF_DATE], mode="append")


def _write_record(root, as_of_date, sequences_version, max_item_idx):
    from deltalake import write_deltalake

    write_deltalake(str(root / SEQUENCE_SNAPSHOTS_TABLE), pa.table({
        AS_OF_DATE: pa.array([dt.date.fromisoformat(as_of_date)], pa.date32()),
        USER_SEQUENCES_VERSION: pa.array([sequences_version], pa.int64()),
        ITEM_INDEX_VERSION: pa.array([3], pa.int64()), MAX_ITEM_IDX: pa.array([max_item_idx], pa.int32()),
        EVENTS_VERSION: pa.array([9], pa.int64()), "users": pa.array([1], pa.int64()),
    }), mode="append")


@pytest.mark.parametrize("date_type", [pa.string(), pa.date32()])
def test_read_snapshot_exactly_as_its_record_says(tmp_path, date_type):
    day = (lambda s: dt.date.fromisoformat(s)) if date_type == pa.date32() else str
    seq = str(tmp_path / "user_sequences")
    _write_table(seq, [("u1", [1, 2, 3], day("2026-11-20")), ("u2", [4, 5], day("2026-11-20"))], date_type)
    _write_table(seq, [("u1", [1, 2, 3, 6], day("2026-11-21"))], date_type)
    with pytest.raises(DataError, match="no snapshot record table"):
        read_sequence_table(seq, "2026-11-21")
    _write_record(tmp_path, "2026-11-20", 0, 5)
    _write_record(tmp_path, "2026-11-21", 1, 7)
    _write_table(seq, [("u9", [7], day("2026-11-21"))], date_type)  # v2: a snapshot write not (yet) recorded
    s, record = read_sequence_table(seq, "2026-11-21")
    assert s.user_ids.tolist() == ["u1"] and s.items[0].tolist() == [1, 2, 3, 6]
    assert "@v1" in s.data_version and s.n_items == 7  # the record's item count, not the largest item seen
    assert record[ITEM_INDEX_VERSION] == 3 and record[EVENTS_VERSION] == 9 and record[AS_OF_DATE] == "2026-11-21"
    s0, _ = read_sequence_table(seq, "2026-11-20")
    assert sorted(s0.user_ids.tolist()) == ["u1", "u2"] and "@v0" in s0.data_version
    with pytest.raises(DataError, match="no record of a user_sequences snapshot for 2026-11-22"):
        read_sequence_table(seq, "2026-11-22")


def test_snapshot_with_items_beyond_its_record_is_an_error(tmp_path):
    seq = str(tmp_path / "user_sequences")
    _write_table(seq, [("u1", [1, 2, 6], "2026-11-21")])
    _write_record(tmp_path, "2026-11-21", 0, 5)
    with pytest.raises(ValueError, match="item index 6"):
        read_sequence_table(seq, "2026-11-21")
