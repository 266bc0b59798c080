"""The critic of gae runs: built only for gae (a critic-free run holds no second model), its packed
shared-prompt values equal the plain forward, critic.warmup freezes the actor, turn scores are refused
for per-episode estimators, and a resumed gae run restores the critic's weights and Adam state."""

from __future__ import annotations

import json

import pytest
import torch
from test_trainer import TINY_RUN, compose_config

from agents.model import build_tiny_model
from algos.training.critic import ValueModel, micro_batch_values
from algos.training.schema import validate
from algos.training.trainer import Trainer
from algos.training.update_batch import MicroBatch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PPO = [*TINY_RUN, "algo=ppo", "trainer.test_freq=-1"]


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # tied weights count once


def test_a_critic_free_run_builds_no_critic_and_gae_builds_one_trunk_plus_a_head(tmp_path, tokenizer):
    policy_size = parameter_count(build_tiny_model(tokenizer))
    free = Trainer(validate(compose_config([*TINY_RUN, "algo=drgrpo_soft"])), tmp_path / "free")
    free.setup()
    assert free.critic is None
    assert not any(isinstance(module, ValueModel) for module in vars(free).values())
    assert parameter_count(free.engine.module) == policy_size  # the only model held
    ppo = Trainer(validate(compose_config(PPO)), tmp_path / "ppo")
    ppo.setup()
    critic = ppo.critic.engine.module
    assert isinstance(critic, ValueModel) and critic.trunk is not ppo.engine.module.model
    # the tiny model ties lm_head to the embeddings: the trunk holds all of its weights, the head adds 64 + 1
    assert parameter_count(critic) == policy_size + 64 + 1
    for name, value in critic.trunk.state_dict().items():  # same path and seed: the policy's initial trunk
        assert torch.equal(value, ppo.engine.module.model.state_dict()[name]), name


def test_packed_values_equal_the_plain_forward(tokenizer):
    model = ValueModel(build_tiny_model(tokenizer).model)
    torch.nn.init.normal_(model.value_head.weight, std=0.5)
    prompt = list(range(100, 112))  # 12 shared tokens, more than MIN_SHARED_TOKENS
    rows = [prompt + [5, 6, 7], prompt + [8, 9], prompt[:3] + [40, 41, 42, 43], prompt + [10]]
    width = max(map(len, rows))
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    loss_mask = torch.zeros_like(input_ids)
    for b, row in enumerate(rows):
        input_ids[b, : len(row)] = torch.tensor(row)
        attention_mask[b, : len(row)] = 1
        loss_mask[b, len(row) - 2 : len(row)] = 1
    micro = MicroBatch(input_ids, attention_mask, loss_mask[:, 1:], torch.zeros(len(rows), width - 1),
                       torch.tensor([0, 0, 1, 1]), None, None)
    with torch.no_grad():
        packed, plain = micro_batch_values(model, micro, True), micro_batch_values(model, micro, False)
    assert plain.abs().sum() > 0 and (plain[loss_mask[:, 1:] == 0] == 0).all()
    torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-4)


def test_warmup_trains_only_the_critic_then_both_with_bi_level_gae_and_turn_scores(tmp_path):
    config = validate(compose_config([*PPO, "critic.warmup=1", "algorithm.bi_level_gae=true",
                                      "agent_proxy.use_turn_scores=true", "actor_rollout_ref.actor.entropy_coeff=0.01",
                                      "critic.lr=1e-3", "actor_rollout_ref.actor.lr=1e-3"]))
    trainer = Trainer(config, tmp_path)
    trainer.setup()

    def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in module.parameters()]

    actor, critic = snapshot(trainer.engine.module), snapshot(trainer.critic.engine.module)
    first = trainer.train_step(1)
    assert all(torch.equal(a, b) for a, b in zip(actor, trainer.engine.module.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(critic, trainer.critic.engine.module.parameters(), strict=True))
    assert "actor/pg_loss" not in first and first["critic/vf_loss"] > 0
    assert trainer.policy_version == 0  # nothing to push to the rollout backend
    second = trainer.train_step(2)
    assert "actor/pg_loss" in second and second["critic/vpred_mean"] != 0.0
    assert not all(torch.equal(a, b) for a, b in zip(actor, trainer.engine.module.parameters(), strict=True))


def test_turn_scores_are_refused_for_estimators_with_one_reward_per_episode():
    with pytest.raises(ValueError, match=r"agent_proxy\.use_turn_scores=True is invalid; allowed: false with "
                                         r"algorithm\.adv_estimator='grpo'.*need gae"):
        validate(compose_config([*TINY_RUN, "algo=drgrpo", "agent_proxy.use_turn_scores=true"]))
    assert validate(compose_config([*PPO, "agent_proxy.use_turn_scores=true"])).agent_proxy.use_turn_scores
    with pytest.raises(ValueError, match=r"critic\.cliprange_value=0\.0 is invalid; allowed: > 0"):
        validate(compose_config([*PPO, "critic.cliprange_value=0"]))


def _rows(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("timing/")} for row in rows]


@pytest.mark.slow  # three short training runs
def test_a_resumed_gae_run_restores_the_critic_and_logs_the_same_metrics(tmp_path):
    run = [*PPO, "critic.lr=1e-3", "actor_rollout_ref.actor.lr=1e-3", "actor_rollout_ref.actor.entropy_coeff=0.01",
           "trainer.save_freq=1"]
    reference = Trainer(validate(compose_config([*run, "trainer.total_training_steps=2"])), tmp_path / "reference")
    reference.fit()
    Trainer(validate(compose_config([*run, "trainer.total_training_steps=1"])), tmp_path / "split").fit()
    manifest = json.loads((tmp_path / "split" / "checkpoints" / "global_step_1" / "manifest.json").read_text())
    assert any(name.startswith("critic/") for name in manifest["files"])  # the critic's files are verified too
    resumed = Trainer(validate(compose_config([*run, "trainer.total_training_steps=2", "trainer.resume=auto"])),
                      tmp_path / "split")
    resumed.fit()
    assert resumed.critic.engine.global_steps == reference.critic.engine.global_steps == 2
    expected = _rows(tmp_path / "reference")
    assert [row["step"] for row in expected] == [1, 2] and expected[0]["critic/vf_loss"] != expected[1]["critic/vf_loss"]
    assert _rows(tmp_path / "split") == expected
    for name, value in reference.critic.engine.module.state_dict().items():  # step 2 used the restored Adam state
        assert torch.equal(value, resumed.critic.engine.module.state_dict()[name]), name
    for name, value in reference.engine.module.state_dict().items():
        assert torch.equal(value, resumed.engine.module.state_dict()[name]), name
