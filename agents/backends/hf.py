"""Backend on transformers' ``model.generate``: the fallback where vLLM is absent or slow (CPUs without
native bf16) and the reference the tests compare with. It shares the trainer's model object, so weight
updates are free.

Repeated prompts are prefilled once. A GRPO step asks for ``group_size`` episodes of each level, which
start from the same prompt, so the backend runs the prompt tokens of each *distinct* prompt, copies
their KV cache to the rows that repeat it, and lets ``generate`` continue from that cache::

    cache[U, W-1] = model(distinct prompts, left-padded to width W, all but the last column)
    cache[B, W-1] = cache[distinct_index]                 # row b holds the keys/values of its prompt
    generate(all B prompts, past_key_values=cache)         # feeds only column W-1, then samples

Each row's keys and values are those a plain batched prefill computes, so greedy outputs are the same
and sampled ones follow the same seeded draws; the prefill work drops by ``B / U`` (``group_size``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from transformers import (
    Cache,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from agents.backends.base import SamplingParams, resolve_caps, trim_completion
from agents.prompts import eos_token_ids, pad_token_id


class HFBackend:
    """Batched generation with left padding; see ``agents.backends.base`` for the contract."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids(tokenizer, model.generation_config.eos_token_id)
        self.pad_token_id = pad_token_id(tokenizer)

    def generation_config(self, params: SamplingParams, max_new_tokens: int) -> GenerationConfig:
        """``generate``'s settings for ``params``: neutral values are explicit, since unset (None) fields
        would be filled from the model's generation_config.json (e.g. Qwen's repetition_penalty=1.05, top_k=20)."""
        sampling = {} if params.greedy else {"temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        return GenerationConfig(
            do_sample=not params.greedy,
            **sampling,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.pad_token_id,
            eos_token_id=sorted(self.eos_token_ids),
        )

    @torch.no_grad()
    def generate(
        self, prompts: list[list[int]], params: SamplingParams, max_new_tokens: Sequence[int] | None = None
    ) -> list[list[int]]:
        if not prompts:
            return []
        caps = resolve_caps(prompts, params, max_new_tokens)
        device = next(self.model.parameters()).device
        width = max(len(prompt) for prompt in prompts)
        input_ids, attention_mask = (tensor.to(device) for tensor in left_padded(prompts, width, self.pad_token_id))
        was_training = self.model.training
        self.model.eval()
        try:
            cache = self._shared_prefill(prompts, input_ids, attention_mask)
            with _seeded(params.seed, device):
                output = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    past_key_values=cache,
                    generation_config=self.generation_config(params, max(caps)),
                    stopping_criteria=StoppingCriteriaList([_StopStrings(params.stop, width, self.tokenizer)]),
                )
        finally:
            self.model.train(was_training)
        completions = output[:, width:].tolist()
        return [
            trim_completion(ids, cap, self.eos_token_ids, params.stop, self.tokenizer)
            for ids, cap in zip(completions, caps, strict=True)
        ]

    def _shared_prefill(self, prompts: list[list[int]], input_ids: torch.Tensor,
                        attention_mask: torch.Tensor) -> Cache | None:
        """The KV cache of all but the last column of the left-padded batch, computed once per distinct
        prompt; None (``generate`` prefills itself) when no prompt repeats or the prompts are one token wide."""
        first_row: dict[tuple[int, ...], int] = {}
        for row, prompt in enumerate(prompts):
            first_row.setdefault(tuple(prompt), row)
        if len(first_row) == len(prompts) or input_ids.shape[1] < 2:
            return None
        distinct_index = {prompt: index for index, prompt in enumerate(first_row)}
        source_row = torch.tensor([distinct_index[tuple(prompt)] for prompt in prompts], device=input_ids.device)
        rows = list(first_row.values())
        ids, mask = input_ids[rows, :-1], attention_mask[rows, :-1]
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)  # what generate gives left-padded rows
        cache = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True,
                           logits_to_keep=1).past_key_values
        cache.batch_select_indices(source_row)
        return cache

    def update_weights(self, model: torch.nn.Module) -> None:
        """Use ``model``'s weights from now on (nothing to do when it is the served model itself)."""
        if model is not self.model:
            self.model.load_state_dict(model.state_dict())

    def close(self) -> None:
        """Nothing to free: the model belongs to the caller and no cache outlives ``generate``."""


def left_padded(prompts: Sequence[Sequence[int]], width: int, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` ``[len(prompts), width]``, each prompt right-aligned after
    ``pad_token_id`` padding (mask 0), as decoder-only batched generation wants."""
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids, attention_mask


class _StopStrings(StoppingCriteria):
    """Marks a row done once the text of its newest generated tokens contains a stop string.

    Cheaper than transformers' ``stop_strings`` (which preprocesses the whole vocabulary per call):
    only the last ``max(len(stop)) + 2`` generated tokens are decoded, enough since every token
    decodes to at least one character.
    """

    def __init__(self, stop: tuple[str, ...], prompt_width: int, tokenizer: PreTrainedTokenizerBase) -> None:
        self.stop = stop
        self.prompt_width = prompt_width
        self.window = max((len(s) for s in stop), default=0) + 2
        self.tokenizer = tokenizer

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        if not self.stop:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        start = max(self.prompt_width, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:].tolist())
        done = [any(s in tail for s in self.stop) for tail in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for the block and restore the caller's RNG state afterwards."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
