"""LoRA adapters (``peft``) on the policy and the value model: what trains, the base model as the KL
reference, and the merged weights the vLLM backend and the export get (``agents.model.merged_weights``).

With ``actor_rollout_ref.model.lora_rank = r > 0`` every layer named by ``target_modules`` keeps its
weight ``W`` frozen and learns ``A [r, in]`` (random) and ``B [out, r]`` (zeros, so training starts at
the base model)::

    W_eff = W + (lora_alpha / r) * B @ A

Only ``A`` and ``B`` have gradients, so the optimizer state and checkpoints hold them alone
(``algos.training.checkpoint``). The frozen reference of the KL loss is the same model with its
adapters disabled (:class:`BaseModelView`): no second copy of the weights. The critic (gae) reuses
the actor's settings on its trunk, its value head training in full.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from algos.training.schema import ModelConfig

ADAPTER_DIR = "adapter"
"""Folder of the adapters (``PeftModel.save_pretrained``) inside an ``hf_model`` export."""
ADAPTER_CONFIG_FILE = "adapter_config.json"


def lora_config(model: ModelConfig) -> LoraConfig:
    """peft's settings for ``model.lora_rank``/``lora_alpha``/``target_modules`` (no dropout: the
    rollout and the update must score tokens alike)."""
    targets = model.target_modules
    return LoraConfig(r=model.lora_rank, lora_alpha=model.lora_alpha, lora_dropout=0.0,
                      target_modules=targets if isinstance(targets, str) else list(targets))


def apply_lora(model: torch.nn.Module, settings: ModelConfig) -> torch.nn.Module:
    """``model`` with adapters (a ``PeftModel`` whose base weights are frozen), or ``model`` unchanged when
    ``settings.lora_rank == 0``. Raises ValueError when ``target_modules`` names no layer of the model."""
    if settings.lora_rank == 0:
        return model
    try:
        adapted = get_peft_model(model, lora_config(settings))
    except ValueError as error:
        raise ValueError(f"actor_rollout_ref.model.target_modules={settings.target_modules!r} is invalid for "
                         f"{type(model).__name__}: {error}") from None
    # the base an exported adapter names: the model's folder, else the configured path (tiny-random)
    adapted.peft_config["default"].base_model_name_or_path = getattr(model, "name_or_path", "") or settings.path
    return adapted


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Turn on activation recomputation; under LoRA the (frozen) embeddings' outputs then require grads,
    or the recomputed blocks would pass no gradient to the adapters."""
    model.gradient_checkpointing_enable()
    if is_lora(model):
        model.enable_input_require_grads()


def is_lora(model: torch.nn.Module) -> bool:
    return isinstance(model, PeftModel)


def trainable_parameters(model: torch.nn.Module) -> int:
    """Number of weights with gradients (with LoRA: the adapters', plus a value head)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class BaseModelView:
    """Calls ``model`` (a ``PeftModel``) with its adapters disabled: the base model, sharing its weights."""

    def __init__(self, model: PeftModel) -> None:
        self.model = model
        self.config = model.config

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.model.disable_adapter():
            return self.model(*args, **kwargs)

    def eval(self) -> BaseModelView:
        self.model.eval()
        return self

    def to(self, device: torch.device) -> BaseModelView:
        """Nothing to move: the weights are the policy's, on the engine's device."""
        return self


def frozen_reference(model: torch.nn.Module) -> torch.nn.Module | BaseModelView:
    """The KL reference of the policy ``model`` as it is now: its base model view under LoRA, else a frozen copy."""
    if is_lora(model):
        return BaseModelView(model)
    return copy.deepcopy(model).eval().requires_grad_(False)


def adapter_base(folder: str | Path, settings: ModelConfig) -> ModelConfig | None:
    """For an adapter folder (one with ``adapter_config.json``, e.g. ``hf_model/adapter``): ``settings``
    pointing at its base model (``base_model_name_or_path``), without LoRA (the adapter brings its own);
    None for any other path."""
    config_file = Path(folder) / ADAPTER_CONFIG_FILE if folder is not None else None
    if config_file is None or not config_file.is_file():
        return None
    base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    return dataclasses.replace(settings, path=base, lora_rank=0)


def load_adapter(model: torch.nn.Module, folder: str | Path) -> PeftModel:
    """``model`` with the adapters saved in ``folder`` (frozen: for evaluation)."""
    return PeftModel.from_pretrained(model, str(folder))
