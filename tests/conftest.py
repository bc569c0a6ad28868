"""Shared fixtures: one local Spark session (Delta enabled) for the whole test run, and the scoring world
(a small warehouse with two snapshots and a model trained in the test) that the scoring, export and cluster
tests share."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def spark():
    from jobs.spark_session import SparkConfig, build_spark

    session = build_spark(
        SparkConfig(master="local[2]", app_name="attnrec-tests", shuffle_partitions=2, driver_memory="2g")
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def scoring_world(spark, tmp_path_factory):
    from tests.jobs.scoring_world import build_world

    return build_world(spark, tmp_path_factory.mktemp("scoring"))


@pytest.fixture(scope="session")
def services():
    """Real Redis and PostgreSQL on free loopback ports, started by the project's own script (which installs them
    from Debian's packages when missing), stopped at the end. Their settings go into os.environ, as a deployment's
    environment would carry them."""
    directory = tempfile.mkdtemp(prefix="attnrec-services-")
    subprocess.run([str(ROOT / "infra" / "services.sh"), "start", directory], check=True, timeout=600)
    settings = dict(line.split("=", 1) for line in Path(directory, "services.env").read_text().split())
    before = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    yield settings
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    subprocess.run([str(ROOT / "infra" / "services.sh"), "stop", directory], check=False, timeout=120)
