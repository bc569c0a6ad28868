#!/usr/bin/env bash
# Run one attnrec Spark job with spark-submit, the way a scheduler does in production:
#   infra/spark-submit.sh jobs/ingest_events.py --logical-date 2026-01-05 --raw raw --warehouse warehouse
# Under spark-submit the JVM starts before our session factory runs, so the Delta and JDBC packages and the
# SQL extensions come from infra/spark-defaults.conf (the factory's configure_spark_with_delta_pip only works
# in-process). Spark options go before the job file: infra/spark-submit.sh --conf k=v jobs/x.py ...
# Env: SPARK_MASTER (default local[*]), PYTHON (default: the project's .venv), SPARK_PROPERTIES_FILE.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$here/.venv/bin/python}"
SPARK_SUBMIT="${SPARK_SUBMIT:-$(dirname "$PYTHON")/spark-submit}"
export PYSPARK_PYTHON="$PYTHON" PYSPARK_DRIVER_PYTHON="$PYTHON"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$SPARK_SUBMIT" \
  --master "${SPARK_MASTER:-local[*]}" \
  --properties-file "${SPARK_PROPERTIES_FILE:-$here/infra/spark-defaults.conf}" \
  "$@"
