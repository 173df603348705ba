# Streaming chat backend: local development, tests and the SAM bundle.
# New here? `make dev` (local server with an embedded DynamoDB) and `make test`.
# GNU make. Everything a target needs it installs (virtualenvs, npm packages for tests/aisdk and tests/openai_js).

SHELL := /bin/bash

# Python 3.13 (the Lambda runtime): pyenv's if installed, else python3.13 on PATH, else python3.
PY ?= $(or $(lastword $(sort $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3))),$(shell command -v python3.13 2>/dev/null),python3)
VENV ?= .venv
SAMVENV ?= .samvenv
REGION ?= us-east-1
CONFIG_ENV ?= default

SAM := SAM_CLI_TELEMETRY=0 $(SAMVENV)/bin/sam
CFN_LINT := $(SAMVENV)/bin/cfn-lint
# `sam build` needs python3.13 on PATH; with pyenv, make every installed 3.x visible at once.
PYENV_VERSIONS := $(shell pyenv versions --bare 2>/dev/null | grep -E '^3\.[0-9]+\.[0-9]+$$' | paste -sd: -)
SAM_BUILD_ENV := $(if $(PYENV_VERSIONS),PYENV_VERSION=$(PYENV_VERSIONS))

SETUP_STAMP := $(VENV)/.setup-stamp
SAM_STAMP := $(SAMVENV)/.setup-stamp
AISDK_PACKAGE := $(wildcard tests/aisdk/package.json)
AISDK_STAMP := $(if $(AISDK_PACKAGE),tests/aisdk/node_modules/.setup-stamp)
OPENAI_JS_PACKAGE := $(wildcard tests/openai_js/package.json)
OPENAI_JS_STAMP := $(if $(OPENAI_JS_PACKAGE),tests/openai_js/node_modules/.setup-stamp)

.DEFAULT_GOAL := help
.PHONY: help setup dev dev-reset test invoke bench lint ruff sam-setup validate build deploy clean apikey web browser

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(SETUP_STAMP) $(AISDK_STAMP) $(OPENAI_JS_STAMP) ## Create .venv and install the project (re-runs when pyproject.toml changes)

$(SETUP_STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || { echo "Creating $(VENV) with $(PY)"; $(PY) -m venv $(VENV); }
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	@touch $@

tests/aisdk/node_modules/.setup-stamp: tests/aisdk/package.json $(wildcard tests/aisdk/package-lock.json)
	@if ! command -v npm >/dev/null; then \
		echo "npm not found: the Node.js AI SDK tests will be skipped"; \
	elif [ -f tests/aisdk/package-lock.json ]; then \
		npm ci --prefix tests/aisdk --no-audit --no-fund && touch $@; \
	else \
		npm install --prefix tests/aisdk --no-audit --no-fund && touch $@; \
	fi

# The official openai npm client, for the OpenAI-compatible API's tests (tests/api/test_openai_js_client.py).
tests/openai_js/node_modules/.setup-stamp: tests/openai_js/package.json $(wildcard tests/openai_js/package-lock.json)
	@if ! command -v npm >/dev/null; then \
		echo "npm not found: the openai npm client tests will be skipped"; \
	else \
		npm ci --prefix tests/openai_js --no-audit --no-fund && touch $@; \
	fi

dev: setup ## Run the chat app and the chat page on http://127.0.0.1:$${PORT:-8000} with an embedded DynamoDB (data in .dev/dynamodb/)
	$(VENV)/bin/python -m devtools.devserver

dev-reset: setup ## `make dev` starting from an empty embedded DynamoDB (the old data is kept aside once)
	$(VENV)/bin/python -m devtools.devserver --reset

web: ## Build the example chat page into examples/web/dist (npm ci, vite build)
	$(PY) -m devtools.web_page

browser: ## Install Debian's Chromium for the browser tests when missing (as root, apt-get)
	@bash devtools/install_chromium.sh

test: setup browser ## Run the whole test suite
	$(VENV)/bin/pytest -q

invoke: setup ## Run a handler on an event: make invoke FN=chat|health|summarize EVENT=events/....json
	@if [ -z "$(FN)" ] || [ -z "$(EVENT)" ]; then \
		echo "usage: make invoke FN=chat|health|summarize EVENT=events/<file>.json"; exit 2; fi
	$(VENV)/bin/python -m devtools.invoke $(FN) $(EVENT)

apikey: setup ## Manage API keys: make apikey ARGS="create --owner alice --tier pro" (or list, revoke KEY_ID)
	$(VENV)/bin/python -m chatcore.auth.api_keys_cli $(ARGS)

bench: setup ## Run the benchmarks (ARGS=--quick for a short run, ARGS="--only fullstack,sustained")
	$(VENV)/bin/python -m bench $(ARGS)

lint: ruff ## ruff on everything, mypy on the chatcore package, import-linter's layer contracts
	$(VENV)/bin/mypy layers/common/chatcore
	cd layers/common && ../../$(VENV)/bin/lint-imports --config ../../pyproject.toml --no-cache

ruff: setup ## ruff only (what CI runs)
	$(VENV)/bin/ruff check .

sam-setup: $(SAM_STAMP) ## Create .samvenv with the SAM CLI and cfn-lint

$(SAM_STAMP):
	@test -x $(SAMVENV)/bin/python || { echo "Creating $(SAMVENV) with $(PY)"; $(PY) -m venv $(SAMVENV); }
	$(SAMVENV)/bin/python -m pip install --quiet aws-sam-cli cfn-lint
	@touch $@

validate: sam-setup ## sam validate --lint and cfn-lint on template.yaml
	$(SAM) validate --lint --region $(REGION)
	$(CFN_LINT) template.yaml

build: sam-setup ## sam build (arm64, no Docker)
	$(SAM_BUILD_ENV) $(SAM) build

deploy: build ## sam deploy --guided (CONFIG_ENV=prod for the prod stack)
	$(SAM) deploy --guided --config-env $(CONFIG_ENV)

clean: ## Remove build output (keeps the virtualenvs)
	rm -rf .aws-sam
