"""LoRA (``algos.training.lora``) and the sampler's log-probs: only adapters train and are checkpointed, the
KL reference is the base model, the export's merged model and adapter folder score as the adapted model,
the hf backend's token log-probs are the trainer's, and truncated importance sampling against hand values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_trainer import TINY_RUN, compose_config
from transformers import AutoModelForCausalLM

from agents.backends import SamplingParams
from agents.backends.hf import HFBackend
from agents.model import build_tiny_model, merged_weights
from agents.rollout import RolloutEngine
from algos import POLICY_LOSSES
from algos.training.actor import sampler_mismatch, tis_weights
from algos.training.checkpoint import checkpoint_state_dict, load_weights
from algos.training.lora import ADAPTER_DIR, frozen_reference, trainable_parameters
from algos.training.packed_logprobs import response_log_probs
from algos.training.policy import load_policy
from algos.training.schema import ModelConfig, validate
from algos.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LORA = "actor_rollout_ref.model.lora_rank=4"
IDS = torch.tensor([[1, 510, 2113, 314, 4127, 30, 17, 99]])


def lora_model(rank: int = 4):
    model, _ = load_policy(ModelConfig(path="tiny-random", lora_rank=rank), seed=0)
    return model


def logits(model, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_adapters_are_the_only_trainable_weights_and_count_r_times_in_plus_out(tiny):
    model = lora_model(rank=4)
    # per layer: q, k, v, o (64 -> 64) and gate, up (64 -> 128), down (128 -> 64); r * (in + out) each
    per_layer = 4 * 4 * (64 + 64) + 3 * 4 * (64 + 128)
    assert trainable_parameters(model) == 2 * per_layer == 8704
    assert all(".lora_" in name for name, p in model.named_parameters() if p.requires_grad)
    assert torch.equal(logits(model), logits(tiny))  # B = 0: training starts at the base model
    with pytest.raises(ValueError, match=r"target_modules=\['no_such_layer'\] is invalid"):
        load_policy(ModelConfig(path="tiny-random", lora_rank=4, target_modules=["no_such_layer"]), seed=0)
    with pytest.raises(ValueError, match=r"lora_rank=-1 is invalid; allowed: >= 0"):
        ModelConfig(lora_rank=-1)


def test_reference_is_the_base_model_and_merged_weights_are_the_adapted_model(tokenizer):
    model = lora_model()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    base = build_tiny_model(tokenizer, seed=0)
    adapted = logits(model)
    assert (adapted - logits(base)).abs().max() > 0.1
    torch.testing.assert_close(logits(frozen_reference(model)), logits(base), atol=0, rtol=0)
    assert base.load_state_dict(merged_weights(model), strict=False).unexpected_keys == []
    torch.testing.assert_close(logits(base), adapted, atol=1e-5, rtol=1e-5)


def test_lora_run_trains_adapters_only_checkpoints_them_and_exports_merged_and_adapter(tmp_path):
    config = validate(compose_config([*TINY_RUN, LORA, "algo=sr_grpo", "actor_rollout_ref.actor.entropy_coeff=0.01",
                                      "actor_rollout_ref.actor.lr=5e-2", "trainer.save_freq=1",
                                      "actor_rollout_ref.actor.use_kl_loss=true", "trainer.test_freq=-1"]))
    trainer = Trainer(config, tmp_path)
    frozen_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    result = trainer.fit()
    policy = trainer.engine.module
    assert all(torch.equal(p, frozen_before[n]) for n, p in policy.named_parameters() if not p.requires_grad)
    assert sum(p.numel() for group in trainer.engine.optimizer.param_groups for p in group["params"]) == 8704
    base = build_tiny_model(trainer.tokenizer, seed=config.seed)
    adapted = logits(policy.eval())
    assert (adapted - logits(base)).abs().max() > 1e-3  # the adapters trained
    assert "kl" in result["metrics"]
    torch.testing.assert_close(logits(trainer.reference), logits(base), atol=0, rtol=0)

    state = checkpoint_state_dict(tmp_path / "checkpoints" / "global_step_1")
    assert sorted(state) == sorted(n for n, p in policy.named_parameters() if p.requires_grad)
    evaluated = lora_model()
    load_weights(evaluated, state)  # the evaluation path of a checkpoint: the base rebuilt, adapters loaded
    torch.testing.assert_close(logits(evaluated), adapted, atol=1e-6, rtol=1e-6)

    export = tmp_path / "hf_model"
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(export)), adapted, atol=1e-5, rtol=1e-5)
    from_adapter, _ = load_policy(ModelConfig(path=str(export / ADAPTER_DIR)), seed=config.seed)
    torch.testing.assert_close(logits(from_adapter), adapted, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("env", ["bandit", "sokoban"])
def test_hf_backend_log_probs_are_the_trainers(tokenizer, env):
    config = validate(compose_config([*TINY_RUN, f"env={env}", "agent_proxy.max_turn=3"]))
    model = build_tiny_model(tokenizer, seed=1)
    engine = RolloutEngine(config.agent_config(), tokenizer, HFBackend(model, tokenizer))
    batch = engine.rollout(1, SamplingParams(temperature=0.7, max_new_tokens=8, seed=3))
    assert int(batch.num_turns.max()) == 3  # turns 2-3 generate from the kept KV cache
    response_mask = batch.loss_mask[:, 1:]
    with torch.no_grad():
        trainer_logp, _ = response_log_probs(model, batch.input_ids, batch.attention_mask, response_mask, 0.7)
    sampler = batch.rollout_log_probs[:, 1:]
    assert int(response_mask.sum()) > 20 and bool((sampler[response_mask.bool()] < 0).all())
    assert bool((sampler[~response_mask.bool()] == 0).all())
    torch.testing.assert_close(sampler * response_mask, trainer_logp, atol=2e-5, rtol=1e-5)
    assert sampler_mismatch(trainer_logp, sampler, response_mask)["rollout/logprob_diff_max"] < 2e-5


def test_truncated_importance_sampling_against_hand_values():
    old = torch.zeros(1, 4)
    sampler = torch.tensor([[math.log(2.0), math.log(0.25), math.log(2 / 3), 5.0]])  # pi_old / pi_s = .5, 4, 1.5
    mask = torch.tensor([[1, 1, 1, 0]])
    weights = tis_weights(old, sampler, cap=2.0)
    torch.testing.assert_close(weights[:, :3], torch.tensor([[0.5, 2.0, 1.5]]))
    logp = old.clone().requires_grad_(True)  # ratio 1: no clipping, per-token loss -A
    advantages = torch.tensor([[1.0, 1.0, -2.0, 7.0]])
    loss, _ = POLICY_LOSSES["vanilla"](logp, old, advantages, mask, token_weights=weights)
    assert loss.item() == pytest.approx((-0.5 - 2.0 + 3.0) / 3)  # token-mean of w * (-A)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.5, -2.0, 3.0, 0.0]]) / 3)
    mismatch = sampler_mismatch(old, sampler, mask)
    assert mismatch["rollout/logprob_diff_max"] == pytest.approx(math.log(4))
    assert mismatch["rollout/logprob_diff_mean"] == pytest.approx((math.log(2) + math.log(4) + math.log(1.5)) / 3)
    assert mismatch["rollout/ratio_max"] == pytest.approx(4.0)


def test_tis_run_logs_the_sampler_mismatch_and_bad_caps_are_refused(tmp_path):
    config = validate(compose_config([*TINY_RUN, "actor_rollout_ref.actor.tis_imp_ratio_cap=2", "trainer.test_freq=-1"]))
    metrics = Trainer(config, tmp_path).fit()["metrics"]
    assert metrics["rollout/logprob_diff_max"] < 1e-4 and metrics["rollout/ratio_max"] == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match=r"tis_imp_ratio_cap=1.0 is invalid; allowed: > 1, or -1"):
        validate(compose_config([*TINY_RUN, "actor_rollout_ref.actor.tis_imp_ratio_cap=1"]))


def test_a_gae_runs_critic_trains_the_actors_lora_settings_and_its_value_head():
    config = validate(compose_config([*TINY_RUN, LORA, "algo=ppo", "trainer.test_freq=-1"]))
    trainer = Trainer(config, Path("/nonexistent"))
    trainer.setup()
    critic = trainer.critic.engine.module
    trainable = {name for name, p in critic.named_parameters() if p.requires_grad}
    assert trainable_parameters(critic) == 8704 + 64 + 1  # the trunk's adapters, the value head's weight and bias
    assert {name for name in trainable if ".lora_" not in name} == {"value_head.weight", "value_head.bias"}
