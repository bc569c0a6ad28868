"""score_users: the top-N items for every user of a `user_sequences` snapshot -> the `recommendations` table.

    spark-submit jobs/score_users.py --logical-date 2026-01-05 --model artifacts/models/<version> [--top-n 100]
    attnrec score --date 2026-01-05 --model artifacts/models/<version>

Reads the snapshot through its record in `sequence_snapshots` (exact user_sequences, item_index and events
versions), ships the model directory to the executors (SparkContext.addFile, so any Hadoop URI works), scores
users inside Spark tasks (mapInArrow -> attnmodel.inference.recommend_arrow, one model load per Python
worker), and replaces the partition as_of_date = D of `recommendations` in one Delta transaction.
Never recommended: padding, an item the user saw (--exclude-seen all|window|none), an item on the blocklist,
an item first indexed after D, an item the model does not know. Users with no known item get the popularity
list of the --popularity-days before D (model_version 'popularity-D').
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from attnmodel.columns import (
    AS_OF_DATE,
    BECAUSE,
    EVENTS_TABLE,
    EVENTS_VERSION,
    EXCLUDE_IDX,
    FIRST_SEEN_DATE,
    ITEM_ID,
    ITEM_IDX,
    ITEM_INDEX_TABLE,
    ITEM_INDEX_VERSION,
    MAX_ITEM_IDX,
    MODEL_VERSION,
    RANK,
    RECOMMENDATIONS_TABLE,
    SCORE,
    SEQUENCE_SNAPSHOTS_TABLE,
    SNAPSHOT_COLUMNS,
    USER_ID,
    USER_SEQUENCES_TABLE,
    USER_SEQUENCES_VERSION,
)
from jobs.common import JobInputError, StageClock, add_job_args, run_job
from jobs.warehouse import read_version, replace_partition, table_exists, table_path

EXCLUDE_MODES = ("all", "window", "none")
RECOMMENDATIONS_SCHEMA = (f"{USER_ID} string, {RANK} int, {ITEM_ID} string, {SCORE} float, {MODEL_VERSION} string, "
                          f"{BECAUSE} array<string>")
USERS_PER_TASK = 20_000
# Readers select a date's partition; min/max statistics on every column cost 1.2 s per 2M rows to collect
# (3.27 -> 2.09 s measured) and would skip nothing but a lookup by user. An existing table keeps its own.
RECOMMENDATIONS_TABLE_PROPERTIES = {"delta.dataSkippingStatsColumns": USER_ID}  # spreads a snapshot stored in few files over every core (and bounds a task's memory)


@dataclass(frozen=True)
class ScoreParams:
    logical_date: dt.date
    model: str | None = None  # artefact directory (local path or Hadoop URI); None: the registry's published model
    warehouse: str = "warehouse"
    top_n: int = 100
    exclude_seen: str = "all"
    explain: bool = True
    n_explain: int = 3
    blocklist: str | None = None  # a Delta table with an item_id column (a path, or a table name in the warehouse)
    users: str | None = None  # a Delta table with a user_id column: also scored when they have no history
    popularity_days: int = 30
    batch_size: int | None = None  # users per forward pass (default: recommend's)

    def __post_init__(self):
        if self.top_n < 1:
            raise JobInputError("--top-n must be >= 1")
        if self.exclude_seen not in EXCLUDE_MODES:
            raise JobInputError(f"--exclude-seen must be one of {', '.join(EXCLUDE_MODES)}, got {self.exclude_seen!r}")
        if self.popularity_days < 1:
            raise JobInputError("--popularity-days must be >= 1")
        if self.n_explain < 1:
            raise JobInputError("--n-explain must be >= 1")


@dataclass(frozen=True)
class ScoreReport:
    logical_date: str
    model_version: str
    model_source: str  # "--model" or "registry: published for <date> (<reason>)"
    gate: str  # what the registry says about D's own candidate: "published", "rejected: <reason>", "none", "n/a"
    snapshot: dict  # the sequence_snapshots record that was scored
    users: int  # users with rows in the partition
    cold_users: int  # of which served the popularity list
    rows: int
    recommendations_version: int
    users_per_second: float
    spark_master: str
    seconds: float
    stage_seconds: dict


# ---------------------------------------------------------------- pure transforms

def seen_items(events: DataFrame, item_index: DataFrame, *, logical_date: dt.date) -> DataFrame:
    """USER_ID, EXCLUDE_IDX: every indexed item each user interacted with on or before the date."""
    return (
        events.filter(F.col("event_date") <= F.lit(logical_date)).select(USER_ID, ITEM_ID)
        .join(item_index.select(ITEM_ID, ITEM_IDX), ITEM_ID)
        .groupBy(USER_ID).agg(F.collect_set(ITEM_IDX).alias(EXCLUDE_IDX))
    )


def scoring_input(sequences: DataFrame, *, exclude_seen: str, seen: DataFrame | None = None,
                  extra_users: DataFrame | None = None) -> DataFrame:
    """USER_ID, ITEM_IDX (history), EXCLUDE_IDX: one row per user to score. Extra users without a snapshot row
    come with an empty history (the adapter serves them as cold users)."""
    users = sequences.select(USER_ID, ITEM_IDX)
    if extra_users is not None:
        missing = extra_users.select(USER_ID).distinct().join(users, USER_ID, "left_anti")
        users = users.unionByName(missing.select(USER_ID, F.array().cast("array<int>").alias(ITEM_IDX)))
    if exclude_seen == "window":
        return users.withColumn(EXCLUDE_IDX, F.col(ITEM_IDX))
    if exclude_seen == "none":
        return users.withColumn(EXCLUDE_IDX, F.lit(None).cast("array<int>"))
    return users.join(seen, USER_ID, "left")


def popularity_ranking(events: DataFrame, candidates: DataFrame, *, logical_date: dt.date, days: int) -> DataFrame:
    """ITEM_IDX, SCORE for every candidate item with an event on or before the date, most popular first:
    events in the `days` before the date, then all-time events, then item_idx (score = the recent count)."""
    first_day = logical_date - dt.timedelta(days=days - 1)
    counts = (
        events.filter(F.col("event_date") <= F.lit(logical_date))
        .groupBy(ITEM_ID).agg(
            F.sum(F.when(F.col("event_date") >= F.lit(first_day), 1).otherwise(0)).alias("_recent"),
            F.count(F.lit(1)).alias("_total"),
        )
    )
    return (
        counts.join(candidates.select(ITEM_ID, ITEM_IDX), ITEM_ID)
        .orderBy(F.desc("_recent"), F.desc("_total"), ITEM_IDX)
        .select(ITEM_IDX, F.col("_recent").cast("float").alias(SCORE))
    )


def candidate_items(item_index: DataFrame, *, logical_date: dt.date, blocked_ids: DataFrame | None) -> DataFrame:
    """Items that may be recommended on the date: indexed by then (a backfill never sees later items), not blocked."""
    allowed = item_index.filter(F.col(FIRST_SEEN_DATE) <= F.lit(logical_date))
    if blocked_ids is not None:
        allowed = allowed.join(blocked_ids.select(ITEM_ID).distinct(), ITEM_ID, "left_anti")
    return allowed


def with_as_of_date(recommendations: DataFrame, logical_date: dt.date) -> DataFrame:
    return recommendations.withColumn(AS_OF_DATE, F.lit(logical_date))


# ---------------------------------------------------------------- the Python side of the tasks

def make_scorer(*, model_name: str, model_version: str, popularity_version: str, ids_bc, blocked_bc, popularity_bc,
                top_n: int, explain: bool, n_explain: int, batch_size: int | None):
    """The function mapInArrow runs: Arrow batches of scoring input -> Arrow batches of recommendations."""

    def score(batches):
        import torch
        from pyspark import SparkFiles, TaskContext

        from attnmodel.inference import BECAUSE_IDX, cached_model, recommend_arrow

        ctx = TaskContext.get()
        gpus = ctx.resources().get("gpu") if ctx is not None else None
        device = f"cuda:{gpus.addresses[0]}" if gpus is not None and torch.cuda.is_available() else "cpu"
        torch.set_num_threads(max(1, int(ctx.cpus()) if ctx is not None else 1))  # the cores Spark gave this task
        model = cached_model(SparkFiles.get(model_name), device)
        ids = ids_bc.value  # pa.Array of item_id by item_idx (position 0 = padding)
        pop = popularity_bc.value
        for batch in batches:
            out = recommend_arrow(model, batch, k=top_n, model_version=model_version, explain=explain,
                                  n_explain=n_explain, blocked=blocked_bc.value, popularity=pop,
                                  popularity_version=popularity_version, batch_size=batch_size)
            columns = {USER_ID: out.column(USER_ID), RANK: out.column(RANK),
                       ITEM_ID: ids.take(out.column(ITEM_IDX)), SCORE: out.column(SCORE),
                       MODEL_VERSION: out.column(MODEL_VERSION)}
            if explain:
                because = out.column(BECAUSE_IDX)
                columns[BECAUSE] = pa.ListArray.from_arrays(because.offsets, ids.take(because.flatten()))
            else:
                columns[BECAUSE] = pa.nulls(out.num_rows, pa.list_(pa.string()))
            if columns[ITEM_ID].null_count:  # the driver checked that item_index is dense; this would be a bug
                raise RuntimeError("an item_idx with no item_id reached the output")
            yield pa.RecordBatch.from_pydict(columns)

    return score


# ---------------------------------------------------------------- I/O

def snapshot_record(spark: SparkSession, warehouse: str, logical_date: dt.date) -> dict:
    path = table_path(warehouse, SEQUENCE_SNAPSHOTS_TABLE)
    rows = (spark.read.format("delta").load(path).filter(F.col(AS_OF_DATE) == F.lit(logical_date))
            .select(*SNAPSHOT_COLUMNS).collect()) if table_exists(spark, path) else []
    if not rows:
        raise JobInputError(f"no user_sequences snapshot for {logical_date} (no record in {path}): "
                            f"run build_sequences --logical-date {logical_date}")
    record = rows[0].asDict()
    record[AS_OF_DATE] = record[AS_OF_DATE].isoformat()
    return record


def ship_model(spark: SparkSession, model: str) -> tuple[str, dict]:
    """Register the artefact with Spark (executors fetch it once each) and read its meta on the driver; returns
    the name SparkFiles knows it by. A local directory travels as a zip archive (Spark ships local directories
    only in local mode); a Hadoop URI as a directory."""
    from pyspark import SparkFiles

    uri = model.rstrip("/")
    local = uri[len("file://"):] if uri.startswith("file://") else (uri if "://" not in uri else None)
    try:
        if local is not None:
            local = os.path.abspath(local)
            if not os.path.isfile(os.path.join(local, "meta.json")) or not os.path.isfile(os.path.join(local, "model.pt")):
                raise JobInputError(f"model {model} is not a model artefact (no meta.json / model.pt): "
                                    "pass --model with a directory written by `attnrec train`")
            name = f"{os.path.basename(local)}.zip"
            # One archive per artefact path, kept: artefacts are immutable, and Spark refuses a second path
            # under a name it has already shipped (a rerun in the same session registers the same one again).
            scratch = os.path.join(tempfile.gettempdir(), "attnrec-model-archives",
                                   hashlib.sha256(local.encode()).hexdigest()[:16])
            archive = os.path.join(scratch, name)
            if not os.path.exists(archive):
                os.makedirs(scratch, exist_ok=True)
                partial = shutil.make_archive(os.path.join(scratch, f".partial-{os.getpid()}"), "zip", local)
                os.replace(partial, archive)
            spark.sparkContext.addArchive(archive)
            directory = local
        else:
            name = uri.rsplit("/", 1)[-1]
            spark.sparkContext.addFile(uri, recursive=True)
            directory = SparkFiles.get(name)
        with open(os.path.join(directory, "meta.json")) as f:
            meta = json.load(f)
        with open(os.path.join(directory, "config.json")) as f:
            meta["config"] = json.load(f)
    except JobInputError:
        raise
    except Exception as exc:  # any Hadoop filesystem error: say which model and why, in one line
        raise JobInputError(f"model {model} could not be read: {str(exc).strip().splitlines()[0][:300]}") from None
    return name, meta


def check_model_fits(meta: dict, record: dict, model: str) -> None:
    """A model trained on a newer item_index than the snapshot's could recommend items the snapshot's index lacks."""
    trained_on = meta.get("snapshot") or {}
    if trained_on.get(ITEM_INDEX_VERSION) is not None and trained_on[ITEM_INDEX_VERSION] > record[ITEM_INDEX_VERSION]:
        raise JobInputError(
            f"model {model} was trained on item_index version {trained_on[ITEM_INDEX_VERSION]}, newer than version "
            f"{record[ITEM_INDEX_VERSION]} that the {record[AS_OF_DATE]} snapshot uses: score with an older model "
            "or rebuild the snapshot")
    if int(meta["n_items"]) > int(record[MAX_ITEM_IDX]):
        raise JobInputError(f"model {model} knows {meta['n_items']} items, more than the {record[MAX_ITEM_IDX]} of the "
                            f"item_index the {record[AS_OF_DATE]} snapshot uses: it was trained on a newer item_index")


def _table(spark: SparkSession, warehouse: str, name: str, column: str) -> DataFrame:
    path = name if "/" in name else table_path(warehouse, name)
    if not table_exists(spark, path):
        raise JobInputError(f"table {name} not found at {path}")
    df = spark.read.format("delta").load(path)
    if column not in df.columns:
        raise JobInputError(f"table {path} has no `{column}` column (it has {', '.join(df.columns)})")
    return df


def registry_model(warehouse: str, day: dt.date) -> tuple[str, str, str]:
    """(model dir, how it was chosen, the gate's word on D's candidate) from the model registry."""
    from attnmodel import registry as reg

    rows = reg.read_registry(warehouse)
    serving = reg.published_for(rows, day)
    if serving is None:
        raise JobInputError(f"no model is published for {day} in {reg.registry_path(warehouse)}: run the nightly "
                            "train and gate (`attnrec train-nightly`, `attnrec gate`), publish one by hand "
                            "(`attnrec publish`), or pass --model")
    tonight = reg.latest_candidate(rows, day)
    decision = reg.decision_for(rows, tonight["model_version"], day) if tonight else None
    gate = ("none" if tonight is None else "not judged" if decision is None
            else decision["status"] if decision["status"] == reg.PUBLISHED else f"rejected: {decision['reason']}")
    if gate.startswith("rejected"):
        # the visible mark of a rejected night: in the report, the job log and (through the report) the DAG run
        print(f"WARNING: the candidate for {day} ({tonight['model_version']}) was {gate}; "
              f"serving {serving['model_version']}", file=sys.stderr, flush=True)
    return serving["model_dir"], f"registry: published for {serving['data_date']} ({serving['reason']})", gate


def run(spark: SparkSession, params: ScoreParams) -> ScoreReport:
    stage = StageClock()
    day = params.logical_date
    record = snapshot_record(spark, params.warehouse, day)
    if params.model is None:
        model_path, model_source, gate = registry_model(params.warehouse, day)
    else:
        model_path, model_source, gate = params.model, "--model", "n/a"
    model_name, meta = ship_model(spark, model_path)
    check_model_fits(meta, record, model_path)
    model_version = meta.get("model_version") or model_name
    blocked_ids = _table(spark, params.warehouse, params.blocklist, ITEM_ID) if params.blocklist else None
    extra_users = _table(spark, params.warehouse, params.users, USER_ID) if params.users else None
    sequences = (read_version(spark, table_path(params.warehouse, USER_SEQUENCES_TABLE), record[USER_SEQUENCES_VERSION])
                 .filter(F.col(AS_OF_DATE) == F.lit(day)))
    item_index = read_version(spark, table_path(params.warehouse, ITEM_INDEX_TABLE), record[ITEM_INDEX_VERSION])
    events = read_version(spark, table_path(params.warehouse, EVENTS_TABLE), record[EVENTS_VERSION])
    snapshot_users = int(record["users"])  # counted by build_sequences when it wrote the snapshot
    if snapshot_users == 0:
        raise JobInputError(f"the user_sequences snapshot for {day} is empty (version {record[USER_SEQUENCES_VERSION]}): "
                            "nothing to score")
    stage.lap("check_inputs")

    # Small driver-side vectors, shipped once per executor: item_id by item_idx, the items nobody may get.
    n_items = int(meta["n_items"])
    candidates = candidate_items(item_index, logical_date=day, blocked_ids=blocked_ids)
    # one pass over the index gives both: the ids in item_idx order, and which items may be recommended
    ids = (item_index.join(candidates.select(ITEM_ID, F.lit(True).alias("_candidate")), ITEM_ID, "left")
           .orderBy(ITEM_IDX).select(ITEM_IDX, ITEM_ID, F.coalesce("_candidate", F.lit(False)).alias("_candidate"))
           .toArrow())
    item_ids = pa.concat_arrays([pa.nulls(1, pa.string()), ids.column(ITEM_ID).combine_chunks()])
    if ids.num_rows and ids.column(ITEM_IDX)[-1].as_py() != ids.num_rows:
        raise JobInputError(f"item_index version {record[ITEM_INDEX_VERSION]} is not numbered 1..{ids.num_rows}")
    idx = ids.column(ITEM_IDX).to_numpy()
    blocked = idx[(idx <= n_items) & ~ids.column("_candidate").to_numpy(zero_copy_only=False)]
    ranking = popularity_ranking(events, candidates, logical_date=day, days=params.popularity_days).toArrow()
    popularity = (ranking.column(ITEM_IDX).to_numpy(), ranking.column(SCORE).to_numpy())
    sc = spark.sparkContext
    ids_bc, blocked_bc, popularity_bc = sc.broadcast(item_ids), sc.broadcast(blocked), sc.broadcast(popularity)
    stage.lap("prepare")

    seen = seen_items(events, item_index, logical_date=day) if params.exclude_seen == "all" else None
    to_score = scoring_input(sequences, exclude_seen=params.exclude_seen, seen=seen, extra_users=extra_users)
    tasks = max(sc.defaultParallelism, -(-snapshot_users // USERS_PER_TASK))
    scorer = make_scorer(model_name=model_name, model_version=model_version, popularity_version=f"popularity-{day}",
                         ids_bc=ids_bc, blocked_bc=blocked_bc, popularity_bc=popularity_bc, top_n=params.top_n,
                         explain=params.explain, n_explain=params.n_explain, batch_size=params.batch_size)
    # by user hash: a round-robin repartition would first sort every row (histories included) to be deterministic
    recommendations = with_as_of_date(to_score.repartition(tasks, USER_ID).mapInArrow(scorer, RECOMMENDATIONS_SCHEMA), day)
    path = table_path(params.warehouse, RECOMMENDATIONS_TABLE)
    version = replace_partition(recommendations, path, column=AS_OF_DATE, value=day,
                                table_properties=RECOMMENDATIONS_TABLE_PROPERTIES)
    stage.lap("score_and_write")
    for bc in (ids_bc, blocked_bc, popularity_bc):
        bc.unpersist()
    written = (read_version(spark, path, version).filter(F.col(AS_OF_DATE) == F.lit(day))
               .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct(USER_ID).alias("users"),
                    F.countDistinct(F.when(F.col(MODEL_VERSION) != model_version, F.col(USER_ID))).alias("cold"))
               .first())
    stage.lap("summarize")
    seconds = stage.total()
    return ScoreReport(
        logical_date=day.isoformat(), model_version=model_version, model_source=model_source, gate=gate,
        snapshot=record, users=written["users"],
        cold_users=written["cold"], rows=written["rows"], recommendations_version=version,
        users_per_second=round(written["users"] / max(seconds, 1e-9), 1),  # the whole job, fixed costs included
        spark_master=sc.master, seconds=seconds, stage_seconds=stage.seconds,
    )


# ---------------------------------------------------------------- command line

def build_parser(prog: str = "score_users") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Score every user of a snapshot: top-N items to `recommendations`.")
    add_job_args(parser, date_help="the snapshot to score (as_of_date); its partition of recommendations is replaced")
    parser.add_argument("--model", default=None,
                        help="model artefact directory (local path or Hadoop URI); default: the model the registry "
                             "(warehouse/model_registry) has published for the date")
    parser.add_argument("--top-n", type=int, default=100)
    parser.add_argument("--exclude-seen", choices=EXCLUDE_MODES, default="all",
                        help="all: no item the user interacted with on or before the date; window: none of the "
                             "snapshot's kept history; none: seen items may be recommended")
    parser.add_argument("--no-explain", dest="explain", action="store_false",
                        help="leave `because` empty (faster)")
    parser.add_argument("--n-explain", type=int, default=3, help="history items named per recommendation")
    parser.add_argument("--blocklist", default=None, help="Delta table (path or warehouse table name) of item_id never to recommend")
    parser.add_argument("--users", default=None, help="Delta table of user_id to serve even without history (cold users)")
    parser.add_argument("--popularity-days", type=int, default=30, help="window of the cold users' popularity list")
    parser.add_argument("--batch-size", type=int, default=None, help="users per forward pass")
    return parser


def params_from_args(args: argparse.Namespace) -> ScoreParams:
    return ScoreParams(
        logical_date=args.logical_date, model=args.model, warehouse=args.warehouse, top_n=args.top_n,
        exclude_seen=args.exclude_seen, explain=args.explain, n_explain=args.n_explain, blocklist=args.blocklist,
        users=args.users, popularity_days=args.popularity_days, batch_size=args.batch_size,
    )


def main(argv: list[str] | None = None, spark: SparkSession | None = None, prog: str = "score_users") -> int:
    args = build_parser(prog).parse_args(argv)
    return run_job("score", lambda: params_from_args(args), run, app_name="score_users", master=args.master, spark=spark, run_id=args.run_id)


if __name__ == "__main__":
    sys.exit(main())
