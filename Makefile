# `make demo` and `make test` install into .venv when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: demo test torture bench install clean

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

# Jobs SIGKILLed many times at random moments (tests/test_crash_resume.py); TORTURE_SEED=N varies them.
torture: $(STAMP)
	$(BIN)/python -m pytest -m torture tests/test_crash_resume.py

clean:
	rm -rf $(OUT) .pytest_cache

bench: $(STAMP)
	$(BIN)/python bench/bench.py
