"""``actor.bf16=true`` on a CPU: the forward runs in bf16 autocast while the weights, gradients and optimizer
stay fp32 (``engine.cpu_autocast``); DeepSpeed's own bf16 stays a GPU feature."""

from __future__ import annotations

import pytest
import torch
from test_trainer import FixedAnswers, fake_run_config

from agents.model import build_tiny_model
from algos.training.engine import accumulate, build_engine
from algos.training.schema import TrainerActorConfig
from algos.training.trainer import Trainer

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's mixed precision")


def test_bf16_on_a_cpu_autocasts_the_forward_and_keeps_fp32_weights_and_gradients(tokenizer):
    reference = build_tiny_model(tokenizer, seed=0)
    ids = torch.tensor([tokenizer("You are on the ice; move Down or Right.").input_ids])
    with torch.no_grad():
        fp32_logits = reference(input_ids=ids).logits
    engine = build_engine(build_tiny_model(tokenizer, seed=0), TrainerActorConfig(lr=1e-3, bf16="true"))
    assert not engine.bfloat16_enabled()  # DeepSpeed's bf16 (bf16 weights) is not used on a CPU
    logits = engine(input_ids=ids).logits
    assert logits.dtype == torch.bfloat16  # the lm head's matmul ran in bf16
    assert not torch.equal(logits.float(), fp32_logits)
    # bf16 keeps 8 bits of mantissa: each logit within ~2^-8 of its size (the tiny model's logits are < 1)
    assert torch.allclose(logits.float(), fp32_logits, atol=2e-2, rtol=2e-2)
    before = {name: p.detach().clone() for name, p in engine.module.named_parameters()}
    accumulate(engine, logits.float().logsumexp(-1).sum(), is_last=True)
    for name, p in engine.module.named_parameters():
        assert p.dtype == torch.float32 and not torch.equal(p, before[name]), name  # fp32, and stepped


@pytest.mark.parametrize("setting", ["auto", "false"])
def test_auto_and_false_leave_a_cpu_forward_in_fp32(tokenizer, setting):
    ids = torch.tensor([tokenizer("Left").input_ids])
    expected = build_tiny_model(tokenizer, seed=0)(input_ids=ids).logits
    engine = build_engine(build_tiny_model(tokenizer, seed=0), TrainerActorConfig(bf16=setting))
    logits = engine(input_ids=ids).logits
    assert logits.dtype == torch.float32 and torch.equal(logits, expected)


def test_a_bf16_run_scores_its_kl_reference_in_bf16_too(tokenizer, tmp_path):
    """The reference is copied before the engine wraps the policy, so it gets its own autocast: the KL
    between two copies of the same weights is then exactly 0, as in fp32."""
    config = fake_run_config(["actor_rollout_ref.actor.bf16=true", "actor_rollout_ref.actor.use_kl_loss=true",
                              "trainer.total_training_steps=1", "trainer.test_freq=-1"])
    trainer = Trainer(config, tmp_path, model=build_tiny_model(tokenizer, seed=0), tokenizer=tokenizer,
                      rollout_engine=FixedAnswers(tokenizer))
    metrics = trainer.fit()
    ids = torch.tensor([tokenizer("Up").input_ids])
    assert trainer.reference(input_ids=ids).logits.dtype == torch.bfloat16
    assert metrics["metrics"]["kl"] == 0.0  # the first step's policy is the reference
