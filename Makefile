# The two commands of the README: `make demo` (the embedded study) and `make test` (the test suite).
# Each creates the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-gpu benchmarks clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(BIN)/.installed  ## the whole embedded study on this machine (CPU is enough)
	WANDB_MODE=$${WANDB_MODE:-offline} $(BIN)/study run configs/tiny.yaml

# Two test processes (pytest-xdist), each test file in one of them: most of the suite waits on Ray and on
# subprocesses rather than computing, so two overlap well on 2 cores. `pytest tests/x.py` runs in one process.
test: $(BIN)/.installed  ## the test suite (CPU), including the smoke study end to end
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-gpu: $(BIN)/.installed  ## the GPU tests (needs CUDA)
	$(BIN)/python -m pytest -q -m gpu

clean:
	rm -rf $(VENV) runs .cache wandb
