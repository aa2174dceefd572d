# PacketFlow developer tasks. Needs only python3 (3.11+), java 17+, mvn and make;
# everything else is installed into .venv from this repo's pyproject.toml.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.packetflow-installed
BENCH_STAMP := $(VENV)/.packetflow-bench-installed
QUIX_VENV   := .venv-quix
QUIX_STAMP  := $(QUIX_VENV)/.installed

# Broker CLI (override e.g. KAFKA_CLI="$(BIN)/python -m packetflow.cli.kafka").
KAFKA_CLI       ?= $(BIN)/packetflow kafka
KAFKA_PORT      ?= 9092
KAFKA_TEST_PORT ?= 19092
PYTEST_FLAGS    ?= -ra --strict-markers --durations=10
PYTEST_ARGS     ?=

.PHONY: help venv demo test lint browser kafka-start kafka-stop kafka-status bench bench-quick clean distclean

help:
	@echo "make venv         create/update .venv (pip install -e '.[test]')"
	@echo "make test         make lint, then start local Kafka on :$(KAFKA_TEST_PORT), run pytest, stop Kafka"
	@echo "make lint         ruff check, mypy packetflow, lint-imports (the layers)"
	@echo "make demo         run the orders topology (python -m topologies.orders)"
	@echo "make kafka-start  start local Kafka on :$(KAFKA_PORT) (kafka-stop / kafka-status)"
	@echo "make bench        run benchmarks (bench-quick for a short run)"
	@echo "make clean        remove caches and build artefacts (distclean also removes .venv)"

venv: $(STAMP)

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "error: python3 not found" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# The benchmarks also need the bench extra (faust-streaming, psutil).
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $@

# Quix Streams (a benchmark contestant) pins other versions than the engine: its own venv.
$(QUIX_STAMP): benchmarks/quix-requirements.txt
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(QUIX_VENV)/bin/python -m pip install --quiet -r benchmarks/quix-requirements.txt
	@touch $@

demo: venv
	$(BIN)/python -m topologies.orders

# Unless PACKETFLOW_TEST_BOOTSTRAP points at a broker, start the local one and
# always stop it again (also on failure / Ctrl-C), keeping pytest's exit code.
test: venv lint browser
	@if [ -n "$${PACKETFLOW_TEST_BOOTSTRAP:-}" ]; then \
	  echo "using Kafka at $$PACKETFLOW_TEST_BOOTSTRAP"; \
	  $(BIN)/python -m pytest $(PYTEST_FLAGS) $(PYTEST_ARGS); \
	else \
	  trap '$(KAFKA_CLI) stop --port $(KAFKA_TEST_PORT) || true' EXIT; \
	  $(KAFKA_CLI) start --port $(KAFKA_TEST_PORT) --fresh || exit $$?; \
	  PACKETFLOW_TEST_BOOTSTRAP=127.0.0.1:$(KAFKA_TEST_PORT) \
	    $(BIN)/python -m pytest $(PYTEST_FLAGS) $(PYTEST_ARGS); \
	fi

# The browser tests drive Debian's Chromium (no browser download): install it when missing.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	fi

# ruff, mypy, and the import contracts in pyproject.toml (layers, engine wings, no circles)
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy packetflow
	$(BIN)/lint-imports --no-cache

kafka-start: venv
	$(KAFKA_CLI) start --port $(KAFKA_PORT)

kafka-stop: venv
	$(KAFKA_CLI) stop --port $(KAFKA_PORT)

kafka-status: venv
	$(KAFKA_CLI) status --port $(KAFKA_PORT)

bench: $(BENCH_STAMP) $(QUIX_STAMP)
	$(BIN)/python -m benchmarks

bench-quick: $(BENCH_STAMP) $(QUIX_STAMP)
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) $(QUIX_VENV)
