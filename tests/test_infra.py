"""Deployment files that can be checked without a cluster: the one spark-defaults.conf agrees with the installed
packages and with the in-process session factory."""

import importlib.metadata
from pathlib import Path

import pyspark

from jobs.spark_session import POSTGRES_JDBC_PACKAGE

ROOT = Path(__file__).resolve().parents[1]


def _conf() -> dict:
    lines = (ROOT / "infra" / "spark-defaults.conf").read_text().splitlines()
    return dict(line.split(None, 1) for line in lines if line.strip() and not line.startswith("#"))


def test_spark_defaults_name_the_installed_delta_and_the_factory_jdbc_driver():
    packages = _conf()["spark.jars.packages"].split(",")
    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    assert f"io.delta:delta-spark_{spark_minor}_2.13:{importlib.metadata.version('delta-spark')}" in packages
    assert POSTGRES_JDBC_PACKAGE in packages


def test_spark_defaults_match_the_session_factory():
    source = (ROOT / "jobs" / "spark_session.py").read_text()
    for key, value in _conf().items():
        if key != "spark.jars.packages":
            assert f'"{key}", "{value}"' in source, key
