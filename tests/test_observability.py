"""Seeing what the agent does: ``trajectories.jsonl`` rows match the rollout batch, the console summary
line, the format warm-up skip for trained models, multirun labels, and ``train.log``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from agents.backends.base import resolve_caps
from agents.rollout import RolloutEngine
from algos.training.run_names import method_label, swept_keys
from algos.training.schema import register_schema, validate
from algos.training.tracking import summary_line
from algos.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = ["env=bandit", "logger=console", "logger.progress_bar=false", "actor_rollout_ref.model.path=tiny-random",
            "actor_rollout_ref.rollout.name=hf", "actor_rollout_ref.rollout.response_length=16",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "es_manager.train.env_groups=2",
            "es_manager.train.group_size=2", "trainer.total_training_steps=1", "trainer.test_freq=-1",
            "format_warmup.steps=0", "algo=grpo"]
register_schema()


def tiny_config(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return validate(compose(config_name="config", overrides=[*TINY_RUN, *overrides]))


class AlternatingBackend:
    """Prompt ``i`` of every call answers the Dragon arm when ``i`` is even, and no answer when odd."""

    def __init__(self, tokenizer) -> None:
        self.replies = [tokenizer.encode(text, add_special_tokens=False)
                        for text in (" go</think><answer>Dragon</answer>", " no idea")]

    def generate(self, prompts, params, max_new_tokens=None):
        caps = resolve_caps(prompts, params, max_new_tokens)
        return [self.replies[i % 2][:cap] for i, cap in enumerate(caps)]

    def update_weights(self, model) -> None:
        pass


class RecordingEngine(RolloutEngine):
    def rollout(self, step, params, groups=None, shard=None, attempt=0):
        self.batch = super().rollout(step, params, groups, shard, attempt)
        return self.batch


def test_trajectory_rows_match_the_rollout_batch(tokenizer, tiny, tmp_path, one_torch_thread):
    config = tiny_config("trainer.log_trajectories_freq=1")
    engine = RecordingEngine(config.agent_config(), tokenizer, AlternatingBackend(tokenizer))
    Trainer(config, tmp_path, model=tiny, tokenizer=tokenizer, rollout_engine=engine).fit()
    rows = [json.loads(line) for line in (tmp_path / "trajectories.jsonl").read_text().splitlines()]
    batch = engine.batch
    assert [(r["step"], r["group"], r["member"], r["seed"]) for r in rows] == [
        (1, 0, 0, int(batch.seeds[0])), (1, 0, 1, int(batch.seeds[0])), (1, 1, 0, int(batch.seeds[2])),
        (1, 1, 1, int(batch.seeds[2]))]
    assert [r["success"] for r in rows] == [True, False, True, False] == batch.success.tolist()
    assert [r["reward"] for r in rows] == pytest.approx(batch.episode_reward.tolist())
    for row in rows:  # one turn each (bandit); the turn rewards add up to the episode reward
        assert len(row["turns"]) == 1 and sum(t["reward"] for t in row["turns"]) == pytest.approx(row["reward"])
        assert "Arm 1:" in row["turns"][0]["observation"]
    assert [r["turns"][0]["actions"] for r in rows] == [["Dragon"], [], ["Dragon"], []]
    assert [r["turns"][0]["format_ok"] for r in rows] == [True, False, True, False]
    assert rows[1]["reward"] == pytest.approx(-0.1)  # es_manager.format_penalty, no action
    # GRPO over two episodes a != b: (x - mean) / std = +-(|a - b| / 2) / (|a - b| / sqrt 2) = +-1/sqrt 2
    assert [r["advantage"] for r in rows] == pytest.approx([1 / math.sqrt(2), -1 / math.sqrt(2)] * 2, abs=1e-4)


def test_summary_line_shows_the_phase_timings():
    line = summary_line(3, {"reward": 0.5, "rollout/success_rate": 0.25, "timing/step_s": 2.04,
                            "timing/rollout_s": 1.52, "timing/update_s": 0.31})
    assert line == "step 3 | reward 0.500 | success 0.250 | s/step 2.0 (rollout 1.5, update 0.3)"


def test_format_warmup_is_skipped_for_a_trained_export(tokenizer, tiny, tmp_path, capsys):
    config = tiny_config("format_warmup.steps=2", f"actor_rollout_ref.model.path={tmp_path}/hf_model")
    trainer = Trainer(config, tmp_path, model=tiny, tokenizer=tokenizer, rollout_engine=object())
    assert trainer.warm_up_format() == {}
    assert f"format warm-up skipped: model.path={tmp_path}/hf_model is not the embedded" in capsys.readouterr().out


def test_multirun_labels_keep_only_swept_keys_besides_algo_and_seed():
    argv = ["-m", "env=sokoban", "algo=grpo,drgrpo", "actor_rollout_ref.rollout.rollout_filter_value=8,4",
            "seed=range(0,3)", "trainer.total_training_steps=2"]
    swept = swept_keys(argv)
    assert swept == {"algo", "actor_rollout_ref.rollout.rollout_filter_value", "seed"}
    task = ["env=sokoban", "algo=drgrpo", "actor_rollout_ref.rollout.rollout_filter_value=4", "seed=1",
            "trainer.total_training_steps=2"]
    assert method_label("drgrpo", task, swept) == "drgrpo-rollout_filter_value=4"
    assert method_label("grpo", ["algo=grpo", "seed=0"], swept_keys(["algo=grpo,drgrpo", "seed=0,1"])) == "grpo"


def test_multirun_of_two_algos_and_two_seeds_reads_as_two_methods_of_two_seeds(tmp_path):
    """One Hydra multirun (tiny model, 1 step each): <algo>-seed<s> sub-dirs, wandb groups per method,
    a train.log per job with its summary line; plot_compare.py reads 2 methods x 2 seeds."""
    import subprocess
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    import plot_compare

    sweep = tmp_path / "sweep"
    overrides = [item for item in TINY_RUN if not item.startswith(("algo=", "logger="))]
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "-m", *overrides, "algo=grpo,drgrpo",
               "seed=0,1", "logger=wandb", "logger.wandb.mode=offline", "trainer.log_trajectories_freq=1",
               f"hydra.sweep.dir={sweep}"]
    from test_trainer import _fresh_environment  # without the rendezvous port an in-process engine holds

    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=_fresh_environment())
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(path.name for path in sweep.iterdir() if path.is_dir())
    assert jobs == ["drgrpo-seed0", "drgrpo-seed1", "grpo-seed0", "grpo-seed1"]
    log = (sweep / "grpo-seed1" / "train.log").read_text()
    assert "step 1 | reward" in log and "s/step" in log
    assert "Setting accelerator to CPU" not in result.stdout + result.stderr
    assert len(list((sweep / "grpo-seed1" / "wandb").glob("offline-run-*"))) == 1
    assert len((sweep / "grpo-seed1" / "trajectories.jsonl").read_text().splitlines()) == 4  # 2 groups x 2
    summary = plot_compare.compare(sorted(sweep.iterdir()), tmp_path / "cmp")
    assert list(summary) == ["drgrpo", "grpo"]
    assert [len(summary[name]["runs"]) for name in summary] == [2, 2]
    assert all(summary[name]["curves"]["reward"]["n"] == [2] for name in summary)
