"""The trained policy as a Hugging Face folder (``<run_dir>/hf_model``), written atomically at the end of a run.

``AutoModelForCausalLM.from_pretrained`` loads it, as does any tool that takes a model folder;
``turnrl_export.json`` beside the weights records the step it holds (finding and reading an export:
``algos.training.layout``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deepspeed.runtime.engine import DeepSpeedEngine
from transformers import PreTrainedTokenizerBase

from algos.training.checkpoint import barrier, is_main_process
from algos.training.engine import full_parameters
from algos.training.layout import EXPORT_INFO_FILE, HF_MODEL_DIR


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
        if is_main_process():
            shutil.rmtree(staging, ignore_errors=True)
            policy.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            (staging / EXPORT_INFO_FILE).write_text(json.dumps({"step": step}) + "\n")
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
    barrier()
    return target
