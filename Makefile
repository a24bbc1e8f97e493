# Every target creates (or reuses) the local .venv by itself, so each works on a fresh machine.
PYTHON ?= python3
TORCH  ?= torch==2.14.1 torchvision==0.29.1
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: install chromium test lint demo tables bench gpu-check bench-gpu bench-pretrain clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the HTML leaderboard's browser tests: Debian's package, driven by Playwright (a test
# extra), so no `playwright install` download. Does nothing when chromium is already on PATH.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if ! command -v apt-get >/dev/null; then echo "note: no chromium and no apt-get; browser tests will skip"; \
	  else SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi; }

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --durations=15

demo: $(STAMP)
	$(BIN)/python -m ijepa_eval.demo --out results/demo

tables: $(STAMP)
	$(BIN)/ijepa-eval table results/runs --out results/tables --html

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --out results/bench.json

# Every CUDA path for a few steps at tiny size, one line each (about a minute; every line says skip without
# CUDA). bench-gpu runs it first: a broken path stops there, before the 8-minute benchmarks.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

bench-gpu: gpu-check
	$(BIN)/python benchmarks/bench_gpu.py --out results/bench-gpu.json

bench-pretrain: $(STAMP)
	$(BIN)/python benchmarks/bench_pretrain.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
