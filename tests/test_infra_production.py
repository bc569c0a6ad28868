"""The production deployment examples in infra/production/ (Dockerfile, docker-compose.yml, kubernetes/, the GPU train
example) need Docker or a cluster, so nothing runs them here: these tests read them, offline, and check that they
agree with the repository (the files the image copies, the Spark packages, the DAG) and with each other (image,
Spark master, connections, volumes, names), and that no literal secret is written in them."""

from __future__ import annotations

import ast
import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

import pytest
import yaml
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
PROD = ROOT / "infra" / "production"
K8S = PROD / "kubernetes"
DAG_FILE = ROOT / "dags" / "attnrec_nightly.py"
# The lead's nightly train command, verbatim: the GPU pod runs it (flags may follow).
TRAIN_COMMAND = ("python -m jobs.cli train-nightly --date {{ data_interval_start | ds }} "
                 "--warehouse $WH --models $ART/models")


# ---------------------------------------------------------------- readers

def _spark_conf(text: str) -> dict:
    lines = [line.strip() for line in text.splitlines()]
    return dict(line.split(None, 1) for line in lines if line and not line.startswith("#"))


def _spark_defaults() -> dict:
    return _spark_conf((ROOT / "infra" / "spark-defaults.conf").read_text())


def _git_files(path: str) -> list[str]:
    """Tracked and untracked (not ignored) files under `path`: what a build context or a commit would hold."""
    return subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "--", path], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.split()


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    out, buf = [], ""
    for raw in (PROD / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        instr, _, rest = (buf + line).partition(" ")
        out.append((instr.upper(), rest.strip()))
        buf = ""
    return out


def _copy_args(rest: str) -> tuple[list[str], list[str], str]:
    words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    flags = [w for w in words if w.startswith("--")]
    *sources, dest = [w for w in words if not w.startswith("--")]
    return flags, sources, dest


def _image_env() -> dict:
    env = {}
    for instr, rest in _instructions():
        if instr == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(rest))
    return env


def _image_files() -> dict[str, str]:
    """Path in the image -> repository path copied there (a directory's contents land at its image path)."""
    workdir, files = "/", {}
    for instr, rest in _instructions():
        if instr == "WORKDIR":
            workdir = posixpath.join(workdir, rest)
        elif instr == "COPY":
            flags, sources, dest = _copy_args(rest)
            assert not any(f.startswith("--from") for f in flags), "COPY --from: these checks assume one stage"
            dest_abs = posixpath.normpath(posixpath.join(workdir, dest))
            into_dir = dest.endswith("/") or dest == "." or len(sources) > 1
            for src in sources:
                into = into_dir and (ROOT / src).is_file()
                files[posixpath.join(dest_abs, PurePosixPath(src).name) if into else dest_abs] = src
    return files


def _in_image(path: str, files: dict[str, str]) -> bool:
    for image_path, src in files.items():
        if path == image_path:
            return (ROOT / src).exists()
        if path.startswith(image_path + "/") and (ROOT / src).is_dir():
            return (ROOT / src / path[len(image_path) + 1:]).exists()
    return False


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for these patterns: a path is excluded if it or a parent matches; the last match wins."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate, pat = pattern.startswith("!"), pattern.lstrip("!").strip("/")
        anywhere = [pat[3:]] if pat.startswith("**/") else []  # **/x: x at any depth
        if any(fnmatchcase(p, pat) for p in prefixes) or any(
                fnmatchcase(p.split("/")[-1], tail) for p in prefixes for tail in anywhere):
            ignored = not negate
    return ignored


def _dag_files() -> set[str]:
    """Repository files the DAG names: literal paths, os.path.join(PROJECT_DIR, "a", "b"), and jobs by module name."""
    tree = ast.parse(DAG_FILE.read_text())
    consts = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    files = {m for c in consts for m in re.findall(r"\b((?:infra|jobs)/[\w./-]+\.(?:sh|py|conf))", c)}
    for n in ast.walk(tree):
        if (isinstance(n, ast.Call) and ast.unparse(n.func) == "os.path.join" and len(n.args) > 1
                and all(isinstance(a, ast.Constant) for a in n.args[1:])):
            files.add("/".join(a.value for a in n.args[1:]))
    return files | {f"jobs/{c}.py" for c in consts if re.fullmatch(r"\w+", c) and (ROOT / "jobs" / f"{c}.py").is_file()}


def _dag_strings() -> set:
    return {n.value for n in ast.walk(ast.parse(DAG_FILE.read_text())) if isinstance(n, ast.Constant)}


def _compose() -> dict:
    return yaml.safe_load((PROD / "docker-compose.yml").read_text())


def _services() -> dict:
    return _compose()["services"]


def _env(service: dict) -> dict:
    env = service.get("environment") or {}
    return dict(item.split("=", 1) for item in env) if isinstance(env, list) else env


def _command(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else cmd


def _option(cmd: list[str], name: str) -> str:
    assert name in cmd, f"{name} missing from {cmd}"
    return cmd[cmd.index(name) + 1]


def _by_command(word: str) -> dict:
    return {name: s for name, s in _services().items() if word in _command(s)}


def _airflow(subcommand: str) -> tuple[str, dict]:
    found = {n: s for n, s in _services().items() if _command(s)[:2] == ["airflow", subcommand]}
    assert len(found) == 1, f"expected one `airflow {subcommand}` service, found {sorted(found)}"
    return next(iter(found.items()))


def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


# compose references without a default: ${VAR}, ${VAR?msg}, ${VAR:?msg} (a default would be a literal value)
REQUIRED = re.compile(r"\$\{([A-Za-z_]\w*)(?::?\?[^}]*)?\}")
TOKEN = re.compile(r"\$\$?([A-Za-z_]\w*)")  # what _interpolated leaves; $$VAR is the container's own variable


def _interpolated(value: str) -> str:
    """Each required ${VAR...} as the token $VAR, so that a URL holding one parses (a message may hold ? or spaces)."""
    return REQUIRED.sub(lambda m: "$" + m.group(1), value)


def _var(value: str | None) -> str:
    match = TOKEN.fullmatch(_interpolated(value or ""))
    assert match, f"{value!r} is not a ${{VAR}} reference without a default"
    return match.group(1)


def _k8s_docs() -> list[dict]:
    docs = [d for path in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    return [d for d in docs if "kind" in d]  # airflow-helm-values.yaml is chart values, not a manifest


def _k8s(kind: str) -> dict:
    return {d["metadata"]["name"]: d for d in _k8s_docs() if d["kind"] == kind}


def _helm_values() -> dict:
    return yaml.safe_load((K8S / "airflow-helm-values.yaml").read_text())


def _k8s_spark_conf() -> tuple[str, dict]:
    (data,) = [m["data"] for m in _k8s("ConfigMap").values() if any(k.endswith(".conf") for k in m["data"])]
    (key,) = [k for k in data if k.endswith(".conf")]
    return key, _spark_conf(data[key])


def _bound_roles(account: str, namespace: str) -> list[dict]:
    roles = _k8s("Role")
    names = [b["roleRef"]["name"] for b in _k8s("RoleBinding").values()
             if {"kind": "ServiceAccount", "name": account, "namespace": namespace} in b["subjects"]]
    assert all(n in roles for n in names), names
    return [roles[n] for n in names]


def _can_create_pods(roles: list[dict]) -> bool:
    return any("pods" in rule["resources"] and "create" in rule["verbs"] for r in roles for rule in r["rules"])


AIRFLOW_VIEW = """
import json, os
from airflow.models.connection import Connection
from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
view = {"spark_master": SparkSubmitHook(conn_id="spark_default")._connection["master"]}
for conn_id in ("attnrec_redis", "attnrec_postgres"):
    c = Connection(conn_id=conn_id, uri=os.environ["AIRFLOW_CONN_" + conn_id.upper()])
    view[conn_id] = {"conn_type": c.conn_type, "host": c.host, "port": c.port, "login": c.login,
                     "password": c.password, "schema": c.schema, "extra": c.extra_dejson}
print(json.dumps(view))
"""


@pytest.fixture(scope="module")
def airflow_view(tmp_path_factory) -> dict:
    """The scheduler's connections as Airflow reads them: spark_default through SparkSubmitHook (what the DAG's
    SparkSubmitOperator tasks submit to), the export connections through Connection (what the DAG templates read)."""
    conns = {k: _interpolated(v) for k, v in _env(_airflow("scheduler")[1]).items() if k.startswith("AIRFLOW_CONN_")}
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow")), **conns}
    out = subprocess.run([sys.executable, "-c", AIRFLOW_VIEW], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- files

def test_every_yaml_file_parses():
    paths = sorted(PROD.rglob("*.y*ml"))
    assert {p.relative_to(PROD).as_posix() for p in paths} >= {
        "docker-compose.yml", "kubernetes/train_gpu_pod.yaml", "kubernetes/spark-rbac.yaml",
        "kubernetes/configmaps.yaml", "kubernetes/airflow-helm-values.yaml"}
    for path in paths:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), path


def test_every_file_starts_with_a_comment_that_says_it_cannot_run_here():
    listed = _git_files("infra/production")
    assert "infra/production/Dockerfile" in listed
    for name in listed:
        if name.endswith(".gitignore"):
            continue
        text = (ROOT / name).read_text()
        head = ast.get_docstring(ast.parse(text)) if name.endswith(".py") else "\n".join(
            line for line in text.splitlines()[:8] if line.startswith("#"))
        assert head and "EXAMPLE" in head and "2-core" in head, f"{name}: say what it is and that it cannot run here"


def test_env_file_is_ignored_and_the_example_holds_no_values():
    assert subprocess.run(["git", "check-ignore", "-q", "infra/production/.env"], cwd=ROOT).returncode == 0
    entries = [line.split("=", 1) for line in (PROD / "env.example").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert entries and all(value == "" for _, value in entries), [k for k, v in entries if v]


# ---------------------------------------------------------------- Dockerfile

def test_dockerfile_copies_exist_and_are_not_dockerignored():
    patterns = [line.strip() for line in (PROD / "dockerignore.example").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert _dockerignored("warehouse/events/x.parquet", patterns) and _dockerignored("jobs/__pycache__/a.pyc", patterns)
    sources = set(_image_files().values())
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
        listed = _git_files(src)
        assert listed, src
        assert not [f for f in listed if _dockerignored(f, patterns)], f"{src}: excluded by dockerignore.example"


def test_dockerfile_installs_the_project_after_copying_what_it_needs():
    instrs = _instructions()
    pip = [i for i, (instr, rest) in enumerate(instrs) if instr == "RUN" and re.search(r"pip install \.(\s|$)", rest)]
    assert pip, "no `pip install .`"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = {"pyproject.toml", project["project"]["readme"], *packages}
    copied_before = {src for instr, rest in instrs[:pip[0]] if instr == "COPY" for src in _copy_args(rest)[1]}
    assert needed <= copied_before, needed - copied_before


def test_dockerfile_python_and_java_fit_the_project():
    instrs = _instructions()
    args = dict(rest.split("=", 1) for instr, rest in instrs if instr == "ARG" and "=" in rest)
    base = next(rest for instr, rest in instrs if instr == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    match = re.fullmatch(r"python:(\d+\.\d+)-slim-(\w+)", base)
    assert match, base
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(match.group(1)), (base, requires)
    installs_java17 = any(instr == "RUN" and "openjdk-17-jre-headless" in rest for instr, rest in instrs)
    assert installs_java17 and match.group(2) == "bookworm", "openjdk-17 is a bookworm package (trixie has none)"


def test_dockerfile_sets_the_code_version_from_a_build_arg():
    instrs = _instructions()
    first_from = next(i for i, (instr, _) in enumerate(instrs) if instr == "FROM")
    # an ARG before FROM is not visible inside the stage
    assert any(instr == "ARG" and rest.split("=")[0] == "ATTNREC_CODE_VERSION" for instr, rest in instrs[first_from:])
    assert _image_env()["ATTNREC_CODE_VERSION"] == "${ATTNREC_CODE_VERSION}"
    assert "ATTNREC_CODE_VERSION" in (ROOT / "attnmodel" / "artifact.py").read_text()  # the variable the code reads
    for name, service in _services().items():
        if "build" in service:
            assert "ATTNREC_CODE_VERSION" in service["build"]["args"], name


def test_dockerfile_preresolves_exactly_the_spark_defaults_packages():
    expected = set(_spark_defaults()["spark.jars.packages"].split(","))
    files = _image_files()
    runs = [rest for instr, rest in _instructions() if instr == "RUN" and "spark-submit" in rest]
    assert runs, "no build-time spark-submit: every container would resolve its packages from Maven"
    for run in runs:
        words = shlex.split(next(c for c in re.split(r"&&|;", run) if "spark-submit" in c))
        assert "--packages" not in words and not any("spark.jars.packages" in w for w in words), run
        conf_path = _option(words, "--properties-file")
        assert conf_path in files, f"{conf_path}: not a file the Dockerfile copies from the repository"
        resolved = _spark_conf((ROOT / files[conf_path]).read_text()).get("spark.jars.packages", "")
        assert set(resolved.split(",")) == expected, (conf_path, resolved)
    assert runs[-1].startswith("--network=none "), "the last resolve must run offline: proof the ivy cache suffices"


def test_image_holds_what_the_dag_runs():
    files, home = _image_files(), _image_env()["ATTNREC_HOME"]
    referenced = _dag_files()
    assert referenced, "the DAG names no job or file: update _dag_files"
    missing = sorted(p for p in referenced if not _in_image(f"{home}/{p}", files))
    assert not missing, f"the DAG uses {missing}, which the image does not have under {home}"
    assert _in_image(f"{home}/infra/spark-defaults.conf", files) and _in_image(f"{home}/infra/spark-submit.sh", files)
    entrypoint = json.loads(next(rest for instr, rest in _instructions() if instr == "ENTRYPOINT"))
    assert all(_in_image(p, files) for p in entrypoint if p.startswith("/usr/local/")), entrypoint


# ---------------------------------------------------------------- docker-compose.yml

def test_compose_services_run_the_one_image():
    services = _services()
    built = {name: s for name, s in services.items() if "build" in s}
    assert {s["image"] for s in built.values()} == {services["airflow-scheduler"]["image"]}
    for name, s in built.items():
        assert (PROD / s["build"]["context"]).resolve() == ROOT, name
        assert (ROOT / s["build"]["dockerfile"]).resolve() == PROD / "Dockerfile", name
    # everything that runs airflow or spark-class needs the project's image (code, Java, Spark)
    for name, s in services.items():
        if _command(s)[:1] in (["airflow"], ["spark-class"]):
            assert name in built, f"{name} runs {_command(s)[0]} but not the attnrec image"
    assert _command(_airflow("db")[1]) == ["airflow", "db", "migrate"]
    for sub in ("api-server", "scheduler", "dag-processor"):
        _airflow(sub)
    for name, s in services.items():
        deps = s.get("depends_on") or []
        for dep in deps:
            assert dep in services, f"{name} depends on unknown {dep}"
            if isinstance(deps, dict) and deps[dep].get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy: it has no healthcheck"


def test_compose_spark_cluster_is_spark_default(airflow_view):
    masters = _by_command("org.apache.spark.deploy.master.Master")
    assert len(masters) == 1
    ((master_name, master),) = masters.items()
    cmd = _command(master)
    assert _option(cmd, "--host") == master_name
    url = f"spark://{master_name}:{_option(cmd, '--port')}"
    workers = _by_command("org.apache.spark.deploy.worker.Worker")
    assert len(workers) == 2, sorted(workers)
    for name, worker in workers.items():
        cmd = _command(worker)
        assert cmd[cmd.index("org.apache.spark.deploy.worker.Worker") + 1] == url, name
        assert _option(cmd, "--host") == name
    assert airflow_view["spark_master"] == url  # what SparkSubmitHook makes of AIRFLOW_CONN_SPARK_DEFAULT
    assert _env(_airflow("scheduler")[1])["SPARK_MASTER"] == url  # infra/spark-submit.sh by hand
    assert "spark_default" in _dag_strings()


def test_compose_export_connections_point_at_the_export_services(airflow_view):
    services = _services()
    redis, pg = airflow_view["attnrec_redis"], airflow_view["attnrec_postgres"]
    assert {"attnrec_redis", "attnrec_postgres"} <= _dag_strings()  # the connection ids the DAG reads
    assert redis["conn_type"] == "redis" and services[redis["host"]]["image"].startswith("redis:")
    assert redis["port"] == 6379 and "port" not in " ".join(_command(services[redis["host"]]))
    assert _var(redis["password"]) == _var(_env(services[redis["host"]])["ATTNREC_REDIS_PASSWORD"])
    assert "db" in redis["extra"]
    assert pg["conn_type"] == "postgres" and services[pg["host"]]["image"].startswith("postgres:")
    pg_env = _env(services[pg["host"]])
    assert (pg["login"], pg["schema"], pg["port"]) == (pg_env["POSTGRES_USER"], pg_env["POSTGRES_DB"], 5432)
    assert _var(pg["password"]) == _var(pg_env["POSTGRES_PASSWORD"])


def test_compose_driver_and_executors_share_the_data_volume():
    def mounts(service):
        return {tuple(v.split(":")[:2]) for v in service.get("volumes", []) if not v.startswith((".", "/"))}

    scheduler = _airflow("scheduler")[1]
    workers = _by_command("org.apache.spark.deploy.worker.Worker").values()
    shared = set.intersection(mounts(scheduler), *(mounts(w) for w in workers))
    assert len(shared) == 1, "the scheduler (driver) and the workers (executors) must mount one volume at one path"
    ((volume, path),) = shared
    assert volume in _compose()["volumes"]
    env = _env(scheduler)
    for key in ("ATTNREC_RAW", "ATTNREC_WAREHOUSE", "ATTNREC_MODELS", "ATTNREC_EXPORTS"):
        assert env[key].startswith(path.rstrip("/") + "/"), (key, env[key], path)


def test_compose_airflow_components_agree():
    names = [_airflow(sub)[0] for sub in ("db", "api-server", "scheduler", "dag-processor")]
    envs = [_env(_services()[n]) for n in names]
    for key in envs[0]:
        if key.startswith("AIRFLOW__"):
            assert len({e.get(key) for e in envs}) == 1, f"{key} differs between {names}"
    env = envs[0]
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == _image_env()["ATTNREC_HOME"] + "/dags"
    assert _image_files().get(env["AIRFLOW__CORE__DAGS_FOLDER"]) == "dags"
    # the metadata DB URL names the airflow-db service, its user, database and password variable
    match = re.fullmatch(r"postgresql(\+\w+)?://(\w+):(\$\w+)@([\w-]+):5432/(\w+)",
                         _interpolated(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]))
    assert match, env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    _, user, password, host, database = match.groups()
    db_env = _env(_services()[host])
    assert (user, database, _var(password)) == (db_env["POSTGRES_USER"], db_env["POSTGRES_DB"],
                                                _var(db_env["POSTGRES_PASSWORD"]))
    api_name, api = _airflow("api-server")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
        f"http://{api_name}:{_option(_command(api), '--port')}/execution/")


def test_every_compose_variable_is_documented_in_env_example():
    used = {name for s in _strings(_compose()) for name in re.findall(r"(?<!\$)\$\{([A-Za-z_]\w*)", s)}
    documented = {line.split("=", 1)[0] for line in (PROD / "env.example").read_text().splitlines()
                  if "=" in line and not line.startswith("#")}
    assert used and used <= documented, used - documented


# ---------------------------------------------------------------- secrets

SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|SECRET_KEY|FERNET_KEY|TOKEN|API_KEY)$", re.I)
URL_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]*:([^@\s/]*)@")


def _literal_secrets(node, where: str = "", k8s: bool = False) -> list[str]:
    """Where a secret is written out: a secret-named variable, or a URL password, that is not a reference
    (compose: ${VAR} without a default; Kubernetes: valueFrom.secretKeyRef, or $(VAR) of such a variable)."""
    found = []
    if isinstance(node, dict):
        if node.get("kind") == "Secret" and (node.get("data") or node.get("stringData")):
            found.append(f"{where}: a Secret with literal data")
        if k8s and "name" in node and "value" in node and SECRET_NAME.search(str(node["name"])):
            found.append(f"{where}.{node['name']}: a literal value; use valueFrom.secretKeyRef")
        for key, value in node.items():
            if not k8s and SECRET_NAME.search(str(key)) and not (
                    isinstance(value, str) and TOKEN.fullmatch(_interpolated(value))):
                found.append(f"{where}.{key}: not a ${{VAR}} reference")
            if k8s and key == "data" and isinstance(value, dict):
                found += [f"{where}.data.{k}: a secret in a ConfigMap" for k in value if SECRET_NAME.search(k)]
            found += _literal_secrets(value, f"{where}.{key}", k8s)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _literal_secrets(value, f"{where}[{i}]", k8s)
    elif isinstance(node, str):
        for password in URL_PASSWORD.findall(node if k8s else _interpolated(node)):
            ok = re.fullmatch(r"\$\([A-Za-z_]\w*\)", password) if k8s else TOKEN.fullmatch(password)
            if password and not ok:
                found.append(f"{where}: a URL with a literal password")
    return found


@pytest.mark.parametrize("bad", [
    {"POSTGRES_PASSWORD": "hunter2"},
    {"ATTNREC_PG_PASSWORD": "${ATTNREC_PG_PASSWORD:-hunter2}"},  # a default is a literal password
    {"AIRFLOW__CORE__FERNET_KEY": "abc"},
    {"X": "postgresql+psycopg://airflow:hunter2@airflow-db:5432/airflow"},
    {"command": ["sh", "-c", "redis-cli -u redis://:hunter2@exports-redis:6379 ping"]},
])
def test_the_secret_check_catches_literals_in_compose(bad):
    assert _literal_secrets(bad)


@pytest.mark.parametrize("bad", [
    {"env": [{"name": "ATTNREC_PG_PASSWORD", "value": "hunter2"}]},
    {"kind": "Secret", "stringData": {"password": "hunter2"}},
    {"kind": "ConfigMap", "data": {"AIRFLOW__API_AUTH__JWT_SECRET": "x"}},
    {"data": {"AIRFLOW_CONN_X": "redis://:hunter2@redis:6379"}},
])
def test_the_secret_check_catches_literals_in_kubernetes(bad):
    assert _literal_secrets(bad, k8s=True)


def test_no_literal_secret_in_compose_or_kubernetes():
    compose = _compose()
    assert _literal_secrets({"POSTGRES_PASSWORD": "${PG:?set it}", "U": "redis://:${R:?set R}@h:1"}) == []
    assert _literal_secrets(compose, "docker-compose.yml") == []
    assert _literal_secrets(_k8s_docs(), "kubernetes", k8s=True) == []
    assert _literal_secrets(_helm_values(), "airflow-helm-values.yaml", k8s=True) == []
    # the check did see secrets: compose hands out at least these, all as references
    secret_keys = {k for s in compose["services"].values() for k in _env(s) if SECRET_NAME.search(k)}
    assert {"POSTGRES_PASSWORD", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"} <= secret_keys


# ---------------------------------------------------------------- kubernetes/

def test_kubernetes_manifests_are_consistent():
    docs = _k8s_docs()
    namespace = next(d["metadata"]["name"] for d in docs if d["kind"] == "Namespace")
    assert all(d["metadata"].get("namespace") == namespace for d in docs if d["kind"] != "Namespace")
    conf_key, conf = _k8s_spark_conf()
    # every line of infra/spark-defaults.conf, unchanged; it replaces that file in the Airflow pods
    assert conf_key == "spark-defaults.conf"
    assert {k: conf.get(k) for k in _spark_defaults()} == _spark_defaults()
    assert conf["spark.kubernetes.namespace"] == namespace
    # the driver's service account exists and may create executor pods
    account = conf["spark.kubernetes.authenticate.driver.serviceAccountName"]
    assert account in _k8s("ServiceAccount") and _can_create_pods(_bound_roles(account, namespace))
    # the Spark pods mount an existing claim where the warehouse and the upload path are
    env = _k8s("ConfigMap")["attnrec-env"]["data"]
    for role in ("driver", "executor"):
        prefix = f"spark.kubernetes.{role}.volumes.persistentVolumeClaim."
        (volume,) = {k[len(prefix):].split(".")[0] for k in conf if k.startswith(prefix)}
        assert conf[f"{prefix}{volume}.options.claimName"] in _k8s("PersistentVolumeClaim")
        mount = conf[f"{prefix}{volume}.mount.path"].rstrip("/") + "/"
        assert env["ATTNREC_WAREHOUSE"].startswith(mount)
        assert conf["spark.kubernetes.file.upload.path"].startswith("file://" + mount)
    # spark_default and SPARK_MASTER name the same Kubernetes master, in the manifests' namespace
    conn = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
    assert conn["conn_type"] == "spark" and conn["host"].startswith("k8s://https://")
    assert f"{conn['host']}:{conn['port']}" == env["SPARK_MASTER"]
    assert conn["extra"]["namespace"] == namespace


def test_helm_values_wire_the_kubernetes_pieces():
    values, home = _helm_values(), _image_env()["ATTNREC_HOME"]
    namespace = next(iter(_k8s("Namespace")))
    image = f"{values['images']['airflow']['repository']}:{values['images']['airflow']['tag']}"
    assert image == _k8s_spark_conf()[1]["spark.kubernetes.container.image"]
    assert values["config"]["core"]["dags_folder"] == f"{home}/dags"
    assert _can_create_pods(_bound_roles(values["workers"]["serviceAccount"]["name"], namespace))
    env_from = yaml.safe_load(values["extraEnvFrom"])
    assert all(e["configMapRef"]["name"] in _k8s("ConfigMap") for e in env_from)
    assert "attnrec-env" in {e["configMapRef"]["name"] for e in env_from}
    # the export connections (passwords) come from the Secret, spark_default from the config map
    assert {s["envName"] for s in values["secret"]} == {"AIRFLOW_CONN_ATTNREC_REDIS", "AIRFLOW_CONN_ATTNREC_POSTGRES"}
    assert all(s["secretKey"] == s["envName"] for s in values["secret"])
    volumes = {v["name"]: v for v in values["volumes"]}
    mounts = {m["mountPath"]: m for m in values["volumeMounts"]}
    # the k8s spark-defaults.conf is mounted over the file the DAG's SparkSubmitOperator passes
    conf_mount = mounts[f"{home}/infra/spark-defaults.conf"]
    assert conf_mount["subPath"] == _k8s_spark_conf()[0]
    assert volumes[conf_mount["name"]]["configMap"]["name"] in _k8s("ConfigMap")
    (data,) = [m for path, m in mounts.items() if _k8s("ConfigMap")["attnrec-env"]["data"]["ATTNREC_WAREHOUSE"]
               .startswith(path.rstrip("/") + "/")]
    assert volumes[data["name"]]["persistentVolumeClaim"]["claimName"] in _k8s("PersistentVolumeClaim")


def test_gpu_pod_template():
    pod = yaml.safe_load((K8S / "train_gpu_pod.yaml").read_text())
    assert pod["kind"] == "Pod" and pod["metadata"]["namespace"] in _k8s("Namespace")
    spec = pod["spec"]
    (base,) = [c for c in spec["containers"] if c["name"] == "base"]  # the container KubernetesPodOperator follows
    gpus = base["resources"]["limits"]["nvidia.com/gpu"]
    assert isinstance(gpus, int) and gpus >= 1
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert spec["restartPolicy"] == "Never"
    assert any(a.startswith(TRAIN_COMMAND) for a in (base.get("command") or []) + (base.get("args") or []))
    assert "{{ data_interval_start | ds }}" in DAG_FILE.read_text()  # the DAG's data day
    # $WH and $ART come from the environment of the Spark jobs; $ART/models is the DAG's models root
    maps = _k8s("ConfigMap")
    refs = {e["name"]: e["valueFrom"]["configMapKeyRef"] for e in base["env"]
            if "configMapKeyRef" in e.get("valueFrom", {})}
    assert (refs["WH"]["key"], refs["ART"]["key"]) == ("ATTNREC_WAREHOUSE", "ATTNREC_ARTIFACTS")
    env = maps[refs["WH"]["name"]]["data"]
    assert all(ref["key"] in maps[ref["name"]]["data"] for ref in refs.values())
    assert env["ATTNREC_MODELS"] == env["ATTNREC_ARTIFACTS"] + "/models"
    # the image of the Spark pods; the data claim mounted where the warehouse is
    assert base["image"] == _k8s_spark_conf()[1]["spark.kubernetes.container.image"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
              if "persistentVolumeClaim" in v}
    mounts = {m["name"]: m["mountPath"] for m in base["volumeMounts"]}
    assert any(env["ATTNREC_WAREHOUSE"].startswith(mounts[v].rstrip("/") + "/") and c in _k8s("PersistentVolumeClaim")
               for v, c in claims.items())


def test_gpu_train_example_parses_and_swaps_in_a_pod_operator():
    path = PROD / "airflow_gpu_train_example.py"
    assert ROOT / "dags" not in path.parents
    tree = ast.parse(path.read_text())
    module_imports = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
    module_imports |= {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    assert not any(m and m.startswith("airflow") for m in module_imports), "import airflow inside the function only"
    top_level = [n for stmt in tree.body if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef))
                 for n in ast.walk(stmt)]
    assert not [n for n in top_level if isinstance(n, ast.Call) and "DAG" in ast.unparse(n.func)], "a DAG"
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
               and n.module == "airflow.providers.cncf.kubernetes.operators.pod"]
    assert imports and any(a.name == "KubernetesPodOperator" for a in imports[0].names)
    (call,) = [n for n in ast.walk(tree)
               if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "KubernetesPodOperator"]
    keywords = {k.arg for k in call.keywords}
    # the template's Jinja is rendered only through pod_template_dict; cmds/arguments/image would replace the template's
    assert "pod_template_dict" in keywords and not keywords & {"pod_template_file", "cmds", "arguments", "image"}
    (func,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "gpu_train_model"]
    dag_task_ids = {n.value.value for n in ast.walk(ast.parse(DAG_FILE.read_text()))
                    if isinstance(n, ast.keyword) and n.arg == "task_id" and isinstance(n.value, ast.Constant)}
    dag_task_ids |= {n.args[0].value for n in ast.walk(ast.parse(DAG_FILE.read_text()))
                     if isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Constant)
                     and getattr(n.func, "id", "").endswith("_step")}  # python_step("train", ...)
    assert func.args.defaults[0].value in dag_task_ids, (func.args.defaults[0].value, dag_task_ids)
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert {"kubernetes", "train_gpu_pod.yaml"} <= strings and (K8S / "train_gpu_pod.yaml").is_file()
