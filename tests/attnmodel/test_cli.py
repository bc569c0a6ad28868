import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attnmodel.cli import train_main

from .conftest import planted_sequences, write_pairs

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--device", "cpu", "--quiet", "--d-model", "16", "--blocks", "1", "--heads", "1", "--max-len", "16", "--batch-size", "64"]


@pytest.fixture
def pairs(tmp_path):
    p = tmp_path / "pairs.txt"
    write_pairs(p, planted_sequences(n_users=120))
    return str(p)


def test_train_writes_a_self_describing_immutable_artifact(tmp_path, pairs, capsys):
    root = tmp_path / "models"
    assert train_main(["--pairs", pairs, "--out", str(root), "--epochs", "2", *SMALL]) == 0
    out_text = capsys.readouterr()
    version = json.loads(out_text.out.strip().splitlines()[-1])["model_version"]
    out = root / version
    for f in ("model.pt", "config.json", "meta.json", "metrics.json", "history.json", "training_curve.png"):
        assert (out / f).exists()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model_version"] == version and meta["code_version"] and meta["data_version"].startswith("pairs:")
    assert "read pairs:" in out_text.err and "wrote" in out_text.err
    # nothing else is left in the root: no temporary directory, no checkpoint of a finished run
    assert sorted(p.name for p in root.iterdir() if p.name != ".checkpoints") == [version]
    assert not list((root / ".checkpoints").glob("*/last.pt"))
    # a second run is a new version beside the first; naming an existing version is refused
    assert train_main(["--pairs", pairs, "--out", str(root), "--epochs", "1", *SMALL]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model_version"]
    assert second != version and sorted([version, second]) == [version, second]  # sortable by creation
    before = (out / "model.pt").read_bytes()
    assert train_main(["--pairs", pairs, "--out", str(root), "--epochs", "1", "--model-version", version, *SMALL]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "model.pt").read_bytes() == before


@pytest.mark.parametrize("content, extra, message", [
    ("", [], "empty pairs file"),
    ("u1 1\nu1 99\n", ["--n-items", "60"], "item index 99"),
    ("u1 1\nu1 2\n", [], "nothing to validate on"),
])
def test_bad_input_exits_nonzero_with_one_line(tmp_path, capsys, content, extra, message):
    p = tmp_path / "bad.txt"
    p.write_text(content)
    assert train_main(["--pairs", str(p), "--out", str(tmp_path / "o"), *extra, *SMALL]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("attnrec train: error: ") and message in last


def test_table_needs_a_date(tmp_path):
    with pytest.raises(SystemExit) as e:
        train_main(["--table", str(tmp_path), "--out", str(tmp_path / "o")])
    assert e.value.code == 2


def test_warm_start_from_an_artifact_keeps_old_item_vectors(tmp_path):
    old_pairs, new_pairs = tmp_path / "old.txt", tmp_path / "new.txt"
    write_pairs(old_pairs, planted_sequences(n_users=60, n_items=40))
    write_pairs(new_pairs, planted_sequences(n_users=60, n_items=55, seed=1))
    assert train_main(["--pairs", str(old_pairs), "--out", str(tmp_path), "--model-version", "a", "--epochs", "1",
                       *SMALL]) == 0
    assert train_main(["--pairs", str(new_pairs), "--out", str(tmp_path), "--model-version", "b", "--epochs", "1",
                       "--lr", "0", "--warm-start", str(tmp_path / "a"), *SMALL]) == 0
    a = torch.load(tmp_path / "a" / "model.pt")["item_emb.weight"]
    b = torch.load(tmp_path / "b" / "model.pt")["item_emb.weight"]
    assert a.shape[0] == 41 and b.shape[0] == 56
    torch.testing.assert_close(b[:41], a)


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path, pairs):
    root = tmp_path / "models"
    out = root / "m1"
    epochs = 40  # enough that the kill lands mid-run: 12 tiny epochs sometimes all finished before it did
    cmd = [sys.executable, "-m", "attnmodel.cli", "--pairs", pairs, "--out", str(root), "--model-version", "m1",
           "--epochs", str(epochs), *SMALL]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list((root / ".checkpoints").glob("*/last.pt"))
        if found and torch.load(found[0], weights_only=False)["epoch"] >= 2:
            ckpt = found[0]
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=False)["epoch"]
    assert 2 <= killed_at < epochs and not out.exists()  # the checkpoint lives outside the artefact
    done = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {ckpt} (epoch {killed_at})" in done.stderr
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    assert not ckpt.exists()
