# The two set-up commands of the README:
#   make run    create .venv if needed, install, run the default pipeline (config.yaml) end to end
#   make test   create .venv if needed, install, run the test suite
# Variables: CONFIG (config file for `make run`), CORES (default: all), GPUS (default: 1).

VENV    ?= .venv
PYTHON  ?= python3
CONFIG  ?= config.yaml
CORES   ?= $(shell nproc 2>/dev/null || echo 2)
GPUS    ?= 1
STAMP   := $(VENV)/.installed

.PHONY: run test lint dry-run benchmarks clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	# torch first, pinned: pip takes it from the local wheel cache where one exists.
	$(VENV)/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python -m multibeta.workflow.config $(CONFIG)
	$(VENV)/bin/snakemake --cores $(CORES) --resources gpu=$(GPUS) --rerun-incomplete --configfile $(CONFIG)

test: $(STAMP)
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/snakemake --lint

dry-run: $(STAMP)
	$(VENV)/bin/python -m multibeta.workflow.config $(CONFIG)
	$(VENV)/bin/snakemake -n --configfile $(CONFIG)

benchmarks: $(STAMP)
	$(VENV)/bin/python benchmarks/run_all.py

clean-venv:
	rm -rf $(VENV)
