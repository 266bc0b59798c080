"""Model loading: the tiny test model, local folders, clear errors, and the embedded model's cache."""

from __future__ import annotations

import threading

import huggingface_hub
import pytest
import torch

from agents import model as model_module
from agents.backends import HFBackend, SamplingParams
from agents.model import (
    CACHED_FOLDER_NAME,
    build_tiny_model,
    default_model_dir,
    load_model_and_tokenizer,
    load_tokenizer,
    resolve_dtype,
)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(None)


def test_tiny_model_shape_and_seeding(tokenizer):
    tiny = build_tiny_model(tokenizer, seed=0)
    config = tiny.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 64, 4)
    assert config.vocab_size == len(tokenizer) == 49152
    assert tiny.get_output_embeddings().weight.shape == (49152, 64)
    torch.manual_seed(0)
    expected_next_draw = torch.rand(1)
    torch.manual_seed(0)
    same = build_tiny_model(tokenizer, seed=0)
    assert torch.equal(torch.rand(1), expected_next_draw)  # the global RNG is untouched
    assert all(torch.equal(a, b) for a, b in zip(tiny.parameters(), same.parameters(), strict=True))
    other = build_tiny_model(tokenizer, seed=1)
    assert not torch.equal(tiny.model.embed_tokens.weight, other.model.embed_tokens.weight)


def test_dtype_names():
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="dtype='int8'"):
        resolve_dtype("int8")


def test_local_folder_round_trip(tokenizer, tmp_path):
    tiny = build_tiny_model(tokenizer, seed=3)
    tiny.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_model_and_tokenizer(str(tmp_path), dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16
    assert torch.equal(loaded.model.embed_tokens.weight, tiny.model.embed_tokens.weight.to(torch.bfloat16))
    assert loaded_tokenizer.chat_template == tokenizer.chat_template


def test_missing_models_fail_with_clear_errors(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_and_tokenizer(str(tmp_path / "no-such-model"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match=r"(?s)'turnrl-test/no-such-model'.*actor_rollout_ref\.model\.path"):
        load_model_and_tokenizer("turnrl-test/no-such-model")


def test_default_model_dir_converts_once_and_atomically(tokenizer, tmp_path, monkeypatch):
    """The GGUF loader is replaced by the tiny model (the real conversion is the slow test below)."""
    loads = []
    converted = build_tiny_model(tokenizer, seed=5)

    def fake_gguf_load():
        loads.append(1)
        return converted, tokenizer

    monkeypatch.setattr(model_module, "_load_from_gguf", fake_gguf_load)
    monkeypatch.setenv("TURNRL_CACHE", str(tmp_path / "sequential"))
    torch.manual_seed(0)
    expected_next_draw = torch.rand(1)
    torch.manual_seed(0)
    folder = default_model_dir()
    assert torch.equal(torch.rand(1), expected_next_draw)  # converting leaves the caller's RNG alone
    assert folder == tmp_path / "sequential" / CACHED_FOLDER_NAME
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert default_model_dir() == folder and len(loads) == 1  # cached: no second conversion
    loaded, loaded_tokenizer = load_model_and_tokenizer(None)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), converted.parameters(), strict=True))
    chat = [{"role": "user", "content": "hi"}]
    assert loaded_tokenizer.apply_chat_template(chat, tokenize=False) == tokenizer.apply_chat_template(
        chat, tokenize=False
    )

    # Two converters racing: both get the same complete folder, and no staging folder is left behind.
    monkeypatch.setenv("TURNRL_CACHE", str(tmp_path / "race"))
    results = []
    threads = [threading.Thread(target=lambda: results.append(default_model_dir())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [tmp_path / "race" / CACHED_FOLDER_NAME] * 2
    assert [p.name for p in (tmp_path / "race").iterdir()] == [CACHED_FOLDER_NAME]
    assert (results[0] / "model.safetensors").is_file()


@pytest.mark.slow
def test_embedded_model_cache_round_trips_and_greedy_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("TURNRL_CACHE", str(tmp_path))
    gguf_model, gguf_tokenizer = model_module._load_from_gguf()
    cached_model, cached_tokenizer = load_model_and_tokenizer(None)  # converts into tmp_path
    assert (tmp_path / CACHED_FOLDER_NAME / "model.safetensors").is_file()
    chat = [{"role": "user", "content": "What is 2+3? Answer with <answer>N</answer>."}]
    text = cached_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == gguf_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    prompt = cached_tokenizer.encode(text, add_special_tokens=False)
    assert prompt == gguf_tokenizer.encode(text, add_special_tokens=False)
    with torch.no_grad():
        expected = gguf_model(torch.tensor([prompt])).logits
        actual = cached_model(torch.tensor([prompt])).logits
    assert torch.allclose(actual, expected, atol=1e-4, rtol=0)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=24)
    backend = HFBackend(cached_model, cached_tokenizer)
    first = backend.generate([prompt], greedy)
    assert first == backend.generate([prompt], greedy) == HFBackend(gguf_model, gguf_tokenizer).generate([prompt], greedy)
    assert "5" in cached_tokenizer.decode(first[0])
