"""Several env types in one batch (``es_manager.<split>.env_configs``): groups play their entry's env, metrics
per tag, validation on its own env configs with ``val/pass@k``, re-roll levels and config checks."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_rollout import SCRIPTED, ScriptedBackend
from test_trainer import TINY_RUN, compose_config

from agents.backends.base import resolve_caps
from agents.batch import RolloutBatch
from agents.config import AgentConfig, EnvConfig, EnvGroupConfig, EnvSplitConfig, ESManagerConfig
from agents.rollout import REROLL_SEED_STRIDE, RolloutEngine
from algos.training.schema import register_schema, validate
from algos.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
register_schema()

BANDIT, SOKOBAN = EnvConfig("bandit"), EnvConfig("sokoban", {"dim_room": [6, 6], "num_boxes": 1})
BANDIT_TEST = EnvConfig("bandit", {"name_split": "test"})


def mixed_engine(tokenizer, backend, val_split: EnvSplitConfig | None = None) -> RolloutEngine:
    """Train: group 0 Bandit, groups 1-2 Sokoban, 2 episodes each, 2 turns."""
    train = EnvSplitConfig(3, 2, [EnvGroupConfig("Bandit", 1, BANDIT), EnvGroupConfig("Sokoban", 2, SOKOBAN)])
    config = AgentConfig.of("sokoban", max_turn=2)
    config.es_manager = ESManagerConfig(train, val_split or EnvSplitConfig(1, 1))
    return RolloutEngine(config, tokenizer, backend)


def test_each_group_plays_its_env_and_each_tag_gets_its_metrics(tokenizer):
    # "Phoenix" is Bandit's low-risk arm (reward 0.1, one pull ends the episode) and no Sokoban action
    # (a format error per turn: 2 turns x -0.1).
    batch = mixed_engine(tokenizer, ScriptedBackend(tokenizer, ["x</think><answer>Phoenix</answer>"])).rollout(
        1, SCRIPTED)
    assert batch.tags == ["Bandit"] * 2 + ["Sokoban"] * 4
    assert batch.seeds.tolist() == [10000, 10000, 10001, 10001, 10002, 10002]
    assert "Phoenix" in batch.turns[0][1]["content"] and "Sokoban" in batch.turns[2][1]["content"]
    assert batch.episode_reward.tolist() == pytest.approx([0.1, 0.1, -0.2, -0.2, -0.2, -0.2])
    metrics = batch.metrics
    assert metrics["rollout/Bandit/mean_reward"] == pytest.approx(0.1)
    assert metrics["rollout/Bandit/mean_turns"] == 1.0
    assert metrics["rollout/Sokoban/mean_reward"] == pytest.approx(-0.2)
    assert metrics["rollout/Sokoban/mean_turns"] == 2.0
    assert metrics["rollout/mean_reward"] == pytest.approx((2 * 0.1 + 4 * -0.2) / 6)  # -0.1
    assert metrics["rollout/format_error_rate"] == pytest.approx(8 / 10)  # 8 Sokoban turns of 10
    assert metrics["rollout/Bandit/success_rate"] == metrics["rollout/Sokoban/success_rate"] == 0.0
    assert batch.select(torch.tensor([2])).tags == ["Sokoban", "Sokoban"]


class PerPromptBackend:
    """Prompt ``i`` of every call gets ``replies[i]``."""

    def __init__(self, tokenizer, replies):
        self.replies = [tokenizer.encode(text, add_special_tokens=False) for text in replies]

    def generate(self, prompts, params, max_new_tokens=None):
        caps = resolve_caps(prompts, params, max_new_tokens)
        return [self.replies[i][:cap] for i, cap in enumerate(caps)]


def test_validation_on_its_own_env_configs_with_pass_at_k(tokenizer):
    # BanditTest's arms are Trader (low risk) and Librarian (high risk, the success). Level 0: member 0
    # succeeds; level 1: neither member -> pass@2 = 1/2, success rate 1/4.
    val = EnvSplitConfig(2, 2, [EnvGroupConfig("BanditTest", None, BANDIT_TEST)])
    replies = ["x</think><answer>Librarian</answer>"] + ["x</think><answer>Trader</answer>"] * 3
    batch = mixed_engine(tokenizer, PerPromptBackend(tokenizer, replies), val).validate(SCRIPTED)
    assert batch.seeds.tolist() == [123, 123, 124, 124] and batch.tags == ["BanditTest"] * 4
    assert "Librarian" in batch.turns[0][1]["content"]
    assert batch.success.tolist() == [True, False, False, False]
    assert batch.metrics["rollout/BanditTest/success_rate"] == 0.25
    assert batch.pass_at_k() == {"val/pass@2": 0.5, "val/BanditTest/pass@2": 0.5}


def test_pass_at_k_on_a_written_out_batch():
    batch = RolloutBatch(*[torch.zeros(6, 1)] * 3, torch.arange(6) // 2, torch.zeros(6),
                         torch.tensor([True, False, False, False, True, True]), *[torch.zeros(6)] * 3,
                         [[]] * 6, {}, 2, tags=["A", "A", "B", "B", "B", "B"])
    # levels: A solved by member 0; B level 1 unsolved; B level 2 solved by both
    assert batch.pass_at_k() == pytest.approx({"val/pass@2": 2 / 3, "val/A/pass@2": 1.0, "val/B/pass@2": 0.5})
    assert replace(batch, group_size=1, tags=[]).pass_at_k() == {}  # pass@1 is val/success_rate


class SeedRecorder(ScriptedBackend):
    def __init__(self, tokenizer, replies):
        super().__init__(tokenizer, replies)
        self.seeds = []

    def generate(self, prompts, params, max_new_tokens=None):
        self.seeds.append(params.seed)
        return super().generate(prompts, params, max_new_tokens)


def test_a_reroll_plays_fresh_levels_with_fresh_sampling_seeds(tokenizer):
    backend = SeedRecorder(tokenizer, ["x</think><answer>Phoenix</answer>"])
    engine = mixed_engine(tokenizer, backend)
    params = replace(SCRIPTED, seed=7)
    first, again = engine.rollout(3, params), engine.rollout(3, params, attempt=2)
    assert first.seeds.tolist() == [10006, 10006, 10007, 10007, 10008, 10008]
    assert again.seeds.tolist() == [s + 2 * REROLL_SEED_STRIDE for s in first.seeds.tolist()]
    assert REROLL_SEED_STRIDE == 10**7
    # turn seeds: SeedSequence([seed, stream, step - 1, (attempt,) turn]); attempt 0 keeps the train stream
    expected = [int(np.random.SeedSequence(key).generate_state(1)[0])
                for key in ([7, 0, 2, 1], [7, 0, 2, 2], [7, 2, 2, 2, 1], [7, 2, 2, 2, 2])]
    assert backend.seeds == expected
    with pytest.raises(ValueError, match="attempt=-1"):
        engine.rollout(1, params, attempt=-1)


@pytest.mark.parametrize(("split", "message"), [
    (EnvSplitConfig(3, 2, [EnvGroupConfig("A", 1, BANDIT), EnvGroupConfig("B", 1, BANDIT)]), "adding up to"),
    (EnvSplitConfig(3, 2, [EnvGroupConfig("A", None, BANDIT), EnvGroupConfig("B", None, BANDIT)]), "a multiple"),
    (EnvSplitConfig(2, 2, [EnvGroupConfig("A", 1, BANDIT), EnvGroupConfig("A", 1, BANDIT)]), "unique"),
    (EnvSplitConfig(2, 2, [EnvGroupConfig("", 2, BANDIT)]), "non-empty"),
    (EnvSplitConfig(2, 2, [EnvGroupConfig("A", 2, BANDIT), EnvGroupConfig("B", None, BANDIT)]), "null in every"),
])
def test_bad_env_configs_are_refused_naming_the_key(split, message):
    with pytest.raises(ValueError, match=rf"es_manager\.train\..*{message}"):
        ESManagerConfig(train=split)


def test_an_unknown_env_in_env_configs_is_refused_before_any_model_loads():
    bad = "es_manager.val.env_configs=[{tag: X, env: {name: chess}}]"
    with pytest.raises(ValueError, match=r"es_manager\.val\.env_configs\[0\]\.env\.name='chess'"):
        validate(compose_config([*TINY_RUN, bad]))
    bad = "es_manager.train.env_configs=[{tag: X, n_groups: 2, env: {name: bandit, kwargs: {name_split: dev}}}]"
    with pytest.raises(ValueError, match=r"es_manager\.train\.env_configs\[0\]\.env\.kwargs for 'bandit'"):
        validate(compose_config([*TINY_RUN, bad]))


def test_training_on_bandit_and_sokoban_in_one_batch_validated_on_bandit_test(tmp_path):
    config = validate(compose_config([
        *TINY_RUN, "trainer.test_freq=1", "agent_proxy.max_turn=2",
        "es_manager.train.env_configs=[{tag: Bandit, n_groups: 1, env: {name: bandit}},"
        " {tag: Sokoban, n_groups: 1, env: {name: sokoban}}]",
        "es_manager.val.group_size=2",
        "es_manager.val.env_configs=[{tag: BanditTest, env: {name: bandit, kwargs: {name_split: test}}}]",
    ]))
    train(config, tmp_path)
    (row,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert row["rollout/num_episodes"] == 4
    for tag in ("Bandit", "Sokoban"):
        assert {f"rollout/{tag}/{name}" for name in ("success_rate", "mean_reward", "mean_turns")} <= set(row)
    assert row["rollout/mean_reward"] == pytest.approx(
        (row["rollout/Bandit/mean_reward"] + row["rollout/Sokoban/mean_reward"]) / 2)
    assert row["rollout/Bandit/mean_turns"] <= 2 and row["rollout/Sokoban/mean_turns"] <= 2
    assert row["val/BanditTest/success_rate"] == row["val/success_rate"]
    assert row["val/pass@2"] == row["val/BanditTest/pass@2"]
    assert row["val/success_rate"] <= row["val/pass@2"] <= 1.0
    assert not any(key.startswith("val/Bandit/") for key in row)  # validation played BanditTest only


def test_a_fixed_pool_of_training_levels_cycles_and_rerolls_stay_in_it(tokenizer):
    # Procgen's num_levels: 3 groups a step over a pool of 4 levels -> step 1: 0 1 2, step 2: 3 0 1, ...
    backend = ScriptedBackend(tokenizer, ["x</think><answer>Phoenix</answer>"])
    engine = mixed_engine(tokenizer, backend)
    engine.config.es_manager.train_num_levels = 4
    levels = [engine.rollout(step, SCRIPTED).seeds.tolist()[::2] for step in (1, 2, 3)]
    assert levels == [[10000, 10001, 10002], [10003, 10000, 10001], [10002, 10003, 10000]]
    assert engine.rollout(1, SCRIPTED, attempt=1).seeds.tolist()[::2] == [10003, 10000, 10001]
    assert engine.rollout(1, SCRIPTED, groups=[2]).seeds.tolist() == [10002, 10002]
    with pytest.raises(ValueError, match="es_manager.train_num_levels"):
        ESManagerConfig(train_num_levels=0)
    assert validate(compose_config(["es_manager.train_num_levels=8"])).es_manager.train_num_levels == 8
