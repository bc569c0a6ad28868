"""The nightly model steps, between build_sequences and scoring, with the model registry as their memory.

    attnrec train-nightly --date D   train a candidate on the snapshot of D (warm start or full retrain),
                                     refit it on every event, record it as `candidate`
    attnrec gate --date D            judge the candidate on D's last events; record `published` or `rejected`
    attnrec publish --model V --date D --reason TEXT   a person's decision (rollback or roll forward)
    attnrec models                   the registry, one line per row

Warm start: from the model published for the last date before D (never a rejected candidate, never a
later date's model during a backfill); a full retrain when there is none or when its warm-start chain began
`--full-retrain-every-days` or more before D. Rerunning D trains nothing when the registry already holds a
model for the same snapshot rows, settings and starting point: it is reused, and so is its gate decision.

The gate's test: each user whose last event of the snapshot falls on D; the target is that event and the
history everything before it. The candidate is judged with the weights it had before the refit (it has
trained on none of those targets; the published model is from an earlier date). It is published only if its
NDCG@10 beats popularity's and is not below the published model's by more than --gate-tolerance (relative);
with fewer than --gate-min-users such users it keeps the published model (a first night publishes if it
beats popularity). A rejected candidate leaves the published model serving: scoring for D still runs with it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import sys

from attnmodel import registry as reg
from attnmodel.columns import CONTENT_HASH, USER_SEQUENCES_TABLE, USER_SEQUENCES_VERSION
from attnmodel.data import DataError, EvalSet, Sequences

CHECKPOINTS = ".checkpoints"

# The settings the nightly pipeline ships with on CPU (2 cores, ML-1M scale: ~1 min per epoch at these sizes).
NIGHTLY_TRAINING_DEFAULTS = dict(
    epochs=40, time_budget_min=10.0,  # a full retrain
    d_model=64, blocks=2, heads=2, dropout=0.2, loss="softmax", lr=1e-3, lr_schedule="constant",
    patience=4, batch_size=128, max_len=200, quiet=True,
)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", "--logical-date", dest="date", type=_date, required=True, help="data date D (YYYY-MM-DD)")
    p.add_argument("--warehouse", default=os.environ.get("ATTNREC_WAREHOUSE", "warehouse"),
                   help="warehouse root (user_sequences, sequence_snapshots, model_registry)")
    p.add_argument("--run-id", default="", help="the scheduler's run id, recorded with the registry rows")


# ---------------------------------------------------------------- train-nightly

def train_parser() -> argparse.ArgumentParser:
    from attnmodel.cli import add_training_args

    p = argparse.ArgumentParser(prog="attnrec train-nightly", description="Train tonight's candidate model.")
    _common_args(p)
    p.add_argument("--models", default=os.environ.get("ATTNREC_MODELS", "artifacts/models"),
                   help="models root: artefacts go to MODELS/<model_version>/")
    p.add_argument("--full-retrain-every-days", type=int, default=7,
                   help="retrain from scratch when the warm-start chain began this many days before D or more")
    p.add_argument("--warm-epochs", type=int, default=8, help="epochs of a warm-started night")
    p.add_argument("--warm-time-budget-min", type=float, default=4.0, help="time budget of a warm-started night")
    p.add_argument("--refit-epochs", type=int, default=1,
                   help="epochs on every event (the last two included) after training; 0 = serve the candidate as is")
    p.add_argument("--resume", action="store_true", help="continue from this training's checkpoint when there is one")
    add_training_args(p)
    p.set_defaults(**NIGHTLY_TRAINING_DEFAULTS)
    return p


def _lineage_start(rows: list[dict], parent: dict) -> dt.date:
    trained = reg.candidate_row(rows, parent["model_version"])
    return (trained or parent).get("lineage_start_date") or parent["data_date"]


def plan_training(rows: list[dict], date: dt.date, full_every_days: int) -> tuple[dict | None, bool]:
    """(the publish row to warm-start from or None, whether tonight is a full retrain)."""
    parent = reg.published_before(rows, date)
    if parent is None:
        return None, True
    if (date - _lineage_start(rows, parent)).days >= full_every_days:
        return parent, True
    return parent, False


def _settings(a: argparse.Namespace, full: bool) -> dict:
    keys = ("d_model", "blocks", "heads", "dropout", "loss", "negatives", "batch_size", "lr", "lr_schedule",
            "patience", "weight_decay", "warmup_epochs", "eval_every", "seed", "max_len", "refit_epochs")
    s = {k: getattr(a, k) for k in keys}
    s.update(full=full, epochs=a.epochs if full else a.warm_epochs,
             time_budget_min=a.time_budget_min if full else a.warm_time_budget_min)
    return s


def train_key(snapshot: dict, settings: dict, warm_start_from: str) -> str:
    """Same snapshot rows, settings and starting point -> same key (a rerun reuses, a retry resumes)."""
    text = json.dumps({"as_of_date": str(snapshot["as_of_date"]), "rows": snapshot[CONTENT_HASH],
                       "settings": settings, "warm_start_from": warm_start_from}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def train_nightly(a: argparse.Namespace) -> dict:
    from attnmodel.artifact import code_version, load_state, new_model_version, save_artifact
    from attnmodel.cli import model_config_from_args, train_config_from_args
    from attnmodel.data import leave_one_out, read_sequence_table
    from attnmodel.evaluate import evaluate_model
    from attnmodel.train import train

    date = a.date
    rows = reg.read_registry(a.warehouse)
    seq_table = f"{a.warehouse.rstrip('/')}/{USER_SEQUENCES_TABLE}"
    seqs, snapshot = read_sequence_table(seq_table, date.isoformat())
    parent, full = plan_training(rows, date, a.full_retrain_every_days)
    warm_from = "" if full else parent["model_version"]
    settings = _settings(a, full)
    key = train_key(snapshot, settings, warm_from)
    done = reg.candidate_with_key(rows, key)
    if done is not None and os.path.isdir(done["model_dir"]):
        return {"reused": True, "model_version": done["model_version"], "model_dir": done["model_dir"],
                "train_key": key, "full_retrain": not done["warm_start_from"]}

    old_cfg, old_state = load_state(parent["model_dir"]) if not full else (None, None)
    if old_cfg is not None and old_cfg.n_items > seqs.n_items:
        raise DataError(f"the warm-start model {warm_from} knows {old_cfg.n_items} items, more than the snapshot of "
                        f"{date} ({seqs.n_items}): it was trained on a newer item_index")
    split = leave_one_out(seqs)
    if len(split.valid.targets) == 0:
        raise DataError(f"no user in the snapshot of {date} has 3 or more events: nothing to validate on")
    a.epochs, a.time_budget_min = settings["epochs"], settings["time_budget_min"]
    mcfg = (dataclasses.replace(old_cfg, n_items=seqs.n_items) if old_cfg is not None
            else model_config_from_args(a, seqs.n_items))
    tcfg = train_config_from_args(a, mcfg, a.device)
    ckpt = os.path.join(a.models, CHECKPOINTS, key)
    res = train(tcfg, split.train, split.valid, checkpoint_dir=ckpt, resume=a.resume, init_state=old_state)
    test = evaluate_model(res.model, split.test)
    candidate_state = copy.deepcopy({k: v.detach().cpu() for k, v in res.model.state_dict().items()})
    served, history = res.model, list(res.history)
    if a.refit_epochs > 0:
        refit_cfg = dataclasses.replace(tcfg, epochs=a.refit_epochs, select_best=False, lr_schedule="constant",
                                        warmup_epochs=0.0, time_budget_s=None)
        refit = train(refit_cfg, seqs, split.valid, init_state=candidate_state)
        served = refit.model
        history += [{**h, "epoch": len(res.history) + h["epoch"], "refit": True} for h in refit.history]
    metrics = {"valid": res.best_metrics, "test": test, "best_epoch": res.best_epoch, "epochs": res.epochs_run,
               "train_seconds": res.train_seconds, "stopped": res.stopped, "device": res.device,
               "settings": settings}
    version = new_model_version()
    meta = {"data_version": seqs.data_version, "snapshot": snapshot, "item_index_version": str(snapshot["item_index_version"]),
            "warm_start": warm_from, "train_key": key, "refit_epochs": a.refit_epochs, "data_date": date.isoformat()}
    model_dir = save_artifact(a.models, served, model_version=version, metrics=metrics, history=history, meta=meta,
                              train_config=tcfg, extra_states={"candidate.pt": candidate_state})
    shutil.rmtree(ckpt, ignore_errors=True)
    lineage = date if full else _lineage_start(rows, parent)
    reg.append(a.warehouse, data_date=date, model_version=version, model_dir=os.path.abspath(model_dir),
               status=reg.CANDIDATE, reason="full retrain" if full else f"warm start from {warm_from}",
               run_id=a.run_id, train_key=key, trained_on=snapshot,
               user_sequences_version=int(snapshot[USER_SEQUENCES_VERSION]), code_version=code_version(),
               warm_start_from=warm_from, lineage_start_date=lineage, metrics=metrics)
    return {"reused": False, "model_version": version, "model_dir": os.path.abspath(model_dir), "train_key": key,
            "full_retrain": full, "warm_start_from": warm_from, "epochs": res.epochs_run,
            "train_seconds": round(res.train_seconds, 1), "valid_ndcg@10": res.best_metrics.get("ndcg@10"),
            "device": res.device}


def train_nightly_main(argv: list[str] | None = None) -> int:
    a = train_parser().parse_args(argv)
    return _run_main("attnrec train-nightly", train_nightly, a)


# ---------------------------------------------------------------- gate

@dataclasses.dataclass(frozen=True)
class GatePolicy:
    tolerance: float = 0.10  # relative: publish if candidate >= published * (1 - tolerance)
    min_users: int = 50


@dataclasses.dataclass(frozen=True)
class GateFigures:
    users: int
    candidate: float | None
    published: float | None
    popularity: float | None


def decide(figures: GateFigures, policy: GatePolicy, has_published: bool) -> tuple[str, str]:
    """(status, reason) for the candidate; pure, so every branch is tested without a model."""
    c, p, pop = figures.candidate, figures.published, figures.popularity
    beats_pop = c is not None and pop is not None and c > pop
    fig = (f"candidate ndcg@10 {c:.4f}, popularity {pop:.4f}" if c is not None and pop is not None
           else "no figures")
    if has_published and p is not None:
        fig += f", published {p:.4f}"
    fig += f" on {figures.users} users"
    if figures.users < policy.min_users and has_published:
        return reg.REJECTED, f"too few users to judge ({figures.users} < {policy.min_users}): keeps the published model; {fig}"
    if not beats_pop:
        return reg.REJECTED, f"does not beat popularity: {fig}"
    if not has_published:
        return reg.PUBLISHED, f"first model, beats popularity: {fig}"
    if c < p * (1 - policy.tolerance):
        return reg.REJECTED, f"worse than the published model by more than {policy.tolerance:.0%}: {fig}"
    return reg.PUBLISHED, f"within {policy.tolerance:.0%} of the published model and beats popularity: {fig}"


def gate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attnrec gate", description="Judge tonight's candidate; publish or reject it.")
    _common_args(p)
    p.add_argument("--gate-tolerance", type=float, default=GatePolicy.tolerance,
                   help="publish if the candidate's NDCG@10 >= the published one's x (1 - this)")
    p.add_argument("--gate-min-users", type=int, default=GatePolicy.min_users,
                   help="users active on D needed to judge; fewer keeps the published model")
    return p


def _without_unknown_items(model):
    """A score function for a model whose item table may be smaller than the snapshot's: items it does not know
    leave the history (re-padded on the left) and get -inf."""
    import torch

    n = model.cfg.n_items

    def score(seq, n_total: int):
        if (seq > n).any():
            rows = [r[(r > 0) & (r <= n)] for r in seq]
            out = torch.zeros_like(seq)
            for i, r in enumerate(rows):
                if len(r):
                    out[i, seq.shape[1] - len(r):] = r
            seq = out
        s = model.score_all(seq).float()
        if n_total > n:
            s = torch.cat([s, torch.full((s.shape[0], n_total - n), float("-inf"))], dim=1)
        return s

    return score


def gate_figures(candidate_dir: str, published_dir: str | None, seqs: Sequences, holdout: EvalSet) -> GateFigures:
    import numpy as np
    import torch

    from attnmodel.artifact import load_artifact
    from attnmodel.evaluate import Popularity, evaluate_scores

    users = len(holdout.targets)
    if users == 0:
        return GateFigures(0, None, None, None)
    # popularity from everything but the targets: the same information the models had
    targets = dict(zip(holdout.user_ids, holdout.targets))
    known = [s[:-1] if u in targets else s for u, s in zip(seqs.user_ids, seqs.items)]
    pop = Popularity(Sequences(seqs.user_ids, [k for k in known if len(k)], seqs.n_items))
    with torch.no_grad():
        figures = {"popularity": evaluate_scores(pop, holdout, seqs.n_items, 200)["ndcg@10"]}
        for name, directory, weights in (("candidate", candidate_dir, "candidate.pt"), ("published", published_dir, "model.pt")):
            if directory is None:
                figures[name] = None
                continue
            model, _ = load_artifact(directory, weights=weights)
            score = _without_unknown_items(model)
            figures[name] = evaluate_scores(lambda s: score(s, seqs.n_items), holdout, seqs.n_items,
                                            model.cfg.max_len)["ndcg@10"]
    return GateFigures(users, *(None if figures[k] is None else float(np.round(figures[k], 6))
                                for k in ("candidate", "published", "popularity")))


def gate(a: argparse.Namespace) -> dict:
    from attnmodel.data import read_day_holdout

    date = a.date
    rows = reg.read_registry(a.warehouse)
    cand = reg.latest_candidate(rows, date)
    if cand is None:
        raise DataError(f"no candidate model for {date} in the registry: run `attnrec train-nightly --date {date}` first")
    prior = reg.decision_for(rows, cand["model_version"], date)
    serving = reg.published_for(rows, date)
    if prior is not None:
        # the decision's own figures, so that a rerun's record says what the decision rests on
        return {"reused": True, "model_version": cand["model_version"], "decision": prior["status"],
                "reason": prior["reason"], "serving": serving["model_version"] if serving else None,
                **{f"{k}_ndcg@10": prior.get(f"{k}_ndcg10") for k in ("candidate", "published", "popularity")},
                "gate_users": prior.get("gate_users")}
    seqs, holdout, _ = read_day_holdout(f"{a.warehouse.rstrip('/')}/{USER_SEQUENCES_TABLE}", date.isoformat())
    figures = gate_figures(cand["model_dir"], serving["model_dir"] if serving else None, seqs, holdout)
    status, reason = decide(figures, GatePolicy(a.gate_tolerance, a.gate_min_users), serving is not None)
    reg.append(a.warehouse, data_date=date, model_version=cand["model_version"], model_dir=cand["model_dir"],
               status=status, reason=reason, run_id=a.run_id, train_key=cand["train_key"],
               user_sequences_version=cand["user_sequences_version"], code_version=cand["code_version"],
               gate_users=figures.users, candidate_ndcg10=figures.candidate, published_ndcg10=figures.published,
               popularity_ndcg10=figures.popularity, compared_with=serving["model_version"] if serving else "")
    now_serving = cand["model_version"] if status == reg.PUBLISHED else (serving["model_version"] if serving else None)
    return {"reused": False, "model_version": cand["model_version"], "decision": status, "reason": reason,
            "serving": now_serving, **{f"{k}_ndcg@10": v for k, v in dataclasses.asdict(figures).items() if k != "users"},
            "gate_users": figures.users}


def gate_main(argv: list[str] | None = None) -> int:
    return _run_main("attnrec gate", gate, gate_parser().parse_args(argv))


# ---------------------------------------------------------------- publish / models

def publish(a: argparse.Namespace) -> dict:
    rows = reg.read_registry(a.warehouse)
    trained = reg.candidate_row(rows, a.model)
    if trained is None:
        known = sorted({r["model_version"] for r in rows})[-5:]
        raise DataError(f"model {a.model} is not in the registry at {reg.registry_path(a.warehouse)} "
                        f"(latest known: {', '.join(known) or 'none'})")
    if not os.path.isdir(trained["model_dir"]):
        raise DataError(f"model {a.model}'s directory {trained['model_dir']} is gone: it cannot serve")
    if trained["data_date"] > a.date:
        raise DataError(f"model {a.model} was trained on the snapshot of {trained['data_date']}: it cannot serve "
                        f"{a.date}, which is earlier (it knows items from after that date)")
    before = reg.published_for(rows, a.date)
    reg.append(a.warehouse, data_date=a.date, model_version=a.model, model_dir=trained["model_dir"],
               status=reg.PUBLISHED, reason=f"by hand: {a.reason}", run_id=a.run_id or "manual",
               train_key=trained["train_key"], user_sequences_version=trained["user_sequences_version"],
               code_version=trained["code_version"], compared_with=before["model_version"] if before else "")
    return {"published": a.model, "for": a.date.isoformat(), "replaces": before["model_version"] if before else None,
            "note": "scoring for this date and later ones uses it until a later date publishes another; "
                    "rerun score_users and export for dates already scored"}


def publish_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="attnrec publish", description="Publish a registered model for a date by hand.")
    _common_args(p)
    p.add_argument("--model", required=True, help="model_version to serve from --date on")
    p.add_argument("--reason", required=True, help="why (recorded in the registry)")
    return _run_main("attnrec publish", publish, p.parse_args(argv))


def models_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="attnrec models", description="Print the model registry.")
    p.add_argument("--warehouse", default=os.environ.get("ATTNREC_WAREHOUSE", "warehouse"))
    a = p.parse_args(argv)
    rows = reg.read_registry(a.warehouse)
    fmt = "{:<10} {:<10} {:<28} {:>6} {:>9} {:>9} {:>9}  {}"
    print(fmt.format("date", "status", "model_version", "users", "cand", "published", "popular", "reason"))
    for r in rows:
        f = [("" if r[k] is None else f"{r[k]:.4f}") for k in ("candidate_ndcg10", "published_ndcg10", "popularity_ndcg10")]
        print(fmt.format(str(r["data_date"]), r["status"], r["model_version"], r["gate_users"] or "", *f, r["reason"] or ""))
    return 0


def _run_main(prog: str, fn, a: argparse.Namespace) -> int:
    """Run a step, print its JSON report, and append its row to pipeline_runs (train-nightly and gate)."""
    import time

    from attnmodel import runlog

    step = prog.split()[-1]
    recorded = step in ("train-nightly", "gate")
    started = time.monotonic()
    try:
        out = fn(a)
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        if recorded:
            runlog.record_step(a.warehouse, step, a.date, a.run_id, status=runlog.FAILED, message=str(e),
                               seconds=round(time.monotonic() - started, 2))
        return 2
    print(json.dumps(out, default=str))
    if recorded:
        runlog.record_step(a.warehouse, step, a.date, a.run_id, out, seconds=round(time.monotonic() - started, 2))
    return 0
