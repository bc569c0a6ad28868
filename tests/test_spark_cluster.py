"""build_sequences and score_users through spark-submit on a real standalone cluster (master + 2 workers on
127.0.0.1, started by infra/spark-cluster.sh): the work runs on the workers' executors, not in local mode."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.jobs.scoring_world import D3, last_json

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:  # 7077 when free, as documented; any free port otherwise
        try:
            s.bind(("127.0.0.1", 7077))
            return 7077
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("spark-cluster")
    env = {**os.environ, "PYTHON": sys.executable, "SPARK_MASTER_PORT": str(_port())}
    subprocess.run([str(ROOT / "infra" / "spark-cluster.sh"), "start", str(directory)], env=env, check=True, timeout=180)
    yield f"spark://127.0.0.1:{env['SPARK_MASTER_PORT']}", directory
    subprocess.run([str(ROOT / "infra" / "spark-cluster.sh"), "stop", str(directory)], env=env, timeout=60)


def _submit(master: str, job: str, *args: str) -> dict:
    env = {**os.environ, "SPARK_MASTER": master, "PYTHON": sys.executable}
    out = subprocess.run(["infra/spark-submit.sh", "--conf", "spark.executor.memory=900m", job, *args],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return last_json(out.stdout)


@pytest.mark.slow
def test_jobs_run_on_the_workers_of_a_standalone_cluster(cluster, scoring_world):
    master, directory = cluster
    sequences = _submit(master, "jobs/build_sequences.py", "--logical-date", D3.isoformat(),
                        "--warehouse", scoring_world.warehouse)
    scored = _submit(master, "jobs/score_users.py", "--logical-date", D3.isoformat(), "--warehouse",
                     scoring_world.warehouse, "--model", scoring_world.model_a, "--top-n", "5")
    assert scored["spark_master"] == master and scored["users"] == sequences["users"] == scored["snapshot"]["users"]
    # each worker launched executors for both applications: their stderr lives in the worker's work dir
    for n in (1, 2):
        apps = sorted(p.name for p in (directory / f"worker-{n}").glob("app-*"))
        assert len(apps) == 2, apps
        assert any((directory / f"worker-{n}" / app).rglob("stderr") for app in apps)
