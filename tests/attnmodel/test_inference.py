import json

import numpy as np
import pytest
import torch

from attnmodel.artifact import load_artifact, save_artifact
from attnmodel.inference import load_for_inference, pack_ragged, recommend


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


def test_artifact_round_trip(tmp_path, tiny_model):
    hist = [{"epoch": 1, "loss": 3.0, "valid_ndcg@10": 0.1}, {"epoch": 2, "loss": 2.5, "valid_ndcg@10": 0.2}]
    save_artifact(tmp_path / "art", tiny_model, metrics={"test": {"ndcg@10": 0.2}}, history=hist,
                  item_index_version="items@v7", data_version="delta:/x@v3")
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
