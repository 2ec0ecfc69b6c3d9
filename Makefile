# The two commands of the README:  `make demo`  (set up + run the embedded default end to end)
#                                  `make test`  (set up + run the tests; what .ci/run calls)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test clean

# constraints.txt pins the versions the suite was tested with; setup.py keeps the ranges
$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/vjepa demo

test: setup
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf runs .pytest_cache
