# The two set-up commands of the README:
#   make run    create .venv if needed, install, run the default pipeline (config.yaml) end to end
#   make test   create .venv if needed, install, run the test suite
#   make report Snakemake's HTML report of the finished run of CONFIG: every figure, captioned,
#               in <results_dir>/<experiment>/report.html (the first experiment's folder in a sweep)
# Variables: CONFIG (config file for `make run`), CORES (default: all), GPUS (default: 1 where
# nvidia-smi lists a GPU; else CORES: without a GPU every "GPU" job runs on the CPU, so the slots
# only serialise jobs that could share the cores, such as the one-thread denoiser trainings).

VENV    ?= .venv
PYTHON  ?= python3
CONFIG  ?= config.yaml
CORES   ?= $(shell nproc 2>/dev/null || echo 2)
GPUS    ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo $(CORES))
STAMP   := $(VENV)/.installed

.PHONY: run test report lint dry-run benchmarks clean-venv

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

# where `make report` writes: <results_dir>/<experiment>/report.html of CONFIG's first experiment
REPORT_PATH = import sys; \
	from multibeta.workflow.config import load_config_file; \
	from multibeta.workflow.experiments import expand_experiments; \
	name, cfg = next(iter(expand_experiments(load_config_file(sys.argv[1])).items())); \
	print(cfg["results_dir"] + "/" + name + "/report.html")

report: $(STAMP)
	$(VENV)/bin/snakemake --configfile $(CONFIG) --report "$$($(VENV)/bin/python -c '$(REPORT_PATH)' $(CONFIG))"

lint: $(STAMP)
	$(VENV)/bin/snakemake --lint

dry-run: $(STAMP)
	$(VENV)/bin/python -m multibeta.workflow.config $(CONFIG)
	$(VENV)/bin/snakemake -n --configfile $(CONFIG)

benchmarks: $(STAMP)
	$(VENV)/bin/python benchmarks/run_all.py

clean-venv:
	rm -rf $(VENV)
