"""Where a run's files live, and finding them: checkpoints and the ``hf_model`` export.

Reading this needs neither DeepSpeed nor torch, so evaluation tools can find a run's weights without
importing the training stack. Layout of a run dir::

    checkpoints/global_step_<k>/model/...             DeepSpeed's files (tag ``model``)
    checkpoints/global_step_<k>/trainer_state.pt      step, RNG and logger state
    checkpoints/global_step_<k>/manifest.json         sha256 of every file, written last
    hf_model/                                         save_pretrained folder of the final policy
    hf_model/turnrl_export.json                       {"step": k}, written last
"""

from __future__ import annotations

import json
import re
from pathlib import Path

CHECKPOINT_PATTERN = re.compile(r"^global_step_(\d+)$")
TRAINER_STATE_FILE = "trainer_state.pt"
DEEPSPEED_TAG = "model"
HF_MODEL_DIR = "hf_model"
EXPORT_INFO_FILE = "turnrl_export.json"


def checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``ckpt_dir`` (a ``global_step_<k>`` with its trainer state) as (step, path),
    oldest first."""
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


def exported_model(path: Path) -> Path | None:
    """The complete export at ``path`` itself or at ``path/hf_model``, else None."""
    for folder in (Path(path), Path(path) / HF_MODEL_DIR):
        if (folder / EXPORT_INFO_FILE).is_file():
            return folder
    return None


def export_step(export: Path) -> int:
    """The training step an ``hf_model`` export holds."""
    return int(json.loads((Path(export) / EXPORT_INFO_FILE).read_text())["step"])


def hf_model_location(model: str | None) -> str | None:
    """A model argument as ``agents.model.load_model_and_tokenizer`` takes it: a TurnRL run dir becomes its
    ``hf_model`` export; a checkpoint or run dir without one is refused (ValueError); anything else (None,
    a model folder, a hub name) passes through."""
    if model is None:
        return None
    export = exported_model(Path(model))
    if export is not None:
        return str(export)
    path = Path(model)
    if (path / TRAINER_STATE_FILE).is_file() or (path / ".hydra").is_dir():
        raise ValueError(f"{model} is a TurnRL checkpoint or run dir without an hf_model export; pass a run "
                         "dir whose training finished (scripts/train.py writes <run dir>/hf_model at the end)")
    return model
