"""A self-describing model artefact directory.

    model.pt            weights (state_dict, content buffers included)
    config.json         {"model": ModelConfig, "train": TrainConfig fields, "format": 1}
    meta.json           item_index_version, data_version, n_items, created_at, torch version
    metrics.json        evaluation metrics
    history.json        per-epoch training history
    training_curve.png  loss and validation NDCG@10 per epoch
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path

import torch

from attnmodel.model import ModelConfig, SASRec

FORMAT = 1


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def save_artifact(
    out_dir,
    model: SASRec,
    *,
    metrics: dict | None = None,
    history: list | None = None,
    item_index_version: str = "",
    data_version: str = "",
    train_config=None,
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, out / "model.pt.tmp")
    os.replace(out / "model.pt.tmp", out / "model.pt")
    train = dataclasses.asdict(train_config) if train_config is not None else {}
    train.pop("model", None)
    _write_json(out / "config.json", {"format": FORMAT, "model": model.cfg.to_dict(), "train": train})
    _write_json(out / "meta.json", {
        "item_index_version": item_index_version, "data_version": data_version, "n_items": model.cfg.n_items,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
    })
    _write_json(out / "metrics.json", metrics or {})
    if history is not None:
        _write_json(out / "history.json", history)
        plot_history(history, out / "training_curve.png")
    return out


def plot_history(history: list, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(ep, [h["loss"] for h in history], color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    ev = [h for h in history if "valid_ndcg@10" in h]
    if ev:
        ax2 = ax.twinx()
        ax2.plot([h["epoch"] for h in ev], [h["valid_ndcg@10"] for h in ev], color="tab:orange", label="valid NDCG@10")
        ax2.set_ylabel("valid NDCG@10", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_meta(art_dir) -> dict:
    d = Path(art_dir)
    out = {"config": json.loads((d / "config.json").read_text()), **json.loads((d / "meta.json").read_text())}
    m = d / "metrics.json"
    out["metrics"] = json.loads(m.read_text()) if m.exists() else {}
    return out


def load_artifact(art_dir, device="cpu"):
    """(model in eval mode on `device`, meta dict); needs nothing but the directory."""
    d = Path(art_dir)
    if not (d / "model.pt").exists() or not (d / "config.json").exists():
        raise FileNotFoundError(f"{d} is not a model artefact (no model.pt / config.json)")
    meta = read_meta(d)
    model = SASRec(ModelConfig.from_dict(meta["config"]["model"]))
    model.load_state_dict(torch.load(d / "model.pt", map_location="cpu", weights_only=True))
    return model.to(device).eval(), meta


def load_state(art_dir) -> tuple[ModelConfig, dict]:
    """The config and weights of an artefact, for warm starts."""
    d = Path(art_dir)
    cfg = ModelConfig.from_dict(json.loads((d / "config.json").read_text())["model"])
    return cfg, torch.load(d / "model.pt", map_location="cpu", weights_only=True)
