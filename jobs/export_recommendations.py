"""export_recommendations: one date's `recommendations` -> files, Redis and PostgreSQL, each published atomically.

    spark-submit jobs/export_recommendations.py --logical-date 2026-01-05 --to files,redis,postgres
    attnrec export --date 2026-01-05 --to files

Reads the partition as_of_date = D at one pinned table version (recorded in every target), then per target:
- files: Parquet rows and JSON lines (one line per user) under <exports>/recommendations/as_of_date=D/, written
  to a staging directory, a _MANIFEST.json (rows, users, sha256 per file, checksum) written last, then renamed
  into place; a rerun replaces D's directory.
- redis: one key per user in a namespace of its own per run, written from Spark tasks in pipelined batches,
  made live by one atomic pointer switch; superseded namespaces expire after a grace period.
- postgres: Spark's JDBC writer bulk-loads a staging table; one transaction replaces D's rows, moves the
  live date and drops the staging table; the view <table>_current shows the live date.
The live Redis pointer and PostgreSQL's live date only move forward in as_of_date unless --force-live.
The layouts and read protocols are documented in the README ("Exports"). Connection settings come from
flags or ATTNREC_REDIS_* / ATTNREC_PG_* variables; passwords only from the environment, never logged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import secrets
import sys
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from attnmodel.columns import AS_OF_DATE, BECAUSE, ITEM_ID, MODEL_VERSION, RANK, RECOMMENDATIONS_TABLE, SCORE, USER_ID
from jobs.common import JobInputError, StageClock, add_job_args, run_job
from jobs.warehouse import latest_version, read_version, table_exists, table_path

TARGETS = ("files", "redis", "postgres")
MANIFEST = "_MANIFEST.json"


@dataclass(frozen=True)
class RedisTarget:
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    prefix: str = "attnrec:recs"
    grace_seconds: int = 3600  # a superseded namespace stays readable this long after the switch
    keep_days: int = 7  # the latest namespace of each date this close to the live date stays (backfilled dates)
    batch: int = 1000  # SETs per pipeline round trip
    password_env: str = "ATTNREC_REDIS_PASSWORD"
    password: str | None = field(default=None, repr=False)  # filled from password_env on the driver, for the tasks

    @classmethod
    def from_env(cls, env=os.environ, **overrides) -> "RedisTarget":
        base = cls(host=env.get("ATTNREC_REDIS_HOST", cls.host), port=int(env.get("ATTNREC_REDIS_PORT", cls.port)),
                   db=int(env.get("ATTNREC_REDIS_DB", cls.db)))
        return _with(base, overrides)

    def client(self):
        import redis

        password = self.password if self.password is not None else os.environ.get(self.password_env)
        return redis.Redis(host=self.host, port=self.port, db=self.db, password=password or None)


@dataclass(frozen=True)
class PostgresTarget:
    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "postgres"
    user: str = "attnrec"
    table: str = "recommendations"
    password_env: str = "ATTNREC_PG_PASSWORD"

    @classmethod
    def from_env(cls, env=os.environ, **overrides) -> "PostgresTarget":
        base = cls(host=env.get("ATTNREC_PG_HOST", cls.host), port=int(env.get("ATTNREC_PG_PORT", cls.port)),
                   database=env.get("ATTNREC_PG_DB", cls.database), user=env.get("ATTNREC_PG_USER", cls.user))
        return _with(base, overrides)

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.database}?reWriteBatchedInserts=true"

    def where(self) -> str:  # for reports and errors: never the password
        return f"{self.user}@{self.host}:{self.port}/{self.database}"

    def connect(self):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, dbname=self.database, user=self.user,
                               password=os.environ.get(self.password_env) or None, connect_timeout=10)


def _with(base, overrides):
    from dataclasses import replace

    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class ExportParams:
    logical_date: dt.date
    targets: tuple[str, ...] = ("files",)
    warehouse: str = "warehouse"
    exports_root: str = "exports"
    redis: RedisTarget = field(default_factory=RedisTarget)
    postgres: PostgresTarget = field(default_factory=PostgresTarget)
    force_live: bool = False  # let a past date's export replace newer live lists (a deliberate rollback)
    run_token: str = field(default_factory=lambda: secrets.token_hex(6))  # names this run's staging area and namespace

    def __post_init__(self):
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise JobInputError(f"--to takes a comma-separated subset of {', '.join(TARGETS)}, got {','.join(self.targets)!r}")


@dataclass(frozen=True)
class ExportReport:
    logical_date: str
    recommendations_version: int
    rows: int
    users: int
    targets: dict  # per target: where it went and whether it is live
    seconds: float
    stage_seconds: dict


# ---------------------------------------------------------------- pure transforms

def per_user_lists(rows: DataFrame) -> DataFrame:
    """One row per user: items, scores and because lists in rank order (the JSON lines and Redis layout)."""
    ranked = F.sort_array(F.collect_list(F.struct(RANK, ITEM_ID, SCORE, BECAUSE)))
    return (
        rows.groupBy(USER_ID, AS_OF_DATE)
        .agg(ranked.alias("_r"), F.first(MODEL_VERSION).alias(MODEL_VERSION))
        .select(
            USER_ID,
            F.col("_r")[ITEM_ID].alias("items"),
            F.col("_r")[SCORE].alias("scores"),
            F.col("_r")[BECAUSE].alias("because"),
            MODEL_VERSION,
            F.date_format(AS_OF_DATE, "yyyy-MM-dd").alias(AS_OF_DATE),
        )
    )


# ---------------------------------------------------------------- files

class HadoopFs:
    """The few filesystem calls the file export needs, through Spark's Hadoop FileSystem (local or any URI)."""

    def __init__(self, spark: SparkSession, root: str):
        self._jvm = spark.sparkContext._jvm
        self._fs = self._path(root).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())

    def _path(self, p: str):
        return self._jvm.org.apache.hadoop.fs.Path(p)

    def exists(self, p: str) -> bool:
        return self._fs.exists(self._path(p))

    def rename(self, src: str, dst: str) -> None:
        self._fs.mkdirs(self._path(dst).getParent())
        if not self._fs.rename(self._path(src), self._path(dst)):
            raise RuntimeError(f"could not rename {src} to {dst}")

    def delete(self, p: str) -> None:
        self._fs.delete(self._path(p), True)

    def data_files(self, directory: str) -> list[tuple[str, int]]:
        """(path relative to directory, bytes) of the data files below it: no _SUCCESS, no .crc."""
        found, it = [], self._fs.listFiles(self._path(directory), True)
        base = self._fs.makeQualified(self._path(directory)).toString().rstrip("/") + "/"
        while it.hasNext():
            status = it.next()
            name = status.getPath().toString()[len(base):]
            if not name.rsplit("/", 1)[-1].startswith(("_", ".")):
                found.append((name, status.getLen()))
        return sorted(found)

    def sha256(self, p: str) -> str:
        stream = self._fs.open(self._path(p))
        try:
            return self._jvm.org.apache.commons.codec.digest.DigestUtils.sha256Hex(stream)
        finally:
            stream.close()

    def write_text(self, p: str, text: str) -> None:
        out = self._fs.create(self._path(p), True)
        try:
            out.write(bytearray(text.encode()))
        finally:
            out.close()


def export_files(spark, rows: DataFrame, lists: DataFrame, params: ExportParams, summary: dict) -> dict:
    root = params.exports_root.rstrip("/")
    if "://" not in root:
        root = os.path.abspath(root)
    base = f"{root}/{RECOMMENDATIONS_TABLE}"
    part = f"{AS_OF_DATE}={params.logical_date.isoformat()}"
    final, staging, trash = f"{base}/{part}", f"{base}/_staging/{part}.{params.run_token}", f"{base}/_trash/{part}.{params.run_token}"
    fs = HadoopFs(spark, base)
    fs.delete(staging)
    rows.write.mode("overwrite").parquet(f"{staging}/parquet")
    lists.write.mode("overwrite").option("compression", "none").json(f"{staging}/jsonl")
    files = [{"path": name, "bytes": size, "sha256": fs.sha256(f"{staging}/{name}")} for name, size in fs.data_files(staging)]
    checksum = hashlib.sha256("".join(f"{f['path']}:{f['sha256']}\n" for f in files).encode()).hexdigest()
    manifest = {**summary, "format": 1, "files": files, "checksum": checksum}
    fs.write_text(f"{staging}/{MANIFEST}", json.dumps(manifest, indent=2, sort_keys=True))  # last: marks it whole
    # Publish: the old directory steps aside, the new one takes its name (two renames: a reader that looks in
    # between finds no manifest and retries, as the README's protocol says), then the old one goes.
    if fs.exists(final):
        fs.rename(final, trash)
    fs.rename(staging, final)
    fs.delete(trash)
    return {"path": final, "files": len(files), "checksum": checksum}


# ---------------------------------------------------------------- redis

# Moves the live pointer to ARGV[1] (a namespace of date ARGV[2]) unless the live date is newer and ARGV[3]
# is not "1"; records the namespace as its date's latest. Atomic: a reader sees the old or the new pointer.
_SWITCH = """
local live_date = redis.call('GET', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
if live_date and live_date > ARGV[2] and ARGV[3] ~= '1' then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""


def redis_keys(prefix: str) -> dict:
    return {"live": f"{prefix}:live", "live_date": f"{prefix}:live_date", "dates": f"{prefix}:dates",
            "namespaces": f"{prefix}:namespaces"}


def _redis_writer(target: RedisTarget, namespace: str, written):
    def write(rows):
        client = target.client()
        pipe = client.pipeline(transaction=False)
        pending = 0
        for r in rows:
            value = {"items": r["items"], "scores": r["scores"], "because": r["because"],
                     "model_version": r[MODEL_VERSION], "as_of_date": r[AS_OF_DATE]}
            pipe.set(f"{namespace}:u:{r[USER_ID]}", json.dumps(value, separators=(",", ":")))
            pending += 1
            if pending == target.batch:
                pipe.execute()
                written.add(pending)
                pending = 0
        if pending:
            pipe.execute()
            written.add(pending)
        client.close()

    return write


def _expire_namespace(client, namespace: str, seconds: int) -> None:
    pipe = client.pipeline(transaction=False)
    for key in client.scan_iter(match=f"{namespace}:*", count=5000):
        pipe.expire(key, seconds, nx=True)
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()


def export_redis(spark, lists: DataFrame, params: ExportParams, summary: dict) -> dict:
    target, day = params.redis, params.logical_date.isoformat()
    keys = redis_keys(target.prefix)
    namespace = f"{target.prefix}:{day}:{params.run_token}"
    client = target.client()
    try:
        client.ping()
    except Exception as exc:
        raise JobInputError(f"redis at {target.host}:{target.port} is not reachable: {exc}") from None
    client.zadd(keys["namespaces"], {namespace: 0})  # first: a killed run's keys can be found and expired later
    written = spark.sparkContext.accumulator(0)
    # The executors' environment may lack the password: it travels inside the task, as JDBC options do.
    with_password = _with(target, {"password": os.environ.get(target.password_env, "")})
    lists.foreachPartition(_redis_writer(with_password, namespace, written))
    if written.value != summary["users"]:
        raise RuntimeError(f"redis: wrote {written.value} keys for {summary['users']} users; pointer left as it was")
    client.set(f"{namespace}:meta", json.dumps(summary, sort_keys=True))
    live = bool(client.eval(_SWITCH, 3, keys["live"], keys["live_date"], keys["dates"], namespace, day,
                            "1" if params.force_live else "0"))
    expired = _expire_superseded(client, target, keys)
    client.close()
    return {"namespace": namespace, "keys": written.value, "live": live, "expiring_namespaces": expired}


def _expire_superseded(client, target: RedisTarget, keys: dict) -> list[str]:
    """Every namespace except the live one and the latest of each date near it gets the grace TTL (once)."""
    live = (client.get(keys["live"]) or b"").decode()
    live_date = dt.date.fromisoformat((client.get(keys["live_date"]) or b"1970-01-01").decode())
    keep = {live}
    for day, namespace in client.hgetall(keys["dates"]).items():
        if (live_date - dt.date.fromisoformat(day.decode())).days <= target.keep_days:
            keep.add(namespace.decode())
    expiring = []
    for namespace in (m.decode() for m in client.zrange(keys["namespaces"], 0, -1)):
        if namespace not in keep:
            _expire_namespace(client, namespace, target.grace_seconds)
            client.zrem(keys["namespaces"], namespace)
            expiring.append(namespace)
    return expiring


# ---------------------------------------------------------------- postgres

def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise JobInputError(f"not a plain SQL identifier: {name!r}")
    return name


def export_postgres(spark, rows: DataFrame, params: ExportParams, summary: dict) -> dict:
    target, day = params.postgres, params.logical_date
    table = _ident(target.table)
    staging = _ident(f"{table}_staging_{params.run_token}")
    try:
        conn = target.connect()
    except Exception as exc:
        raise JobInputError(f"postgres at {target.where()} is not reachable: {str(exc).strip().splitlines()[0]}") from None
    props = {"user": target.user, "password": os.environ.get(target.password_env, ""), "driver": "org.postgresql.Driver",
             "batchsize": "10000"}
    try:
        rows.write.jdbc(target.jdbc_url, staging, mode="overwrite", properties=props)  # bulk load, outside the swap
        with conn.transaction():
            conn.execute(f"""CREATE TABLE IF NOT EXISTS {table} (
                {USER_ID} text NOT NULL, {RANK} integer NOT NULL, {ITEM_ID} text NOT NULL, {SCORE} real NOT NULL,
                {MODEL_VERSION} text NOT NULL, {BECAUSE} text[], {AS_OF_DATE} date NOT NULL,
                PRIMARY KEY ({AS_OF_DATE}, {USER_ID}, {RANK}))""")
            conn.execute(f"""CREATE TABLE IF NOT EXISTS {table}_live (
                singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), {AS_OF_DATE} date NOT NULL)""")
            conn.execute(f"DELETE FROM {table} WHERE {AS_OF_DATE} = %s", (day,))
            cur = conn.execute(f"""INSERT INTO {table} ({USER_ID}, {RANK}, {ITEM_ID}, {SCORE}, {MODEL_VERSION}, {BECAUSE}, {AS_OF_DATE})
                SELECT {USER_ID}, {RANK}, {ITEM_ID}, {SCORE}, {MODEL_VERSION}, {BECAUSE}, {AS_OF_DATE} FROM {staging}""")
            inserted = cur.rowcount
            if inserted != summary["rows"]:
                raise RuntimeError(f"postgres: staged {inserted} rows for {summary['rows']}; nothing replaced")
            moved = conn.execute(f"""INSERT INTO {table}_live (singleton, {AS_OF_DATE}) VALUES (true, %s)
                ON CONFLICT (singleton) DO UPDATE SET {AS_OF_DATE} = EXCLUDED.{AS_OF_DATE}
                WHERE %s OR {table}_live.{AS_OF_DATE} <= EXCLUDED.{AS_OF_DATE}""", (day, params.force_live)).rowcount
            conn.execute(f"""CREATE OR REPLACE VIEW {table}_current AS SELECT r.* FROM {table} r
                JOIN {table}_live l ON r.{AS_OF_DATE} = l.{AS_OF_DATE}""")
            conn.execute(f"DROP TABLE {staging}")
    finally:
        with conn.transaction():
            conn.execute(f"DROP TABLE IF EXISTS {staging}")  # a failed load leaves no staging table behind
        conn.close()
    return {"table": table, "server": target.where(), "rows": inserted, "live": bool(moved)}


# ---------------------------------------------------------------- the job

def run(spark: SparkSession, params: ExportParams) -> ExportReport:
    stage = StageClock()
    path = table_path(params.warehouse, RECOMMENDATIONS_TABLE)
    if not table_exists(spark, path):
        raise JobInputError(f"recommendations table not found at {path}: run score_users first")
    version = latest_version(spark, path)  # one version for every target
    rows = read_version(spark, path, version).filter(F.col(AS_OF_DATE) == F.lit(params.logical_date)).persist()
    try:
        counts = rows.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct(USER_ID).alias("users"),
                          F.collect_set(MODEL_VERSION).alias("models")).first()
        if counts["rows"] == 0:
            raise JobInputError(f"no recommendations for {params.logical_date} in {path}: run score_users for that date")
        summary = {"as_of_date": params.logical_date.isoformat(), "rows": counts["rows"], "users": counts["users"],
                   "model_versions": sorted(counts["models"]), "recommendations_version": version}
        lists = per_user_lists(rows).persist() if {"files", "redis"} & set(params.targets) else None
        stage.lap("read")
        done = {}
        try:
            for target in params.targets:
                if target == "files":
                    done[target] = export_files(spark, rows, lists, params, summary)
                elif target == "redis":
                    done[target] = export_redis(spark, lists, params, summary)
                else:
                    done[target] = export_postgres(spark, rows, params, summary)
                stage.lap(target)
        finally:
            if lists is not None:
                lists.unpersist()
    finally:
        rows.unpersist()
    return ExportReport(logical_date=params.logical_date.isoformat(), recommendations_version=version,
                        rows=counts["rows"], users=counts["users"], targets=done, seconds=stage.total(),
                        stage_seconds=stage.seconds)


# ---------------------------------------------------------------- command line

def build_parser(prog: str = "export_recommendations") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Export one date's recommendations to files, Redis, PostgreSQL.")
    add_job_args(parser, date_help="the as_of_date partition of recommendations to export")
    parser.add_argument("--to", default="files", help=f"comma-separated targets: {', '.join(TARGETS)} (default files)")
    parser.add_argument("--exports", default=os.environ.get("ATTNREC_EXPORTS", "exports"),
                        help="root of the file exports, local path or Hadoop URI (env ATTNREC_EXPORTS; default ./exports)")
    parser.add_argument("--force-live", action="store_true",
                        help="make this date live in Redis and PostgreSQL even when a newer date is (a rollback)")
    r = parser.add_argument_group("redis (env ATTNREC_REDIS_HOST, _PORT, _DB; password only from ATTNREC_REDIS_PASSWORD)")
    r.add_argument("--redis-host"), r.add_argument("--redis-port", type=int), r.add_argument("--redis-db", type=int)
    r.add_argument("--redis-prefix", default=RedisTarget.prefix)
    r.add_argument("--redis-grace-seconds", type=int, default=RedisTarget.grace_seconds)
    r.add_argument("--redis-keep-days", type=int, default=RedisTarget.keep_days)
    p = parser.add_argument_group("postgres (env ATTNREC_PG_HOST, _PORT, _DB, _USER; password only from ATTNREC_PG_PASSWORD)")
    p.add_argument("--pg-host"), p.add_argument("--pg-port", type=int), p.add_argument("--pg-db"), p.add_argument("--pg-user")
    p.add_argument("--pg-table", default=PostgresTarget.table)
    return parser


def params_from_args(args: argparse.Namespace) -> ExportParams:
    return ExportParams(
        logical_date=args.logical_date, targets=tuple(t.strip() for t in args.to.split(",") if t.strip()),
        warehouse=args.warehouse, exports_root=args.exports, force_live=args.force_live,
        redis=RedisTarget.from_env(host=args.redis_host, port=args.redis_port, db=args.redis_db, prefix=args.redis_prefix,
                                   grace_seconds=args.redis_grace_seconds, keep_days=args.redis_keep_days),
        postgres=PostgresTarget.from_env(host=args.pg_host, port=args.pg_port, database=args.pg_db, user=args.pg_user,
                                         table=args.pg_table),
    )


def main(argv: list[str] | None = None, spark: SparkSession | None = None, prog: str = "export_recommendations") -> int:
    args = build_parser(prog).parse_args(argv)
    return run_job("export", lambda: params_from_args(args), run, app_name="export_recommendations",
                   master=args.master, spark=spark, run_id=args.run_id)


if __name__ == "__main__":
    sys.exit(main())
