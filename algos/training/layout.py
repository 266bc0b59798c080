"""Where a run's files live, and finding them: checkpoints and the ``hf_model`` export.

Reading this needs neither DeepSpeed nor torch, so evaluation tools can find a run's weights without
importing the training stack. Layout of a run dir::

    checkpoints/global_step_<k>/model/...             DeepSpeed's files (tag ``model``)
    checkpoints/global_step_<k>/trainer_state.pt      present once the checkpoint is complete
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


def exported_model(path: Path) -> Path | None:
    """The complete export at ``path`` itself or at ``path/hf_model``, else None."""
    for folder in (Path(path), Path(path) / HF_MODEL_DIR):
        if (folder / EXPORT_INFO_FILE).is_file():
            return folder
    return None


def export_step(export: Path) -> int:
    """The training step an ``hf_model`` export holds."""
    return int(json.loads((Path(export) / EXPORT_INFO_FILE).read_text())["step"])
