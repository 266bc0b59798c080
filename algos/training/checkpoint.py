"""Checkpoints: DeepSpeed state + trainer state, written atomically, the newest N kept; reading a
checkpoint's policy weights back.

Layout (``algos.training.layout``): ``<ckpt_dir>/global_step_<k>/`` holding DeepSpeed's files (tag
``model``: weights, optimizer, LR schedule) and ``trainer_state.pt`` (step, RNG states, logger state). A checkpoint is written into
``.tmp-global_step_<k>`` and renamed into place when complete, so a folder named ``global_step_<k>``
is always complete; leftovers of a killed save are removed.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from algos.training.layout import DEEPSPEED_TAG, TRAINER_STATE_FILE, checkpoints

if TYPE_CHECKING:  # reading a checkpoint's weights (evaluation) must not import DeepSpeed
    from deepspeed.runtime.engine import DeepSpeedEngine


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def is_main_process() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def save_checkpoint(
    engine: DeepSpeedEngine, ckpt_dir: Path, step: int, trainer_state: dict[str, Any], keep: int
) -> Path:
    """Write ``global_step_<step>`` atomically (temp folder + rename), then keep only the newest ``keep``.

    Every rank calls this (DeepSpeed writes each rank's shards); rank 0 renames and prunes.
    """
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / f"global_step_{step}"
    staging = ckpt_dir / f".tmp-global_step_{step}"
    if is_main_process():
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier()
    engine.save_checkpoint(str(staging), tag=DEEPSPEED_TAG)
    if is_main_process():
        torch.save({**trainer_state, "step": step, "rng": rng_state()}, staging / TRAINER_STATE_FILE)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        for _, old in checkpoints(ckpt_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for leftover in ckpt_dir.glob(".tmp-global_step_*"):
            shutil.rmtree(leftover, ignore_errors=True)
    barrier()
    return final


def load_checkpoint(engine: DeepSpeedEngine, path: Path) -> dict[str, Any]:
    """Load weights, optimizer and LR schedule into ``engine``, restore the RNGs; return the trainer state."""
    load_path, _ = engine.load_checkpoint(str(path), tag=DEEPSPEED_TAG)
    if load_path is None:
        raise FileNotFoundError(f"no DeepSpeed checkpoint (tag {DEEPSPEED_TAG!r}) in {path}")
    state = torch.load(Path(path) / TRAINER_STATE_FILE, weights_only=False)
    set_rng_state(state["rng"])
    return state


def checkpoint_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The policy weights of a DeepSpeed checkpoint: the module states (ZeRO 0-2), or the fp32 weights
    gathered from the partitioned optimizer states (ZeRO 3, whose module states are placeholders)."""
    model_states = Path(checkpoint) / DEEPSPEED_TAG / "mp_rank_00_model_states.pt"
    if not model_states.is_file():  # ZeRO-3 writes only per-rank files (zero_pp_rank_<r>_mp_rank_00_*)
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=DEEPSPEED_TAG)
    return torch.load(model_states, map_location="cpu", weights_only=False)["module"]


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state``; only weights tied to a loaded one (e.g. ``lm_head`` = embeddings) may be absent."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    loaded = {own[key].data_ptr() for key in state if key in own}
    untied = [key for key in missing if own[key].data_ptr() not in loaded]
    if unexpected or untied:
        raise ValueError(f"checkpoint does not match the model: missing {untied}, unexpected {unexpected}")
