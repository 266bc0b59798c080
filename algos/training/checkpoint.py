"""Checkpoints: DeepSpeed state + trainer state, written atomically, the newest N kept; resuming from
the newest one that verifies; reading a checkpoint's policy weights back.

Layout (``algos.training.layout``): ``<ckpt_dir>/global_step_<k>/`` holding DeepSpeed's files (tag
``model``: the trained weights (under LoRA the adapters only, DeepSpeed's ``exclude_frozen_parameters``),
optimizer, LR schedule; a gae run's critic engine under tag ``critic``), ``trainer_state.pt`` (step, RNG states, logger state: tensors and plain types only) and,
written last, ``manifest.json`` (sha256 of every file, see ``algos.training.checkpoint_files``). A
checkpoint is written into ``.tmp-global_step_<k>`` and renamed into place when complete, so a folder
named ``global_step_<k>`` is always complete; leftovers of a killed or failed save are removed. Weights
with a NaN or inf are never saved, and the checkpoint just written is never pruned.

The frozen KL reference (``use_kl_loss`` without LoRA: the policy after the format warm-up, which a
resumed run skips) is written once, with the run's first checkpoint, to ``<ckpt_dir>/reference/`` as
safetensors, and read back on resume, so a resumed run measures KL to the same model as before.

Every file is read with ``weights_only=True`` (DeepSpeed's reads too), after its manifest verified.
"""

from __future__ import annotations

import contextlib
import errno
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from deepspeed.runtime.engine import DeepSpeedEngine

from algos.training.checkpoint_files import (
    CheckpointError,
    safe_load,
    verify_manifest,
    weights_only_loads,
    write_manifest,
)
from algos.training.data_parallel import any_rank
from algos.training.layout import DEEPSPEED_TAG, TRAINER_STATE_FILE, checkpoints, latest_checkpoint
from algos.training.lora import BaseModelView

REFERENCE_FILE = Path("reference") / "model.safetensors"
CRITIC_TAG = "critic"
QUARANTINE_PREFIX = "corrupt-"
_FULL_DISK_BYTES = 1 << 20  # a failed write with less free space than this is reported as a full disk


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states, as tensors, lists and numbers (so the
    trainer state loads with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    state = {"python": [version, list(internal), gauss], "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def is_main_process() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def nonfinite_parameters(module: torch.nn.Module) -> list[str]:
    """Names of the parameters holding a NaN or inf (this rank's shard of each under ZeRO-3)."""
    return [name for name, p in module.named_parameters() if not getattr(p, "ds_tensor", p).isfinite().all()]


@contextlib.contextmanager
def frozen_weights_left_out(module: torch.nn.Module) -> Iterator[None]:
    """Within the block ``module.state_dict()`` leaves out every frozen weight (LoRA's base weights) under
    all its names: DeepSpeed's ``exclude_frozen_parameters`` misses a tied alias (``lm_head`` = embeddings)."""
    frozen = {name for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}

    def drop(_: torch.nn.Module, state: dict[str, Any], prefix: str, __: Any) -> None:
        for name in frozen:
            state.pop(prefix + name, None)

    handle = module.register_state_dict_post_hook(drop)
    try:
        yield
    finally:
        handle.remove()


def save_checkpoint(
    engine: DeepSpeedEngine, ckpt_dir: Path, step: int, trainer_state: dict[str, Any], keep: int,
    critic: DeepSpeedEngine | None = None, reference: torch.nn.Module | BaseModelView | None = None,
) -> Path:
    """Write ``global_step_<step>`` atomically (temp folder, manifest last, rename), then keep only the
    newest ``keep`` (never pruning the one just written). ``critic``: also its engine (tag ``critic``);
    ``reference``: the KL reference, once a run (:func:`save_reference`).

    Every rank calls this (DeepSpeed writes each rank's shards); rank 0 writes the trainer state and the
    manifest, renames and prunes. Raises :class:`CheckpointError`, writing nothing, when a weight is not
    finite, and, removing the partial folder, when a write fails (naming "No space left on device" when
    the disk is full); the previous checkpoints stay as they were.
    """
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / f"global_step_{step}"
    staging = ckpt_dir / f".tmp-global_step_{step}"
    nonfinite = [name for model in (engine, critic) if model is not None for name in nonfinite_parameters(model.module)]
    if any_rank(bool(nonfinite), engine.device):
        where = ", ".join(nonfinite[:3]) or "a parameter on another rank"
        raise CheckpointError(f"not saving {final}: the weights are not finite ({where}: NaN or inf); the "
                              f"newest checkpoint stays {latest_checkpoint(ckpt_dir)}")
    try:
        if is_main_process():
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        barrier()
        for model, tag in ((engine, DEEPSPEED_TAG), (critic, CRITIC_TAG)):
            if model is not None:
                with frozen_weights_left_out(model.module):
                    model.save_checkpoint(str(staging), tag=tag, exclude_frozen_parameters=True)
        barrier()
        save_reference(reference, ckpt_dir)  # before the first checkpoint is complete, so none lacks it
        if is_main_process():
            torch.save({**trainer_state, "step": step, "rng": rng_state()}, staging / TRAINER_STATE_FILE)
            write_manifest(staging)
    except (OSError, RuntimeError) as error:
        raise _write_failure(error, staging, ckpt_dir) from error
    if is_main_process():
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        for _, old in checkpoints(ckpt_dir)[:-keep]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        for leftover in ckpt_dir.glob(".tmp-global_step_*"):
            shutil.rmtree(leftover, ignore_errors=True)
    barrier()
    return final


def _write_failure(error: Exception, staging: Path, ckpt_dir: Path) -> CheckpointError:
    """The error for a failed write into ``staging``, after removing it. torch reports a full disk as a
    RuntimeError without errno, so a near-zero free space after the failure also counts as one."""
    no_space = (getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error)
                or shutil.disk_usage(ckpt_dir).free < _FULL_DISK_BYTES)
    path = getattr(error, "filename", None) or staging
    shutil.rmtree(staging, ignore_errors=True)
    cause = "No space left on device" if no_space else f"{type(error).__name__}: {error}"
    return CheckpointError(f"saving a checkpoint failed writing {path}: {cause}. Removed {staging}; the newest "
                           f"checkpoint stays {latest_checkpoint(ckpt_dir)}")


def _from_rank_0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not torch.distributed.is_initialized():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def newest_verified_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint whose files match its manifest, or None when there is no checkpoint.

    Each newer one that fails is reported (which and why) and moved to ``corrupt-global_step_<k>``, kept
    for inspection and never loaded, counted or pruned again. Raises :class:`CheckpointError` listing
    every reason when there are checkpoints and none verifies.
    """
    failed: list[tuple[Path, str]] = []
    for _, path in reversed(checkpoints(ckpt_dir)):
        try:
            verify_manifest(path)
        except CheckpointError as error:
            failed.append((path, str(error)))
            print(f"checkpoint {path.name} skipped: {error}", flush=True)
            continue
        for bad, _ in failed:
            quarantine = bad.with_name(QUARANTINE_PREFIX + bad.name)
            shutil.rmtree(quarantine, ignore_errors=True)
            bad.rename(quarantine)
        if failed:
            print(f"falling back to {path.name}, the newest checkpoint that verifies; moved the newer "
                  f"{', '.join(bad.name for bad, _ in failed)} to {QUARANTINE_PREFIX}<name>", flush=True)
        return path
    if failed:
        raise CheckpointError(f"no checkpoint in {ckpt_dir} verifies: " + "; ".join(why for _, why in failed))
    return None


def resume_checkpoint(
    engine: DeepSpeedEngine, ckpt_dir: Path, critic: DeepSpeedEngine | None = None,
    reference: torch.nn.Module | BaseModelView | None = None,
) -> tuple[Path, dict[str, Any]] | None:
    """Load :func:`newest_verified_checkpoint` (chosen by rank 0) into ``engine`` (and ``critic``, and the
    KL ``reference``: :func:`restore_reference`), restore the RNGs; return (its path, its trainer state), or
    None when ``ckpt_dir`` holds no checkpoint."""
    choice: Path | CheckpointError | None = None
    if is_main_process():
        try:
            choice = newest_verified_checkpoint(Path(ckpt_dir))
        except CheckpointError as error:
            choice = error
    choice = _from_rank_0(choice)
    if isinstance(choice, CheckpointError):
        raise choice
    if choice is None:
        return None
    state = safe_load(choice / TRAINER_STATE_FILE)
    for model, tag in ((engine, DEEPSPEED_TAG), (critic, CRITIC_TAG)):
        if model is None:
            continue
        with weights_only_loads():  # a LoRA checkpoint holds no frozen weight: the model already has them
            load_path, _ = model.load_checkpoint(str(choice), tag=tag, load_module_strict=not frozen_parameters(model))
        if load_path is None:
            raise CheckpointError(f"no DeepSpeed checkpoint (tag {tag!r}) in {choice}")
    restore_reference(reference, ckpt_dir)
    set_rng_state(state["rng"])
    return choice, state


def checkpoint_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The policy weights of a DeepSpeed checkpoint: the module states (ZeRO 0-2), or the fp32 weights
    gathered from the partitioned optimizer states (ZeRO 3, whose module states are placeholders)."""
    verify_manifest(Path(checkpoint))
    model_states = Path(checkpoint) / DEEPSPEED_TAG / "mp_rank_00_model_states.pt"
    if not model_states.is_file():  # ZeRO-3 writes only per-rank files (zero_pp_rank_<r>_mp_rank_00_*)
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        with weights_only_loads():
            return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=DEEPSPEED_TAG)
    return safe_load(model_states, map_location="cpu")["module"]


def frozen_parameters(model: torch.nn.Module) -> bool:
    """True when some weight has no gradient (LoRA's base weights), so checkpoints leave it out."""
    return any(not p.requires_grad for p in getattr(model, "module", model).parameters())


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state``; only weights tied to a loaded one (e.g. ``lm_head`` = embeddings) and frozen ones
    (LoRA's base weights, which the model was built with) may be absent."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    loaded = {own[key].data_ptr() for key in state if key in own}
    frozen = {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
    untied = [key for key in missing if own[key].data_ptr() not in loaded and key not in frozen]
    if unexpected or untied:
        raise ValueError(f"checkpoint does not match the model: missing {untied}, unexpected {unexpected}")


def save_reference(reference: torch.nn.Module | BaseModelView | None, ckpt_dir: Path) -> None:
    """Write the frozen KL reference's weights to ``<ckpt_dir>/reference/model.safetensors`` unless they are
    there (once a run: the reference never changes); atomically (temp file, then rename), on rank 0. Nothing
    without a reference or under LoRA (its reference is the policy's base model, not a copy)."""
    target = Path(ckpt_dir) / REFERENCE_FILE
    if not isinstance(reference, torch.nn.Module) or target.is_file() or not is_main_process():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(".tmp-" + target.name)
    safetensors.torch.save_model(reference, str(partial))  # tied weights (embeddings = lm_head) once
    partial.replace(target)


def restore_reference(reference: torch.nn.Module | BaseModelView | None, ckpt_dir: Path) -> None:
    """Load the weights :func:`save_reference` wrote into ``reference`` (all of them, strictly; nothing for
    None or the LoRA view, which it does not write); a resumed run without them cannot measure KL to its
    reference: ``FileNotFoundError``."""
    target = Path(ckpt_dir) / REFERENCE_FILE
    if not isinstance(reference, torch.nn.Module):
        return
    if not target.is_file():
        raise FileNotFoundError(
            f"{target} is missing: the checkpoint in {ckpt_dir} has no saved KL reference (written since 2026-12-03), "
            "so a resumed run would measure KL to the un-warmed base model; allowed: start the run afresh, or "
            "resume with actor_rollout_ref.actor.use_kl_loss=false")
    safetensors.torch.load_model(reference, str(target), strict=True)
