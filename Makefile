# Two entry points: `make run` (pipeline on generated demo data) and `make test` (whole suite).
# Both install what is missing first: a venv in .venv with the project and its test tools,
# and Java 17 (Spark needs a JVM) from Debian's packages when no `java` is on PATH.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
DEMO_DATE ?= 2026-01-14
PYTEST_ARGS ?=

.PHONY: install run test java services clean

java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "java not found: installing openjdk-17-jre-headless (Spark needs a JVM)"; \
	  if command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless; \
	  else echo "error: install Java 17 and put java on PATH" >&2; exit 1; fi; }

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "attnrec needs Python >= 3.11 (set PYTHON=python3.11)"'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

install: java $(STAMP)

run: install
	$(VENV)/bin/attnrec run --demo --date $(DEMO_DATE)

# Redis and PostgreSQL for the export tests: installed here (Debian's packages) when missing; the tests start
# throwaway servers on free loopback ports through the same script and stop them afterwards.
services:
	infra/services.sh install

test: install services
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf raw warehouse artifacts exports reports airflow-home spark-warehouse metastore_db derby.log
