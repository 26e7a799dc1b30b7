# Two entry points for a fresh machine: `make demo` and `make test`.
# Both set up .venv first; setup is skipped when pyproject.toml has not changed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench shapes clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	# torch first and pinned: the CPU wheel on this disk; anything looser pulls a CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/python -m edit_mobile.demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

# Re-train the shapes-world models (VAE, both teachers, their distilled students) from nothing: ~3.5 h on 2 cores.
shapes: setup
	$(BIN)/python -m edit_mobile.training.make_shapes

bench: setup
	$(BIN)/python bench/export_latency.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
