import math

import numpy as np
import pytest
import torch

from attnmodel.data import EvalSet, Sequences
from attnmodel.evaluate import evaluate_popularity, evaluate_scores, metrics_from_ranks, ranks_from_scores

NAN, NEG = float("nan"), float("-inf")


def test_ranks_by_hand_with_ties_history_and_nan():
    # columns: 0 = padding, items 1..5
    scores = torch.tensor([
        [9.0, 0.5, 0.9, 0.1, 0.3, 0.2],  # target 1 (0.5): only item 2 beats it -> rank 2
        [9.0, 0.5, 0.9, 0.5, 0.3, 0.2],  # target 1: item 2 beats, item 3 ties (tie counts against) -> rank 3
        [9.0, 0.5, 0.9, 0.5, 0.3, 0.2],  # target 1, items 2 and 3 are history -> removed -> rank 1
        [9.0, NAN, 0.9, 0.5, 0.3, 0.2],  # NaN target -> miss
        [9.0, 0.5, NAN, 0.1, 0.3, 0.2],  # a NaN candidate counts against the model -> rank 2
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # constant scores: every other item ties -> rank 5
        [9.0, 0.5, 0.9, 0.1, 0.3, 0.2],  # target 1 is also in history: it stays a candidate -> rank 2
    ])
    targets = torch.tensor([1, 1, 1, 1, 1, 1, 1])
    history = torch.tensor([[0, 0], [0, 0], [2, 3], [0, 0], [0, 0], [0, 0], [1, 4]])
    ranks = ranks_from_scores(scores, targets, history).tolist()
    assert ranks == [2, 3, 1, math.inf, 2, 5, 2]


def test_metrics_from_ranks_by_hand():
    m = metrics_from_ranks(np.array([1, 3, 11, np.inf]), ks=(10,))
    assert m["hr@10"] == pytest.approx(0.5)
    assert m["recall@10"] == pytest.approx(0.5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 4)


def _evalset():
    hist = [np.array([1, 2]), np.array([3]), np.array([4, 5, 6])]
    return EvalSet(np.array(["a", "b", "c"]), hist, np.array([7, 8, 9]))


def test_constant_and_nan_scorers_get_zero():
    data = _evalset()
    for value in (0.0, NAN):
        m = evaluate_scores(lambda s: torch.full((s.shape[0], 101), value), data, n_items=100, max_len=5)
        assert m["hr@10"] == 0 and m["ndcg@10"] == 0 and m["hr@50"] == 0


def test_perfect_scorer_and_coverage():
    data = _evalset()

    def oracle(seq):
        s = torch.zeros(seq.shape[0], 31)
        # the harness passes rows in order; give each row's target the top score
        s[torch.arange(seq.shape[0]), torch.tensor(data.targets[: seq.shape[0]])] = 10.0
        return s

    m = evaluate_scores(oracle, data, n_items=30, max_len=5)
    assert m["hr@10"] == 1 and m["ndcg@10"] == pytest.approx(1.0) and m["mrr"] == pytest.approx(1.0)
    assert 0 < m["coverage@10"] <= 1


def test_popularity_baseline():
    train = Sequences(np.array(["a", "b"]), [np.array([1, 1, 2]), np.array([1, 3])], 5)
    data = EvalSet(np.array(["a", "b"]), [np.array([2]), np.array([3])], np.array([1, 2]))
    m = evaluate_popularity(train, data, max_len=5)
    # user a: target 1 is the most popular -> rank 1; user b: target 2 (count 1) ties with item 3, but 3 is history,
    # item 1 beats it -> rank 2
    assert m["mrr"] == pytest.approx((1 + 1 / 2) / 2)
