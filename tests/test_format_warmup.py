"""Format demonstrations and the supervised warm-up: replies parse to uniformly random valid actions
on the same prompt the rollout engine builds, masks cover exactly the reply tokens, the loss is the
hand-computed NLL, and a few steps make a random model likelier to write the format."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import envs
from agents.backends.base import SamplingParams
from agents.backends.hf import HFBackend
from agents.demonstrations import Demonstration, balanced_draws, format_demonstrations
from agents.parsing import parse_reply
from agents.prompts import prefill_text
from agents.rollout import AgentConfig, RolloutEngine
from algos.training.compose import compose_config
from algos.training.format_warmup import (
    backward_reply_nll,
    demonstration_batch,
    format_warmup,
    reply_nll,
    warmup_lr,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("env_name", ["bandit", "sokoban", "frozenlake"])
@pytest.mark.parametrize("think", [True, False])
def test_every_reply_parses_to_valid_actions_within_the_turn_budget(tokenizer, env_name, think):
    config = AgentConfig.of(env=env_name, max_actions_per_turn=3, enable_think=think, show_progress=False)
    env = envs.make(env_name)
    levels = format_demonstrations(config, tokenizer, levels=6, replies_per_level=5, max_new_tokens=32, seed=0)
    assert [len(level) for level in levels] == [5] * 6
    counts = set()
    for level in levels:
        assert len({tuple(demo.prompt_ids) for demo in level}) == 1  # a level's replies share its prompt
        for demo in level:
            assert tokenizer.decode(demo.reply_ids) == demo.reply_text
            parsed = parse_reply(prefill_text(think) + demo.reply_text, think, max_actions=3)
            assert parsed.format_ok
            assert all(env.parse_action(text) is not None for text in parsed.action_texts)
            counts.add(len(parsed.action_texts))
    expected = {1} if env_name == "bandit" else {1, 2, 3}  # Bandit allows one pull per episode
    assert counts == expected


def test_each_level_demonstrates_every_action_equally_often(tokenizer):
    config = AgentConfig.of(env="bandit", enable_think=False, show_progress=False)
    levels = format_demonstrations(config, tokenizer, levels=20, replies_per_level=4, max_new_tokens=32, seed=3)
    assert all(sum("Dragon" in demo.reply_text for demo in level) == 2 for level in levels)


def test_balanced_draws_use_whole_rounds_then_no_repeats():
    rng = np.random.default_rng(0)
    draws = balanced_draws(rng, num_actions=4, count=10)
    assert sorted(draws[:8]) == [0, 0, 1, 1, 2, 2, 3, 3] and len(set(draws[8:])) == 2
    firsts = [balanced_draws(rng, num_actions=4, count=1)[0] for _ in range(400)]
    assert all(60 <= firsts.count(action) <= 140 for action in range(4))  # uniform: mean 100, std ~8.7


def test_prompt_is_the_rollout_engines_opening_prompt(tokenizer, tiny):
    config = AgentConfig.of(env="sokoban", max_turn=1, show_progress=False)
    demo = format_demonstrations(config, tokenizer, levels=1, replies_per_level=1, max_new_tokens=16, seed=0)[0][0]
    engine = RolloutEngine(config, tokenizer, HFBackend(tiny, tokenizer))
    batch = engine.play([demo.level_seed], 1, SamplingParams(max_new_tokens=16, seed=0))
    first_generated = int(batch.loss_mask[0].nonzero()[0])
    assert batch.input_ids[0, :first_generated].tolist() == demo.prompt_ids


def test_same_seed_same_demonstrations_other_seed_other_levels(tokenizer):
    config = AgentConfig.of(env="sokoban", show_progress=False)
    first = format_demonstrations(config, tokenizer, levels=3, replies_per_level=2, max_new_tokens=32, seed=7)
    again = format_demonstrations(config, tokenizer, levels=3, replies_per_level=2, max_new_tokens=32, seed=7)
    other = format_demonstrations(config, tokenizer, levels=3, replies_per_level=2, max_new_tokens=32, seed=8)
    assert first == again
    assert [level[0].prompt_ids for level in first] != [level[0].prompt_ids for level in other]


def test_free_form_env_and_bad_counts_are_rejected_by_name(tokenizer):
    with pytest.raises(ValueError, match=r"env='gsm8k' has free-form answers.*allowed: an env with named"):
        format_demonstrations(AgentConfig.of(env="gsm8k"), tokenizer, 1, 1, 16, seed=0)
    with pytest.raises(ValueError, match=r"replies_per_level=0 is invalid; allowed: an int >= 1"):
        format_demonstrations(AgentConfig.of(env="bandit"), tokenizer, 1, 0, 16, seed=0)


# ----------------------------------------------------------------- the warm-up loop
def _hand_levels() -> list[list[Demonstration]]:
    return [
        [Demonstration(0, [5, 6, 7], [8, 9], "a"), Demonstration(0, [5, 6, 7], [10], "b")],
        [Demonstration(1, [11, 12], [13, 14, 15], "c")],
    ]


def test_batch_masks_exactly_the_reply_tokens_and_labels_levels():
    input_ids, attention_mask, response_mask, level_index = demonstration_batch(_hand_levels(), pad_token_id=0)
    assert input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 6, 7, 10, 0], [11, 12, 13, 14, 15]]
    assert attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    # column j predicts token j + 1: the reply tokens sit at columns prompt_len - 1 .. end - 2
    assert response_mask.tolist() == [[0, 0, 1, 1], [0, 0, 1, 0], [0, 1, 1, 1]]
    assert level_index.tolist() == [0, 0, 1]


def test_reply_nll_is_the_mean_token_nll_of_a_plain_forward(tiny):
    levels = [[dataclasses.replace(d, prompt_ids=d.prompt_ids * 4) for d in level] for level in _hand_levels()]
    expected, tokens = 0.0, 0
    with torch.no_grad():
        for level in levels:
            for demo in level:
                ids = torch.tensor([demo.prompt_ids + demo.reply_ids])
                logp = torch.log_softmax(tiny(input_ids=ids).logits[0].double(), dim=-1)
                for t in range(len(demo.prompt_ids), ids.shape[1]):
                    expected -= logp[t - 1, ids[0, t]].item()
                    tokens += 1
        assert reply_nll(tiny, levels, pad_token_id=0).item() == pytest.approx(expected / tokens, rel=1e-5)


def test_level_by_level_backward_gives_the_whole_batch_loss_and_gradient(tiny):
    levels = [[dataclasses.replace(d, prompt_ids=d.prompt_ids * 4) for d in level] for level in _hand_levels()]
    levels[1].append(dataclasses.replace(levels[1][0], reply_ids=[16], reply_text="d"))  # 3 vs 4 reply tokens:
    tiny.zero_grad(set_to_none=True)  # a per-level mean would weigh the levels wrongly
    whole = reply_nll(tiny, levels, pad_token_id=0)
    whole.backward()
    expected = [p.grad.clone() for p in tiny.parameters()]
    tiny.zero_grad(set_to_none=True)
    assert backward_reply_nll(tiny, levels, pad_token_id=0) == pytest.approx(whole.item(), rel=1e-6)
    for got, want in zip((p.grad for p in tiny.parameters()), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    tiny.zero_grad(set_to_none=True)


def test_warmup_makes_held_out_demonstrations_likelier(tokenizer):
    from agents.model import build_tiny_model

    model = build_tiny_model(tokenizer, seed=1)
    config = AgentConfig.of(env="bandit", enable_think=False, show_progress=False)
    levels = format_demonstrations(config, tokenizer, levels=17, replies_per_level=4, max_new_tokens=16, seed=0)
    train, held_out = levels[:16], levels[16:]
    before = reply_nll(model, held_out, pad_token_id=0).item()
    metrics = format_warmup(model, train, levels_per_step=1, lr=5e-3, pad_token_id=0)
    after = reply_nll(model, held_out, pad_token_id=0).item()
    assert metrics["format_warmup/loss_end"] < metrics["format_warmup/loss_start"]
    assert after < 0.5 * before


def test_warmup_rejects_more_levels_per_step_than_levels(tiny):
    with pytest.raises(ValueError, match=r"levels_per_step=3 with 2 levels.*allowed: 1 <= levels_per_step"):
        format_warmup(tiny, _hand_levels(), levels_per_step=3, lr=1e-3, pad_token_id=0)


def test_warmup_lr_is_the_lora_rate_only_when_adapters_train():
    full = compose_config(["env=bandit", "format_warmup.lr=2e-4", "format_warmup.lora_lr=3e-3"])
    lora = compose_config(["env=bandit", "format_warmup.lr=2e-4", "format_warmup.lora_lr=3e-3",
                           "actor_rollout_ref.model.lora_rank=8"])
    assert warmup_lr(full) == 2e-4 and warmup_lr(lora) == 3e-3
