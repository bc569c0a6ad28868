import pkgutil
import subprocess
import sys
from pathlib import Path

import attnmodel

ROOT = Path(__file__).resolve().parents[2]


def test_attnmodel_never_imports_spark_or_airflow():
    mods = sorted(f"attnmodel.{m.name}" for m in pkgutil.iter_modules(attnmodel.__path__))
    assert "attnmodel.model" in mods and "attnmodel.inference" in mods
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pyspark', 'airflow', 'delta', 'jobs', 'dags')]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
