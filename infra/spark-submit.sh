#!/usr/bin/env bash
# Run one attnrec Spark job with spark-submit, the way a scheduler does in production:
#   infra/spark-submit.sh jobs/ingest_events.py --logical-date 2026-01-05 --raw raw --warehouse warehouse
# Under spark-submit the JVM starts before our session factory runs, so the Delta jars and SQL
# extensions must be given here (the factory's configure_spark_with_delta_pip only works in-process).
# Env: SPARK_MASTER (default local[*]), PYTHON (default: the project's .venv), DELTA_VERSION.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$here/.venv/bin/python}"
DELTA_VERSION="${DELTA_VERSION:-$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("delta-spark"))')}"
SPARK_VERSION="$("$PYTHON" -c 'import pyspark; print(".".join(pyspark.__version__.split(".")[:2]))')"
SPARK_SUBMIT="${SPARK_SUBMIT:-$(dirname "$PYTHON")/spark-submit}"
export PYSPARK_PYTHON="$PYTHON" PYSPARK_DRIVER_PYTHON="$PYTHON"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$SPARK_SUBMIT" \
  --master "${SPARK_MASTER:-local[*]}" \
  --packages "io.delta:delta-spark_${SPARK_VERSION}_2.13:${DELTA_VERSION},org.postgresql:postgresql:42.7.14" \
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
  --conf spark.sql.session.timeZone=UTC \
  --conf spark.databricks.delta.properties.defaults.enableDeletionVectors=false \
  "$@"
