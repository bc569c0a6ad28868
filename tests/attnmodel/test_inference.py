import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from attnmodel.artifact import load_artifact, save_artifact
from attnmodel.columns import EXCLUDE_IDX, ITEM_IDX, MODEL_VERSION, RANK, SCORE, USER_ID
from attnmodel.inference import BECAUSE_IDX, load_for_inference, pack_flat, pack_ragged, recommend, recommend_arrow


def _seqs():
    g = torch.Generator().manual_seed(3)
    s = torch.randint(1, 51, (6, 10), generator=g)
    s[0, :4] = 0
    s[1, :9] = 0
    return s


def test_recommend_matches_model_topk(tiny_model):
    s = _seqs()
    v, i = tiny_model.topk(s, 8)
    out = recommend(tiny_model, s.numpy(), k=8)
    assert out["item_idx"].shape == (6, 8) and out["score"].dtype == np.float32
    np.testing.assert_array_equal(out["item_idx"], i.numpy())
    np.testing.assert_allclose(out["score"], v.numpy(), atol=1e-5)


def test_right_padding_and_chunking_give_the_same_answer(tiny_model):
    s = _seqs()
    ref = recommend(tiny_model, s.numpy(), k=8)
    right = np.zeros_like(s.numpy())
    for r, row in enumerate(s.numpy()):
        real = row[row > 0]
        right[r, : len(real)] = real
    np.testing.assert_array_equal(recommend(tiny_model, right, k=8)["item_idx"], ref["item_idx"])
    chunked = recommend(tiny_model, s.numpy(), k=8, item_chunk=7, batch_size=4)
    np.testing.assert_array_equal(chunked["item_idx"], ref["item_idx"])


def test_never_returns_padding_or_excluded(tiny_model):
    s = _seqs().numpy()
    extra = [np.arange(1, 21), np.array([], dtype=np.int64), np.array([7]), np.arange(30, 45), np.array([1, 2]), np.array([50])]
    out = recommend(tiny_model, s, k=20, exclude=extra)
    for r in range(len(s)):
        got = set(out["item_idx"][r].tolist())
        assert 0 not in got and not got & set(extra[r].tolist())
    out = recommend(tiny_model, s, k=20)  # default: each row's own items
    for r in range(len(s)):
        assert not set(out["item_idx"][r].tolist()) & set(s[r][s[r] > 0].tolist())


def test_explanations_are_history_items(tiny_model):
    s = _seqs().numpy()
    out = recommend(tiny_model, s, k=5, explain=True, n_explain=3)
    ex = out["explanation"]
    assert ex.shape == (6, 5, 3)
    for r in range(len(s)):
        hist = set(s[r][s[r] > 0].tolist())
        assert set(ex[r].flatten().tolist()) - {0} <= hist
        assert (ex[r] != 0).sum(-1).min() == min(3, len(hist))


def test_item_beyond_table_is_an_error(tiny_model):
    with pytest.raises(ValueError, match="item index 51"):
        recommend(tiny_model, np.array([[1, 2, 51]]), k=3)


def test_pack_ragged():
    np.testing.assert_array_equal(pack_ragged([np.array([1, 2, 3]), np.array([4]), np.array([], dtype=np.int64)]),
                                  [[1, 2, 3], [0, 0, 4], [0, 0, 0]])
    # the last `width` values of each row, left-padded
    np.testing.assert_array_equal(pack_flat(np.array([1, 2, 3, 4, 5, 6]), np.array([3, 1, 0, 2]), width=2),
                                  [[2, 3], [0, 4], [0, 0], [5, 6]])


def test_artifact_round_trip(tmp_path, tiny_model):
    hist = [{"epoch": 1, "loss": 3.0, "valid_ndcg@10": 0.1}, {"epoch": 2, "loss": 2.5, "valid_ndcg@10": 0.2}]
    art = save_artifact(tmp_path, tiny_model, model_version="art", metrics={"test": {"ndcg@10": 0.2}}, history=hist,
                        meta={"item_index_version": "items@v7", "data_version": "delta:/x@v3"})
    assert art == tmp_path / "art"
    with pytest.raises(FileExistsError):
        save_artifact(tmp_path, tiny_model, model_version="art")
    for f in ("model.pt", "config.json", "meta.json", "metrics.json", "history.json", "training_curve.png"):
        assert (tmp_path / "art" / f).exists(), f
    model, meta = load_artifact(tmp_path / "art")
    assert meta["item_index_version"] == "items@v7" and meta["data_version"] == "delta:/x@v3"
    assert meta["metrics"]["test"]["ndcg@10"] == 0.2
    assert json.loads((tmp_path / "art" / "config.json").read_text())["model"]["n_items"] == 50
    s = _seqs()
    torch.testing.assert_close(model.score_all(s), tiny_model.score_all(s))
    m2 = load_for_inference(str(tmp_path / "art"), device="cpu")
    assert m2.meta["item_index_version"] == "items@v7"


def _batch(histories, exclude=None):
    cols = {USER_ID: pa.array([f"u{i}" for i in range(len(histories))]),
            ITEM_IDX: pa.array(histories, pa.list_(pa.int32()))}
    if exclude is not None:
        cols[EXCLUDE_IDX] = pa.array(exclude, pa.list_(pa.int32()))
    return pa.RecordBatch.from_pydict(cols)


def _by_user(table):
    out = {}
    for r in table.to_pylist():
        out.setdefault(r[USER_ID], []).append(r)
    return out


def test_arrow_adapter_matches_recommend_and_drops_unknown_items(tiny_model):
    hist = [[3, 9, 12], [5], [7, 60, 8], [70, 80]]  # 60, 70, 80 are beyond the model's 50 items
    popularity = (np.array([9, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11]), np.arange(11, 0, -1).astype(np.float32))
    got = recommend_arrow(tiny_model, _batch(hist), k=6, model_version="m1", popularity=popularity,
                          popularity_version="popularity-2026-01-05", blocked=[1, 2])
    assert got.schema.names == [USER_ID, RANK, ITEM_IDX, SCORE, MODEL_VERSION]
    rows = _by_user(got)
    known = [[3, 9, 12], [5], [7, 8]]
    ref = recommend(tiny_model, pack_ragged([np.array(h) for h in known]), k=6, blocked=[1, 2])
    for u in range(3):
        mine = rows[f"u{u}"]
        assert [r[RANK] for r in mine] == list(range(1, 7))
        assert [r[ITEM_IDX] for r in mine] == ref["item_idx"][u].tolist()
        np.testing.assert_allclose([r[SCORE] for r in mine], ref["score"][u], rtol=1e-6)
        assert {r[MODEL_VERSION] for r in mine} == {"m1"}
        assert not {r[ITEM_IDX] for r in mine} & ({1, 2} | set(hist[u]))
    # u3 knows no item: cold, popularity minus blocked (1, 2) and its own history (none known to the list)
    assert [r[ITEM_IDX] for r in rows["u3"]] == [9, 3, 4, 5, 6, 7]
    assert {r[MODEL_VERSION] for r in rows["u3"]} == {"popularity-2026-01-05"}


def test_arrow_adapter_exclude_column_and_explanations(tiny_model):
    hist = [[3, 9, 12, 4], [70]]
    exclude = [[3, 9, 12, 4, 20, 21, 22], [9, 70]]  # e.g. everything seen, beyond the kept window
    popularity = (np.array([9, 1, 2, 3]), np.array([4, 3, 2, 1], np.float32))
    got = _by_user(recommend_arrow(tiny_model, _batch(hist, exclude), k=10, model_version="m1", explain=True,
                                   popularity=popularity))
    assert len(got["u0"]) == 10 and not {r[ITEM_IDX] for r in got["u0"]} & set(exclude[0])
    assert all(set(r[BECAUSE_IDX]) <= set(hist[0]) and r[BECAUSE_IDX] for r in got["u0"])
    # cold and fewer candidates than k: only what remains, no padding
    assert [r[ITEM_IDX] for r in got["u1"]] == [1, 2, 3] and all(r[BECAUSE_IDX] == [] for r in got["u1"])
    # null exclude = nothing excluded: history items may come back
    none = _by_user(recommend_arrow(tiny_model, _batch([[3, 9]], [None]), k=50, model_version="m1"))
    assert {3, 9} <= {r[ITEM_IDX] for r in none["u0"]} and len(none["u0"]) == 50
