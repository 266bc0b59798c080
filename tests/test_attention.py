"""agents.attention: grouped key/value heads kept grouped under a mask, same outputs as transformers' sdpa."""

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

import agents.attention as attention
from agents.attention import GROUPED_SDPA, use_grouped_attention


def _grouped_model() -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def _left_padded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    input_ids = torch.randint(1, 64, (3, 12), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones(3, 12, dtype=torch.long)
    attention_mask[0, :5] = 0
    attention_mask[2, :2] = 0
    return input_ids, attention_mask, (attention_mask.cumsum(1) - 1).clamp(min=0)


def test_same_logits_and_cached_decode_as_sdpa_without_repeating_heads(monkeypatch):
    model = _grouped_model()
    input_ids, attention_mask, positions = _left_padded_batch()

    def logits() -> torch.Tensor:
        with torch.no_grad():
            prefill = model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                            position_ids=positions[:, :-1], use_cache=True)
            step = model(input_ids=input_ids[:, -1:], attention_mask=attention_mask, position_ids=positions[:, -1:],
                         past_key_values=prefill.past_key_values, use_cache=True)
        return torch.cat([prefill.logits, step.logits], dim=1)

    expected = logits()
    assert use_grouped_attention(model) is model
    assert model.config._attn_implementation == GROUPED_SDPA
    grouped_calls = []
    plain = F.scaled_dot_product_attention

    def spy(query, key, value, **kwargs):
        grouped_calls.append((query.shape[1], key.shape[1], kwargs.get("enable_gqa", False)))
        return plain(query, key, value, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
    got = logits()
    real = attention_mask.bool()
    torch.testing.assert_close(got[real], expected[real], rtol=1e-5, atol=1e-5)
    # every layer of the prefill and the decode step: 4 query heads read 2 key/value heads, not a copy of 4
    assert grouped_calls == [(4, 2, True)] * 4


def test_only_sdpa_is_switched():
    model = _grouped_model()
    model.set_attn_implementation("eager")
    assert use_grouped_attention(model).config._attn_implementation == "eager"
