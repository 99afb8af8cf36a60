# The two commands of the README: `make run` (set up + run the main job) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
export HF_HUB_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export PREFECT_HOME := $(CURDIR)/.prefect
export PATH := $(CURDIR)/$(BIN):$(PATH)  # stage commands call `rare` and `dvc` from this venv, activated or not

.PHONY: setup lock plots run repro study sweep test test-fast ui ui-stop deploy trigger bench serve clean realworld

setup: $(VENV)/.installed

# Installs the exact versions of requirements/lock.txt (the ranges in pyproject.toml are for users who install
# rare as a library), then rare itself without resolving again. torch is 2.13.0+cpu: the CPU wheel on local disk
# here (elsewhere: add --extra-index-url https://download.pytorch.org/whl/cpu); unpinned, pip pulls a CUDA build.
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r $(LOCK)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	# OpenAI's clip tokenizer, the reference of tests/test_clip_sf.py; --no-deps: its torchvision would replace torch
	$(PY) -m pip install -q --disable-pip-version-check --no-deps "clip-anytorch==2.6.0"
	touch $@

# Re-resolve the lock from pyproject.toml's ranges (+ requirements/pins.txt) against the configured index;
# run it after changing a dependency, commit requirements/lock.txt, and `make setup` installs it.
lock:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "pip-tools>=7.4,<8"
	$(BIN)/pip-compile -q --extra dev --strip-extras --allow-unsafe --no-emit-find-links --no-emit-index-url \
	    -c requirements/pins.txt -o $(LOCK) pyproject.toml

run: setup  ## the main job: the whole DVC pipeline under one Prefect parent flow and one MLflow parent run
	$(PY) -m flows.pipeline

repro: setup  ## plain `dvc repro` (no Prefect parent flow)
	$(BIN)/dvc repro

SEEDS ?= 3
study: setup  ## after `make run`: every variant with SEEDS seeds in all, report with seed intervals in report/study (docs/evidence.md)
	$(PY) -m rare.study --seeds $(SEEDS)

sweep: setup  ## after `make run`: VLM-quality sweep over the stand-in's error rates, into report/sweep (docs/evidence.md)
	$(PY) -m rare.sweep

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

ui: setup  ## Prefect server + MLflow UI on 127.0.0.1 (detached); `make ui-stop` ends them
	$(PY) -m flows.ui start

ui-stop:
	$(PY) -m flows.ui stop

# A deployment of the pipeline on the `make ui` server. Prefect's own CLI finds a server only through
# PREFECT_API_URL, so these set it; `make deploy` keeps running (CRON='0 3 * * *' adds a schedule).
UI_API := http://127.0.0.1:4200/api
deploy: setup  ## serve the rare-pipeline deployment (needs `make ui`)
	PREFECT_API_URL=$(UI_API) $(PY) -m flows.pipeline --serve $(if $(CRON),--cron "$(CRON)")

trigger: setup  ## start one run of the served deployment
	PREFECT_API_URL=$(UI_API) $(BIN)/prefect deployment run rare-pipeline/rare-pipeline

plots: setup  ## DVC's plots as SVG in dvc_plots/ (offline, labelled by variant); REVS="main lr5e-4" compares
	$(PY) -m rare.plots $(REVS)

bench: setup
	$(PY) -m bench

serve: setup  ## after `make run`: search page + JSON API for models none vs both on http://127.0.0.1:8000 (a worker per core)
	$(BIN)/rare serve --workers 2

# Real images and texts (docs/realworld.md): installs Debian's tuxpaint-stamps-default, openclipart-svg,
# fonts-noto-color-emoji, unicode-data and unicode-cldr-core when missing (apt-get; root or sudo), imports them
# into data/debian_clipart and runs every stage under profile debian_clipart in build/debian_clipart.
realworld: setup
	$(PY) -m pip install -q --disable-pip-version-check -e ".[debian]"
	$(PY) -m flows.realworld $(if $(MAX),--max-per-source $(MAX))

clean:
	rm -rf data models eval report .cache
