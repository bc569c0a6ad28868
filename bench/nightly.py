"""Nightly-pipeline benchmark: a full-retrain night and a warm-start night of ML-1M through the DAG, on this machine.

    python -m bench.nightly [--pairs ../shared/data/ml-1m/ml-1m.txt] [--days 31] [--out bench/out/nightly]
        [--train-args "..."] [--keep]

1. `attnrec import-movielens` spreads every user's history over --days days (see jobs/import_movielens.py).
2. History: `attnrec ingest --from-date` loads days 1..days-3 in one job.
3. Night days-2 (no model yet: a full retrain) and night days-1 (a warm start from it), each one
   `attnrec run --date D` = one dag.test() of dags/attnrec_nightly.py with its SparkSubmitOperator steps,
   using the settings the nightly pipeline ships with (attnmodel/nightly.py NIGHTLY_TRAINING_DEFAULTS and
   train-nightly's warm-start defaults) unless --train-args adds to them.
4. The refit's effect: day `days` is ingested and sequenced (job level); for every user active on it, the hit
   rate@10 of that next day's real events (a hit when the top 10, history excluded, holds any item the user
   took on the next day) for the warm-start night's served model (refit on full sequences) and for the same
   model before its refit (candidate.pt), with popularity for scale.

Per night: wall seconds, peak resident memory of its whole process tree (sampled every 0.5 s: Airflow's runner,
the step's spark-submit JVM and Python workers, or training), per-step seconds (Airflow task durations). The last printed line is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = dt.date(2026, 1, 1)


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m bench.nightly", description=__doc__.splitlines()[0])
    p.add_argument("--pairs", default=os.path.join(PROJECT_DIR, "..", "shared", "data", "ml-1m", "ml-1m.txt"))
    p.add_argument("--days", type=int, default=31, help="days the history is spread over (>= 4)")
    p.add_argument("--out", default=os.path.join(PROJECT_DIR, "bench", "out", "nightly"))
    p.add_argument("--train-args", default="", help="extra train-nightly options (default: the shipped settings)")
    p.add_argument("--keep", action="store_true", help="reuse --out's raw logs and history if already there")
    p.add_argument("--next-day-only", action="store_true",
                   help="only step 4, on the warehouse a finished run left in --out")
    return p.parse_args(argv)


def _attnrec(args: list[str], log: str) -> tuple[float, int, str]:
    """(wall seconds, peak RSS MiB of the whole process tree, stdout) of `python -m jobs.cli ARGS`; output
    goes to `log` too. The tree: Airflow's runner, each step's spark-submit JVM and Python workers, training."""
    from bench.memory import PeakRss

    started = time.monotonic()
    with open(log, "w") as fh, PeakRss(interval=0.5) as mem:
        proc = subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=PROJECT_DIR, stdout=subprocess.PIPE,
                              stderr=fh, text=True)
        fh.write(proc.stdout)
    seconds = time.monotonic() - started
    if proc.returncode:
        raise SystemExit(f"attnrec {' '.join(args[:3])} failed (exit {proc.returncode}); see {log}")
    return seconds, (mem.total - psutil_self_rss()) // 2**20, proc.stdout


def psutil_self_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _task_seconds(stdout: str) -> dict:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^TASK \S+ (\S+) \S+ ([\d.]+)$", stdout, re.M)}


def next_day_hit_rates(warehouse: str, night: dt.date, model_dir: str, k: int = 10) -> dict:
    """Hit rate@k on the next day's real events, for the served model, the same model before its refit, and
    popularity; users: those with events on the next day (their history: the night's snapshot)."""
    import numpy as np
    import torch

    from attnmodel.artifact import load_artifact
    from attnmodel.data import pad_left, read_sequence_table
    from attnmodel.inference import recommend

    table = f"{warehouse}/user_sequences"
    today, _ = read_sequence_table(table, night.isoformat())
    tomorrow, _ = read_sequence_table(table, (night + dt.timedelta(days=1)).isoformat())
    history = dict(zip(today.user_ids, today.items))
    users, hist, nxt = [], [], []
    for user, items in zip(tomorrow.user_ids, tomorrow.items):
        before = history.get(user)
        if before is None:
            continue
        # the next day's items: those not in the history (MovieLens rates a movie once; sequences are capped
        # at their most recent events, so a position-based difference would be wrong for long histories)
        new = set(items.tolist()) - set(before.tolist())
        if new:
            users.append(user), hist.append(before), nxt.append(new)
    counts = np.bincount(np.concatenate(today.items), minlength=today.n_items + 1)
    counts[0] = -1
    out = {"users": len(users), "next_day_events": int(sum(len(n) for n in nxt))}
    for name, weights in (("served_with_refit", "model.pt"), ("before_refit", "candidate.pt")):
        model, _ = load_artifact(model_dir, weights=weights)
        with torch.no_grad():
            top = recommend(model, pad_left(hist, model.cfg.max_len), k=k, exclude=hist)["item_idx"]
        out[f"hit@{k}_{name}"] = round(float(np.mean([bool(n & set(t.tolist())) for t, n in zip(top, nxt)])), 4)
    order = np.argsort(-counts, kind="stable")
    pop_hits = []
    for h, n in zip(hist, nxt):
        seen = set(h.tolist())
        top = [i for i in order[:k + len(seen)] if i not in seen and i != 0][:k]
        pop_hits.append(bool(n & set(top)))
    out[f"hit@{k}_popularity"] = round(float(np.mean(pop_hits)), 4)
    return out


def main(argv=None) -> int:
    a = parse(argv)
    if a.days < 4:
        raise SystemExit("--days must be >= 4 (history, two nights, and a next day)")
    if not os.path.exists(a.pairs):
        raise SystemExit(f"{a.pairs} not found (ML-1M from ../shared/data; see its README)")
    raw, wh, art, exports, logs = (os.path.join(a.out, d) for d in ("raw", "warehouse", "artifacts", "exports", "logs"))
    full_night, warm_night, next_day = (START + dt.timedelta(days=a.days - n) for n in (3, 2, 1))
    if a.next_day_only:
        from attnmodel import registry as reg

        model_dir = reg.latest_candidate(reg.read_registry(wh), warm_night)["model_dir"]
        print(json.dumps({"refit_next_day": next_day_hit_rates(wh, warm_night, model_dir)}))
        return 0
    history_ready = a.keep and os.path.exists(os.path.join(logs, "history.done"))
    if not history_ready:
        shutil.rmtree(a.out, ignore_errors=True)
    os.makedirs(logs, exist_ok=True)
    result = {"data": os.path.basename(a.pairs), "days": a.days, "cpus": os.cpu_count(),
              "train_args": a.train_args or "(shipped nightly settings)"}
    if not history_ready:
        s, _, _ = _attnrec(["import-movielens", a.pairs, "--out", raw, "--days", str(a.days),
                            "--start-date", START.isoformat()], os.path.join(logs, "import.log"))
        result["import_seconds"] = round(s, 1)
        s, peak, _ = _attnrec(["ingest", "--from-date", START.isoformat(),
                               "--date", (full_night - dt.timedelta(days=1)).isoformat(),
                               "--raw", raw, "--warehouse", wh], os.path.join(logs, "history.log"))
        result["history_ingest"] = {"seconds": round(s, 1), "peak_rss_mib": peak}
        open(os.path.join(logs, "history.done"), "w").close()
    else:  # a rerun on the same history: start the nights from a warehouse with the history only
        for table in ("user_sequences", "sequence_snapshots", "item_index", "recommendations", "model_registry"):
            shutil.rmtree(os.path.join(wh, table), ignore_errors=True)
        shutil.rmtree(art, ignore_errors=True), shutil.rmtree(exports, ignore_errors=True)
    common = ["--raw", raw, "--warehouse", wh, "--artifacts", art, "--exports", exports,
              "--airflow-home", os.path.join(a.out, "airflow-home"), "--train-args", a.train_args]
    for key, night in (("full_retrain_night", full_night), ("warm_start_night", warm_night)):
        s, peak, out = _attnrec(["run", "--date", night.isoformat(), *common], os.path.join(logs, f"{key}.log"))
        result[key] = {"date": night.isoformat(), "wall_seconds": round(s, 1), "peak_rss_mib": peak,
                       "step_seconds": _task_seconds(out)}
        print(json.dumps({key: result[key]}), flush=True)

    from attnmodel import registry as reg

    rows = reg.read_registry(wh)
    for key, night in (("full_retrain_night", full_night), ("warm_start_night", warm_night)):
        cand = reg.latest_candidate(rows, night)
        decision = reg.decision_for(rows, cand["model_version"], night)
        m = json.loads(cand["metrics"])
        result[key]["model"] = {
            "model_version": cand["model_version"], "warm_start_from": cand["warm_start_from"] or None,
            "epochs": m["epochs"], "train_seconds": round(m["train_seconds"], 1), "stopped": m["stopped"],
            "valid_ndcg@10": m["valid"].get("ndcg@10"), "test_ndcg@10": m["test"].get("ndcg@10"),
            "gate": decision["status"], "gate_candidate_ndcg@10": decision["candidate_ndcg10"],
            "gate_published_ndcg@10": decision["published_ndcg10"],
            "gate_popularity_ndcg@10": decision["popularity_ndcg10"], "gate_users": decision["gate_users"]}
    result["settings"] = json.loads(reg.latest_candidate(rows, warm_night)["metrics"])["settings"]

    _attnrec(["ingest", "--date", next_day.isoformat(), "--raw", raw, "--warehouse", wh], os.path.join(logs, "next.log"))
    _attnrec(["sequences", "--date", next_day.isoformat(), "--warehouse", wh], os.path.join(logs, "next_seq.log"))
    result["refit_next_day"] = next_day_hit_rates(wh, warm_night, reg.latest_candidate(rows, warm_night)["model_dir"])
    result["target_warm_night_max_seconds"] = 15 * 60
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
