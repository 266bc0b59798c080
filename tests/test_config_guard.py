"""Bad configs are refused before any model loads and before Hydra makes a run dir, with the key named:
unknown keys (also with + / ++) with "did you mean", the pre-load checks, and the 50+ fuzz lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from algos.training.config_keys import check_composed_keys, check_override_keys
from algos.training.preflight import CONF_DIR, check_config
from algos.training.schema import register_schema

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from fuzz_config import CASES, failure  # noqa: E402

TINY = ["env=bandit", "logger=console", "actor_rollout_ref.model.path=tiny-random", "format_warmup.steps=0"]
register_schema()


def composed(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=[*TINY, *overrides])


@pytest.mark.parametrize("line", ["+trainer.totl_training_steps=5", "++trainer.totl_training_steps=5",
                                  "trainer.totl_training_steps=5"])
def test_a_typo_is_refused_with_or_without_plus_and_gets_a_suggestion(line):
    with pytest.raises(ValueError, match=r"unknown key 'trainer\.totl_training_steps'; did you mean "
                                         r"trainer\.total_training_steps"):
        check_override_keys([line], {"env", "algo", "trainer"})


def test_a_key_hydra_let_in_with_plus_is_caught_in_the_composed_config():
    cfg = composed(["++algorithm.tua=0.3"])  # Hydra adds it to the structured config
    assert cfg.algorithm.tua == 0.3
    with pytest.raises(ValueError, match=r"unknown key 'algorithm\.tua'; did you mean algorithm\.tau"):
        check_config(cfg)


def test_only_open_dicts_take_new_keys_and_groups_and_hydra_keys_pass():
    check_override_keys(["+env.kwargs.dim_room=[5,5]", "env=sokoban", "trainer=default", "hydra.run.dir=x",
                         "~logger.wandb.group"], {"env", "trainer"})
    check_composed_keys(composed(["env=sokoban", "++env.kwargs.num_boxes=2"]))
    with pytest.raises(ValueError, match="unknown key 'trainer.dim_room'"):
        check_override_keys(["+trainer.dim_room=3"], {"env", "trainer"})


def test_degenerate_settings_warn_once_loudly(capsys):
    check_config(composed(["actor_rollout_ref.rollout.max_model_len=260"]))
    check_config(composed(["actor_rollout_ref.rollout.max_model_len=260"]))
    err = capsys.readouterr().err
    # Bandit's first prompt is 225 tokens with this tokenizer: 35 are left of the 64-token reply
    assert err.count("WARNING: actor_rollout_ref.rollout.max_model_len=260: the first prompt of env 'bandit' "
                     "(level 10000) has 225 tokens, which leaves 35 tokens for the first reply") == 1
    with pytest.warns(UserWarning):
        check_config(composed(["es_manager.train.group_size=1"]))
    assert "WARNING: es_manager.train.group_size=1 with algorithm.adv_estimator=grpo" in capsys.readouterr().err


def test_fifty_bad_override_lines_each_fail_naming_the_key():
    assert len(CASES) >= 50
    assert [(line, failure(line, expected)) for line, expected in CASES if failure(line, expected)] == []


def test_the_command_line_fails_before_hydra_makes_a_run_dir(tmp_path):
    for number, line in enumerate(["seed=-1", "+trainer.totl_training_steps=5"]):
        run_dir = tmp_path / f"run{number}"
        result = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), *TINY, line,
                                 f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=300,
                                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert result.returncode == 1, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1].startswith("Invalid config: ")
        assert line.split("=")[0].lstrip("+") in result.stderr
        assert not run_dir.exists()
        assert "Setting accelerator" not in result.stdout + result.stderr  # DeepSpeed never imported
