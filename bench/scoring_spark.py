"""Scoring benchmark through Spark: the whole score_users job against the bare inference API and Spark ALS.

    python -m bench.scoring_spark --pairs ../shared/data/ml-1m/ml-1m.txt
    python -m bench.scoring_spark --synthetic-users 200000 --synthetic-items 100000

Writes a Delta warehouse straight from NumPy with delta-rs (no ingest, no build_sequences): `events` (every
interaction, one event_date D), `item_index` (item_idx 1..M, item_id its decimal string), `user_sequences`
(the last 200 items of each user) and the `sequence_snapshots` record with the tables' real versions. Events
hold more than the kept window (ML-1M users run past 200 items; synthetic lengths go to
--synthetic-max-events), so exclude-seen=all excludes items the model's input never shows it.
Then, per model config (cpu: d_model 64, 2 blocks; default: 128, 3; random weights unless --train-epochs):
- a warm-up score_users run on a second, small warehouse (its own copy of the artefact, so the timed run
  still loads its model as a nightly run does), reported apart;
- score_users end to end (its Delta write included), explanations off and/or on: wall seconds, users/s,
  its stage_seconds, and the peak RSS of this process tree (Spark JVM, Python workers) meanwhile;
- the bare ceiling: attnmodel.inference.recommend on the same users in this process (all its torch threads),
  same top-n, seen items excluded, after a warm-up call.
Once: Spark MLlib ALS (implicit, rank 64, 10 iterations) on the same interactions, recommendForAllUsers
materialised to a noop sink. Human lines go to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from attnmodel.columns import (AS_OF_DATE, EVENT_TS, EVENTS_TABLE, FIRST_SEEN_DATE, ITEM_ID, ITEM_IDX,
                               ITEM_INDEX_TABLE, LENGTH, RECOMMENDATIONS_TABLE, SEQUENCE_SNAPSHOTS_TABLE,
                               USER_ID, USER_SEQUENCES_TABLE)
from bench.memory import PeakRss

DAY = dt.date(2026, 1, 5)  # the one event_date and as_of_date
MAX_LEN = 200
CONFIGS = {"cpu": (64, 2), "default": (128, 3)}  # name -> (d_model, n_blocks); both 2 heads, max_len 200
WARMUP_USERS = 1000
TARGETS = {"spark_vs_bare_min": 0.7, "ml1m_users_per_second_min": 2000, "vs_als_min": 2.0}


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Interactions:
    """Every user's whole history, oldest first, flat: the one source of the warehouse, the bare run and ALS."""

    user_ids: np.ndarray  # (U,) str
    offsets: np.ndarray  # (U + 1,) int64: user u's items are items[offsets[u]:offsets[u + 1]]
    items: np.ndarray  # (E,) int64 item_idx in 1..n_items
    n_items: int

    def head(self, n: int) -> "Interactions":
        n = min(n, len(self.user_ids))
        return Interactions(self.user_ids[:n], self.offsets[:n + 1], self.items[:self.offsets[n]], self.n_items)

    def histories(self) -> list:
        return np.split(self.items, self.offsets[1:-1])

    def distinct_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user position, item_idx, times seen), sorted by user then item: the seen sets and ALS's input."""
        user = np.repeat(np.arange(len(self.user_ids)), np.diff(self.offsets))
        keys, counts = np.unique(user * (self.n_items + 1) + self.items, return_counts=True)
        return keys // (self.n_items + 1), keys % (self.n_items + 1), counts


def from_pairs(path: str, max_users: int | None) -> Interactions:
    from attnmodel.data import read_pairs

    seqs = read_pairs(path)  # users in user-id order, each in file (time) order
    keep = seqs.items[:max_users] if max_users else seqs.items
    offsets = np.r_[0, np.cumsum([len(s) for s in keep])].astype(np.int64)
    return Interactions(seqs.user_ids[:len(keep)], offsets, np.concatenate(keep), seqs.n_items)


def synthetic(n_users: int, n_items: int, max_events: int, seed: int) -> Interactions:
    """Lengths uniform in 5..max_events; items drawn with Zipf-like popularity (p ~ 1/rank^0.9) over a shuffled
    catalogue, so a head of popular items and a long tail, as in real logs."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(5, max_events + 1, size=n_users)
    p = 1.0 / np.arange(1, n_items + 1) ** 0.9
    items = rng.permutation(n_items)[rng.choice(n_items, size=int(lens.sum()), p=p / p.sum())] + 1
    return Interactions(np.arange(1, n_users + 1).astype(str), np.r_[0, np.cumsum(lens)].astype(np.int64),
                        items.astype(np.int64), n_items)


# ---------------------------------------------------------------- warehouse and artefacts

def write_warehouse(root: str, data: Interactions, day: dt.date) -> dict:
    """The four tables score_users reads, written with delta-rs (seconds, where ingest would take minutes);
    returns the sequence_snapshots record."""
    from deltalake import DeltaTable, write_deltalake

    lens = np.diff(data.offsets)
    n = len(data.items)
    pos = np.arange(n) - np.repeat(data.offsets[:-1], lens)  # position in the user's history
    midnight = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    ts = pa.array(int(midnight.timestamp()) * 10**6 + pos * 1000, pa.timestamp("us", tz="UTC"))  # 1 ms apart
    users = pa.array(data.user_ids, pa.string())
    date = pa.scalar(day, pa.date32())
    path = {t: os.path.join(root, t) for t in (EVENTS_TABLE, ITEM_INDEX_TABLE, USER_SEQUENCES_TABLE)}
    write_deltalake(path[EVENTS_TABLE], pa.table({
        "event_id": pc.cast(pa.array(np.arange(n)), pa.string()),
        USER_ID: users.take(pa.array(np.repeat(np.arange(len(lens)), lens))),
        ITEM_ID: pc.cast(pa.array(data.items), pa.string()), "event_type": pa.repeat("view", n),
        EVENT_TS: ts, "event_date": pa.repeat(date, n),
    }), partition_by=["event_date"], mode="overwrite")
    idx = np.arange(1, data.n_items + 1)
    write_deltalake(path[ITEM_INDEX_TABLE], pa.table({
        ITEM_ID: pc.cast(pa.array(idx), pa.string()), ITEM_IDX: pa.array(idx, pa.int32()),
        FIRST_SEEN_DATE: pa.repeat(date, len(idx)),
    }), mode="overwrite")
    kept = pos >= np.repeat(lens - MAX_LEN, lens)  # each user's most recent MAX_LEN events
    kept_lens = np.minimum(lens, MAX_LEN)
    offsets = pa.array(np.r_[0, np.cumsum(kept_lens)], pa.int32())
    write_deltalake(path[USER_SEQUENCES_TABLE], pa.table({
        USER_ID: users,
        ITEM_IDX: pa.ListArray.from_arrays(offsets, pa.array(data.items[kept], pa.int32())),
        EVENT_TS: pa.ListArray.from_arrays(offsets, ts.filter(pa.array(kept))),
        LENGTH: pa.array(kept_lens, pa.int32()), AS_OF_DATE: pa.repeat(date, len(lens)),
    }), partition_by=[AS_OF_DATE], mode="overwrite")
    version = {t: DeltaTable(p).version() for t, p in path.items()}
    record = {AS_OF_DATE: day, "user_sequences_version": version[USER_SEQUENCES_TABLE],
              "item_index_version": version[ITEM_INDEX_TABLE], "max_item_idx": data.n_items,
              "events_version": version[EVENTS_TABLE], "users": len(lens)}
    types = [pa.date32(), pa.int64(), pa.int64(), pa.int32(), pa.int64(), pa.int64()]  # SNAPSHOT_SCHEMA
    write_deltalake(os.path.join(root, SEQUENCE_SNAPSHOTS_TABLE),
                    pa.table({k: pa.array([v], t) for (k, v), t in zip(record.items(), types)}), mode="overwrite")
    return {**record, AS_OF_DATE: day.isoformat()}


def make_model(d_model: int, n_blocks: int, data: Interactions, train_epochs: int):
    """Random weights (speed does not depend on their values) unless asked to train a few epochs."""
    import torch

    from attnmodel.data import Sequences, leave_one_out
    from attnmodel.model import ModelConfig, SASRec

    cfg = ModelConfig(n_items=data.n_items, max_len=MAX_LEN, d_model=d_model, n_blocks=n_blocks, n_heads=2)
    if train_epochs <= 0:
        torch.manual_seed(0)
        return SASRec(cfg).eval()
    from attnmodel.train import TrainConfig, train

    split = leave_one_out(Sequences(data.user_ids, data.histories(), data.n_items))
    return train(TrainConfig(model=cfg, epochs=train_epochs, progress=False, device="cpu"), split.train, split.valid).model


def save_model(models_root: str, version: str, model, record: dict) -> str:
    from attnmodel.artifact import save_artifact

    shutil.rmtree(os.path.join(models_root, version), ignore_errors=True)  # bench scratch: always rewritten
    return str(save_artifact(models_root, model, model_version=version, meta={"snapshot": record}))


def build_or_reuse(workdir: str, source: dict, data: Interactions, reuse: bool) -> tuple[dict, dict]:
    """(record of the main warehouse, record of the warm-up one); reused only when built from the same source."""
    marker = os.path.join(workdir, "source.json")
    if reuse and os.path.exists(marker):
        with open(marker) as f:
            saved = json.load(f)
        if saved["source"] == source:
            say(f"reusing the warehouses in {workdir}")
            return saved["main"], saved["warmup"]
    t = time.monotonic()
    main_rec = write_warehouse(os.path.join(workdir, "warehouse"), data, DAY)
    warm_rec = write_warehouse(os.path.join(workdir, "warmup"), data.head(WARMUP_USERS), DAY)
    with open(marker, "w") as f:
        json.dump({"source": source, "main": main_rec, "warmup": warm_rec}, f)
    say(f"warehouse: {len(data.user_ids):,} users, {len(data.items):,} events, {data.n_items:,} items "
        f"written in {time.monotonic() - t:.1f} s")
    return main_rec, warm_rec


# ---------------------------------------------------------------- the timed pieces

def time_spark(spark, warehouse: str, model_dir: str, top_n: int, explain: bool):
    """(wall seconds around score_users.run, its report)."""
    from jobs.score_users import ScoreParams, run

    t = time.monotonic()
    report = run(spark, ScoreParams(logical_date=DAY, model=model_dir, warehouse=warehouse, top_n=top_n, explain=explain))
    return time.monotonic() - t, report


def seen_returned(spark, warehouse: str, version: int) -> int:
    """Recommendations of a 2% sample of users that name an item the user has an event for (0 if the job is right)."""
    from pyspark.sql import functions as F

    sample = F.pmod(F.hash(USER_ID), F.lit(50)) == 0
    recs = (spark.read.format("delta").option("versionAsOf", version).load(os.path.join(warehouse, RECOMMENDATIONS_TABLE))
            .filter((F.col(AS_OF_DATE) == F.lit(DAY)) & sample))
    events = spark.read.format("delta").load(os.path.join(warehouse, EVENTS_TABLE)).filter(sample)
    return recs.join(events.select(USER_ID, ITEM_ID), [USER_ID, ITEM_ID], "left_semi").count()


def time_bare(model, seqs: np.ndarray, exclude: list, top_n: int, explain: bool) -> float:
    from attnmodel.inference import recommend

    recommend(model, seqs[:1024], k=top_n, exclude=exclude[:1024], explain=explain)  # kernels, allocator
    t = time.monotonic()
    recommend(model, seqs, k=top_n, exclude=exclude, explain=explain)
    return time.monotonic() - t


def time_als(spark, data: Interactions, top_n: int) -> dict:
    """Implicit ALS on the distinct (user, item) pairs weighted by count; inputs cached before the clock starts."""
    from pyspark.ml.recommendation import ALS

    users, items, counts = data.distinct_pairs()
    ratings = spark.createDataFrame(pa.table({"user": pa.array(users, pa.int32()), "item": pa.array(items, pa.int32()),
                                              "rating": pa.array(counts, pa.float32())})).cache()
    ratings.count()
    t = time.monotonic()
    model = ALS(rank=64, maxIter=10, regParam=0.1, implicitPrefs=True, userCol="user", itemCol="item",
                ratingCol="rating", seed=0).fit(ratings)
    train_s = time.monotonic() - t
    t = time.monotonic()
    model.recommendForAllUsers(top_n).write.format("noop").mode("overwrite").save()  # every row materialised
    rec_s = time.monotonic() - t
    ratings.unpersist()
    say(f"als: trained in {train_s:.1f} s, recommendForAllUsers in {rec_s:.1f} s")
    return {"train_seconds": round(train_s, 2), "recommend_users_per_second": round(len(data.user_ids) / rec_s, 1)}


def met_targets(cpu: dict | None, als: dict | None, *, synthetic_data: bool, whole_pairs: bool) -> dict:
    """Each target only where it means something: the Spark/bare ratio on synthetic data (ML-1M is too small
    for the fixed costs to fade), the 2000 users/s on the whole ML-1M file, the ALS ratio when ALS ran."""
    if cpu is None or cpu.get("spark_users_per_second") is None:
        return {}
    met = {}
    if synthetic_data:
        met["spark_vs_bare"] = cpu["spark_vs_bare"] >= TARGETS["spark_vs_bare_min"]
    if whole_pairs:
        met["ml1m_users_per_second"] = cpu["spark_users_per_second"] >= TARGETS["ml1m_users_per_second_min"]
    if als is not None:
        met["vs_als"] = cpu["spark_users_per_second"] >= TARGETS["vs_als_min"] * als["recommend_users_per_second"]
    return met


# ---------------------------------------------------------------- command line

def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.scoring_spark", description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", help="`user item` file in time order (e.g. ML-1M)")
    src.add_argument("--synthetic-users", type=int)
    ap.add_argument("--synthetic-items", type=int, default=100_000)
    ap.add_argument("--synthetic-max-events", type=int, default=250,
                    help="longest synthetic history (lengths uniform from 5); past 200 only exclude-seen=all sees them")
    ap.add_argument("--max-users", type=int, default=None, help="keep only the first N users of --pairs (smoke runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", default="cpu,default", help=f"comma-separated, of {', '.join(CONFIGS)}")
    ap.add_argument("--explain", default=None, help="off,on (default: both for --pairs, off for synthetic)")
    ap.add_argument("--top-n", type=int, default=100)
    ap.add_argument("--train-epochs", type=int, default=0, help="train this many epochs first (default: random weights)")
    ap.add_argument("--workdir", default=None, help="keep the warehouses and artefacts here (default: a temp dir, removed)")
    ap.add_argument("--reuse", action="store_true", help="reuse the warehouses in --workdir when built from the same source")
    ap.add_argument("--skip-als", action="store_true")
    ap.add_argument("--master", default="local[*]")
    args = ap.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    args.explain = [m.strip() for m in (args.explain or ("off,on" if args.pairs else "off")).split(",") if m.strip()]
    if bad := [c for c in args.configs if c not in CONFIGS] + [m for m in args.explain if m not in ("off", "on")]:
        ap.error(f"unknown config or explain mode: {', '.join(bad)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    from attnmodel.data import pad_left
    from jobs.spark_session import SparkConfig, build_spark

    cores = len(os.sched_getaffinity(0))  # the CPUs this process may run on (a taskset limit counts)
    if args.pairs:
        source = {"pairs": os.path.abspath(args.pairs), "max_users": args.max_users}
        data = from_pairs(args.pairs, args.max_users)
    else:
        source = {"users": args.synthetic_users, "items": args.synthetic_items, "max_events": args.synthetic_max_events,
                  "seed": args.seed}
        data = synthetic(args.synthetic_users, args.synthetic_items, args.synthetic_max_events, args.seed)
    workdir = args.workdir or tempfile.mkdtemp(prefix="attnrec-bench-scoring-")
    os.makedirs(workdir, exist_ok=True)
    if not args.workdir:  # removed however the run ends: a full-size warehouse is gigabytes
        atexit.register(shutil.rmtree, workdir, True)
    record, warm_record = build_or_reuse(workdir, source, data, args.reuse)
    warehouse, models = os.path.join(workdir, "warehouse"), os.path.join(workdir, "models")

    histories = data.histories()
    seqs = pad_left(histories, MAX_LEN)
    u, items, _ = data.distinct_pairs()
    seen = np.split(items, np.flatnonzero(np.diff(u)) + 1)  # every user has >= 1 event, so one array per user
    spark = build_spark(SparkConfig.from_env(master=args.master, app_name="bench-scoring-spark",
                                             shuffle_partitions=2 * cores))  # a couple of tasks per core
    configs = {}
    for name in args.configs:
        d_model, n_blocks = CONFIGS[name]
        model = make_model(d_model, n_blocks, data, args.train_epochs)
        model_dir = save_model(models, f"bench-{name}", model, record)
        warm_dir = save_model(models, f"bench-{name}-warmup", model, warm_record)
        warm_s, _ = time_spark(spark, os.path.join(workdir, "warmup"), warm_dir, args.top_n, args.explain[0] == "on")
        say(f"{name}: warm-up score_users ({warm_record['users']:,} users) {warm_s:.1f} s")
        res = {"d_model": d_model, "n_blocks": n_blocks, "spark_warmup_seconds": round(warm_s, 2)}
        with PeakRss() as mem:
            for mode in args.explain:
                suffix = "_explain" if mode == "on" else ""
                secs, report = time_spark(spark, warehouse, model_dir, args.top_n, mode == "on")
                res[f"spark_users_per_second{suffix}"] = round(report.users / secs, 1)
                res[f"spark_seconds{suffix}"] = round(secs, 2)
                res[f"stage_seconds{suffix}"] = report.stage_seconds
                res[f"seen_items_returned_in_sample{suffix}"] = seen_returned(spark, warehouse, report.recommendations_version)
                say(f"{name} explain {mode}: score_users {report.users:,} users, {report.rows:,} rows in {secs:.1f} s "
                    f"({res[f'spark_users_per_second{suffix}']:,} users/s) {report.stage_seconds}")
        res["peak_rss_mb"] = round(mem.total / 2**20)
        for mode in args.explain:
            suffix = "_explain" if mode == "on" else ""
            secs = time_bare(model, seqs, seen, args.top_n, mode == "on")
            res[f"bare_users_per_second{suffix}"] = round(len(seqs) / secs, 1)
            say(f"{name} explain {mode}: bare recommend {len(seqs):,} users in {secs:.1f} s "
                f"({res[f'bare_users_per_second{suffix}']:,} users/s, {torch.get_num_threads()} threads)")
        off = res.get("spark_users_per_second")
        res["spark_vs_bare"] = round(off / res["bare_users_per_second"], 3) if off is not None else None
        configs[name] = res
    als = None if args.skip_als else time_als(spark, data, args.top_n)
    spark.stop()
    result = {
        "dataset": os.path.basename(args.pairs).rsplit(".", 1)[0] if args.pairs else "synthetic",
        "users": len(data.user_ids), "items": data.n_items, "top_n": args.top_n, "cores": cores,
        "weights": f"trained-{args.train_epochs}-epochs" if args.train_epochs > 0 else "random",
        "configs": configs, "als": als, "targets": TARGETS,
        "met": met_targets(configs.get("cpu"), als, synthetic_data=not args.pairs,
                           whole_pairs=bool(args.pairs) and not args.max_users),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
