# Two commands on a fresh machine: `make demo` runs the default simulation, `make test` the tests.
# Each creates .venv and installs torch==2.13.0 (the CPU build) before the project, with the versions
# in constraints.txt (those the suite last passed with; `make constraints` refreshes the file).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.personasim-installed

.PHONY: demo test lint install clean constraints

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/personasim run --db demo.duckdb --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

constraints: $(STAMP)
	$(BIN)/python .ci/constraints.py constraints.txt

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo.duckdb demo.duckdb.wal
