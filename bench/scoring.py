"""Inference-speed benchmark: the batch inference API alone (top-N per user, seen items excluded).

python -m bench.scoring --pairs ../shared/data/ml-1m/ml-1m.txt [--device cpu|cuda] [--top-n 100]
    [--users N] [--items M] [--artifact DIR]
--users replicates the file's users up to N; --items pads the catalogue with synthetic items up to M.
Speed does not depend on the weights' values, so without --artifact a freshly initialised model is timed.
The last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch

from attnmodel.data import pad_left, read_pairs
from attnmodel.inference import recommend
from attnmodel.model import ModelConfig, SASRec


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m bench.scoring", description=__doc__.splitlines()[0])
    p.add_argument("--pairs", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--top-n", type=int, default=100)
    p.add_argument("--users", type=int, default=None)
    p.add_argument("--items", type=int, default=None)
    p.add_argument("--artifact", default=None)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-explain", action="store_true", help="skip the run with explanations")
    return p.parse_args(argv)


def _timed(model, seqs, a, device, explain: bool):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = recommend(model, seqs, k=a.top_n, explain=explain, batch_size=a.batch_size, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return out, secs, peak


def main(argv=None) -> int:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    seqs = read_pairs(a.pairs)
    if a.artifact:
        from attnmodel.artifact import load_artifact

        model, _ = load_artifact(a.artifact, device)
        if a.items and a.items > model.cfg.n_items:
            raise SystemExit("bench.scoring: --items with --artifact is not supported (time a fresh model instead)")
    else:
        n_items = max(seqs.n_items, a.items or 0)
        torch.manual_seed(0)
        model = SASRec(ModelConfig(n_items=n_items, max_len=a.max_len, d_model=a.d_model, n_blocks=a.blocks)).to(device).eval()
    base = pad_left(seqs.items, model.cfg.max_len)
    n_users = a.users or len(base)
    mat = base[np.arange(n_users) % len(base)]
    print(f"scoring {n_users} users x {model.cfg.n_items} items, top {a.top_n}, on {device}", file=sys.stderr)
    warm = mat[: min(n_users, 2 * (a.batch_size or 8192))]
    for explain in (False, True):  # warm-up: kernels, allocator, libraries
        recommend(model, warm, k=a.top_n, explain=explain, batch_size=a.batch_size, device=device)
    out, secs, peak = _timed(model, mat, a, device, explain=False)
    sample = np.random.default_rng(0).choice(n_users, size=min(1000, n_users), replace=False)
    leaked = int(sum(np.isin(out["item_idx"][u], mat[u][mat[u] > 0]).sum() for u in sample))
    res = {"device": str(device), "users": n_users, "items": model.cfg.n_items, "top_n": a.top_n,
           "max_len": model.cfg.max_len, "d_model": model.cfg.d_model, "n_blocks": model.cfg.n_blocks,
           "threads": torch.get_num_threads(), "seconds": round(secs, 3), "users_per_second": round(n_users / secs, 1),
           "seen_items_returned_in_sample": leaked}
    if peak is not None:
        res["peak_gpu_memory_mb"] = round(peak, 1)
    if not a.no_explain:
        _, secs_e, peak_e = _timed(model, mat, a, device, explain=True)
        res.update({"seconds_explain": round(secs_e, 3), "users_per_second_explain": round(n_users / secs_e, 1)})
        if peak_e is not None:
            res["peak_gpu_memory_mb_explain"] = round(peak_e, 1)
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
