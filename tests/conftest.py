"""Shared fixtures: one local Spark session (Delta enabled) for the whole test run, and the scoring world
(a small warehouse with two snapshots and a model trained in the test) that the scoring, export and cluster
tests share."""

from __future__ import annotations

import pytest


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
