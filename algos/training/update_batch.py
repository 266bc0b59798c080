"""The kept episodes as token tensors for the update, and the micro-batches it is cut into."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.rollout import RolloutBatch
from algos.training.packed_logprobs import shuffle_by_group


@dataclass
class MicroBatch:
    """The rows of one forward/backward pass, trimmed to their longest sequence (``[b, t]``, ``[b, t-1]``)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor  # 1 where input_ids[:, j + 1] was generated
    advantages: torch.Tensor
    group_index: torch.Tensor
    old_logp: torch.Tensor | None
    ref_logp: torch.Tensor | None
    values: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    rollout_logp: torch.Tensor | None = None

    def to(self, device: torch.device) -> MicroBatch:
        return MicroBatch(*(None if value is None else value.to(device) for value in vars(self).values()))


@dataclass
class UpdateBatch:
    """Tensors of the kept episodes; token tensors ``[B, T-1]`` are aligned with the predicted tokens."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T-1]: 1 where input_ids[:, t + 1] was generated
    advantages: torch.Tensor  # [B, T-1]: the episode's advantage on each generated token
    group_index: torch.Tensor  # [B]: episodes of one group start with the same prompt
    old_logp: torch.Tensor | None = None  # None: on-policy single update, taken from the live forward
    ref_logp: torch.Tensor | None = None
    values: torch.Tensor | None = None  # [B, T-1]: the critic's values at rollout time (gae)
    returns: torch.Tensor | None = None  # [B, T-1]: the critic's regression targets (gae)
    rollout_logp: torch.Tensor | None = None  # [B, T-1]: the sampler's log-probs (None: the backend gave none)

    @classmethod
    def from_rollout(cls, batch: RolloutBatch, episode_advantages: torch.Tensor) -> UpdateBatch:
        """Shifted masks and token-level advantages ``A[b, t] = adv[b]`` on every generated token."""
        response_mask = batch.loss_mask[:, 1:]
        sampler = None if batch.rollout_log_probs is None else batch.rollout_log_probs[:, 1:]
        return cls(batch.input_ids, batch.attention_mask, response_mask,
                   episode_advantages[:, None] * response_mask.float(), batch.group_index, rollout_logp=sampler)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, index: torch.Tensor) -> MicroBatch:
        """Episodes ``index``, trimmed to their longest sequence."""
        width = int(self.attention_mask[index].sum(dim=1).max())
        token = [None if value is None else value[index, : width - 1] for value in
                 (self.response_mask, self.advantages, self.old_logp, self.ref_logp, self.values, self.returns,
                  self.rollout_logp)]
        return MicroBatch(self.input_ids[index, :width], self.attention_mask[index, :width], token[0], token[1],
                          self.group_index[index], *token[2:])

    def micro_batches(self, rows: torch.Tensor, size: int, max_tokens: int | None = None) -> list[torch.Tensor]:
        """``rows`` cut in order into micro-batches of ``size`` episodes or, with ``max_tokens`` (verl's
        ``use_dynamic_bsz``), of as many episodes as fit in ``max_tokens`` padded tokens (rows x the
        longest row); an episode longer than that goes alone."""
        if max_tokens is None:
            return list(rows.split(size))
        cuts, start, longest = [], 0, 0
        for i, length in enumerate(self.attention_mask[rows].sum(dim=1).tolist()):
            if i > start and max(longest, length) * (i - start + 1) > max_tokens:
                cuts.append(rows[start:i])
                start, longest = i, 0
            longest = max(longest, length)
        return [*cuts, rows[start:]] if len(rows) else []

    def epoch_order(self, by_group: bool, generator: torch.Generator) -> torch.Tensor:
        """One PPO epoch's shuffled row order: whole groups (``by_group``, so micro-batches share a
        prompt) or single episodes."""
        return shuffle_by_group(self.group_index, generator) if by_group else \
            torch.randperm(len(self), generator=generator)
