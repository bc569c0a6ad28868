"""The one factory for Spark sessions: local by default, Delta enabled, quiet logs."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from pyspark.sql import SparkSession


DEFAULT_MASTER = "local[*]"
# Resolved by Spark's package resolution like the Delta jars: the export job's JDBC writer needs it, and
# packages must be known when the JVM starts, so every session carries it (about 1 MB, resolved once).
POSTGRES_JDBC_PACKAGE = "org.postgresql:postgresql:42.7.14"


def under_spark_submit() -> bool:
    """True when spark-submit launched this interpreter: its JVM (and its --master) came first."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


@dataclass(frozen=True)
class SparkConfig:
    master: str | None = None  # None: spark-submit's --master when launched by it, else DEFAULT_MASTER
    app_name: str = "attnrec"
    shuffle_partitions: int = 8
    driver_memory: str = "4g"
    ui_enabled: bool = False
    extra_conf: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "SparkConfig":
        """Defaults, then ATTNREC_SPARK_* environment variables, then explicit overrides."""
        env = os.environ if env is None else env
        cfg = cls()
        # spark-submit --master X means X: the environment only picks the master of in-process sessions
        if "ATTNREC_SPARK_MASTER" in env and not under_spark_submit():
            cfg = replace(cfg, master=env["ATTNREC_SPARK_MASTER"])
        if "ATTNREC_SHUFFLE_PARTITIONS" in env:
            cfg = replace(cfg, shuffle_partitions=int(env["ATTNREC_SHUFFLE_PARTITIONS"]))
        if "ATTNREC_DRIVER_MEMORY" in env:
            cfg = replace(cfg, driver_memory=env["ATTNREC_DRIVER_MEMORY"])
        if "ATTNREC_SPARK_UI" in env:
            cfg = replace(cfg, ui_enabled=env["ATTNREC_SPARK_UI"].lower() in ("1", "true", "yes"))
        if env.get("ATTNREC_SPARK_CONF"):
            # "key=value,key=value"
            pairs = dict(kv.split("=", 1) for kv in env["ATTNREC_SPARK_CONF"].split(",") if "=" in kv)
            cfg = replace(cfg, extra_conf={**cfg.extra_conf, **pairs})
        overrides = {k: v for k, v in overrides.items() if v is not None}
        return replace(cfg, **overrides)


def build_spark(cfg: SparkConfig | None = None) -> SparkSession:
    """Build (or reuse) a Spark session with Delta Lake.

    The Delta jars are resolved by Spark's own package resolution (ivy, from Maven
    Central on first start, from the ivy cache afterwards) via configure_spark_with_delta_pip.
    """
    from delta import configure_spark_with_delta_pip

    cfg = cfg or SparkConfig.from_env()
    # Python workers must run this interpreter, or torch/pyarrow imports fail on them.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    if cfg.master is not None or not under_spark_submit():
        # a builder's master overrides spark-submit's, so it is only set when asked or when nobody else did
        builder = builder.master(cfg.master or DEFAULT_MASTER)
    builder = (
        builder.appName(cfg.app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
        # Delta rebuilds a table's state (its list of files) before every write. Our tables hold
        # thousands of files, not millions: 2 partitions measured ~0.5 s faster per write than 8
        # (Delta's default is 50). A huge table can raise it via ATTNREC_SPARK_CONF.
        .config("spark.databricks.delta.snapshotPartitions", "2")
        # One ingest day runs ~80 distinct generated classes; with Spark's default cache of 100 they evict
        # each other, so every day compiled them (and the JIT warmed them) again: 70-80 compiles per day,
        # 14 with 2000 entries. A few KB per class.
        .config("spark.sql.codegen.cache.maxEntries", "2000")
        .config("spark.driver.memory", cfg.driver_memory)
        .config("spark.ui.enabled", str(cfg.ui_enabled).lower())
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.pyspark.python", sys.executable)
        # No deletion vectors: the PyTorch side reads these tables with delta-rs, which cannot read them.
        .config("spark.databricks.delta.properties.defaults.enableDeletionVectors", "false")
        # Our caches live for one job step: building them uncompressed measured 4-6 s faster per
        # 2M-event day (ingest) than the default compressed columnar cache, at the cost of memory
        # (MEMORY_AND_DISK spills when short).
        .config("spark.sql.inMemoryColumnarStorage.compressed", "false")
    )
    for key, value in cfg.extra_conf.items():
        builder = builder.config(key, value)
    spark = configure_spark_with_delta_pip(builder, extra_packages=[POSTGRES_JDBC_PACKAGE]).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


@contextmanager
def session_conf(spark: SparkSession, settings: dict[str, str]):
    """Set SQL settings for the queries run inside the block, then restore what was there."""
    before = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
