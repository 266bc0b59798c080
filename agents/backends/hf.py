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

Later turns reuse each episode's cache (``agents.backends.kv_pool``): a prompt that extends a sequence
of the previous call keeps its keys/values and only its new tokens (the env message, and the reply's
last token, never fed) are prefilled, all rows in one forward over the layout of ``batched_cache``; then
``generate`` continues as above. Up to ``kv_cache_gib`` GiB are kept; rows past it are prefilled whole.
``clear_cache()`` frees all (the rollout engine calls it after each rollout); the cache is also dropped
when the weights change (tensor version counters), so it never outlives the weights that made it.

``counters`` accumulates ``prefill_s`` / ``decode_s`` (wall time in the backend's prefill forwards and
in ``generate``) and ``prefill_positions`` / ``decode_positions`` (rows x columns the model computed,
padding included).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

import torch
from transformers import (
    Cache,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from agents.backends.base import SamplingParams, resolve_caps, trim_completion
from agents.backends.kv_pool import GIB, KVPool, batched_cache, grow_in_place
from agents.prompts import eos_token_ids, pad_token_id


class HFBackend:
    """Batched generation with left padding; see ``agents.backends.base`` for the contract."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, kv_cache_gib: float = 2.0) -> None:
        if kv_cache_gib < 0:
            raise ValueError(f"kv_cache_gib={kv_cache_gib} is invalid; allowed: >= 0 (0 turns KV reuse off)")
        self.model = model
        self.pool = KVPool(round(kv_cache_gib * GIB))
        self.counters = dict.fromkeys(("prefill_s", "decode_s", "prefill_positions", "decode_positions"), 0.0)
        self._weights_version = self._version()
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

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, max_new_tokens: Sequence[int] | None = None
    ) -> list[list[int]]:
        return self.generate_scored(prompts, params, max_new_tokens)[0]

    @torch.no_grad()
    def generate_scored(
        self, prompts: list[list[int]], params: SamplingParams, max_new_tokens: Sequence[int] | None = None
    ) -> tuple[list[list[int]], list[list[float]]]:
        """:meth:`generate` and each returned token's log-prob (``agents.backends.base``)."""
        if not prompts:
            return [], []
        caps = resolve_caps(prompts, params, max_new_tokens)
        if self._version() != self._weights_version:
            self.clear_cache()
        device = next(self.model.parameters()).device
        matches = [self.pool.match(prompt) for prompt in prompts]
        cached = max(size for _, size in matches)
        width = cached + max(len(prompt) - size for prompt, (_, size) in zip(prompts, matches, strict=True))
        input_ids, attention_mask = (tensor.to(device) for tensor in self._layout(prompts, matches, width))
        was_training = self.model.training
        self.model.eval()
        try:
            start = time.perf_counter()
            cache = self._prefill(prompts, matches, cached, input_ids, attention_mask)
            if cache is not None:
                grow_in_place(cache)  # decode appends in place, not by concatenating the cache per token
            self.pool.clear()  # the batch cache holds what was reused; unmatched entries (finished episodes) go
            matches.clear()
            config = self.generation_config(params, max(caps))
            config.return_dict_in_generate = True  # to get the cache back
            scores = _SampledLogProbs(params.temperature or 1.0)
            tic = time.perf_counter()
            with _seeded(params.seed, device):
                output = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    past_key_values=cache,
                    generation_config=config,
                    logits_processor=LogitsProcessorList([scores]),
                    stopping_criteria=StoppingCriteriaList([_StopStrings(params.stop, width, self.tokenizer)]),
                )
            steps = output.sequences.shape[1] - width
            self.counters["prefill_s"] += tic - start
            self.counters["decode_s"] += time.perf_counter() - tic
            self.counters["decode_positions"] += len(prompts) * steps
        finally:
            self.model.train(was_training)
        completions = [
            trim_completion(ids, cap, self.eos_token_ids, params.stop, self.tokenizer)
            for ids, cap in zip(output.sequences[:, width:].tolist(), caps, strict=True)
        ]
        self._keep(prompts, completions, attention_mask, output.past_key_values, width + steps - 1)
        log_probs = scores.finish(output.sequences).tolist()
        return completions, [row[: len(ids)] for row, ids in zip(log_probs, completions, strict=True)]

    def clear_cache(self) -> None:
        """Free every kept KV cache (and forget the weights they were computed with)."""
        self.pool.clear()
        self._weights_version = self._version()

    def _version(self) -> int:
        """Changes whenever a parameter is written in place (optimizer step, ``load_state_dict``)."""
        return sum(parameter._version for parameter in self.model.parameters())

    def _layout(self, prompts: list[list[int]], matches: list[tuple], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` ``[len(prompts), width]``: row b's ``c_b`` reused tokens end at
        column ``C = max c_b``, its other tokens at ``width`` (see ``agents.backends.kv_pool``)."""
        cached = max(size for _, size in matches)
        input_ids, attention_mask = left_padded([prompt[size:] for prompt, (_, size) in zip(prompts, matches, strict=True)],
                                                width, self.pad_token_id)
        for row, (prompt, (_, size)) in enumerate(zip(prompts, matches, strict=True)):
            if size:
                input_ids[row, cached - size : cached] = torch.tensor(prompt[:size], dtype=torch.long)
                attention_mask[row, cached - size : cached] = 1
        return input_ids, attention_mask

    def _prefill(self, prompts: list[list[int]], matches: list[tuple], cached: int, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor) -> Cache | None:
        """The cache of all but the last column: reused rows' keys/values plus a forward over the new
        columns, or the shared first-turn prefill when nothing is reused."""
        if cached == 0:
            return self._shared_prefill(prompts, input_ids, attention_mask)
        cache = batched_cache(matches, cached)
        if input_ids.shape[1] - 1 > cached:
            self._forward(input_ids[:, :-1], attention_mask[:, :-1], cache, start=cached)
        return cache

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: Cache | None,
                 start: int = 0) -> Cache:
        """Run columns ``start:`` with ``cache`` holding the columns before; positions as ``generate`` gives."""
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)[:, start:]
        self.counters["prefill_positions"] += position_ids.numel()
        return self.model(input_ids=input_ids[:, start:], attention_mask=attention_mask, position_ids=position_ids,
                          past_key_values=cache, use_cache=True, logits_to_keep=1).past_key_values

    def _keep(self, prompts: list[list[int]], completions: list[list[int]], attention_mask: torch.Tensor,
              cache: Cache, columns: int) -> None:
        """Keep each row's prompt + reply keys/values: the prompt's real columns and the reply's first
        tokens that were fed (the cache has ``columns`` columns; later ones of a row are padding)."""
        width = attention_mask.shape[1]
        rows = []
        for row, (prompt, reply) in enumerate(zip(prompts, completions, strict=True)):
            fed = min(len(reply), columns - width)
            prompt_columns = attention_mask[row].nonzero().flatten()
            index = torch.cat([prompt_columns, torch.arange(width, width + fed, device=prompt_columns.device)])
            rows.append((row, tuple(prompt) + tuple(reply[:fed]), index))
        self.pool.keep(rows, cache)

    def _shared_prefill(self, prompts: list[list[int]], input_ids: torch.Tensor,
                        attention_mask: torch.Tensor) -> Cache | None:
        """The KV cache of all but the last column of the left-padded batch, computed once per distinct
        prompt; None (``generate`` prefills itself) when the prompts are one token wide."""
        first_row: dict[tuple[int, ...], int] = {}
        for row, prompt in enumerate(prompts):
            first_row.setdefault(tuple(prompt), row)
        if input_ids.shape[1] < 2:
            return None
        distinct_index = {prompt: index for index, prompt in enumerate(first_row)}
        source_row = torch.tensor([distinct_index[tuple(prompt)] for prompt in prompts], device=input_ids.device)
        rows = list(first_row.values())
        cache = self._forward(input_ids[rows, :-1], attention_mask[rows, :-1], None)
        if len(rows) < len(prompts):
            cache.batch_select_indices(source_row)
        return cache

    def update_weights(self, model: torch.nn.Module) -> None:
        """Use ``model``'s weights from now on (nothing to do when it is the served model itself)."""
        if model is not self.model:
            self.model.load_state_dict(model.state_dict())
        self.clear_cache()

    def close(self) -> None:
        """Free the kept KV caches (the model belongs to the caller)."""
        self.clear_cache()


def left_padded(prompts: Sequence[Sequence[int]], width: int, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` ``[len(prompts), width]``, each prompt right-aligned after
    ``pad_token_id`` padding (mask 0), as decoder-only batched generation wants."""
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids, attention_mask


class _SampledLogProbs(LogitsProcessor):
    """Records ``log softmax(logits / temperature)[sampled token]`` per generated token, holding one step's
    ``[B, V]`` at a time. Placed before ``generate``'s warpers, it sees the model's logits; the token sampled
    from call ``k``'s logits is the last column of call ``k + 1``'s ids (the last one: :meth:`finish`)."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature
        self.last: torch.Tensor | None = None
        self.values: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._take(input_ids[:, -1])
        self.last = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def _take(self, tokens: torch.Tensor) -> None:
        if self.last is not None:
            self.values.append(self.last.gather(1, tokens[:, None])[:, 0].cpu())

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """``[B, generated]`` log-probs of the generated columns of ``sequences`` (the output ids)."""
        self._take(sequences[:, -1])
        self.last = None
        return torch.stack(self.values, dim=1) if self.values else torch.zeros(len(sequences), 0)


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
