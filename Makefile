# The two commands a newcomer needs: `make run` and `make test`. Both create or refresh the
# virtual environment first, so a fresh clone needs nothing else.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTRITON := nvidia-pytriton==0.7.0
TRAIN_VENV := .venv-train
TRAIN_STAMP := $(TRAIN_VENV)/.installed
ORTHANC_PLUGINS := /usr/share/orthanc/plugins

.DEFAULT_GOAL := help
.PHONY: help venv packages run test unit lint format typecheck check docs bench soak fuzz triton serve models up down clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@# Only the tritonserver binary of this wheel is used; its Python dependencies pin numpy<2.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps '$(PYTRITON)'
	@touch $(STAMP)

venv: $(STAMP) ## Create or refresh the virtual environment

run: $(STAMP) ## Start local Triton and the gateway on the example models (Ctrl-C stops both)
	$(PY) -m gateway run

serve: $(STAMP) ## Start the gateway alone against TRITON_URL
	$(PY) -m gateway serve

triton: $(STAMP) ## Start local Triton alone on model_repository/
	$(PY) -m triton_local

packages: ## System programs the tests drive (Chromium, Orthanc, dciodvfy, PostgreSQL, jemalloc for the soak), installed when missing and possible
	@scripts/ensure-debian-packages chromium=chromium dciodvfy=dicom3tools Orthanc=orthanc \
		$(ORTHANC_PLUGINS)/libOrthancDicomWeb.so=orthanc-dicomweb \
		/usr/lib/$(shell uname -m)-linux-gnu/libjemalloc.so.2=libjemalloc2 \
		/usr/lib/postgresql=postgresql

test: $(STAMP) packages check ## Lint, type-check and run every test (starts a real local Triton)
	$(PY) -m pytest

unit: $(STAMP) ## The tests that need no Triton and no browser (the fast tier, under 2 minutes)
	$(PY) -m pytest -m "not e2e"

lint: $(STAMP) ## ruff lint and format check; each package's imports against its install set
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) scripts/check-dependencies

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

typecheck: $(STAMP) ## mypy, strict
	$(PY) -m mypy aicoco gateway triton_local benchmarks training tests docker/healthcheck.py

check: lint typecheck

docs: $(STAMP) ## Rewrite the generated tables (docs/configuration.md, docs/errors.md)
	$(PY) -m gateway.doctables

bench: $(STAMP) ## Benchmarks: aicoco formatting and the gateway against local Triton
	$(PY) -m benchmarks

MINUTES ?= 60
soak: $(STAMP) packages ## MINUTES (default 60) of mixed traffic at twice MAX_IN_FLIGHT, every process sampled
	$(PY) -m benchmarks soak --minutes $(MINUTES)

fuzz: $(STAMP) ## 10,000 mutated DICOM, NIfTI, PNG and JPEG files through the readers
	$(PY) -W ignore -m tests.gateway.readers.fuzzing --cases 10000

$(TRAIN_STAMP): training/requirements.txt
	@test -x $(TRAIN_VENV)/bin/python || $(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r training/requirements.txt
	@touch $(TRAIN_STAMP)

models: $(TRAIN_STAMP) ## Retrain the example models and export them to model_repository/ (PyTorch, CPU)
	$(TRAIN_VENV)/bin/python -m training

up: ## docker compose up: Triton on the GPU plus the gateway
	docker compose up --build

down:
	docker compose down

clean: ## Remove the virtual environments and caches
	rm -rf $(VENV) $(TRAIN_VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
