"""KV reuse across turns in the hf backend: the same tokens as a full re-prefill, fewer positions computed.

The rollouts run on the tiny model in float64 with sharpened attention (outputs depend on context and
positions). In float32 the same comparisons also pass here; float64 keeps near-ties from making a
greedy or sampled token flip between two mathematically equal computations of different shapes.
"""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import DynamicCache

from agents.backends import HFBackend, SamplingParams
from agents.backends.kv_pool import GrowingLayer, grow_in_place
from agents.model import build_tiny_model
from agents.rollout import AgentConfig, RolloutEngine
from algos.training.schema import RolloutConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FREQUENT_TOKEN = 25679  # the tiny model's most frequent greedy token in Sokoban replies


@pytest.fixture(scope="module")
def sharp(tokenizer):
    model = build_tiny_model(tokenizer, seed=0).double()
    with torch.no_grad():
        for layer in model.model.layers:
            for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                               layer.self_attn.o_proj):
                projection.weight.mul_(8.0)
    return model


@pytest.fixture(scope="module")
def eos_prone(tokenizer, sharp):
    """``sharp`` whose EOS logit is 1.05x that of its favourite token: greedy replies end with EOS."""
    model = build_tiny_model(tokenizer, seed=0).double()
    model.load_state_dict(sharp.state_dict())
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] = model.lm_head.weight[FREQUENT_TOKEN] * 1.05
    return model


def play(model, tokenizer, kv_cache_gib: float, params: SamplingParams, **config):
    backend = HFBackend(model, tokenizer, kv_cache_gib=kv_cache_gib)
    engine = RolloutEngine(AgentConfig.of(**config), tokenizer, backend)
    return engine.rollout(1, params), backend


@pytest.mark.parametrize("env", ["sokoban", "frozenlake"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_multi_turn_rollouts_equal_the_full_re_prefill(tokenizer, sharp, env, temperature):
    params = SamplingParams(temperature=temperature, max_new_tokens=20, seed=5)
    config = {"env": env, "env_groups": 3, "group_size": 2, "max_turn": 4}
    reused, backend = play(sharp, tokenizer, 2.0, params, **config)
    full, baseline = play(sharp, tokenizer, 0.0, params, **config)
    assert reused.num_turns.tolist() == [4] * 6
    assert torch.equal(reused.input_ids, full.input_ids) and torch.equal(reused.loss_mask, full.loss_mask)
    assert backend.counters["decode_positions"] == baseline.counters["decode_positions"]
    assert backend.counters["prefill_positions"] < baseline.counters["prefill_positions"] / 2
    assert backend.pool.entries == []  # the engine frees every cache after the rollout
    assert reused.metrics["timing/rollout_prefill_positions"] == backend.counters["prefill_positions"]
    assert reused.metrics["timing/rollout_decode_s"] > 0


def test_replies_ending_with_eos_and_a_row_truncated_by_max_model_len(tokenizer, eos_prone):
    """Level 1's episodes outgrow max_model_len=640 before turn 4; the others play turn 4 from their caches.
    Every reply ends with EOS (not a stop string), so the next prompt adds the chat's end-of-turn tokens."""
    params = SamplingParams(temperature=0.0, max_new_tokens=24)
    config = {"env": "sokoban", "env_groups": 3, "group_size": 2, "max_turn": 4, "max_model_len": 640}
    reused, backend = play(eos_prone, tokenizer, 2.0, params, **config)
    full, _ = play(eos_prone, tokenizer, 0.0, params, **config)
    assert reused.truncated.tolist() == [True, True, False, False, False, False]
    assert reused.num_turns.tolist() == [3, 3, 4, 4, 4, 4]
    eos_replies = [(ids[mask.bool()] == tokenizer.eos_token_id).sum().item()
                   for ids, mask in zip(reused.input_ids, reused.loss_mask, strict=True)]
    assert eos_replies == reused.num_turns.tolist()
    assert torch.equal(reused.input_ids, full.input_ids)


def test_rows_of_very_different_lengths_prefill_only_their_new_tokens(tokenizer, sharp):
    """Call 1: prompts of 3 and 60 tokens, 5 new tokens each (no EOS/stop): the cache keeps prompt + the
    first 4 reply tokens (the 5th is never fed). Call 2 appends 1 and 30 tokens: rows need 1+1 and 1+30
    new positions, laid out at width 31, so the prefill forward computes 2 rows x 30 columns (the last
    column is ``generate``'s first step)."""
    params = SamplingParams(temperature=0.0, max_new_tokens=5, stop=())
    short, long = list(range(1000, 1003)), list(range(2000, 2060))
    backend = HFBackend(sharp, tokenizer)
    first = backend.generate([short, long], params)
    assert [len(reply) for reply in first] == [5, 5]
    assert [entry.tokens for entry in backend.pool.entries] == [
        tuple(short + first[0][:4]), tuple(long + first[1][:4])]
    assert backend.pool.entries[1].layers[0][0].shape[1] == 64
    prompts = [short + first[0] + [7], long + first[1] + list(range(3000, 3030))]
    before = dict(backend.counters)
    second = backend.generate(prompts, params)
    assert backend.counters["prefill_positions"] - before["prefill_positions"] == 2 * 30
    assert backend.counters["decode_positions"] - before["decode_positions"] == 2 * 5
    assert second == HFBackend(sharp, tokenizer, kv_cache_gib=0).generate(prompts, params)


def test_finished_rows_are_freed_and_new_weights_drop_every_cache(tokenizer):
    model = build_tiny_model(tokenizer, seed=0)
    params = SamplingParams(temperature=0.0, max_new_tokens=3, stop=())
    backend = HFBackend(model, tokenizer)
    replies = backend.generate([[5, 6, 7], [8, 9]], params)
    backend.generate([[5, 6, 7, *replies[0], 4]], params)  # the second episode ended
    assert [entry.tokens[:3] for entry in backend.pool.entries] == [(5, 6, 7)]
    with torch.no_grad():
        model.model.norm.weight.mul_(1.0)  # an in-place write, as an optimizer step makes
    before = backend.counters["prefill_positions"]
    prompt = [5, 6, 7, *replies[0], 4, *backend.pool.entries[0].tokens[6:], 3]
    backend.generate([prompt], params)
    assert backend.counters["prefill_positions"] - before == len(prompt) - 1  # nothing reused


def test_rows_past_the_memory_cap_are_prefilled_again_and_logged_once(tokenizer, sharp, caplog):
    params = SamplingParams(temperature=0.0, max_new_tokens=4, stop=())
    prompts = [list(range(1000, 1010)), list(range(2000, 2010))]
    per_token = 2 * 2 * 4 * 16 * 8  # (key, value) x layers x kv heads x head dim x float64 bytes
    backend = HFBackend(sharp, tokenizer, kv_cache_gib=13 * per_token / 2**30)  # one row of 10 + 3 tokens
    reference = HFBackend(sharp, tokenizer, kv_cache_gib=0)
    with caplog.at_level(logging.WARNING, logger="agents.backends.kv_pool"):
        replies = backend.generate(prompts, params)
        assert replies == reference.generate(prompts, params)
        assert [entry.tokens for entry in backend.pool.entries] == [tuple(prompts[0] + replies[0][:3])]
        prompts = [prompt + reply + [11] for prompt, reply in zip(prompts, replies, strict=True)]
        before = backend.counters["prefill_positions"]
        assert backend.generate(prompts, params) == reference.generate(prompts, params)
    # row 0 reuses 13 and computes 2 new tokens, row 1 all 15: width 13 + 15, the forward runs 2 x 14 columns
    assert backend.counters["prefill_positions"] - before == 2 * 14
    assert backend.pool.entries == []  # 15 + 3 tokens per row no longer fit
    assert sum("cap" in record.message for record in caplog.records) == 1


def test_kv_cache_gib_is_validated(tokenizer, tiny):
    with pytest.raises(ValueError, match="kv_cache_gib"):
        RolloutConfig(kv_cache_gib=-1.0)
    with pytest.raises(ValueError, match="kv_cache_gib"):
        HFBackend(tiny, tokenizer, kv_cache_gib=-0.5)


def test_a_growing_layer_holds_what_concatenation_holds_through_reallocation_and_row_selection():
    """GrowingLayer appends in place into spare columns; after 150 one-column updates (several
    reallocations), a row selection (new tensors) and more updates, its keys/values equal DynamicLayer's."""
    torch.manual_seed(0)
    plain, grown = DynamicCache(), grow_in_place(DynamicCache())
    first = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    plain.update(*first, layer_idx=0)
    grown.update(*first, layer_idx=0)
    grown = grow_in_place(grown)
    assert type(grown.layers[0]) is GrowingLayer
    for step in range(150):
        if step == 100:
            for cache in (plain, grown):
                cache.batch_select_indices(torch.tensor([2, 0]))
        new = torch.randn(2 if step >= 100 else 3, 2, 1, 4), torch.randn(2 if step >= 100 else 3, 2, 1, 4)
        expected, got = plain.update(*new, layer_idx=0), grown.update(*new, layer_idx=0)
        assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
    assert grown.get_seq_length() == 155
    assert grown.layers[0]._buffers[0].shape[2] > 155  # spare columns: not reallocated per token
