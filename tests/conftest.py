"""Settings every test runs under, set at import (before any test module imports the model stack).

The suite never touches the network: Hugging Face hub and datasets are offline (a model or data set
must be local or embedded), wandb logs offline and quietly, vLLM sends no usage statistics.
``setdefault`` leaves a value the caller exported on purpose; subprocesses the tests start inherit all.
"""

from __future__ import annotations

import os

import pytest
import torch

TEST_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "TOKENIZERS_PARALLELISM": "false",  # no fork warnings from tokenizers in the training subprocesses
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "MPLBACKEND": "Agg",  # plots render to files, never to a display
}

for _key, _value in TEST_ENVIRONMENT.items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: tiny models gain nothing from threads, and on shared cores
    (or beside a vLLM engine's own threads) a second one makes generation ~10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tokenizer():
    """The default model's tokenizer (chat template included)."""
    from agents.model import load_tokenizer

    return load_tokenizer(None)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    """A random-weight model of the default's architecture and vocabulary, for fast tests."""
    from agents.model import build_tiny_model

    return build_tiny_model(tokenizer, seed=0)
