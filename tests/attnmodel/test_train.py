import math

import pytest
import torch

from attnmodel.data import leave_one_out
from attnmodel.evaluate import evaluate_model, evaluate_popularity
from attnmodel.model import ModelConfig, SASRec
from attnmodel.train import CHECKPOINT, TrainConfig, TrainingDiverged, train, warm_start

from .conftest import planted_sequences


def _cfg(n_items, **kw):
    model = ModelConfig(n_items=n_items, max_len=16, d_model=32, n_blocks=1, n_heads=1, dropout=0.1)
    base = dict(model=model, epochs=3, batch_size=64, lr=5e-3, patience=50, seed=0, device="cpu", progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_beats_popularity_on_planted_order():
    split = leave_one_out(planted_sequences())
    res = train(_cfg(60, epochs=4), split.train, split.valid)
    model_m = evaluate_model(res.model, split.test)
    pop_m = evaluate_popularity(split.train, split.test, max_len=16)
    assert model_m["hr@10"] > 0.6 and model_m["hr@10"] > pop_m["hr@10"] + 0.3, (model_m, pop_m)
    assert res.best_epoch >= 1 and len(res.history) == 4


def test_deterministic_on_cpu_for_a_seed():
    split = leave_one_out(planted_sequences(n_users=80))
    a = train(_cfg(60, epochs=2), split.train, split.valid)
    b = train(_cfg(60, epochs=2), split.train, split.valid)
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), k
    assert a.history[-1]["loss"] == b.history[-1]["loss"]


def test_warm_start_keeps_old_item_vectors():
    torch.manual_seed(0)
    old = SASRec(ModelConfig(n_items=10, max_len=8, d_model=16))
    torch.manual_seed(1)
    new = SASRec(ModelConfig(n_items=14, max_len=8, d_model=16))
    fresh_rows = new.item_emb.weight[11:].detach().clone()
    warm_start(new, old.state_dict())
    torch.testing.assert_close(new.item_emb.weight[:11], old.item_emb.weight)
    torch.testing.assert_close(new.item_emb.weight[11:], fresh_rows)
    torch.testing.assert_close(new.blocks[0].qkv.weight, old.blocks[0].qkv.weight)
    with pytest.raises(ValueError, match="shape"):
        warm_start(SASRec(ModelConfig(n_items=14, max_len=8, d_model=8)), old.state_dict())


def test_warm_start_through_train_keeps_vectors_at_start():
    seqs = planted_sequences(n_users=60)
    split = leave_one_out(seqs)
    torch.manual_seed(0)
    old = SASRec(ModelConfig(n_items=50, max_len=16, d_model=32, n_blocks=1))
    res = train(_cfg(60, epochs=1, lr=0.0), split.train, split.valid, init_state=old.state_dict())
    torch.testing.assert_close(res.model.item_emb.weight[:51], old.item_emb.weight)


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path, monkeypatch):
    split = leave_one_out(planted_sequences(n_users=80))
    train(_cfg(60, epochs=1), split.train, split.valid, checkpoint_dir=tmp_path)
    good = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    real_loss = SASRec.loss
    monkeypatch.setattr(SASRec, "loss", lambda self, batch: real_loss(self, batch) * math.nan)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2.*last good checkpoint.*epoch 1"):
        train(_cfg(60, epochs=3), split.train, split.valid, checkpoint_dir=tmp_path, resume=True)
    kept = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert kept["epoch"] == 1
    for k, v in good["model"].items():
        assert torch.equal(v, kept["model"][k])


def test_resume_continues_and_matches_uninterrupted(tmp_path):
    split = leave_one_out(planted_sequences(n_users=80))
    full = train(_cfg(60, epochs=3), split.train, split.valid)
    train(_cfg(60, epochs=2), split.train, split.valid, checkpoint_dir=tmp_path)
    resumed = train(_cfg(60, epochs=3), split.train, split.valid, checkpoint_dir=tmp_path, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["loss"] == pytest.approx(full.history[-1]["loss"], rel=1e-6)
