"""Train an LLM agent on a text game: ``python scripts/train.py env=sokoban algo=drgrpo_soft``.

Hydra entry point over ``conf/``: ``--help`` lists every key with its type, default and meaning (from
the schema dataclasses), then the config groups; ``-m`` sweeps, e.g. ``-m algo=grpo,drgrpo,drgrpo_soft``.
The config is validated before any model loads.
Exit status: 0 when the run finished, 128 + the signal number (143 for SIGTERM, 130 for Ctrl-C) when a
signal stopped it after its checkpoint.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from algos.training.config_help import help_text
from algos.training.schema import TurnRLConfig, register_schema, validate

register_schema()


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        config = validate(cfg)
    except ValueError as error:
        sys.exit(f"Invalid config: {error}")
    from algos.training.checkpoint_files import CheckpointError  # after validation: imports the model stack
    from algos.training.trainer import train

    hydra_config = HydraConfig.get()
    choices = hydra_config.runtime.choices
    config.trainer.experiment_name = config.trainer.experiment_name or f"{choices['env']}-{choices['algo']}"
    run_dir = Path(hydra_config.runtime.output_dir)
    try:
        result = train(config, run_dir, run_config=OmegaConf.to_container(cfg, resolve=True))
    except CheckpointError as error:
        sys.exit(f"Checkpoint error: {error}")
    if result["stopped_by"]:  # checkpointed, but not finished: a scheduler must tell it from a finished run
        sys.exit(128 + signal.Signals[result["stopped_by"]].value)


if __name__ == "__main__":
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print("TurnRL training run. Override any key as key=value (e.g. actor_rollout_ref.actor.lr=1e-5).\n")
        print("== Keys (type = default) ==")
        print(help_text(TurnRLConfig) + "\n")
    main()
