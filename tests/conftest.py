"""Shared fixtures: one local Spark session (Delta enabled) for the whole test run."""

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
