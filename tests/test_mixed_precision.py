"""``actor.bf16=true`` on a CPU: the trainer's forwards run in bf16 autocast while the weights, gradients and
optimizer stay fp32 (``engine.cpu_autocast``); generation stays fp32; DeepSpeed's own bf16 stays a GPU feature."""

from __future__ import annotations

import pytest
import torch
from test_trainer import FixedAnswers, fake_run_config

from agents.model import build_tiny_model
from algos.training.engine import accumulate, build_engine, cpu_autocast
from algos.training.schema import TrainerActorConfig
from algos.training.trainer import Trainer

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's mixed precision")


def test_bf16_on_a_cpu_autocasts_the_forward_and_keeps_fp32_weights_and_gradients(tokenizer):
    ids = torch.tensor([tokenizer("You are on the ice; move Down or Right.").input_ids])
    engine = build_engine(build_tiny_model(tokenizer, seed=0), TrainerActorConfig(lr=1e-3, bf16="true"))
    assert not engine.bfloat16_enabled()  # DeepSpeed's bf16 (bf16 weights) is not used on a CPU
    with torch.no_grad():
        fp32_logits = engine(input_ids=ids).logits
    with cpu_autocast("true"):
        logits = engine(input_ids=ids).logits
    assert fp32_logits.dtype == torch.float32 and logits.dtype == torch.bfloat16  # the matmuls ran in bf16
    assert not torch.equal(logits.float(), fp32_logits)
    # bf16 keeps 8 bits of mantissa: each logit within ~2^-8 of its size (the tiny model's logits are < 1)
    assert torch.allclose(logits.float(), fp32_logits, atol=2e-2, rtol=2e-2)
    before = {name: p.detach().clone() for name, p in engine.module.named_parameters()}
    accumulate(engine, logits.float().logsumexp(-1).sum(), is_last=True)
    for name, p in engine.module.named_parameters():
        assert p.dtype == torch.float32 and not torch.equal(p, before[name]), name  # fp32, and stepped


@pytest.mark.parametrize("setting", ["auto", "false"])
def test_auto_and_false_leave_a_cpu_forward_in_fp32(tokenizer, setting):
    model = build_tiny_model(tokenizer, seed=0)
    ids = torch.tensor([tokenizer("Left").input_ids])
    expected = model(input_ids=ids).logits
    with cpu_autocast(setting):
        logits = model(input_ids=ids).logits
    assert logits.dtype == torch.float32 and torch.equal(logits, expected)


def run_one_step(tokenizer, tmp_path, bf16: str) -> tuple[Trainer, dict[str, float]]:
    config = fake_run_config([f"actor_rollout_ref.actor.bf16={bf16}", "actor_rollout_ref.actor.use_kl_loss=true",
                              "actor_rollout_ref.actor.ppo_epochs=2", "actor_rollout_ref.actor.lr=1e-30",
                              "trainer.total_training_steps=1",
                              "trainer.test_freq=-1"])
    trainer = Trainer(config, tmp_path, model=build_tiny_model(tokenizer, seed=0), tokenizer=tokenizer,
                      rollout_engine=FixedAnswers(tokenizer))
    return trainer, trainer.fit()["metrics"]


def test_a_bf16_step_scores_old_new_and_reference_log_probs_in_bf16(tokenizer, tmp_path):
    """Old, reference and new log-probs all come from the autocast forward: at equal weights (two epochs at
    an lr too small to move an fp32 weight, so the old log-probs get their own pass) the policy's ratio is 1
    and its KL to the reference 0, exactly, as in fp32; the entropy differs from the fp32 run's by bf16
    rounding only; the weights stay fp32."""
    trainer, bf16 = run_one_step(tokenizer, tmp_path / "bf16", "true")
    _, fp32 = run_one_step(tokenizer, tmp_path / "fp32", "false")
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert bf16["actor/entropy"] != fp32["actor/entropy"]  # the forwards did run in bf16
    assert bf16["actor/entropy"] == pytest.approx(fp32["actor/entropy"], rel=1e-2)
    for metrics in (bf16, fp32):
        assert metrics["actor/nonfinite_steps"] == 0.0
        assert metrics["actor/ppo_kl"] == 0.0 and metrics["actor/pg_clipfrac"] == 0.0 and metrics["kl"] == 0.0
