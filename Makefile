# Everything installs itself: `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
WHEELS := build/wheels
SOURCES := $(shell find hooks executor -name '*.py') setup.cfg pyproject.toml

.PHONY: install test lint format demo bench dist install-check clean

# The project is installed the way a user installs it (not editable), after the
# pure-Python http-parser wheel that pymesos needs on Python >= 3.11.
$(BIN)/.installed: $(SOURCES) tools/build_http_parser_wheel.py requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python tools/build_http_parser_wheel.py $(WHEELS)
	$(BIN)/pip install --quiet --find-links $(WHEELS) . -r requirements-test.txt
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: install
	$(BIN)/python tools/demo.py

bench: dist
	$(BIN)/python tools/bench.py

# One-file executables (zipapps) of both console scripts, and the hook as a tar.gz.
dist: install
	$(BIN)/python tools/build_dist.py

# `pip install .` into a throw-away virtualenv of $(PYTHON) ends with a working pymesos.
install-check:
	rm -rf build/install-check
	$(PYTHON) -m venv build/install-check
	build/install-check/bin/python tools/build_http_parser_wheel.py $(WHEELS)
	build/install-check/bin/pip install --quiet --find-links $(WHEELS) .
	build/install-check/bin/python -c "import pymesos, hooks.consul.client, executor.driver; print('pymesos', pymesos.__VERSION__, 'imports on', __import__('sys').version.split()[0])"
	build/install-check/bin/consul-registration-hook --version

clean:
	rm -rf $(VENV) build dist *.egg-info
