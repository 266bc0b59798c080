"""The backend interface and the transformers backend, on a tiny random-weight model."""

from __future__ import annotations

import pytest
import torch

from agents.backends import HFBackend, SamplingParams, make_backend
from agents.backends.base import resolve_caps, trim_completion
from agents.backends.hardware import cpu_has_native_bf16, default_vllm_dtype, vllm_is_faster_here
from agents.backends.hf import left_padded
from agents.model import build_tiny_model
from agents.prompts import ChatTokenizer, eos_token_ids

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=6, stop=())



def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": -0.1}, {"top_p": 0.0}, {"top_p": 1.5}, {"max_new_tokens": 0}, {"stop": ("",)},
     {"seed": -1}],
)
def test_sampling_params_reject_bad_values(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SamplingParams(**kwargs)


def test_caps_default_to_max_new_tokens_and_are_validated():
    params = SamplingParams(max_new_tokens=8)
    assert resolve_caps([[1], [2], [3]], params, None) == [8, 8, 8]
    assert resolve_caps([[1], [2, 3]], params, [1, 8]) == [1, 8]
    with pytest.raises(ValueError, match="entries"):
        resolve_caps([[1], [2]], params, [4])
    with pytest.raises(ValueError, match="caps"):
        resolve_caps([[1], [2]], params, [4, 9])


def test_trim_completion_cuts_after_eos_stop_string_or_cap(tokenizer):
    eos = tokenizer.eos_token_id
    assert trim_completion([5, 6, eos, 7, eos], 10, {eos}, (), tokenizer) == [5, 6, eos]
    assert trim_completion([5, 6, 7, 8], 2, {eos}, (), tokenizer) == [5, 6]
    ids = encode(tokenizer, "Up || Left</answer> and more text")
    trimmed = trim_completion(ids, 100, {eos}, ("</answer>",), tokenizer)
    assert trimmed == ids[: len(trimmed)]
    assert tokenizer.decode(trimmed) == "Up || Left</answer>"
    assert trim_completion(ids, 100, {eos}, ("no such stop",), tokenizer) == ids


def test_left_padded_right_aligns_each_prompt_after_the_pad_id():
    input_ids, attention_mask = left_padded([[5, 6, 7], [8]], 4, pad_token_id=0)
    assert input_ids.tolist() == [[0, 5, 6, 7], [0, 0, 0, 8]]
    assert attention_mask.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]


def test_eos_ids_unite_the_tokenizer_and_generation_config_and_every_backend_uses_them(tokenizer, tiny):
    own = tokenizer.eos_token_id
    assert eos_token_ids(tokenizer) == {own}
    assert eos_token_ids(tokenizer, 7) == {own, 7}
    assert eos_token_ids(tokenizer, [7, own, 9]) == {own, 7, 9}
    assert eos_token_ids(tokenizer, None) == {own}
    assert ChatTokenizer(tokenizer).eos_token_ids == {own}  # the template writes the tokenizer's own EOS
    tiny.generation_config.eos_token_id = [own, 3]
    try:
        assert HFBackend(tiny, tokenizer).eos_token_ids == {own, 3}
    finally:
        tiny.generation_config.eos_token_id = own


def test_batched_left_padded_greedy_equals_one_prompt_at_a_time(tokenizer, tiny):
    backend = HFBackend(tiny, tokenizer)
    prompts = [encode(tokenizer, "Hi"), encode(tokenizer, "A longer prompt, so the first one is left-padded.")]
    batched = backend.generate(prompts, GREEDY)
    assert batched == [backend.generate([prompt], GREEDY)[0] for prompt in prompts]
    # Reference: argmax decoding with plain forward passes.
    sequence = list(prompts[1])
    with torch.no_grad():
        for _ in range(GREEDY.max_new_tokens):
            sequence.append(int(tiny(torch.tensor([sequence])).logits[0, -1].argmax()))
    assert batched[1] == sequence[len(prompts[1]) :]


def test_per_prompt_caps_cut_the_same_greedy_reply(tokenizer, tiny):
    backend = HFBackend(tiny, tokenizer)
    prompt = encode(tokenizer, "Turn 1:")
    [full] = backend.generate([prompt], GREEDY)
    assert len(full) == GREEDY.max_new_tokens
    assert backend.generate([prompt, prompt], GREEDY, max_new_tokens=[2, 5]) == [full[:2], full[:5]]


def test_generation_stops_at_the_token_completing_a_stop_string(tokenizer, tiny):
    backend = HFBackend(tiny, tokenizer)
    prompt = encode(tokenizer, "Turn 1:")
    [full] = backend.generate([prompt], GREEDY)
    stop = tokenizer.decode(full[1:3])  # text the greedy reply is known to produce
    [stopped] = backend.generate([prompt], SamplingParams(temperature=0.0, max_new_tokens=6, stop=(stop,)))
    assert stopped == full[: len(stopped)] and len(stopped) <= 3
    assert stop in tokenizer.decode(stopped) and stop not in tokenizer.decode(stopped[:-1])
    # The prompt may contain the stop string; only generated text counts.
    [unstopped] = backend.generate([prompt + full[1:3]], SamplingParams(temperature=0.0, max_new_tokens=1,
                                                                         stop=(stop,)))
    assert len(unstopped) == 1


def test_seeded_sampling_is_reproducible_and_leaves_the_global_rng_alone(tokenizer, tiny):
    backend = HFBackend(tiny, tokenizer)
    prompts = [encode(tokenizer, "Hello there"), encode(tokenizer, "State:")]
    params = SamplingParams(temperature=1.0, max_new_tokens=8, stop=(), seed=3)
    torch.manual_seed(0)
    expected_next_draw = torch.rand(1)
    torch.manual_seed(0)
    first = backend.generate(prompts, params)
    assert torch.equal(torch.rand(1), expected_next_draw)
    assert backend.generate(prompts, params) == first
    other = SamplingParams(temperature=1.0, max_new_tokens=8, stop=(), seed=4)
    assert backend.generate(prompts, other) != first


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_repeated_prompts_are_prefilled_once_and_generate_what_a_plain_batch_does(tokenizer, temperature):
    """Two distinct prompts, each asked for three times (a GRPO group): the backend's first forward
    runs 2 rows, not 6, and its outputs equal transformers' generate on the whole padded batch."""
    tiny = build_tiny_model(tokenizer, seed=0)
    with torch.no_grad():  # strong, sharp attention: the output depends on context and RoPE positions
        for layer in tiny.model.layers:
            for projection in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                               layer.self_attn.o_proj):
                projection.weight.mul_(8.0)
    backend = HFBackend(tiny, tokenizer)
    short, long = encode(tokenizer, "State:\n#_P#"), encode(tokenizer, "Turn 1:\nState:\n#__O_P#\nYou have 5 actions left.")
    prompts = [short, long, short, long, short, long]
    params = SamplingParams(temperature=temperature, max_new_tokens=6, stop=(), seed=11)
    batch_sizes = []
    hook = tiny.register_forward_pre_hook(lambda _, args, kwargs: batch_sizes.append(len(kwargs["input_ids"])),
                                          with_kwargs=True)
    try:
        shared = backend.generate(prompts, params)
    finally:
        hook.remove()
    assert batch_sizes[0] == 2 and set(batch_sizes[1:]) == {6}

    width = len(long)
    input_ids = torch.tensor([[backend.pad_token_id] * (width - len(p)) + p for p in prompts])
    attention_mask = (torch.arange(width) >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    torch.manual_seed(params.seed)
    with torch.no_grad():
        plain = tiny.generate(input_ids=input_ids, attention_mask=attention_mask,
                              generation_config=backend.generation_config(params, 6))
    assert shared == [row[:len(out)] for row, out in zip(plain[:, width:].tolist(), shared, strict=True)]
    assert all(len(out) == 6 or out[-1] in backend.eos_token_ids for out in shared)


def test_update_weights_loads_another_model_and_is_free_for_the_same_one(tokenizer):
    served, trained = build_tiny_model(tokenizer, seed=0), build_tiny_model(tokenizer, seed=1)
    backend = HFBackend(served, tokenizer)
    prompt = [encode(tokenizer, "Reward:")]
    before = backend.generate(prompt, GREEDY)
    backend.update_weights(served)
    assert backend.generate(prompt, GREEDY) == before
    backend.update_weights(trained)
    assert all(torch.equal(a, b) for a, b in zip(served.parameters(), trained.parameters(), strict=True))
    assert backend.generate(prompt, GREEDY) == HFBackend(trained, tokenizer).generate(prompt, GREEDY)


def test_make_backend_names(tokenizer, tiny):
    assert isinstance(make_backend("hf", tiny, tokenizer), HFBackend)
    assert isinstance(make_backend("auto", tiny, tokenizer, model_dir=None), HFBackend)
    if not vllm_is_faster_here():  # e.g. an AVX2-only CPU: hf even with a folder
        assert isinstance(make_backend("auto", tiny, tokenizer, model_dir="unused"), HFBackend)
    with pytest.raises(ValueError, match="backend='nope'"):
        make_backend("nope", tiny, tokenizer)
    with pytest.raises(ValueError, match="model_dir"):
        make_backend("vllm", tiny, tokenizer, model_dir=None)


@pytest.mark.parametrize(("cuda", "native_bf16", "expected"), [
    (True, False, True), (True, True, True), (False, True, True), (False, False, False),
])
def test_auto_takes_vllm_where_it_was_measured_faster(monkeypatch, cuda, native_bf16, expected):
    """The rule of ``vllm_is_faster_here``: CUDA and native-bf16 CPUs go to vLLM; a CPU without native bf16
    stays on hf, one turn or many; without vLLM installed, always hf."""
    from agents.backends import hardware

    monkeypatch.setattr(hardware.torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(hardware.importlib.util, "find_spec", lambda name: object())
    assert hardware.vllm_is_faster_here() is expected
    monkeypatch.setattr(hardware.importlib.util, "find_spec", lambda name: None)
    assert hardware.vllm_is_faster_here() is False


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16("processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16\n")
    assert cpu_has_native_bf16("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16("flags : fpu sse avx2 avx512f\nbugs : avx512_bf16\n")
    assert not cpu_has_native_bf16("")


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the CUDA device decides")
def test_vllm_serves_bf16_only_where_the_cpu_has_it_natively():
    assert default_vllm_dtype("flags : fpu avx2 avx512_bf16\n") == torch.bfloat16
    assert default_vllm_dtype("flags : fpu avx2\n") == torch.float32  # emulated bf16 is 4x slower there
