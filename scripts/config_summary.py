"""Print the key settings of a composed run config, one ``key = value`` a line (what
``scripts/runs/run_drgrpo_compare.sh`` shows before it runs, and all its ``--dry-run`` composes).

    python scripts/config_summary.py scale=ragen env=coord_sokoban model=qwen2.5_3b_instruct

The arguments are ``scripts/train.py``'s overrides; the config is composed from ``conf/`` and validated
as a run would be, so a bad override exits with status 2 and the message, before any job starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from algos.training.schema import register_schema, validate

CONF = Path(__file__).resolve().parents[1] / "conf"
KEY_SETTINGS = (
    "env.name", "env.kwargs", "actor_rollout_ref.model.path",
    "es_manager.train.env_groups", "es_manager.train.group_size", "es_manager.train.env_configs",
    "es_manager.val.env_groups", "es_manager.val.group_size", "es_manager.val.env_configs",
    "agent_proxy.max_turn", "agent_proxy.max_actions_per_turn",
    "actor_rollout_ref.actor.lr", "actor_rollout_ref.actor.ppo_mini_batch_size",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", "actor_rollout_ref.actor.clip_ratio_low",
    "actor_rollout_ref.actor.clip_ratio_high", "actor_rollout_ref.actor.entropy_coeff",
    "actor_rollout_ref.rollout.response_length", "actor_rollout_ref.rollout.max_model_len",
    "actor_rollout_ref.rollout.temperature", "actor_rollout_ref.rollout.val_kwargs.do_sample",
    "actor_rollout_ref.rollout.val_kwargs.temperature", "trainer.total_training_steps", "trainer.test_freq",
)
"""The settings a scale changes (``conf/scale``), plus the env and model they apply to."""


def compose_run(overrides: list[str]) -> DictConfig:
    """``conf/config.yaml`` composed with ``overrides`` and validated (``ValueError`` naming a bad key)."""
    register_schema()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    validate(cfg)
    return cfg


def key_settings(cfg: DictConfig) -> dict[str, object]:
    """``{key: value}`` of ``KEY_SETTINGS`` in ``cfg`` (containers as plain lists and dicts)."""
    values = {key: OmegaConf.select(cfg, key) for key in KEY_SETTINGS}
    return {key: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for key, v in values.items()}


def main(overrides: list[str]) -> int:
    try:
        cfg = compose_run(overrides)
    except Exception as error:  # Hydra's errors (unknown key, bad group) and the schema's ValueError
        print(f"Invalid config: {error}", file=sys.stderr)
        return 2
    for key, value in key_settings(cfg).items():
        print(f"  {key} = {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
