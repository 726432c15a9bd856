# The two set-up commands are `make up` and `make test`; everything installs itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt service/requirements.txt | sha1sum | cut -c1-12)
PORT ?= 8080
# jsii compares the value with the Node major version, so it names the version it silences.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.DEFAULT_GOAL := help
.PHONY: help up test lint

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt service/requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

up: $(STAMP) ## run the service on the embedded PostgreSQL at http://127.0.0.1:$(PORT) (Ctrl-C stops)
	PORT=$(PORT) $(PY) scripts/run_local.py

test: $(STAMP) lint ## lint, then run every test
	$(PY) -m pytest

lint: $(STAMP) ## ruff and mypy
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy service/conversations scripts
