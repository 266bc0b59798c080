"""Data parallelism across ranks (``torchrun`` / the ``deepspeed`` launcher; one process = world of one).

Each rank plays a contiguous share of the step's env groups with its own rollout backend; the
episodes are then gathered so every rank holds the whole step's batch (cheap next to generation),
which makes the group filter (the global reward-std ranking), the advantages and every rollout
metric exactly those of one process playing all groups. For the update, each mini-batch is split
into micro-batches exactly as one process would split it, and the micro-batches are dealt out to
the ranks (see :func:`rank_share`); log-probs are computed the same way and summed across ranks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from agents.rollout import RolloutBatch, rollout_metrics


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if not torch.distributed.is_initialized():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def group_share(num_groups: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous share of groups ``0 .. num_groups - 1``; sizes differ by at most one.

    E.g. 5 groups over 2 ranks: ``range(0, 3)`` and ``range(3, 5)``.
    """
    base, extra = divmod(num_groups, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def _pad_to(tensor: torch.Tensor, width: int, value: int) -> torch.Tensor:
    return F.pad(tensor, (0, width - tensor.shape[1]), value=value)


def gather_rollout(batch: RolloutBatch | None, pad_token_id: int) -> RolloutBatch:
    """All ranks' episodes in rank order (= group order), as one batch with its metrics recomputed.

    ``batch`` is this rank's share (None: it played no group). Group indices are renumbered
    consecutively; the format-error count behind each share's ``rollout/format_error_rate`` is
    recovered as rate x turns played, so the gathered metrics equal one process's.
    """
    _, world_size = rank_and_world()
    shares: list[RolloutBatch | None] = [None] * world_size
    torch.distributed.all_gather_object(shares, batch)
    shares = [share for share in shares if share is not None and len(share) > 0]
    width = max(share.input_ids.shape[1] for share in shares)
    offsets = [0]
    for share in shares[:-1]:
        offsets.append(offsets[-1] + len(share) // share.group_size)
    merged = RolloutBatch(
        input_ids=torch.cat([_pad_to(s.input_ids, width, pad_token_id) for s in shares]),
        attention_mask=torch.cat([_pad_to(s.attention_mask, width, 0) for s in shares]),
        loss_mask=torch.cat([_pad_to(s.loss_mask, width, 0) for s in shares]),
        group_index=torch.cat([s.group_index + offset for s, offset in zip(shares, offsets, strict=True)]),
        episode_reward=torch.cat([s.episode_reward for s in shares]),
        success=torch.cat([s.success for s in shares]),
        num_turns=torch.cat([s.num_turns for s in shares]),
        truncated=torch.cat([s.truncated for s in shares]),
        seeds=torch.cat([s.seeds for s in shares]),
        turns=[turns for s in shares for turns in s.turns],
        metrics={},
        group_size=shares[0].group_size,
        token_rewards=None if shares[0].token_rewards is None else
        torch.cat([_pad_to(s.token_rewards, width, 0) for s in shares]),
        rollout_log_probs=None if shares[0].rollout_log_probs is None else
        torch.cat([_pad_to(s.rollout_log_probs, width, 0) for s in shares]),
        tags=[tag for s in shares for tag in s.tags],
    )
    format_errors = sum(round(s.metrics["rollout/format_error_rate"] * int(s.num_turns.sum())) for s in shares)
    merged.metrics = rollout_metrics(merged, format_errors)
    return merged


def rank_share(micro_batches: list, rank: int, world_size: int) -> list[tuple]:
    """This rank's ``(micro-batch, is_padding)`` of one mini-batch, every rank getting the same count.

    Micro-batch ``i`` goes to rank ``i mod world_size``. Ranks short of ``ceil(n / W)`` micro-batches get
    the first one again marked ``is_padding`` (its loss is scaled by 0 and its metrics are not counted):
    every rank must run the same number of forward/backward passes, since the gradient all-reduce at the
    accumulation boundary, and ZeRO-3's parameter gathers, are collective.
    """
    mine = [(micro, False) for micro in micro_batches[rank::world_size]]
    rounds = math.ceil(len(micro_batches) / world_size)
    return mine + [(micro_batches[0], True)] * (rounds - len(mine))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over ranks, in place (unchanged in a world of one)."""
    if rank_and_world()[1] > 1:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on at least one (e.g. a stop signal that reached one).
    ``device``: where the process group reduces (the rank's GPU under NCCL)."""
    if rank_and_world()[1] == 1:
        return flag
    return all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0


def gather_lists(values: dict[str, list[float]]) -> dict[str, list[float]]:
    """Every rank's per-micro-batch values, key by key, concatenated (for metrics over all ranks)."""
    _, world_size = rank_and_world()
    if world_size == 1:
        return values
    gathered: list[dict[str, list[float]] | None] = [None] * world_size
    torch.distributed.all_gather_object(gathered, dict(values))
    merged: dict[str, list[float]] = {}
    for part in gathered:
        for key, items in part.items():
            merged.setdefault(key, []).extend(items)
    return merged
