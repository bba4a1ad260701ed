PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pytest workers (pytest-xdist); JOBS=0 runs the suite in one process
JOBS ?= auto
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint typecheck pytest clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/nasir demo

lint: venv
	$(BIN)/ruff check nasir passes backends strategies app tests benchmarks

typecheck: venv
	$(BIN)/mypy nasir passes backends strategies app

pytest: venv
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile --durations=25 nasir passes backends strategies app tests

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
