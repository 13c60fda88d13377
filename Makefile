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

# One line per test file with its progress in percent (not a wall of dots), then the
# ten slowest tests; ARGS='-m "not slow"' is the fast loop (README: "Development").
test: venv-dev
	$(BIN)/python -m pytest --durations=10 $(ARGS)

bench: venv-dev
	$(BIN)/python benchmarks/run_all.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
