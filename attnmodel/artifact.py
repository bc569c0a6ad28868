"""A self-describing, immutable model artefact directory: `<models root>/<model_version>/`.

    model.pt            weights (state_dict, content buffers included): the weights that serve
    candidate.pt        (nightly models) the weights before the refit on every event: what the gate judged
    config.json         {"model": ModelConfig, "train": TrainConfig fields, "format": 1}
    meta.json           model_version, n_items, data_version, snapshot (the sequence snapshot record it was
                        trained on: versions of user_sequences, item_index and events), item_index_version,
                        code_version, created_at, torch version
    metrics.json        evaluation metrics
    history.json        per-epoch training history
    training_curve.png  loss and validation NDCG@10 per epoch
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from attnmodel.model import ModelConfig, SASRec

FORMAT = 1


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def new_model_version(now: dt.datetime | None = None) -> str:
    """Unique and sortable by creation time: `20261130T181500123Z-3fa2c1`."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def code_version() -> str:
    """`git describe` of the checkout this package runs from, else ATTNREC_CODE_VERSION, else the package version
    (a container image without .git sets the variable at build time)."""
    if os.environ.get("ATTNREC_CODE_VERSION"):
        return os.environ["ATTNREC_CODE_VERSION"]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.TimeoutExpired):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"attnrec=={version('attnrec')}"
    except PackageNotFoundError:
        return "unknown"


def save_artifact(
    models_root,
    model: SASRec,
    *,
    model_version: str | None = None,
    metrics: dict | None = None,
    history: list | None = None,
    meta: dict | None = None,
    train_config=None,
    extra_states: dict[str, dict] | None = None,
) -> Path:
    """Write the artefact under a temporary name in `models_root`, then rename it to `<model_version>/`:
    readers see a whole artefact or none, and an existing version is never overwritten (FileExistsError)."""
    model_version = model_version or new_model_version()
    root = Path(models_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / model_version
    if final.exists():
        raise FileExistsError(f"model version {model_version} already exists in {root}: artefacts are never overwritten")
    out = Path(tempfile.mkdtemp(prefix=f".tmp-{model_version}-", dir=root))
    try:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "model.pt")
        for name, state in (extra_states or {}).items():  # e.g. candidate.pt
            torch.save({k: v.detach().cpu() for k, v in state.items()}, out / name)
        train = dataclasses.asdict(train_config) if train_config is not None else {}
        train.pop("model", None)
        _write_json(out / "config.json", {"format": FORMAT, "model": model.cfg.to_dict(), "train": train})
        _write_json(out / "meta.json", {
            "item_index_version": "", "data_version": "", **(meta or {}),
            "model_version": model_version, "n_items": model.cfg.n_items, "code_version": code_version(),
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
        })
        _write_json(out / "metrics.json", metrics or {})
        if history is not None:
            _write_json(out / "history.json", history)
            plot_history(history, out / "training_curve.png")
        os.chmod(out, 0o755)  # mkdtemp makes it private
        os.rename(out, final)  # atomic on one filesystem; fails if `final` appeared meanwhile
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return final


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


def load_artifact(art_dir, device="cpu", weights: str = "model.pt"):
    """(model in eval mode on `device`, meta dict); needs nothing but the directory.
    weights: which state file (`candidate.pt` for the weights a gate judged)."""
    d = Path(art_dir)
    if not (d / weights).exists() or not (d / "config.json").exists():
        raise FileNotFoundError(f"{d} is not a model artefact (no {weights} / config.json)")
    meta = read_meta(d)
    model = SASRec(ModelConfig.from_dict(meta["config"]["model"]))
    model.load_state_dict(torch.load(d / weights, map_location="cpu", weights_only=True))
    return model.to(device).eval(), meta


def load_state(art_dir) -> tuple[ModelConfig, dict]:
    """The config and weights of an artefact, for warm starts."""
    d = Path(art_dir)
    cfg = ModelConfig.from_dict(json.loads((d / "config.json").read_text())["model"])
    return cfg, torch.load(d / "model.pt", map_location="cpu", weights_only=True)
