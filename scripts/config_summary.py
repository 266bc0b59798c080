"""Print the key settings of a composed run config, one ``key = value`` a line (what
``scripts/runs/run_drgrpo_compare.sh`` shows before it runs, and all its ``--dry-run`` composes).

    python scripts/config_summary.py scale=ragen env=coord_sokoban model=qwen2.5_3b_instruct

The arguments are ``scripts/train.py``'s overrides; the config is composed from ``conf/`` and validated
as a run would be, so a bad override exits with status 2 and the message, before any job starts.
"""

from __future__ import annotations

import dataclasses
import sys
from functools import reduce

from algos.training.compose import compose_config
from algos.training.schema import TurnRLConfig

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


def key_settings(config: TurnRLConfig) -> dict[str, object]:
    """``{key: value}`` of ``KEY_SETTINGS`` in ``config`` (dataclasses as plain dicts)."""
    values = {key: reduce(getattr, key.split("."), config) for key in KEY_SETTINGS}
    return {key: [dataclasses.asdict(v) for v in value] if isinstance(value, list) else value
            for key, value in values.items()}


def main(overrides: list[str]) -> int:
    try:
        config = compose_config(overrides)
    except Exception as error:  # Hydra's errors (unknown key, bad group) and the schema's ValueError
        print(f"Invalid config: {error}", file=sys.stderr)
        return 2
    for key, value in key_settings(config).items():
        print(f"  {key} = {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
