# Two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both create .venv on first use, with the exact versions in requirements.lock (what the suite passed with).
# torch==2.13.0 goes in first: a CPU build of it lies on these machines' disk; any other torch requirement would
# pull a multi-GB CUDA build.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN = $(VENV)/bin
# The installs' constraints: the lock; empty for the newest versions pyproject.toml allows (test-latest, lock).
CONSTRAINTS := -c requirements.lock
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-scale check test-latest lock bench clean

$(VENV)/.installed: pyproject.toml requirements.lock
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(CONSTRAINTS) --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet $(CONSTRAINTS) -e ".[test,demo]"
	touch $@

# The main job: LoRA fine-tune of the real all-MiniLM-L6-v2 on the shipped reviews.
demo: $(VENV)/.installed
	$(BIN)/python examples/main.py

test: $(VENV)/.installed
	$(BIN)/python -m pytest

# Launches that take the machine: torchrun as two nodes, SIGTERM to torchrun, a worker SIGKILLed and restarted, DeepSpeed ZeRO and its resume, embeddings gathered over two processes, a sweep shared on a private PostgreSQL server (about 3.5 min here).
# CI runs it after `make test`.
test-scale: $(VENV)/.installed
	$(BIN)/python -m pytest -m scale

# The fast loop: the pure core and the quick shell tests (no model is trained or loaded), under a minute.
check: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow" -q

# Drift, seen on purpose (not in CI): the fast loop on the newest versions pyproject.toml allows, in a new .venv-latest.
test-latest:
	rm -rf .venv-latest
	$(MAKE) check VENV=.venv-latest CONSTRAINTS=

# Write requirements.lock from the newest versions pyproject.toml allows; then run `make test` (it reinstalls .venv
# from the new lock) and commit the lock with what it took to pass.
lock:
	rm -rf .venv-latest
	$(MAKE) .venv-latest/.installed VENV=.venv-latest CONSTRAINTS=
	{ echo "# Exact versions the suite passed with (make lock writes it; pyproject.toml keeps the ranges)."; \
	  .venv-latest/bin/pip freeze --all --exclude-editable | sed 's/+cpu$$//'; } > requirements.lock

# Side by side: pipeline vs hand-written Trainer code vs txtai (about 40 minutes here).
bench: $(VENV)/.installed
	$(BIN)/pip install --quiet $(CONSTRAINTS) -e ".[bench]"
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .venv-latest runs .pytest_cache .hypothesis
