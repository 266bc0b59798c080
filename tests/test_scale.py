"""The ``scale`` config group: the seed's command (``run_drgrpo_compare.sh --task sokoban --model_size 3B``)
composes RAGEN's GPU settings key by key, Bandit gets RAGEN's per-env values, ``scale=cpu`` changes nothing."""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from algos.training.schema import TurnRLConfig, register_schema, validate

REPO = Path(__file__).resolve().parents[1]
register_schema()

# RAGEN's value at the seed's commit (config/base.yaml, _2_sokoban.yaml, envs.yaml CoordSokoban and the
# seed's run_drgrpo_compare.sh), the TurnRL key that holds it, and the value.
RAGEN_SOKOBAN_3B = [
    ("model_path (script: Qwen/Qwen2.5-${MODEL_SIZE}-Instruct)", "actor_rollout_ref.model.path",
     "Qwen/Qwen2.5-3B-Instruct"),
    ("es_manager.train.env_groups", "es_manager.train.env_groups", 8),
    ("es_manager.train.group_size", "es_manager.train.group_size", 16),
    ("es_manager.val.env_groups", "es_manager.val.env_groups", 512),
    ("es_manager.val.group_size", "es_manager.val.group_size", 1),
    ("es_manager.format_penalty", "es_manager.format_penalty", -0.1),
    ("seed.train", "es_manager.train_seed_start", 10000),
    ("seed.val", "es_manager.val_seed_start", 123),
    ("agent_proxy.max_turn", "agent_proxy.max_turn", 5),
    ("agent_proxy.max_actions_per_turn", "agent_proxy.max_actions_per_turn", 2),
    ("agent_proxy.enable_think", "agent_proxy.enable_think", True),
    ("actor.optim.lr", "actor_rollout_ref.actor.lr", 1e-6),
    ("ppo_mini_batch_size", "actor_rollout_ref.actor.ppo_mini_batch_size", 32),
    ("micro_batch_size_per_gpu", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", 4),
    ("actor.clip_ratio_low", "actor_rollout_ref.actor.clip_ratio_low", 0.2),
    ("actor.clip_ratio_high", "actor_rollout_ref.actor.clip_ratio_high", 0.28),
    ("actor.entropy_coeff", "actor_rollout_ref.actor.entropy_coeff", 0.001),
    ("actor.use_kl_loss (script)", "actor_rollout_ref.actor.use_kl_loss", False),
    ("actor.loss_agg_mode (GRPO job)", "actor_rollout_ref.actor.loss_agg_mode", "seq-mean-token-mean"),
    ("algorithm.adv_estimator (script)", "algorithm.adv_estimator", "grpo"),
    ("algorithm.norm_adv_by_std_in_grpo (GRPO job)", "algorithm.norm_adv_by_std_in_grpo", True),
    ("rollout.rollout_filter_strategy (script)", "actor_rollout_ref.rollout.rollout_filter_strategy", "top_k"),
    ("rollout.rollout_filter_value (NoFilter job)", "actor_rollout_ref.rollout.rollout_filter_value", 8),
    ("rollout.response_length", "actor_rollout_ref.rollout.response_length", 400),
    ("rollout.max_model_len", "actor_rollout_ref.rollout.max_model_len", 3600),
    ("rollout.temperature", "actor_rollout_ref.rollout.temperature", 1.0),
    ("rollout.val_kwargs.do_sample", "actor_rollout_ref.rollout.val_kwargs.do_sample", True),
    ("rollout.val_kwargs.temperature", "actor_rollout_ref.rollout.val_kwargs.temperature", 0.5),
    ("trainer.total_training_steps (script --steps 200)", "trainer.total_training_steps", 200),
    ("trainer.test_freq", "trainer.test_freq", 10),
    ("trainer.val_before_train (script)", "trainer.val_before_train", False),
    ("trainer.save_freq (script)", "trainer.save_freq", -1),
    ("CoordSokoban env_type", "env.name", "sokoban"),
    ("CoordSokoban dim_x, dim_y", "env.kwargs.dim_room", [6, 6]),
    ("CoordSokoban num_boxes", "env.kwargs.num_boxes", 1),
    ("CoordSokoban max_steps", "env.kwargs.max_steps", 100),
    ("CoordSokoban observation_format", "env.kwargs.observation_format", "grid_coord"),
]


def compose_run(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return compose(config_name="config", overrides=overrides)


def dry_run(*args: str) -> str:
    result = subprocess.run(["bash", str(REPO / "scripts" / "runs" / "run_drgrpo_compare.sh"), *args, "--dry-run"],
                            capture_output=True, text=True, timeout=60, cwd=REPO,
                            env={**os.environ, "TURNRL_PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def seed_command_output() -> str:
    return dry_run("--task", "sokoban", "--model_size", "3B", "--gpus", "0,1,2,3")


def test_the_seed_command_composes_ragens_settings_key_by_key(seed_command_output):
    lines = seed_command_output.splitlines()
    first_job = shlex.split(lines[lines.index("commands:") + 1])
    overrides = first_job[first_job.index(next(w for w in first_job if w.endswith("train.py"))) + 1:]
    assert overrides[:2] == ["scale=ragen", "env=coord_sokoban"]
    cfg = compose_run([o for o in overrides if not o.startswith("hydra.")])
    validate(cfg)
    for ragen_key, key, value in RAGEN_SOKOBAN_3B:
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert got == value, f"RAGEN's {ragen_key} is {value!r}; TurnRL's {key} composed to {got!r}"
    assert OmegaConf.select(cfg, "agent_proxy.max_actions_per_traj") is None  # -> Sokoban's 10, as CoordSokoban


def test_the_dry_run_prints_ragens_settings(seed_command_output):
    for line in ("scale=ragen env=coord_sokoban model=qwen2.5_3b_instruct; key settings of every job:",
                 "  es_manager.train.group_size = 16", "  es_manager.val.env_groups = 512",
                 "  agent_proxy.max_turn = 5", "  agent_proxy.max_actions_per_turn = 2",
                 "  actor_rollout_ref.actor.lr = 1e-06", "  actor_rollout_ref.actor.ppo_mini_batch_size = 32",
                 "  actor_rollout_ref.actor.clip_ratio_high = 0.28", "  actor_rollout_ref.actor.entropy_coeff = 0.001",
                 "  actor_rollout_ref.rollout.response_length = 400", "  actor_rollout_ref.rollout.max_model_len = 3600",
                 "  actor_rollout_ref.rollout.val_kwargs.do_sample = True",
                 "  actor_rollout_ref.rollout.val_kwargs.temperature = 0.5"):
        assert line in seed_command_output.splitlines(), line
    assert sum(line.startswith("env CUDA_VISIBLE_DEVICES=") for line in seed_command_output.splitlines()) == 6


def test_bandit_at_ragen_scale_takes_ragens_bandit_values():
    config = validate(compose_run(["scale=ragen", "env=bandit"]))
    assert config.actor_rollout_ref.rollout.response_length == 500  # _1_bandit.yaml
    assert (config.agent_proxy.max_turn, config.agent_proxy.max_actions_per_turn) == (1, 1)
    assert config.es_manager.train.group_size == 16 and config.es_manager.train.env_configs == []
    groups = config.es_manager.val.group_envs(config.env)  # RAGEN: tags [Bandit, BanditTest], n_groups [256, 256]
    assert len(groups) == 512
    assert [(tag, env.kwargs["name_split"]) for tag, env in (groups[0], groups[255], groups[256], groups[511])] == [
        ("Bandit", "train"), ("Bandit", "train"), ("BanditTest", "test"), ("BanditTest", "test")]


@pytest.mark.filterwarnings("ignore:GSM8K")  # offline: the generated GSM8K-format set
def test_an_envs_own_choice_wins_over_the_scale():
    config = validate(compose_run(["scale=ragen", "env=gsm8k"]))
    assert config.actor_rollout_ref.rollout.response_length == 512  # gsm8k.yaml, not the scale's 400
    assert config.agent_proxy.max_turn == 1


def test_the_compare_script_picks_cpu_for_135m_and_ragen_for_qwen():
    assert "scale=cpu env=sokoban model=smollm2_135m;" in dry_run("--task", "sokoban", "--model_size", "135M")
    assert "scale=ragen env=coord_frozenlake model=qwen2.5_7b_instruct;" in dry_run(
        "--task", "frozenlake", "--model_size", "7B")


def test_scale_cpu_changes_nothing():
    default = OmegaConf.to_object(compose_run([]))
    assert dataclasses.asdict(OmegaConf.to_object(compose_run(["scale=cpu"]))) == dataclasses.asdict(default)
    assert isinstance(default, TurnRLConfig)
