"""Shared test set-up: offline, quiet, deterministic; tiny real models built once per session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from pipeline.testing import questions, sentences, sentiment, tiny_models  # noqa: F401


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Folders of tiny random models with their tokenizers: bert, llama, bart, electra (+ generator)."""
    return tiny_models(tmp_path_factory.mktemp("models"))


def pytest_collection_modifyitems(items):
    """Whatever needs the tiny models (or the packaged MiniLM) trains or loads real models: ``slow``.
    ``make check`` runs the rest, the pure core and the quick shell tests, in well under a minute."""
    for item in items:
        if "models" in item.fixturenames or "pretrained" in item.nodeid:
            item.add_marker(pytest.mark.slow)
