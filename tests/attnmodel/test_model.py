import pytest
import torch

from attnmodel.model import ModelConfig, SASRec


def _seq():
    g = torch.Generator().manual_seed(1)
    s = torch.randint(1, 51, (4, 12), generator=g)
    s[0, :5] = 0  # left padding
    s[1, :11] = 0  # a single item
    return s


def test_shapes(tiny_model):
    s = _seq()
    assert tiny_model(s).shape == (4, 12, 16)
    assert tiny_model.score_all(s).shape == (4, 51)
    v, i = tiny_model.topk(s, 7)
    assert v.shape == i.shape == (4, 7)


def test_no_nan_with_left_padding(tiny_model):
    s = _seq()
    s[2] = 0  # an all-padding row too
    assert not tiny_model(s).isnan().any()
    assert not tiny_model.score_all(s)[:, 1:].isnan().any()


def test_causality(tiny_model):
    s = _seq()
    t = 7
    s2 = s.clone()
    s2[:, t + 1] = s2[:, t + 1] % 50 + 1
    h, h2 = tiny_model(s), tiny_model(s2)
    torch.testing.assert_close(h[:, : t + 1], h2[:, : t + 1], rtol=0, atol=1e-6)
    assert (h[:, t + 1:] - h2[:, t + 1:]).abs().max() > 1e-4


def test_padding_invariance(tiny_model):
    s = _seq()
    padded = torch.cat([torch.zeros(4, 5, dtype=torch.long), s], 1)
    h, hp = tiny_model(s), tiny_model(padded)[:, 5:]
    real = s != 0
    torch.testing.assert_close(h[real], hp[real], rtol=0, atol=1e-5)
    torch.testing.assert_close(tiny_model.score_all(s), tiny_model.score_all(padded), rtol=0, atol=1e-5)


def test_topk_never_returns_padding_or_excluded(tiny_model):
    s = _seq()
    ex = torch.randint(0, 51, (4, 30))
    v, i = tiny_model.topk(s, 15, exclude=ex)
    assert (i != 0).all()
    for r in range(4):
        assert not set(i[r].tolist()) & set(ex[r].tolist())
    v, i = tiny_model.topk(s, 15)  # default: the sequence's own items
    for r in range(4):
        assert not set(i[r].tolist()) & set(s[r].tolist())


@pytest.mark.parametrize("loss", ["softmax", "sampled_softmax", "bce"])
def test_loss_falls_when_overfitting_a_tiny_batch(loss):
    torch.manual_seed(0)
    m = SASRec(ModelConfig(n_items=30, max_len=10, d_model=32, n_blocks=1, dropout=0.0, loss=loss, n_negatives=16))
    batch = torch.randint(1, 31, (8, 11))
    batch[0, :4] = 0
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss_v = m.loss(batch)
        first = first if first is not None else loss_v.item()
        opt.zero_grad()
        loss_v.backward()
        opt.step()
    assert loss_v.item() < 0.5 * first


def test_content_changes_item_vectors():
    torch.manual_seed(0)
    cfg = ModelConfig(n_items=5, max_len=4, d_model=8, n_tags=4, max_tags=2, n_tokens=3, max_tokens=2)
    m = SASRec(cfg)
    before = m.item_vectors().detach().clone()
    tags = torch.zeros(6, 2, dtype=torch.long)
    tags[1] = torch.tensor([1, 2])
    m.set_content(tags=tags)
    after = m.item_vectors().detach()
    assert not torch.allclose(before[1], after[1])
    torch.testing.assert_close(before[2:], after[2:])


def test_bad_config():
    with pytest.raises(ValueError):
        ModelConfig(n_items=10, loss="hinge")
    with pytest.raises(ValueError):
        ModelConfig(n_items=10, d_model=10, n_heads=3)
