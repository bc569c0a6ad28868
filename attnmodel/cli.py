"""`attnrec train`: read sequences (pairs file or a `user_sequences` snapshot), train, write an artefact.

A snapshot is read through its record in `sequence_snapshots` (exact table version, item-index version,
item count); the artefact lands in OUT/<model_version>/, whole or not at all, and its checkpoints in
OUT/.checkpoints/<run key>/, so a retry of the same training resumes and the artefact stays immutable.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
from dataclasses import replace

from attnmodel.columns import ITEM_INDEX_VERSION
from attnmodel.data import DataError, leave_one_out, read_pairs, read_sequence_table

CHECKPOINTS = ".checkpoints"


def add_training_args(p: argparse.ArgumentParser) -> None:
    """Model and training options with the best settings measured on ML-1M as defaults.

    One place for them: `attnrec train` and `python -m bench.quality` both call this."""
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--loss", choices=["softmax", "sampled_softmax", "bce"], default="softmax")
    p.add_argument("--negatives", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="cosine")
    p.add_argument("--patience", type=int, default=60)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument("--eval-every", type=int, default=1, help="epochs between validations")
    p.add_argument("--time-budget-min", type=float, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def model_config_from_args(a: argparse.Namespace, n_items: int, content=None):
    """The ModelConfig that add_training_args' options describe (content: an ItemContent or None)."""
    from attnmodel.model import ModelConfig

    return ModelConfig(n_items=n_items, max_len=a.max_len, d_model=a.d_model, n_blocks=a.blocks, n_heads=a.heads,
                       dropout=a.dropout, loss=a.loss, n_negatives=a.negatives,
                       **(content.config_kwargs() if content else {}))


def train_config_from_args(a: argparse.Namespace, model, device: str):
    """The TrainConfig that add_training_args' options describe, for `model` (a ModelConfig)."""
    from attnmodel.train import TrainConfig

    return TrainConfig(model=model, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
                       patience=a.patience, eval_every=a.eval_every, seed=a.seed, device=device,
                       lr_schedule=a.lr_schedule, warmup_epochs=a.warmup_epochs,
                       time_budget_s=a.time_budget_min * 60 if a.time_budget_min else None, progress=not a.quiet)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attnrec train", description="Train the sequence model and write a model artefact.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", help="ordered `user item` pairs file (oldest line first)")
    src.add_argument("--table", help="path of the user_sequences Delta table")
    p.add_argument("--as-of-date", help="YYYY-MM-DD snapshot of --table to read (its version comes from its record)")
    p.add_argument("--out", required=True,
                   help="models root: the artefact is written to OUT/<model_version>/ and never overwritten")
    p.add_argument("--model-version", default=None, help="name of the new artefact (default: UTC time + random suffix)")
    p.add_argument("--n-items", type=int, default=None,
                   help="with --pairs: size of the item table (default: largest item index seen); "
                        "a snapshot's comes from its record")
    p.add_argument("--content", default=None, help="ML-1M movies.dat (with the sas->orig mapping beside it) for item content")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT/checkpoints")
    p.add_argument("--warm-start", default=None, metavar="DIR", help="artefact to start from (new items get fresh vectors)")
    add_training_args(p)
    return p


def train_main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if a.table and not a.as_of_date:
        p.error("--table needs --as-of-date")
    if a.table and a.n_items is not None:
        p.error("--n-items goes with --pairs: a snapshot's item count comes from its record")
    try:
        return _run(a)
    except (DataError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"attnrec train: error: {e}", file=sys.stderr)
        return 2


def _run(a) -> int:
    import torch

    from attnmodel.artifact import load_state, save_artifact
    from attnmodel.evaluate import evaluate_model
    from attnmodel.train import TrainingDiverged, train

    if a.model_version and os.path.exists(os.path.join(a.out, a.model_version)):  # before hours of training, not after
        raise FileExistsError(f"model version {a.model_version} already exists in {a.out}: artefacts are never overwritten")
    old_cfg, old_state = load_state(a.warm_start) if a.warm_start else (None, None)
    n_items = a.n_items
    if old_cfg is not None and n_items is not None and n_items < old_cfg.n_items:
        raise ValueError(f"--n-items {n_items} is smaller than the warm-start model's {old_cfg.n_items}")
    snapshot = {}
    if a.pairs:
        seqs = read_pairs(a.pairs, n_items)
    else:
        seqs, snapshot = read_sequence_table(a.table, a.as_of_date)
    if old_cfg is not None:
        if snapshot and old_cfg.n_items > seqs.n_items:
            raise ValueError(f"the warm-start model knows {old_cfg.n_items} items, more than the snapshot's item "
                             f"index ({seqs.n_items}): it was trained on a newer item_index")
        seqs = replace(seqs, n_items=max(seqs.n_items, old_cfg.n_items))
    print(f"read {seqs.data_version}: {len(seqs)} users, {seqs.n_events} events, {seqs.n_items} items", file=sys.stderr)
    split = leave_one_out(seqs)
    if len(split.valid.targets) == 0:
        raise DataError("no user has 3 or more events: nothing to validate on")
    content = None
    if a.content:
        from attnmodel.content import load_movielens_content, mapping_beside

        content = load_movielens_content(a.content, mapping_beside(a.content), seqs.n_items)
    if old_cfg is not None:  # the architecture comes from the earlier model; only the item table grows
        mcfg = replace(old_cfg, n_items=seqs.n_items, **(content.config_kwargs() if content else {}))
    else:
        mcfg = model_config_from_args(a, seqs.n_items, content)
    tcfg = train_config_from_args(a, mcfg, a.device)
    ckpt = os.path.join(a.out, CHECKPOINTS, _run_key(seqs.data_version, tcfg, a.warm_start))
    last = os.path.join(ckpt, "last.pt")
    if a.resume and os.path.exists(last):
        print(f"resuming from {last} (epoch {torch.load(last, map_location='cpu', weights_only=False)['epoch']})", file=sys.stderr)
    elif a.resume:
        print(f"no checkpoint at {last}: starting from scratch", file=sys.stderr)
    try:
        res = train(tcfg, split.train, split.valid, checkpoint_dir=ckpt, resume=a.resume, init_state=old_state, content=content)
    except TrainingDiverged as e:
        print(f"attnrec train: error: {e}", file=sys.stderr)
        return 1
    test = evaluate_model(res.model, split.test)
    metrics = {"valid": res.best_metrics, "test": test, "best_epoch": res.best_epoch, "epochs": res.epochs_run,
               "train_seconds": res.train_seconds, "stopped": res.stopped, "device": res.device}
    meta = {"data_version": seqs.data_version, "snapshot": snapshot,
            "item_index_version": str(snapshot.get(ITEM_INDEX_VERSION, "")), "warm_start": a.warm_start or ""}
    model_dir = save_artifact(a.out, res.model, model_version=a.model_version, metrics=metrics, history=res.history,
                              meta=meta, train_config=tcfg)
    shutil.rmtree(ckpt, ignore_errors=True)  # the artefact is whole: nothing left to resume
    print(f"wrote {model_dir}: model.pt, config.json, meta.json, metrics.json, history.json, training_curve.png "
          f"(test ndcg@10 {test['ndcg@10']:.4f}, hr@10 {test['hr@10']:.4f}, {res.epochs_run} epochs on {res.device}, torch {torch.__version__})",
          file=sys.stderr)
    print(json.dumps({"model_dir": str(model_dir), "model_version": model_dir.name, "ndcg@10": test["ndcg@10"],
                      "hr@10": test["hr@10"], "epochs": res.epochs_run}))
    return 0


def _run_key(data_version: str, tcfg, warm_start: str | None) -> str:
    """Same data, settings and starting point -> same key: a retry finds the checkpoint of the try it repeats."""
    settings = {k: v for k, v in dataclasses.asdict(tcfg).items() if k not in ("progress",)}
    text = json.dumps({"data": data_version, "train": settings, "warm_start": warm_start or ""}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


if __name__ == "__main__":
    raise SystemExit(train_main())
