"""Training loop: Adam, every position of every sequence, early stopping on validation NDCG@10.

No file I/O except the checkpoints it is told to write (`checkpoint_dir`): `last.pt` after every epoch
(weights, optimiser, RNG states, history, best weights), replaced atomically, so a killed run resumes.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from attnmodel.data import EvalSet, Sequences, training_rows
from attnmodel.evaluate import evaluate_model
from attnmodel.model import ModelConfig, SASRec

CHECKPOINT = "last.pt"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    patience: int = 20  # evaluations without a better valid NDCG@10 before stopping
    eval_every: int = 1  # epochs between evaluations
    seed: int = 0
    device: str = "auto"  # "auto" = cuda when available, else cpu
    time_budget_s: float | None = None  # stop after this much wall time, evaluation included (checked between epochs)
    progress: bool = True
    metric: str = "ndcg@10"
    lr_schedule: str = "constant"  # "constant" | "cosine" (decay to 1% of lr over `epochs`, after warmup)
    warmup_epochs: float = 0.0
    # False: no validation, keep the last epoch's weights (a refit on every event has nothing left to validate on)
    select_best: bool = True


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """Learning rate at `progress` epochs (fractional) into training."""
    if cfg.warmup_epochs and progress < cfg.warmup_epochs:
        return cfg.lr * (progress + 1e-3) / cfg.warmup_epochs
    if cfg.lr_schedule == "cosine":
        t = min(1.0, (progress - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-9))
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))
    if cfg.lr_schedule != "constant":
        raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}")
    return cfg.lr


@dataclass
class TrainResult:
    model: SASRec  # with the best validation weights
    history: list = field(default_factory=list)  # one dict per epoch
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)
    epochs_run: int = 0
    train_seconds: float = 0.0
    seconds_per_epoch: float = 0.0
    stopped: str = "epochs"  # "epochs" | "patience" | "time_budget"
    device: str = "cpu"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def warm_start(model: SASRec, old_state: dict) -> None:
    """Copy an earlier model's weights; its items keep their vectors, items added since keep their fresh init.

    Content buffers already filled on `model` (fresh content for the new catalogue) are kept.
    """
    own = model.state_dict()
    for name, old in old_state.items():
        if name not in own:
            continue
        new, old = own[name], old.to(own[name].device)
        content = name in ("item_tags", "item_tokens")
        if content and new.any():
            continue
        if old.shape == new.shape:
            new.copy_(old)
        elif (name == "item_emb.weight" or content) and old.shape[1:] == new.shape[1:] and old.shape[0] <= new.shape[0]:
            new[: old.shape[0]].copy_(old)
        else:
            raise ValueError(f"warm start: {name} has shape {tuple(old.shape)} in the old model, {tuple(new.shape)} now")


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(
    cfg: TrainConfig,
    train_data: Sequences,
    valid_data: EvalSet,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    init_state: dict | None = None,
    content=None,
) -> TrainResult:
    """Train a SASRec on `train_data`, early-stopping on `valid_data`.

    init_state: weights of an earlier model to warm-start from (see `warm_start`).
    content: an `ItemContent` whose arrays fill the model's content buffers (cfg.model must size them).
    """
    device = resolve_device(cfg.device)
    if train_data.n_items > cfg.model.n_items:
        raise ValueError(f"data has {train_data.n_items} items, model config only {cfg.model.n_items}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    rows = torch.as_tensor(training_rows(train_data, cfg.model.max_len))
    model = SASRec(cfg.model)
    if content is not None:
        model.set_content(content.tags, content.tokens)
    if init_state is not None:
        warm_start(model, init_state)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    result = TrainResult(model=model, device=str(device))
    best_state, best_metric, bad_evals, start_epoch = None, -math.inf, 0, 0
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
    if ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    if resume and ckpt is not None and ckpt.exists():
        st = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optim"])
        for g in opt.param_groups:  # the config wins over the checkpoint
            g["lr"] = cfg.lr
        rng.bit_generator.state = st["rng_np"]
        torch.set_rng_state(st["rng_torch"])
        if device.type == "cuda" and st.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(st["rng_cuda"])
        best_state, best_metric, bad_evals = st["best_state"], st["best_metric"], st["bad_evals"]
        start_epoch, result.history = st["epoch"], st["history"]
        result.best_epoch, result.best_metrics = st["best_epoch"], st["best_metrics"]
        result.train_seconds = st["train_seconds"]
        if cfg.progress:
            tqdm.write(f"resumed from {ckpt} after epoch {start_epoch}")
    use_bf16 = device.type == "cuda"
    n = len(rows)
    t_call, resumed_seconds = time.perf_counter(), result.train_seconds  # the time budget counts evaluation too
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        if bad_evals >= cfg.patience:
            result.stopped = "patience"
            break
        if cfg.time_budget_s is not None and resumed_seconds + time.perf_counter() - t_call >= cfg.time_budget_s:
            result.stopped = "time_budget"
            break
        model.train()
        t0 = time.perf_counter()
        perm = torch.as_tensor(rng.permutation(n))
        total, steps = 0.0, 0
        bar = tqdm(range(0, n, cfg.batch_size), desc=f"epoch {epoch}", disable=not cfg.progress, leave=False, mininterval=2.0)
        for i in bar:
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, epoch - 1 + i / n)
            batch = rows[perm[i:i + cfg.batch_size]]
            batch = batch[:, int((batch != 0).any(0).float().argmax()):]  # drop all-padding columns (same result)
            batch = batch.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                loss = model.loss(batch)
            if not torch.isfinite(loss):
                where = f"last good checkpoint: {ckpt} (epoch {epoch - 1})" if ckpt and epoch > 1 else "no checkpoint was kept"
                raise TrainingDiverged(f"loss is {loss.item()} at epoch {epoch}, step {steps}; {where}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            total += loss.item()
            steps += 1
            if cfg.progress:
                bar.set_postfix(loss=f"{total / steps:.4f}", seq_s=f"{min(i + cfg.batch_size, n) / (time.perf_counter() - t0):.0f}")
        secs = time.perf_counter() - t0
        result.train_seconds += secs
        rec = {"epoch": epoch, "loss": total / max(steps, 1), "seconds": secs, "seq_per_s": n / secs}
        if cfg.select_best and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            m = evaluate_model(model, valid_data, device=device)
            rec.update({f"valid_{k}": v for k, v in m.items() if k != "n_users"})
            if m[cfg.metric] > best_metric:
                best_metric, bad_evals = m[cfg.metric], 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
                result.best_epoch, result.best_metrics = epoch, m
            else:
                bad_evals += 1
        result.history.append(rec)
        if cfg.progress:
            extra = f" valid {cfg.metric} {rec.get('valid_' + cfg.metric, float('nan')):.4f}" if f"valid_{cfg.metric}" in rec else ""
            tqdm.write(f"epoch {epoch}: loss {rec['loss']:.4f}, {rec['seq_per_s']:.0f} seq/s, {secs:.1f} s{extra}")
        if ckpt is not None:
            _save_atomic({
                "epoch": epoch, "model": model.state_dict(), "optim": opt.state_dict(), "history": result.history,
                "best_state": best_state, "best_metric": best_metric, "bad_evals": bad_evals,
                "best_epoch": result.best_epoch, "best_metrics": result.best_metrics, "train_seconds": result.train_seconds,
                "rng_np": rng.bit_generator.state, "rng_torch": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                "model_config": cfg.model.to_dict(),
            }, ckpt)
    if best_state is not None and cfg.select_best:
        model.load_state_dict(best_state)
    model.eval()
    result.epochs_run = len(result.history)
    result.seconds_per_epoch = result.train_seconds / max(result.epochs_run, 1)
    return result
