# `make demo` and `make test` install into .venv when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stylize image samples/chelsea.png --style samples/ihc.png --size 320 --iterations 150 -o $(OUT)/chelsea-ihc.png --overwrite
	@echo "demo result: $(OUT)/chelsea-ihc.png"

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(OUT) .pytest_cache

bench: $(STAMP)
	$(BIN)/python bench/bench.py
