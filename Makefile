# Two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both create .venv on first use. torch==2.13.0 goes in first: a CPU build of it lies on
# these machines' disk; any other torch requirement would pull a multi-GB CUDA build.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-scale check bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test,demo]"
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

# Side by side: pipeline vs hand-written Trainer code vs txtai (about 40 minutes here).
bench: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
