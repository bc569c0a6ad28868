#!/usr/bin/env bash
# EXAMPLE container entrypoint of the attnrec image (infra/production/Dockerfile), run under tini. It only means
# something inside that image, which needs Docker: it does not run on the 2-core dev machine.
# Spark on Kubernetes starts its pods from the application's image with the argument `driver` or `executor` and
# expects the image to turn that into a JVM (the pyspark wheel has no such entrypoint); everything else
# (airflow ..., spark-class ..., python ...) runs unchanged.
set -euo pipefail

case "${1:-}" in
  driver)  # cluster mode: Spark passes --properties-file, --class and the application
    shift
    exec spark-submit --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" --deploy-mode client "$@"
    ;;
  executor)  # the pod's settings arrive as environment variables: SPARK_JAVA_OPT_<n> in order, then the rest
    shift
    spark_home="${SPARK_HOME:-$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
    mapfile -t java_opts < <(env | { grep '^SPARK_JAVA_OPT_' || true; } | sort -t_ -k4 -n | cut -d= -f2-)
    exec java "${java_opts[@]}" -Xms"${SPARK_EXECUTOR_MEMORY}" -Xmx"${SPARK_EXECUTOR_MEMORY}" \
      -cp "${SPARK_CONF_DIR:-$spark_home/conf}:$spark_home/jars/*${SPARK_EXTRA_CLASSPATH:+:$SPARK_EXTRA_CLASSPATH}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "${SPARK_DRIVER_URL}" --executor-id "${SPARK_EXECUTOR_ID}" --cores "${SPARK_EXECUTOR_CORES}" \
      --app-id "${SPARK_APPLICATION_ID}" --hostname "${SPARK_EXECUTOR_POD_IP}" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}" --podName "${SPARK_EXECUTOR_POD_NAME}"
    ;;
  *)
    exec "$@"
    ;;
esac
