"""The non-finite guard: a step whose loss or gradient is not finite is skipped (weights and optimizer
untouched), counted in ``actor/nonfinite_steps``, and ``trainer.max_nonfinite_steps`` in a row stop the run
with the likely keys named."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_trainer import FixedAnswers, fake_run_config

from agents.model import build_tiny_model
from algos.training.engine import accumulate, build_engine
from algos.training.nonfinite import NonFiniteTraining
from algos.training.schema import TrainerActorConfig
from algos.training.trainer import Trainer


def nonfinite_counts(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["actor/nonfinite_steps"] for row in rows]


@pytest.mark.parametrize("zero_stage", [0, 1])
def test_a_nan_loss_skips_the_step_and_leaves_the_weights_as_they_were(zero_stage):
    torch.manual_seed(0)
    engine = build_engine(torch.nn.Linear(3, 2), TrainerActorConfig(lr=0.1, zero_stage=zero_stage))
    before = [p.detach().clone() for p in engine.module.parameters()]
    x = torch.ones(2, 3)
    assert not math.isfinite(accumulate(engine, engine(x).sum() * math.nan, is_last=True))  # skipped
    assert all(torch.equal(a, b) for a, b in zip(before, engine.module.parameters(), strict=True))
    norm = accumulate(engine, engine(x).sum(), is_last=True)  # a clean step after it applies
    # Two rows of ones: d(sum of outputs)/dW = 2 for each of the 2 x 3 weights and 2 for each of the 2
    # biases, so |g| = sqrt(8 * 4); the skipped step's NaN gradients were cleared, not added to it.
    assert norm == pytest.approx(math.sqrt(32))
    assert not torch.equal(before[0], engine.module.weight)


def test_sr_grpo_with_a_tiny_tau_skips_every_step_and_stops_after_three(tokenizer, tmp_path):
    # FixedAnswers' groups score 1 and 0: z = +-0.87, z / 1e-40 overflows, softmax gives NaN advantages.
    config = fake_run_config(["algo=sr_grpo", "algorithm.tau=1e-40", "trainer.total_training_steps=6",
                              "trainer.test_freq=-1"])
    model = build_tiny_model(tokenizer, seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = Trainer(config, tmp_path, model=model, tokenizer=tokenizer, rollout_engine=FixedAnswers(tokenizer))
    with pytest.raises(NonFiniteTraining, match=r"3 steps in a row .*algorithm\.tau=1e-40 \(too small"):
        trainer.fit()
    assert trainer.step == 3
    assert nonfinite_counts(tmp_path) == [1.0, 1.0, 1.0]
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())  # never stepped


def test_a_huge_learning_rate_stops_the_run_with_finite_weights(tokenizer, tmp_path):
    config = fake_run_config(["actor_rollout_ref.actor.lr=1e30", "trainer.total_training_steps=8",
                              "trainer.test_freq=-1", "trainer.max_nonfinite_steps=2"])
    model = build_tiny_model(tokenizer, seed=0)
    trainer = Trainer(config, tmp_path, model=model, tokenizer=tokenizer, rollout_engine=FixedAnswers(tokenizer))
    with pytest.raises(NonFiniteTraining, match=r"2 steps in a row .*actor_rollout_ref\.actor\.lr=1e\+30"):
        trainer.fit()
    counts = nonfinite_counts(tmp_path)
    assert counts[0] == 0.0 and counts[-2:] == [1.0, 1.0]  # step 1 applies the 1e30 update, then NaN
    assert all(torch.isfinite(p).all() for p in model.parameters())
