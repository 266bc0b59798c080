"""The trainer's re-roll on an empty keep (``rollout_filter_max_rerolls``) and its early stop on reward-variance
collapse (``trainer.early_stop_on_zero_variance``), on a scripted rollout engine with written-out rewards."""

from __future__ import annotations

import json

import pytest
import torch
from test_trainer import FixedAnswers, fake_run_config

from agents.model import build_tiny_model
from algos.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NO_ZERO_GROUPS = ["actor_rollout_ref.rollout.rollout_filter_include_zero=false",
                  "actor_rollout_ref.rollout.rollout_filter_value=2"]


class ScriptedRewards(FixedAnswers):
    """2 groups x 4 episodes; ``rewards(step, attempt)`` gives the 8 rewards, the attempts are recorded."""

    def __init__(self, tokenizer, rewards):
        super().__init__(tokenizer, env_groups=2, group_size=4)
        self.rewards, self.calls = rewards, []

    def rollout(self, step, params, attempt=0):
        self.calls.append((step, attempt))
        batch = super().rollout(step, params)
        batch.episode_reward = torch.tensor(self.rewards(step, attempt), dtype=torch.float32)
        return batch


def fit(tokenizer, tmp_path, engine, overrides):
    config = fake_run_config(["trainer.test_freq=-1", *overrides])  # validation would call rollout too
    result = Trainer(config, tmp_path, model=build_tiny_model(tokenizer, seed=0), tokenizer=tokenizer,
                     rollout_engine=engine).fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return result, rows


FLAT = [1.0] * 8  # every group's rewards equal: std 0, nothing kept without zero-score groups
VARIED = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]  # group 0 std 0.5774, group 1 std 0


def test_an_empty_keep_is_rerolled_on_fresh_levels(tokenizer, tmp_path):
    engine = ScriptedRewards(tokenizer, lambda step, attempt: FLAT if attempt < 2 else VARIED)
    result, rows = fit(tokenizer, tmp_path, engine,
                       [*NO_ZERO_GROUPS, "actor_rollout_ref.rollout.rollout_filter_max_rerolls=3"])
    assert engine.calls == [(1, 0), (1, 1), (1, 2)]
    assert rows[0]["rollout/rerolls"] == 2.0
    assert rows[0]["rollout/filter_kept_ratio"] == 0.5  # group 0 only
    assert rows[0]["rollout/in_group_std"] == pytest.approx(0.57735 / 2, rel=1e-4)
    assert rows[0]["rollout/chosen_in_group_std"] == pytest.approx(0.57735, rel=1e-4)
    assert result["step"] == 1


def test_once_the_cap_is_spent_the_last_batch_is_trained_whole_and_the_run_goes_on(tokenizer, tmp_path, capsys):
    # step 1: three flat batches (the cap of 2 spent); step 2: the first batch varies. top_k 1 of 2 groups:
    # a spent cap still trains both (the filter's own fallback would keep one)
    engine = ScriptedRewards(tokenizer, lambda step, attempt: FLAT if step == 1 else VARIED)
    result, rows = fit(tokenizer, tmp_path, engine, [*NO_ZERO_GROUPS, "trainer.total_training_steps=2",
                                                     "actor_rollout_ref.rollout.rollout_filter_value=1",
                                                     "actor_rollout_ref.rollout.rollout_filter_max_rerolls=2"])
    assert engine.calls == [(1, 0), (1, 1), (1, 2), (2, 0)] and result["step"] == 2
    assert (rows[0]["rollout/rerolls"], rows[0]["rollout/reroll_cap_spent"]) == (2.0, 1.0)
    assert rows[0]["rollout/filter_kept_ratio"] == 1.0  # the flat batch, every group
    assert rows[0]["rollout/chosen_in_group_std"] == rows[0]["rollout/in_group_std"] == 0.0
    assert (rows[1]["rollout/rerolls"], rows[1]["rollout/reroll_cap_spent"]) == (0.0, 0.0)
    assert rows[1]["rollout/filter_kept_ratio"] == 0.5
    printed = capsys.readouterr()
    assert "kept no group in 3 batches in a row" in printed.out + printed.err and "max_rerolls=2" in printed.out + printed.err


def test_without_rerolls_an_empty_keep_keeps_every_group(tokenizer, tmp_path):
    engine = ScriptedRewards(tokenizer, lambda step, attempt: FLAT)
    _, rows = fit(tokenizer, tmp_path, engine, NO_ZERO_GROUPS)
    assert engine.calls == [(1, 0)]
    assert rows[0]["rollout/filter_kept_ratio"] == 1.0 and "rollout/rerolls" not in rows[0]


def test_training_stops_early_once_the_reward_variance_collapses(tokenizer, tmp_path):
    # in-group std per step: 0.2887 (= mean of 0.5774 and 0) on steps 1-2, then 0: baseline 0.2887 over 2
    # steps, the 2-step window below 0.5 x baseline is complete at step 4.
    engine = ScriptedRewards(tokenizer, lambda step, attempt: VARIED if step <= 2 else FLAT)
    result, rows = fit(tokenizer, tmp_path, engine, [
        "trainer.total_training_steps=10", "trainer.early_stop_on_zero_variance=true",
        "trainer.early_stop_baseline_steps=2", "trainer.early_stop_window=2", "trainer.early_stop_ratio=0.5"])
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert [row["rollout/in_group_std"] for row in rows] == pytest.approx([0.288675, 0.288675, 0, 0], rel=1e-4)
    assert [row.get("early_stopped/reward_variance_collapse") for row in rows] == [None, None, None, 1.0]
    assert result["step"] == 4 and result["stopped_by"] is None
    assert result["metrics"]["early_stopped/reward_variance_collapse"] == 1.0


def test_no_early_stop_when_it_is_off(tokenizer, tmp_path):
    engine = ScriptedRewards(tokenizer, lambda step, attempt: VARIED if step <= 2 else FLAT)
    result, rows = fit(tokenizer, tmp_path, engine, [
        "trainer.total_training_steps=5",
        "trainer.early_stop_baseline_steps=2", "trainer.early_stop_window=2", "trainer.early_stop_ratio=0.5"])
    assert result["step"] == 5
    assert not any("early_stopped/reward_variance_collapse" in row for row in rows)
