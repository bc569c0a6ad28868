"""Full-ranking leave-one-out metrics, exactly per data/README.md.

rank = 1 + #(other candidates with score >= target score), history items (except the target) removed;
a NaN target score is a miss and a NaN candidate counts against the model.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from attnmodel.columns import PADDING_IDX
from attnmodel.data import EvalSet, Sequences, pad_left

KS = (10, 20, 50)


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Target ranks (B,) float (inf = miss) from scores (B, n_items + 1); history (B, H) item indexes, 0 = none."""
    scores = scores.float().clone()
    t = targets.long()[:, None]
    tgt = scores.gather(1, t)
    scores.scatter_(1, history.long(), float("-inf"))
    scores[:, PADDING_IDX] = float("-inf")
    scores.scatter_(1, t, float("-inf"))  # the target itself is not an "other" candidate
    beats = (scores >= tgt) | scores.isnan()
    rank = 1.0 + beats.sum(1).float()
    return torch.where(tgt[:, 0].isnan(), torch.full_like(rank, float("inf")), rank)


def metrics_from_ranks(ranks: np.ndarray, ks=KS) -> dict:
    r = np.asarray(ranks, dtype=np.float64)
    out = {}
    for k in ks:
        hit = r <= k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"recall@{k}"] = float(hit.mean())  # one target per user: recall = hit rate
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(r + 1.0), 0.0).mean())
    out["mrr"] = float((1.0 / r).mean())
    return out


def evaluate_scores(
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    data: EvalSet,
    n_items: int,
    max_len: int,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> dict:
    """Metrics for any scorer: score_fn(left-padded history (B, max_len)) -> scores (B, n_items + 1)."""
    if len(data.targets) == 0:
        raise ValueError("no users to evaluate")
    ranks, covered = [], torch.zeros(n_items + 1, dtype=torch.bool, device=device)
    for i in range(0, len(data.targets), batch_size):
        hs = data.histories[i:i + batch_size]
        longest = max(1, max(len(h) for h in hs))
        seq = torch.as_tensor(pad_left(hs, min(max_len, longest)), device=device)
        full = torch.as_tensor(pad_left(hs, longest), device=device)  # exclusion uses the whole history
        tgt = torch.as_tensor(data.targets[i:i + batch_size], device=device)
        s = score_fn(seq).float()
        ranks.append(ranks_from_scores(s, tgt, full).cpu())
        s = s.nan_to_num(nan=float("-inf"))
        tgt_score = s.gather(1, tgt[:, None])
        s.scatter_(1, full, float("-inf"))
        s.scatter_(1, tgt[:, None], tgt_score)  # the target stays a candidate
        s[:, PADDING_IDX] = float("-inf")
        top = s.topk(min(10, n_items), dim=1).indices
        covered[top.flatten()] = True
    m = metrics_from_ranks(torch.cat(ranks).numpy())
    covered[PADDING_IDX] = False
    m["coverage@10"] = float(covered.sum().item() / n_items)
    m["n_users"] = len(data.targets)
    return m


@torch.no_grad()
def evaluate_model(model, data: EvalSet, batch_size: int = 512, device=None) -> dict:
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    use_bf16 = torch.device(device).type == "cuda"

    def score(seq):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            return model.score_all(seq)

    try:
        return evaluate_scores(score, data, model.cfg.n_items, model.cfg.max_len, batch_size, device)
    finally:
        model.train(was)


class Popularity:
    """Most-popular baseline: score = number of training events of the item."""

    def __init__(self, train: Sequences):
        counts = np.bincount(np.concatenate(train.items), minlength=train.n_items + 1).astype(np.float32)
        counts[PADDING_IDX] = -np.inf
        self.counts = torch.as_tensor(counts)
        self.n_items = train.n_items

    def __call__(self, seq: torch.Tensor) -> torch.Tensor:
        return self.counts.to(seq.device)[None, :].expand(seq.shape[0], -1)


def evaluate_popularity(train: Sequences, data: EvalSet, max_len: int = 200, device="cpu") -> dict:
    return evaluate_scores(Popularity(train), data, train.n_items, max_len, device=device)
