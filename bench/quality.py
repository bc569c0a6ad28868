"""Quality benchmark: train on an ordered `user item` pairs file, leave-one-out, full ranking.

python -m bench.quality --pairs ../shared/data/ml-1m/ml-1m.txt [--device cpu|cuda] [--epochs N]
    [--time-budget-min M] [--model sasrec|popularity] [--content auto|none|PATH/movies.dat]
The last printed line is one JSON object (test metrics, epochs, train_seconds, seconds_per_epoch, ...).
Defaults are the best settings measured on ML-1M: d=128, 3 blocks, 2 heads, dropout 0.2, full softmax,
Adam 1e-3 with cosine decay over 120 epochs, batch 128, L=200, item content when movies.dat is beside the file.
On the sparser Amazon Video file, --d-model 64 --blocks 2 --heads 1 --dropout 0.5 --epochs 30 measured better.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from attnmodel.cli import add_training_args, model_config_from_args, train_config_from_args
from attnmodel.data import Sequences, leave_one_out, read_pairs
from attnmodel.evaluate import evaluate_model, evaluate_popularity
from attnmodel.train import resolve_device, train


def find_content(pairs: str, content: str, n_items: int):
    """`auto`: movies.dat + the sas_item -> orig_movie mapping beside the pairs file, when both are there."""
    if content == "none":
        return None
    from attnmodel.content import ML1M_MAPPING_FILE, load_movielens_content, mapping_beside

    movies = os.path.join(os.path.dirname(os.path.abspath(pairs)), "movies.dat") if content == "auto" else content
    mapping = mapping_beside(movies)
    if not (os.path.exists(movies) and os.path.exists(mapping)):
        if content == "auto":
            return None
        raise SystemExit(f"bench.quality: no {movies} with {ML1M_MAPPING_FILE} beside it")
    return load_movielens_content(movies, mapping, n_items)


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    p.add_argument("--pairs", required=True)
    add_training_args(p)
    p.add_argument("--model", choices=["sasrec", "popularity"], default="sasrec")
    p.add_argument("--content", default="auto", help="auto | none | path to movies.dat (ML-1M item content)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="also save the model artefact under this models root (OUT/<model_version>/)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    seqs = read_pairs(a.pairs)
    split = leave_one_out(seqs)
    device = resolve_device(a.device)
    base = {"dataset": os.path.basename(a.pairs), "model": a.model, "device": str(device), "n_users": len(seqs),
            "n_items": seqs.n_items, "n_events": seqs.n_events, "n_eval_users": len(split.test.targets)}
    print(f"read {a.pairs}: {len(seqs)} users, {seqs.n_items} items, {seqs.n_events} events", file=sys.stderr)
    if a.model == "popularity":
        t0 = time.perf_counter()
        # counts from everything before each target: train items for valid, train + valid items for test
        valid = evaluate_popularity(split.train, split.valid, a.max_len, device)
        test_train = Sequences(split.test.user_ids, split.test.histories, seqs.n_items)
        test = evaluate_popularity(test_train, split.test, a.max_len, device)
        out = {**base, **{k: v for k, v in test.items() if k != "n_users"}, "valid_ndcg@10": valid["ndcg@10"],
               "epochs": 0, "train_seconds": time.perf_counter() - t0, "seconds_per_epoch": 0.0}
        print(json.dumps(out))
        return 0
    content = find_content(a.pairs, a.content, seqs.n_items)
    mcfg = model_config_from_args(a, seqs.n_items, content)
    tcfg = train_config_from_args(a, mcfg, str(device))
    res = train(tcfg, split.train, split.valid, content=content)
    test = evaluate_model(res.model, split.test, device=device)
    out = {**base, **{k: v for k, v in test.items() if k != "n_users"},
           "valid_ndcg@10": res.best_metrics.get("ndcg@10"), "epochs": res.epochs_run, "best_epoch": res.best_epoch,
           "stopped": res.stopped, "train_seconds": round(res.train_seconds, 2),
           "seconds_per_epoch": round(res.seconds_per_epoch, 3), "content": content is not None,
           "threads": torch.get_num_threads(), "config": {**mcfg.to_dict(), "batch_size": a.batch_size, "lr": a.lr,
                                                   "lr_schedule": a.lr_schedule, "max_epochs": a.epochs}}
    if a.out:
        from attnmodel.artifact import save_artifact

        model_dir = save_artifact(a.out, res.model, metrics={"test": test, "valid": res.best_metrics},
                                  history=res.history, meta={"data_version": seqs.data_version}, train_config=tcfg)
        print(f"wrote {model_dir}", file=sys.stderr)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
