# The two commands of the README:
#   make demo   set up a virtual environment and run the main job
#   make test   set up a virtual environment and run the tests
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
ARGS ?=

.PHONY: demo test venv-demo venv-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

venv-demo: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[export]"

venv-dev: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"

demo: venv-demo
	$(BIN)/tfp-bcnn demo $(ARGS)
	@echo "The tools are in $(VENV)/: run 'source $(VENV)/bin/activate', then 'tfp-bcnn --help'."

# Two pytest-xdist workers (one per core of the reference 2-core machine; most tests
# are single-threaded TensorFlow tracing or subprocesses, so two workers nearly halve
# the wall time); the tests that share one JAX or PyTorch subprocess stay on one worker
# (tests/conftest.py), so it starts once; progress in percent, then the ten slowest tests.
# ARGS='-m "not slow"' is the fast loop (README: "Development"); ARGS='-n 0' runs serially.
test: venv-dev
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=10 $(ARGS)

bench: venv-dev
	$(BIN)/python benchmarks/run_all.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
