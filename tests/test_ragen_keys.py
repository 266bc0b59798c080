"""RAGEN's spellings: each maps onto TurnRL's key (checked on the composed config) or is refused with a
message naming TurnRL's way or why it is not supported; the README lists every row of the table."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from algos.training.preflight import CONF_DIR, check_config
from algos.training.ragen_keys import RAGEN_KEYS, ragen_arguments
from algos.training.schema import register_schema

REPO = Path(__file__).resolve().parents[1]
TINY = ["logger=console", "actor_rollout_ref.model.path=tiny-random", "format_warmup.steps=0"]
register_schema()
ARR = "actor_rollout_ref."

MAPPED = [  # (RAGEN's arguments, {TurnRL key: composed value})
    (["model_path=tiny-random"], {"actor_rollout_ref.model.path": "tiny-random"}),
    (["micro_batch_size_per_gpu=2"], {ARR + "actor.ppo_micro_batch_size_per_gpu": 2}),
    (["ppo_mini_batch_size=32"], {ARR + "actor.ppo_mini_batch_size": 32}),
    ([ARR + "actor.micro_batch_size_per_gpu=3"], {ARR + "actor.ppo_micro_batch_size_per_gpu": 3}),
    ([ARR + "actor.optim.lr=1e-6"], {ARR + "actor.lr": 1e-6}),
    ([ARR + "actor.optim.weight_decay=0.1"], {ARR + "actor.weight_decay": 0.1}),
    ([ARR + "actor.clip_ratio=0.3"], {ARR + "actor.clip_ratio_low": 0.3, ARR + "actor.clip_ratio_high": 0.3}),
    ([ARR + "rollout.top_k=-1"], {ARR + "rollout.top_p": 1.0}),  # off in both: dropped
    ([ARR + "rollout.rollout_filter_ratio=0.25"],
     {ARR + "rollout.rollout_filter_strategy": "ratio", ARR + "rollout.rollout_filter_value": 0.25}),
    ([ARR + "rollout.rollout_filter_type=std"],
     {ARR + "rollout.rollout_filter_metric": "reward_std", ARR + "rollout.rollout_filter_type": "largest"}),
    ([ARR + "rollout.rollout_filter_metric=reward_variance"], {ARR + "rollout.rollout_filter_metric": "reward_variance"}),
    (["algorithm.gamma=1.0", "algorithm.lam=1"], {"algorithm.gamma": 1.0, "algorithm.lam": 1.0}),  # TurnRL's own keys
    (["critic.optim.lr=2e-6", "critic.model.path=tiny-random"], {"critic.lr": 2e-6, "critic.model_path": "tiny-random"}),
    (["trainer.logger=['console','wandb']"], {"logger.backend": "wandb"}),
    (["trainer.logger=[console]"], {"logger.backend": "console"}),
    (["trainer.n_gpus_per_node=1"], {"trainer.total_training_steps": 3}),
    (["trainer.max_actor_ckpt_to_keep=5"], {"trainer.max_ckpt_to_keep": 5}),
    (["es_manager.train.env_configs.tags=[CoordSokoban]", "es_manager.val.env_configs.tags=[CoordSokoban]"],
     {"env.name": "sokoban", "env.kwargs.observation_format": "grid_coord"}),
    (["es_manager.train.env_configs.n_groups=[8]", "es_manager.val.env_configs.n_groups=[16]"],
     {"es_manager.train.env_groups": 8, "es_manager.val.env_groups": 16}),
    (["--config-name", "_2_sokoban", "custom_envs.SimpleSokoban.env_config.num_boxes=2"],
     {"env.name": "sokoban", "env.kwargs.num_boxes": 2}),
    (["--config-name=_3_frozen_lake", "custom_envs.FrozenLake.max_actions_per_traj=7"],
     {"env.name": "frozenlake", "agent_proxy.max_actions_per_traj": 7}),
    (["agent_proxy.action_sep=||", "+lora.rank=0", "enable_response_mask=True"], {"agent_proxy.max_turn": 1}),
    (["seed.train=5", "seed.val=7"], {"es_manager.train_seed_start": 5, "es_manager.val_seed_start": 7}),
    (["algorithm.kl_ctrl.kl_coef=0.0"], {ARR + "actor.use_kl_loss": False}),
]

REFUSED = [  # (RAGEN's argument, the message)
    (ARR + "rollout.top_k=50", "RAGEN's `actor_rollout_ref.rollout.top_k`: 50 is not supported: TurnRL's backends "
                               "sample with temperature and top_p only"),
    ("trainer.n_gpus_per_node=8", "RAGEN's `trainer.n_gpus_per_node=8` is TurnRL's `torchrun --nproc_per_node 8 "
                                  "scripts/train.py ...` (one process per GPU)"),
    (ARR + "actor.use_ref=True", "RAGEN's `actor_rollout_ref.actor.use_ref` is TurnRL's "
                                 "`actor_rollout_ref.actor.use_kl_loss"),
    ("custom_envs.SimpleSokoban.env_config.dim_x=8", "is TurnRL's `env.kwargs.dim_room=[rows,cols]`"),
    ("agent_proxy.action_sep='|'", "RAGEN's `agent_proxy.action_sep`: '|' is not supported: TurnRL's parser splits"),
    ("algorithm.kl_ctrl.kl_coef=0.001", "no KL penalty in the reward; use actor_rollout_ref.actor.use_kl_loss=true"),
    ("trainer.local_log_dir=results/", "RAGEN's `trainer.local_log_dir` is TurnRL's `hydra.run.dir"),
    ("trainer.max_critic_ckpt_to_keep=3", "RAGEN's `trainer.max_critic_ckpt_to_keep` is TurnRL's `trainer.max_ckpt_to_keep"),
    ("lora.rank=16", "RAGEN's `lora.rank`: 16 is not supported: TurnRL fine-tunes every weight"),
    ("es_manager.train.env_configs.tags=[Bandit,SimpleSokoban]", "one env type per run"),
    ("es_manager.train.env_configs.tags=[WebShop]", "WebShop is not supported: TurnRL has no such env"),
    (ARR + "rollout.gpu_memory_utilization=0.5", "vLLM engine settings are chosen by TurnRL's vllm backend"),
    ("--config-name=_4_countdown", "RAGEN's `--config-name _4_countdown`: not supported"),
]


def composed_value(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize(("args", "expected"), MAPPED, ids=[" ".join(args) for args, _ in MAPPED])
def test_ragen_overrides_map_onto_turnrl_keys(args, expected):
    overrides = ragen_arguments([*TINY, *args])
    assert not any(arg.startswith("-") for arg in overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=["env=bandit", *overrides])
    check_config(cfg)
    assert {key: composed_value(cfg, key) for key in expected} == expected


@pytest.mark.parametrize(("arg", "message"), REFUSED, ids=[arg for arg, _ in REFUSED])
def test_other_ragen_keys_are_refused_naming_turnrls_way(arg, message):
    with pytest.raises(ValueError) as error:
        ragen_arguments([*TINY, arg])
    assert message in str(error.value)


def test_the_readme_lists_every_row_of_the_table():
    readme = (REPO / "README.md").read_text()
    missing = [pattern for row in RAGEN_KEYS for pattern in row.patterns if f"`{pattern}`" not in readme]
    assert missing == []
    assert len(MAPPED) + len(REFUSED) >= 20
