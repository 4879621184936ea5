# pctr: `make demo` and `make test` are all a new user needs; both set up the environment first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
export PCTR_HOME ?= $(CURDIR)/var
# the cached virtualenv is shared by the clones on this machine: this clone's code comes first
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export SPARK_LOCAL_IP ?= 127.0.0.1
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST := $(PY) -m pytest
# the cluster profile and where make cluster / make demo-cluster keep their state
CLUSTER_CONFIG := $(CURDIR)/conf/cluster.toml
CLUSTER_HOME := $(CURDIR)/var/cluster
CLUSTER_MLFLOW_STORE := postgresql+psycopg2://pctr:pctr@127.0.0.1:5433/mlflow

.PHONY: help setup demo test test-unit test-integration bench ui lint clean redis chromium postgres sshd cluster cluster-stop demo-cluster

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-17s %s\n", $$1, $$2}'

setup: ## create or reuse the cached virtualenv (pins in setup.cfg, Horovod built from source once)
	@.ci/setup-venv.sh

demo: setup ## simulate days, run pctr_daily through Airflow, serve, rank; writes var/demo/summary.json
	$(PY) -m entrypoints.demo

test: setup redis chromium ## the whole test suite: unit, DAG integrity, integration on real engines, end to end
	$(PYTEST)

test-unit: setup ## fast unit tests only
	$(PYTEST) tests/unit tests/dags

test-integration: setup redis chromium ## integration and end-to-end tests (real Spark, Feast, MLflow, Horovod, Airflow)
	$(PYTEST) tests/integration tests/e2e

bench: setup redis ## benchmarks, oracle-gap bound, model quality, service under load, capacity model, an hourly run (on make demo's home)
	$(PY) -m bench.run
	$(PY) -m bench.oracle_gap
	$(PY) -m bench.quality
	$(PY) -m bench.serving --home $(PCTR_HOME)
	$(PY) -m bench.capacity --home $(PCTR_HOME)
	$(PY) -m bench.hourly --home $(PCTR_HOME)

ui: setup ## Airflow UI on :8080 and MLflow UI on :5000 over the state in $PCTR_HOME (Ctrl-C stops both)
	$(PY) -m entrypoints.ui

lint: setup ## ruff, and import-linter's layer contracts (setup.cfg)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

cluster: setup redis postgres sshd ## start conf/cluster.toml's servers on loopback: Spark master + 2 workers, MLflow server on PostgreSQL
	@$(PY) -m entrypoints.spark_cluster start --dir $(CLUSTER_HOME)/spark
	@PCTR_CONFIG=$(CLUSTER_CONFIG) $(PY) -m entrypoints.tracking_server start --state-dir $(CLUSTER_HOME)/mlflow \
		--backend-store-uri $(CLUSTER_MLFLOW_STORE)

cluster-stop: ## stop the Spark cluster and MLflow server of make cluster (PostgreSQL, Redis and sshd stay up)
	@$(PY) -m entrypoints.spark_cluster stop --dir $(CLUSTER_HOME)/spark
	@$(PY) -m entrypoints.tracking_server stop --state-dir $(CLUSTER_HOME)/mlflow

demo-cluster: setup ## make demo from scratch on conf/cluster.toml (Spark standalone, PostgreSQL, MLflow server, Redis, horovodrun over ssh); state in var/cluster
	@$(MAKE) --no-print-directory cluster-stop
	rm -rf $(CLUSTER_HOME)
	@PCTR_PG_RESET=1 .ci/postgres.sh
	@$(MAKE) --no-print-directory cluster
	PCTR_CONFIG=$(CLUSTER_CONFIG) PCTR_HOME=$(CLUSTER_HOME) $(PY) -m entrypoints.demo

postgres: ## install and start PostgreSQL on 127.0.0.1:5433 (databases airflow, mlflow) for the cluster profile
	@.ci/postgres.sh

sshd: ## install and start an sshd on :2222 for the hosts pctr-a and pctr-b (loopback addresses) of horovodrun
	@.ci/sshd.sh

redis: ## install and start redis-server on loopback for the Redis online-store test
	@.ci/redis.sh

chromium: ## install Debian's chromium and chromium-driver for the UI test (headless Chromium)
	@.ci/chromium.sh

clean: ## remove generated state (var/) and caches in the checkout; the cached virtualenv stays
	rm -rf var .pytest_cache .ruff_cache spark-warehouse metastore_db
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
