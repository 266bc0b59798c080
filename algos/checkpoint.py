"""Checkpoints: DeepSpeed state + trainer state, written atomically, the newest N kept; stop on signals;
the trained policy exported as a Hugging Face folder; loading a checkpoint's weights into a model.

Layout: ``<ckpt_dir>/global_step_<k>/`` holding DeepSpeed's files (tag ``model``: weights, optimizer,
LR schedule) and ``trainer_state.pt`` (step, RNG states, logger state). A checkpoint is written into
``.tmp-global_step_<k>`` and renamed into place when complete, so a folder named ``global_step_<k>``
is always complete; leftovers of a killed save are removed.

``<run_dir>/hf_model/`` (written the same atomic way, at the end of training) is the policy as
``save_pretrained`` writes it, with its tokenizer and ``turnrl_export.json`` (the step it holds):
``AutoModelForCausalLM.from_pretrained`` loads it, as does any tool taking a model folder.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from deepspeed.runtime.engine import DeepSpeedEngine
from transformers import PreTrainedTokenizerBase

from algos.engine import full_parameters

CHECKPOINT_PATTERN = re.compile(r"^global_step_(\d+)$")
TRAINER_STATE_FILE = "trainer_state.pt"
DEEPSPEED_TAG = "model"
HF_MODEL_DIR = "hf_model"
EXPORT_INFO_FILE = "turnrl_export.json"


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


def _is_main_process() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``ckpt_dir`` as (step, path), oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = []
    for path in ckpt_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and (path / TRAINER_STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def save_checkpoint(
    engine: DeepSpeedEngine, ckpt_dir: Path, step: int, trainer_state: dict[str, Any], keep: int
) -> Path:
    """Write ``global_step_<step>`` atomically (temp folder + rename), then keep only the newest ``keep``.

    Every rank calls this (DeepSpeed writes each rank's shards); rank 0 renames and prunes.
    """
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / f"global_step_{step}"
    staging = ckpt_dir / f".tmp-global_step_{step}"
    if _is_main_process():
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    _barrier()
    engine.save_checkpoint(str(staging), tag=DEEPSPEED_TAG)
    if _is_main_process():
        torch.save({**trainer_state, "step": step, "rng": rng_state()}, staging / TRAINER_STATE_FILE)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        for _, old in checkpoints(ckpt_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for leftover in ckpt_dir.glob(".tmp-global_step_*"):
            shutil.rmtree(leftover, ignore_errors=True)
    _barrier()
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


def export_hf_model(
    engine: DeepSpeedEngine, tokenizer: PreTrainedTokenizerBase, run_dir: Path, step: int
) -> Path:
    """Write the policy and tokenizer with ``save_pretrained`` to ``<run_dir>/hf_model``; return that path.

    Every rank calls this: under ZeRO-3 the partitioned weights are gathered collectively, then rank 0
    writes ``.tmp-hf_model`` (plus ``turnrl_export.json`` = ``{"step": step}``) and renames it into
    place, replacing an older export. The weights are the module's (bf16 when training in bf16).
    """
    target = Path(run_dir) / HF_MODEL_DIR
    staging = target.with_name(f".tmp-{HF_MODEL_DIR}")
    with full_parameters(engine) as policy:
        if _is_main_process():
            shutil.rmtree(staging, ignore_errors=True)
            policy.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            (staging / EXPORT_INFO_FILE).write_text(json.dumps({"step": step}) + "\n")
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
    _barrier()
    return target


def exported_model(path: Path) -> Path | None:
    """The complete export at ``path`` itself or at ``path/hf_model``, else None."""
    for folder in (Path(path), Path(path) / HF_MODEL_DIR):
        if (folder / EXPORT_INFO_FILE).is_file():
            return folder
    return None


def export_step(export: Path) -> int:
    """The training step an ``hf_model`` export holds."""
    return int(json.loads((Path(export) / EXPORT_INFO_FILE).read_text())["step"])


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step (to checkpoint and exit).

    A second SIGINT raises ``KeyboardInterrupt`` at once. Use as a context manager; the previous
    handlers come back on exit. Outside the main thread (where handlers can't be set) it never fires.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        print(f"\n{self.signal_name} received: saving a checkpoint after this step, then stopping "
              "(Ctrl-C again to abort now).", flush=True)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
