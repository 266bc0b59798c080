"""The grouped forward (prompt run once per group) gives the plain forward's log-probs, entropies and
gradients on a real multi-turn rollout batch, with fewer token-forwards; a shifted position id is caught."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from agents.backends.base import SamplingParams, resolve_caps
from agents.model import build_tiny_model, load_tokenizer
from agents.rollout import AgentConfig, RolloutEngine
from algos.training.packed_logprobs import (
    grouped_response_log_probs,
    pack_units,
    response_log_probs,
    sharing_units,
    shuffle_by_group,
)
from algos.training.schema import register_schema, validate
from algos.training.trainer import Trainer

CONF = Path(__file__).resolve().parents[1] / "conf"

REPLIES = [  # member j of every group says REPLIES[j]; the first two share their first generated tokens
    "<think>push the box</think><answer>Up</answer>",
    "<think>push right then</think><answer>Right || Right</answer>",
    "<think>no</think><answer>Left</answer>",
]


class MemberReplies:
    """Backend double: the ``i``-th prompt of a call gets ``REPLIES[i % 3]`` (cut to its cap)."""

    def __init__(self, tokenizer) -> None:
        self.replies = [tokenizer.encode(text, add_special_tokens=False) for text in REPLIES]

    def generate(self, prompts, params, max_new_tokens=None):
        caps = resolve_caps(prompts, params, max_new_tokens)
        return [self.replies[i % len(self.replies)][:cap] for i, cap in enumerate(caps)]

    def update_weights(self, model) -> None:
        pass


class Engine(torch.nn.Module):
    """Stands in for the DeepSpeed engine: ``module`` attribute, keyword arguments passed through.
    Counts the token positions the model runs; ``shift_suffix`` corrupts the packed positions of every
    member but the first (those whose position differs from their packed column)."""

    def __init__(self, module: torch.nn.Module, shift_suffix: int = 0) -> None:
        super().__init__()
        self.module, self.shift_suffix, self.tokens = module, shift_suffix, 0

    def forward(self, **kwargs):
        self.tokens += kwargs["input_ids"].numel()
        if kwargs.get("position_ids") is not None:
            positions = kwargs["position_ids"]
            moved = positions != torch.arange(positions.shape[1])
            kwargs["position_ids"] = positions + self.shift_suffix * moved
        return self.module(**kwargs)


@pytest.fixture(scope="module")
def tokenizer():
    torch.set_num_threads(1)
    return load_tokenizer(None)


@pytest.fixture(scope="module")
def batch(tokenizer):
    """2 Sokoban levels x 3 members, 2 turns: identical prompts per group, replies of unequal length."""
    config = AgentConfig.of(env="sokoban", env_groups=2, group_size=3, max_turn=2, show_progress=False)
    rollout = RolloutEngine(config, tokenizer, MemberReplies(tokenizer))
    return rollout.rollout(1, SamplingParams(temperature=1.0, max_new_tokens=24, seed=0))


def forward_and_gradient(model, tensors, group_index=None, shift_suffix=0):
    """(logp, entropy, flat parameter gradient of a loss mixing both, token positions run); plain
    forward without ``group_index``."""
    engine = Engine(model, shift_suffix)
    model.zero_grad()
    input_ids, attention_mask, response_mask = tensors
    if group_index is None:  # the reference: the plain forward over whole sequences
        logp, entropy = response_log_probs(engine, input_ids, attention_mask, response_mask, 0.7, True)
    else:
        logp, entropy = grouped_response_log_probs(engine, input_ids, attention_mask, response_mask,
                                                   group_index, temperature=0.7, entropy_grad=True)
    weights = torch.linspace(-1.0, 1.0, logp.shape[1])
    ((logp * weights).sum() + 0.1 * entropy.sum()).backward()
    gradient = torch.cat([p.grad.flatten() for p in model.parameters()])
    return logp.detach(), entropy.detach(), gradient, engine.tokens


def assert_same(grouped, plain):
    torch.testing.assert_close(grouped[0], plain[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(grouped[1], plain[1], atol=1e-5, rtol=0)
    assert ((grouped[2] - plain[2]).norm() / plain[2].norm()).item() < 1e-5


def test_rollout_groups_start_with_identical_prompts(batch):
    first_generated = batch.loss_mask.long().argmax(dim=1)
    assert len(set(first_generated.tolist()[:3])) == 1 and len(set(first_generated.tolist()[3:])) == 1
    for group in (slice(0, 3), slice(3, 6)):
        prompt = int(first_generated[group][0])
        ids = batch.input_ids[group, :prompt]
        assert prompt > 200 and (ids == ids[:1]).all()
    prompt = int(first_generated[0])
    assert not torch.equal(batch.input_ids[0, :prompt], batch.input_ids[3, :prompt])  # two different levels


def test_grouped_forward_equals_the_plain_one_with_fewer_tokens(tokenizer, batch):
    model = build_tiny_model(tokenizer, seed=3)
    tensors = (batch.input_ids, batch.attention_mask, batch.loss_mask[:, 1:])
    assert batch.attention_mask.sum(dim=1).unique().numel() > 1  # right padding is exercised
    plain = forward_and_gradient(model, tensors)
    grouped = forward_and_gradient(model, tensors, batch.group_index)
    assert_same(grouped, plain)
    assert plain[3] == batch.input_ids.numel()
    assert grouped[3] < 0.6 * plain[3]  # each group's ~300-token prompt runs once instead of 3 times


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_forward_is_exact_for_each_attention_and_under_gradient_checkpointing(tokenizer, batch, attention,
                                                                                     checkpointing):
    model = build_tiny_model(tokenizer, seed=5)
    model.config._attn_implementation = attention
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    tensors = (batch.input_ids, batch.attention_mask, batch.loss_mask[:, 1:])
    plain = forward_and_gradient(model, tensors)
    grouped = forward_and_gradient(model, tensors, batch.group_index)
    assert_same(grouped, plain)
    assert grouped[3] < 0.6 * plain[3]  # the packed pass ran, also with checkpointing on


def test_a_packed_row_over_the_bound_falls_back_before_packing(tokenizer, batch, monkeypatch):
    model = build_tiny_model(tokenizer, seed=6)
    tensors = (batch.input_ids, batch.attention_mask, batch.loss_mask[:, 1:])
    lengths = batch.attention_mask.sum(dim=1)
    units, prefix_length = sharing_units(batch.input_ids, lengths, batch.group_index, 8)
    widest = int(pack_units(batch.input_ids, lengths, units, prefix_length).input_ids.shape[1])
    plain = forward_and_gradient(model, tensors)
    monkeypatch.setattr("algos.training.packed_logprobs.MAX_PACKED_TOKENS", widest)  # exactly fits: packed
    assert forward_and_gradient(model, tensors, batch.group_index)[3] < 0.6 * plain[3]

    def no_packing(*args):
        raise AssertionError("pack_units ran although the packed row is too long")

    monkeypatch.setattr("algos.training.packed_logprobs.MAX_PACKED_TOKENS", widest - 1)
    monkeypatch.setattr("algos.training.packed_logprobs.pack_units", no_packing)
    too_long = forward_and_gradient(model, tensors, batch.group_index)
    assert_same(too_long, plain)
    assert too_long[3] == plain[3]  # the plain pass ran


def test_pack_units_hand_computed():
    input_ids = torch.tensor([
        [1, 2, 3, 4, 5],  # unit 0, prefix 1 2 3: suffixes "4 5" and "6"
        [7, 8, 0, 0, 0],  # unit 1 alone: prefix 7, suffix 8
        [1, 2, 3, 6, 0],
    ])
    packed = pack_units(input_ids, torch.tensor([5, 2, 4]), torch.tensor([0, 1, 0]), torch.tensor([3, 1]))
    assert packed.input_ids.tolist() == [[1, 2, 3, 4, 5, 6], [7, 8, 0, 0, 0, 0]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 3], [0, 1, 0, 0, 0, 0]]
    assert packed.column.tolist() == [[0, 1, 2, 3, 4], [0, 1, 0, 0, 0], [0, 1, 2, 5, 0]]
    attend = packed.attend.long().tolist()
    assert attend[0] == [[1, 0, 0, 0, 0, 0],
                         [1, 1, 0, 0, 0, 0],
                         [1, 1, 1, 0, 0, 0],
                         [1, 1, 1, 1, 0, 0],
                         [1, 1, 1, 1, 1, 0],
                         [1, 1, 1, 0, 0, 1]]  # member 2's token sees the prefix and itself, not member 1
    assert attend[1][:2] == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]]
    assert all(row[0] == 1 for row in attend[1][2:])  # padding sees the prefix: finite values


def test_a_position_id_off_by_one_is_caught(tokenizer, batch):
    model = build_tiny_model(tokenizer, seed=3)
    tensors = (batch.input_ids, batch.attention_mask, batch.loss_mask[:, 1:])
    plain = forward_and_gradient(model, tensors)
    shifted = forward_and_gradient(model, tensors, batch.group_index, shift_suffix=1)
    assert (shifted[0] - plain[0]).abs().max() > 1e-4  # 10x the tolerance of assert_same
    assert ((shifted[2] - plain[2]).norm() / plain[2].norm()).item() > 1e-4


def test_a_group_whose_members_have_different_prompts_is_still_exact(tokenizer, batch):
    model = build_tiny_model(tokenizer, seed=4)
    input_ids, lengths = batch.input_ids.clone(), batch.attention_mask.sum(dim=1)
    tensors = (input_ids, batch.attention_mask, batch.loss_mask[:, 1:])
    plain = forward_and_gradient(model, tensors)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])  # "group" 1 = one member of each level
    units, prefix_length = sharing_units(input_ids, lengths, labels, 8)
    assert units.tolist() == [0, 0, 1, 1, 2, 2]
    assert 100 < prefix_length[1] < prefix_length[0]  # the levels share the system prompt only
    assert_same(forward_and_gradient(model, tensors, labels), plain)

    input_ids[3, 0] = input_ids[3, 0] + 1  # now rows 2 and 3 differ from their first token on
    plain = forward_and_gradient(model, tensors)
    assert sharing_units(input_ids, lengths, labels, 8)[0].tolist() == [0, 0, 1, 2, 3, 3]
    assert_same(forward_and_gradient(model, tensors, labels), plain)
    no_sharing = forward_and_gradient(model, tensors, torch.arange(6))  # falls back to the plain pass
    assert_same(no_sharing, plain)
    assert no_sharing[3] == input_ids.numel()


def test_sharing_units_hand_computed():
    input_ids = torch.tensor([
        [1, 2, 3, 4, 5, 0],  # group 7: common prefix 1 2 3 with the next row
        [1, 2, 3, 9, 9, 9],
        [1, 2, 3, 4, 0, 0],  # group 8: identical rows, capped at the shortest length - 1
        [1, 2, 3, 4, 0, 0],
        [5, 6, 0, 0, 0, 0],  # group 9: alone
    ])
    lengths = torch.tensor([5, 6, 4, 4, 2])
    units, prefix_length = sharing_units(input_ids, lengths, torch.tensor([7, 7, 8, 8, 9]), min_shared_tokens=2)
    assert units.tolist() == [0, 0, 1, 1, 2] and prefix_length.tolist() == [3, 3, 1]
    units, prefix_length = sharing_units(input_ids, lengths, torch.tensor([7, 7, 8, 8, 9]), min_shared_tokens=4)
    assert units.tolist() == [0, 1, 2, 2, 3] and prefix_length.tolist() == [4, 5, 3, 1]
    with pytest.raises(ValueError, match="min_shared_tokens=0"):
        sharing_units(input_ids, lengths, torch.tensor([7, 7, 8, 8, 9]), min_shared_tokens=0)


def test_shuffle_by_group_keeps_groups_together():
    group_index = torch.arange(12) // 3
    orders = [shuffle_by_group(group_index, torch.Generator().manual_seed(seed)) for seed in range(4)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(12))
        blocks = group_index[order].view(4, 3)
        assert (blocks == blocks[:, :1]).all()  # every block of 3 is one whole group, rows in order
        assert (order.view(4, 3).diff(dim=1) == 1).all()
    assert len({tuple(order.tolist()) for order in orders}) > 1


def test_left_padding_is_rejected(tokenizer):
    model = build_tiny_model(tokenizer, seed=0)
    input_ids = torch.tensor([[0, 5, 6, 7], [5, 6, 7, 8]])
    attention_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    with pytest.raises(ValueError, match="right-padded"):
        grouped_response_log_probs(model, input_ids, attention_mask, torch.ones(2, 3), torch.zeros(2), 1.0)


def _gradient_of_one_update(tokenizer, run_dir, share: bool, micro: int) -> torch.Tensor:
    """Accumulated gradient of one Sokoban step (2 levels x 3 members, 2 PPO epochs, no optimizer step)."""
    register_schema()
    overrides = ["env=sokoban", "logger=console", "logger.progress_bar=false", "agent_proxy.max_turn=2",
                 "actor_rollout_ref.model.path=tiny-random", "actor_rollout_ref.rollout.response_length=24",
                 "es_manager.train.env_groups=2", "es_manager.train.group_size=3", "trainer.total_training_steps=1",
                 "actor_rollout_ref.actor.ppo_epochs=2", "actor_rollout_ref.actor.ppo_mini_batch_size=6",
                 "trainer.test_freq=-1", "actor_rollout_ref.actor.entropy_coeff=0.01",
                 f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
                 f"actor_rollout_ref.actor.share_prompt_prefix={share}"]
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        config = validate(compose(config_name="config", overrides=overrides))
    agent = AgentConfig.of(env="sokoban", env_groups=2, group_size=3, max_turn=2, show_progress=False)
    model = build_tiny_model(tokenizer, seed=0)
    rollout = RolloutEngine(agent, tokenizer, MemberReplies(tokenizer))
    Trainer(config, run_dir, model=model, tokenizer=tokenizer, rollout_engine=rollout).fit()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_trainer_update_with_shared_prompts_equals_the_plain_update(tokenizer, tmp_path, monkeypatch):
    def backward_only(engine, loss, is_last):  # keep the accumulated gradient instead of stepping
        engine.backward(loss, scale_wrt_gas=False)

    monkeypatch.setattr("algos.training.actor.accumulate", backward_only)
    calls = []
    monkeypatch.setattr("algos.training.actor.grouped_response_log_probs",
                        lambda *args, **kwargs: calls.append(args[4]) or grouped_response_log_probs(*args, **kwargs))
    plain = _gradient_of_one_update(tokenizer, tmp_path / "plain", share=False, micro=6)
    assert calls and all(groups is None for groups in calls)
    calls.clear()
    shared = _gradient_of_one_update(tokenizer, tmp_path / "shared", share=True, micro=3)
    assert len(calls) == 2 + 2 * 2  # old log-probs, then 2 epochs, each over 2 micro-batches
    assert all(len(groups.unique()) == 1 for groups in calls)  # every micro-batch is one whole group
    assert plain.abs().max() > 1e-3
    assert ((shared - plain).norm() / plain.norm()).item() < 1e-5
