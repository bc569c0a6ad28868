import numpy as np
import pytest
import torch

from attnmodel.data import Sequences
from attnmodel.model import ModelConfig, SASRec


def planted_sequences(n_users=300, n_items=60, min_len=8, max_len=16, seed=0) -> Sequences:
    """Each user walks a fixed successor permutation over the items: the next item is fully determined."""
    rng = np.random.default_rng(seed)
    succ = rng.permutation(n_items) + 1  # successor of item i is succ[i - 1]
    items = []
    for _ in range(n_users):
        cur = int(rng.integers(1, n_items + 1))
        seq = [cur]
        for _ in range(int(rng.integers(min_len, max_len + 1)) - 1):
            cur = int(succ[cur - 1])
            seq.append(cur)
        items.append(np.asarray(seq, dtype=np.int64))
    users = np.array([f"u{i:04d}" for i in range(n_users)])
    return Sequences(users, items, n_items, "synthetic")


def write_pairs(path, seqs: Sequences) -> None:
    with open(path, "w") as f:
        for u, s in zip(seqs.user_ids, seqs.items):
            for i in s:
                f.write(f"{u} {i}\n")


@pytest.fixture
def planted():
    return planted_sequences()


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return SASRec(ModelConfig(n_items=50, max_len=20, d_model=16, n_blocks=2, n_heads=2, dropout=0.1)).eval()
