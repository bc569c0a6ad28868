#!/usr/bin/env bash
# A Spark standalone cluster on 127.0.0.1 from the Spark that pyspark ships (it has bin/spark-class, not the
# sbin start scripts): one master and two one-core workers, for the distributed tests and to try the jobs on a
# real cluster on one machine.
#   infra/spark-cluster.sh start DIR    # master on spark://127.0.0.1:${SPARK_MASTER_PORT:-7077}; logs, pids, work dirs in DIR
#   infra/spark-cluster.sh stop DIR
# Then: SPARK_MASTER=spark://127.0.0.1:7077 infra/spark-submit.sh jobs/build_sequences.py --logical-date ...
# Env: PYTHON (default: the project's .venv), SPARK_MASTER_PORT (7077), SPARK_WORKER_MEMORY (1g per worker).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$here/.venv/bin/python}"
SPARK_HOME="${SPARK_HOME:-$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
PORT="${SPARK_MASTER_PORT:-7077}"
export SPARK_HOME PYSPARK_PYTHON="$PYTHON"

wait_for_log() {  # file, pattern: the daemon says it is up
  for _ in $(seq 120); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.5
  done
  echo "error: $1 never said '$2'" >&2
  tail -n 20 "$1" >&2 || true
  return 1
}

start() {
  local dir="$1"
  mkdir -p "$dir"
  SPARK_LOG_DIR="$dir" nohup "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
    --host 127.0.0.1 --port "$PORT" --webui-port 0 >"$dir/master.log" 2>&1 &
  echo $! >"$dir/master.pid"
  wait_for_log "$dir/master.log" "I have been elected leader"
  for n in 1 2; do
    mkdir -p "$dir/worker-$n"
    nohup "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker "spark://127.0.0.1:$PORT" \
      --host 127.0.0.1 --cores 1 --memory "${SPARK_WORKER_MEMORY:-1g}" --webui-port 0 \
      --work-dir "$dir/worker-$n" >"$dir/worker-$n.log" 2>&1 &
    echo $! >"$dir/worker-$n.pid"
  done
  wait_for_log "$dir/worker-1.log" "Successfully registered with master"
  wait_for_log "$dir/worker-2.log" "Successfully registered with master"
  echo "spark://127.0.0.1:$PORT: master and 2 workers up (logs in $dir)" >&2
}

stop() {
  local dir="$1"
  for pidfile in "$dir"/worker-*.pid "$dir"/master.pid; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    pkill -TERM -P "$pid" 2>/dev/null || true  # spark-class runs java as its child
    kill "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  start) start "${2:?usage: spark-cluster.sh start DIR}" ;;
  stop) stop "${2:?usage: spark-cluster.sh stop DIR}" ;;
  *) echo "usage: infra/spark-cluster.sh start DIR | stop DIR" >&2; exit 2 ;;
esac
