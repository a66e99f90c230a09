# One command to try videogen, one to test it; both make their own virtual environment.
# TORCH pins the PyTorch release: on a CPU-only machine with a local CPU wheel, pip takes that
# wheel; on a GPU machine the same pin takes the regular CUDA build from PyPI.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: install install-test demo test bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/activate
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" -e .

install-test: $(BIN)/activate
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" -e ".[test]"

demo: install  ## install, then make out.mp4 with the default model
	$(BIN)/videogen generate "a red circle moving right" -o out.mp4 --strip out.png

test: install-test  ## install, then run the test suite
	$(BIN)/python -m pytest -q

bench: install  ## install, then run the benchmark
	$(BIN)/videogen bench

clean:
	rm -rf $(VENV) build *.egg-info
