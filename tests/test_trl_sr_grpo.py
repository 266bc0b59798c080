"""SRGRPOTrainer: TRL trains with exactly `compute_advantages(..., estimator="sr_grpo")` of its rewards."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from agents.model import build_tiny_model, load_tokenizer  # noqa: E402
from algos import compute_advantages  # noqa: E402
from algos.integrations.trl_sr_grpo import (  # noqa: E402
    SRGRPOConfig,
    SRGRPOTrainer,
    check_trl_version,
    sr_grpo_advantages,
)

GROUP_SIZE = 4
NUM_PROMPTS = 2
TAU = 0.3


def token_sum_reward(completion_ids: list[list[int]], **_: object) -> list[float]:
    """A reward that differs between random completions: (sum of token ids mod 5) / 4."""
    return [(sum(ids) % 5) / 4 for ids in completion_ids]


def first_token_parity_reward(completion_ids: list[list[int]], **_: object) -> list[float]:
    return [float(ids[0] % 2) for ids in completion_ids]


class RecordingTrainer(SRGRPOTrainer):
    """Keeps the rewards TRL computed, the advantages it scored and the advantages the loss received."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.recorded_rewards: list[torch.Tensor] = []
        self.scored_advantages: list[torch.Tensor] = []
        self.loss_advantages: list[torch.Tensor] = []

    def _calculate_rewards(self, *args: object) -> torch.Tensor:
        rewards = super()._calculate_rewards(*args)
        self.recorded_rewards.append(rewards.clone())
        return rewards

    def _generate_and_score_completions(self, inputs: list[dict]) -> dict:
        output = super()._generate_and_score_completions(inputs)
        self.scored_advantages.append(output["advantages"].clone())
        return output

    def _compute_loss(self, model: torch.nn.Module, inputs: dict) -> torch.Tensor:
        self.loss_advantages.append(inputs["advantages"].clone())
        return super()._compute_loss(model, inputs)


def tiny_config(tmp_path: Path, **overrides: Path) -> SRGRPOConfig:
    settings = dict(
        output_dir=str(tmp_path), tau=TAU, num_generations=GROUP_SIZE,
        per_device_train_batch_size=GROUP_SIZE * NUM_PROMPTS, max_completion_length=8, max_steps=1,
        beta=0.1, learning_rate=1e-3, logging_steps=1, report_to="none", save_strategy="no",
        use_cpu=True, bf16=False, seed=0,
    )
    return SRGRPOConfig(**{**settings, **overrides})


def test_one_trl_step_trains_with_the_sr_grpo_estimator(tmp_path: Path) -> None:
    tokenizer = load_tokenizer()
    model_dir = tmp_path / "tiny"  # TRL builds the beta > 0 reference model from the policy's path
    build_tiny_model(tokenizer).save_pretrained(model_dir)
    dataset = datasets.Dataset.from_dict({"prompt": ["What is 2 + 3?", "Name a colour."]})
    trainer = RecordingTrainer(model=str(model_dir), reward_funcs=[token_sum_reward, first_token_parity_reward],
                               args=tiny_config(tmp_path / "out", reward_weights=[1.0, 0.5]),
                               train_dataset=dataset, processing_class=tokenizer)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()

    (rewards_per_func,) = trainer.recorded_rewards
    rewards = rewards_per_func[:, 0] + 0.5 * rewards_per_func[:, 1]  # TRL's weighted sum of the functions
    assert rewards.shape == (GROUP_SIZE * NUM_PROMPTS,) and rewards.unique().numel() > 1
    expected, metrics = compute_advantages(rewards.view(-1, GROUP_SIZE), estimator="sr_grpo", tau=TAU)
    (scored,) = trainer.scored_advantages
    torch.testing.assert_close(scored, expected.reshape(-1), rtol=0, atol=0)
    (trained,) = trainer.loss_advantages  # TRL shuffles the batch before the loss: same values, new order
    torch.testing.assert_close(trained.sort().values, expected.reshape(-1).sort().values, rtol=0, atol=0)

    logged = trainer.state.log_history[0]
    assert logged["soft_advantage_mean"] == pytest.approx(metrics["soft_advantage_mean"], rel=1e-6)
    assert logged["soft_advantage_std"] == pytest.approx(metrics["soft_advantage_std"], rel=1e-6)
    for trl_metric in ("reward", "reward_std", "kl", "completions/mean_length"):
        assert trl_metric in logged
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


def test_sr_grpo_advantages_hand_computed() -> None:
    # group [1, 0]: mean 0.5, std sqrt(0.5) = 0.707107, z = +-0.5 / (0.707107 + 1e-6) = +-0.707106,
    #   w = softmax(z / 0.5) puts 1 / (1 + exp(-2 * 1.414212)) = 0.944193 on the 1 -> A_soft = 0.944193
    # group [2, 2]: std 0 -> z = 0, uniform weights -> A_soft = 2
    rewards = torch.tensor([1.0, 0.0, 2.0, 2.0])
    advantages, metrics = sr_grpo_advantages(rewards, group_size=2, tau=0.5)
    weight_of_one = 1 / (1 + math.exp(-2 * (2 * 0.5 / (math.sqrt(0.5) + 1e-6))))
    assert weight_of_one == pytest.approx(0.944193, abs=1e-6)
    torch.testing.assert_close(advantages, torch.tensor([weight_of_one, weight_of_one, 2.0, 2.0]))
    assert metrics["soft_advantage_mean"] == pytest.approx((weight_of_one + 2) / 2)
    assert metrics["soft_advantage_std"] == pytest.approx((2 - weight_of_one) / math.sqrt(2))


def test_unscorable_completions_get_zero_and_leave_their_group() -> None:
    nan = float("nan")
    rewards = torch.tensor([1.0, nan, 0.0, 3.0, nan, nan])  # groups of 3: [1, -, 0] and [3, -, -]
    advantages, metrics = sr_grpo_advantages(rewards, group_size=3, tau=0.5)
    first, _ = compute_advantages(torch.tensor([[1.0, 0.0]]), estimator="sr_grpo", tau=0.5)
    soft = first[0, 0].item()
    torch.testing.assert_close(advantages, torch.tensor([soft, 0.0, soft, 0.0, 0.0, 0.0]))
    assert metrics == {"soft_advantage_mean": pytest.approx(soft), "soft_advantage_std": 0.0}


@pytest.mark.parametrize("tau", [0.0, -0.5, float("nan"), float("inf"), True, "0.5"])
def test_invalid_tau_raises(tmp_path: Path, tau: object) -> None:
    with pytest.raises(ValueError, match="tau="):
        tiny_config(tmp_path, tau=tau)


def test_normalize_then_sum_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multi_objective_aggregation='normalize_then_sum'"):
        tiny_config(tmp_path, multi_objective_aggregation="normalize_then_sum")


def test_plain_grpo_config_is_rejected(tmp_path: Path) -> None:
    tokenizer = load_tokenizer()
    dataset = datasets.Dataset.from_dict({"prompt": ["hi"]})
    args = trl.GRPOConfig(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=2,
                          report_to="none", use_cpu=True)
    with pytest.raises(TypeError, match="SRGRPOConfig"):
        SRGRPOTrainer(model=build_tiny_model(tokenizer), reward_funcs=[token_sum_reward], args=args,
                      train_dataset=dataset, processing_class=tokenizer)


@pytest.mark.parametrize(("version", "supported"), [("0.29.1", False), ("1.0.0", True), ("1.16.0", True),
                                                    ("2.0.0", False)])
def test_trl_version_pin(version: str, supported: bool) -> None:
    if supported:
        check_trl_version(version)
    else:
        with pytest.raises(ImportError, match=f"found trl=={version}"):
            check_trl_version(version)
