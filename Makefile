# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# A GPU user can point this at another index, e.g. TORCH_INDEX=--index-url https://download.pytorch.org/whl/cu124
TORCH_INDEX ?=
DEMO_DIR ?= runs/demo
# the checkpoint `make serve` puts on its page: by default the paper's method from `make demo`
SERVE_CKPT ?= $(DEMO_DIR)/runs/ranking
SERVE_PORT ?= 7860
BIN := $(VENV)/bin

.PHONY: demo test lint bench serve clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH_SPEC)" $(TORCH_INDEX)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/celseg demo --out $(DEMO_DIR)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks

serve: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[demo]"
	$(BIN)/celseg serve --ckpt $(SERVE_CKPT) --port $(SERVE_PORT)

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/run_all.py

clean-demo:
	rm -rf $(DEMO_DIR)
