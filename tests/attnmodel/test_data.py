import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from attnmodel.columns import AS_OF_DATE, ITEM_IDX, LENGTH, USER_ID
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


@pytest.mark.parametrize("date_type", [pa.string(), pa.date32()])
def test_read_delta_table_one_date_and_version(tmp_path, date_type):
    day = (lambda s: dt.date.fromisoformat(s)) if date_type == pa.date32() else str
    _write_table(tmp_path / "seq", [("u1", [1, 2, 3], day("2026-11-20")), ("u2", [4, 5], day("2026-11-20"))], date_type)
    _write_table(tmp_path / "seq", [("u1", [1, 2, 3, 6], day("2026-11-21"))], date_type)
    s = read_sequence_table(str(tmp_path / "seq"), "2026-11-21")
    assert s.user_ids.tolist() == ["u1"] and s.items[0].tolist() == [1, 2, 3, 6]
    assert "@v1" in s.data_version
    s0 = read_sequence_table(str(tmp_path / "seq"), "2026-11-20", version=0)
    assert sorted(s0.user_ids.tolist()) == ["u1", "u2"]
    with pytest.raises(DataError, match="no sequences"):
        read_sequence_table(str(tmp_path / "seq"), "2026-11-21", version=0)
    with pytest.raises(ValueError, match="item index 6"):
        read_sequence_table(str(tmp_path / "seq"), "2026-11-21", n_items=5)
