"""Train an LLM agent on a text game: ``python scripts/train.py env=sokoban algo=drgrpo_soft``.

Hydra entry point over ``conf/``: ``--help`` lists every key with its type, default and meaning (from
the schema dataclasses), then the config groups; ``-m`` sweeps, e.g. ``-m algo=grpo,drgrpo,drgrpo_soft``.
RAGEN's key spellings are rewritten to TurnRL's first (``algos.training.ragen_keys``); then every run the
command line asks for is composed and checked (``algos.training.preflight``) before Hydra creates a run dir
and before any model loads. Exit status: 1 with ``Invalid config: ...`` naming the key, or
``Training stopped: ...`` after ``trainer.max_nonfinite_steps`` non-finite steps in a row;
0 when the run finished, 128 + the signal number (143 for SIGTERM, 130 for Ctrl-C) when a
signal stopped it after its checkpoint.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from algos.training.config_help import help_text
from algos.training.preflight import check_command_line, check_config
from algos.training.ragen_keys import ragen_arguments
from algos.training.run_names import register_label_resolver
from algos.training.schema import TurnRLConfig, register_schema

register_schema()


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        config = check_config(cfg)
    except ValueError as error:
        sys.exit(f"Invalid config: {error}")
    from algos.training.checkpoint_files import CheckpointError  # after validation: imports the model stack
    from algos.training.nonfinite import NonFiniteTraining
    from algos.training.trainer import train

    hydra_config = HydraConfig.get()
    choices = hydra_config.runtime.choices
    run_dir = Path(hydra_config.runtime.output_dir)
    if hydra_config.mode == RunMode.MULTIRUN:  # <label>-seed<s>: seeds of one method (algos.training.run_names)
        label = run_dir.name.rsplit("-seed", 1)[0]
        config.trainer.experiment_name = config.trainer.experiment_name or f"{choices['env']}-{run_dir.name}"
        config.logger.wandb.group = config.logger.wandb.group or f"{choices['env']}-{label}"
    config.trainer.experiment_name = config.trainer.experiment_name or f"{choices['env']}-{choices['algo']}"
    try:
        result = train(config, run_dir, run_config=OmegaConf.to_container(cfg, resolve=True))
    except CheckpointError as error:
        sys.exit(f"Checkpoint error: {error}")
    except NonFiniteTraining as error:
        sys.exit(f"Training stopped: {error}")
    if result["stopped_by"]:  # checkpointed, but not finished: a scheduler must tell it from a finished run
        sys.exit(128 + signal.Signals[result["stopped_by"]].value)


if __name__ == "__main__":
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print("TurnRL training run. Override any key as key=value (e.g. actor_rollout_ref.actor.lr=1e-5).\n")
        print("== Keys (type = default) ==")
        print(help_text(TurnRLConfig) + "\n")
    else:
        try:
            sys.argv[1:] = ragen_arguments(sys.argv[1:])
            check_command_line(sys.argv[1:])
        except ValueError as error:
            sys.exit(f"Invalid config: {error}")
    register_label_resolver(sys.argv[1:])
    main()
