"""Response log-probs (and a value model's values) with each group's shared prompt computed once (exact, fewer token-forwards).

All ``group_size`` episodes of a group start with the same prompt tokens (same level, same chat), so
the plain forward recomputes that prompt once per member. The grouped forward packs each group into
one row, the shared prefix once and then every member's own tokens, and lets attention see the tree::

    P_u             = min(longest common prefix of unit u's members, shortest member length - 1)
    packed row u    = [prefix (P_u tokens) | suffix of member 1 | suffix of member 2 | ...]
    position_ids    = [0 .. P_u - 1 | P_u .. n_1 - 1 | P_u .. n_2 - 1 | ...]
    attend(q -> k)  = k <= q and (k in the prefix or k in q's own suffix)          # [U, 1, L, L]
    logits[U, L]    = model(packed rows, 4D mask, position_ids)

A *unit* is a group's members in the batch when they share at least ``min_shared_tokens`` tokens,
else each member alone (then ``P = n_b - 1``: the whole episode but its last token). Every token
sees exactly the keys and positions of the plain forward, and autograd sums the members' gradients
into the shared prefix, so log-probs, entropies and parameter gradients equal
:func:`response_log_probs` up to float rounding. The activations are those of the packed tokens only
(no per-member copy of the prompt's keys and values), and with no KV cache it also runs under
gradient checkpointing. A logit at a prefix position (the one predicting the first generated token,
or any generated token all members share) is the one all members read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.attention import GROUPED_SDPA
from algos.losses import entropy_from_logits

MIN_SHARED_TOKENS = 8
"""A group whose members share fewer tokens is not worth a prefix pass: its members run alone."""


def response_log_probs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of every generated token and the policy entropy there, both ``[B, T-1]`` (0 elsewhere).

    Token ``t`` is predicted by the logits at ``t - 1``: column ``j`` scores ``input_ids[:, j + 1]``,
    with ``response_mask = loss_mask[:, 1:]``. The model computes logits only at the columns that
    predict a generated token (``logits_to_keep``) and only masked positions go through the softmax,
    which keeps the ``[.., vocab]`` tensors small. Logits are divided by the sampling temperature so
    the log-probs are those of the sampling policy. The entropy has gradients only with ``entropy_grad``.
    """
    return _scatter(response_logits(model, input_ids, attention_mask, response_mask), input_ids,
                    response_mask.bool(), temperature, entropy_grad)


def response_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """``[N, V]``: the model's outputs at the ``N`` columns that predict a generated token (row-major
    order of ``response_mask``), from the plain forward. ``V`` is the vocabulary, or 1 for a value model."""
    positions = response_mask.bool()
    columns = positions.any(dim=0).nonzero().flatten()
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                   logits_to_keep=columns).logits
    return logits[positions[:, columns]]


def grouped_response_log_probs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    group_index: torch.Tensor | None,
    temperature: float,
    entropy_grad: bool = False,
    min_shared_tokens: int = MIN_SHARED_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`response_log_probs` with the prompt shared by episodes of equal ``group_index`` run once
    (:func:`grouped_response_logits`)."""
    logits_at = grouped_response_logits(model, input_ids, attention_mask, response_mask, group_index,
                                        min_shared_tokens)
    return _scatter(logits_at, input_ids, response_mask.bool(), temperature, entropy_grad)


def grouped_response_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    group_index: torch.Tensor | None,
    min_shared_tokens: int = MIN_SHARED_TOKENS,
) -> torch.Tensor:
    """:func:`response_logits` with the prompt shared by episodes of equal ``group_index`` run once.

    ``input_ids``/``attention_mask`` must be right-padded (as the rollout collates them). ``model`` is
    a Hugging Face causal LM, a value model with the same call (``algos.training.critic``) or an engine
    that passes keyword arguments on to one (DeepSpeed).
    Falls back to the plain forward when no two episodes share a prefix, when ``group_index`` is None,
    when the model's attention takes no 4D mask (only ``sdpa`` and ``eager`` do), when a packed
    row would exceed ``MAX_PACKED_TOKENS``, and when packing would cost more compute than it saves
    (:func:`packing_pays`: long multi-turn members make the packed row's ``L x L`` attention dominate).
    """
    lengths = attention_mask.sum(dim=1)
    width = input_ids.shape[1]
    if not torch.equal(attention_mask.bool(), torch.arange(width, device=lengths.device) < lengths[:, None]):
        raise ValueError("attention_mask is not right-padded; allowed: ones then zeros in every row")
    config = getattr(getattr(model, "module", model), "config", None)
    attention = getattr(config, "_attn_implementation", None)
    packable = group_index is not None and attention in PACKABLE_ATTENTION
    if packable:
        unit_of_row, prefix_length = sharing_units(input_ids, lengths, group_index, min_shared_tokens)
        # packed row u: its prefix once plus each member's own tokens; checked before any L x L mask exists
        packed_length = prefix_length.clone().index_add_(0, unit_of_row, lengths - prefix_length[unit_of_row])
        packable = (len(prefix_length) < len(input_ids) and int(packed_length.max()) <= MAX_PACKED_TOKENS
                    and packing_pays(lengths, packed_length, config))
    if not packable:
        return response_logits(model, input_ids, attention_mask, response_mask)

    packed = pack_units(input_ids, lengths, unit_of_row, prefix_length)
    positions = response_mask.bool()
    rows, cols = positions.nonzero(as_tuple=True)
    slot = packed.column[rows, cols]  # packed column whose logit predicts input_ids[row, col + 1]
    columns = slot.unique()  # sorted
    mask = packed.attend[:, None]
    if attention == "eager":  # eager attention adds the mask to the scores
        dtype = next(model.parameters()).dtype
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    logits = model(input_ids=packed.input_ids, attention_mask=mask, position_ids=packed.position_ids,
                   use_cache=False, logits_to_keep=columns).logits  # [U, len(columns), V]
    return logits[unit_of_row[rows], torch.searchsorted(columns, slot)]


PACKABLE_ATTENTION = frozenset({"sdpa", GROUPED_SDPA, "eager"})
"""Attention implementations that take a custom 4D mask (flash-attention kernels do not)."""

MAX_PACKED_TOKENS = 8192
"""Longest packed row: its boolean attention mask has ``L^2`` entries (64 Mi at this length)."""


def packing_pays(lengths: torch.Tensor, packed_length: torch.Tensor, config: object) -> bool:
    """Whether the packed rows cost fewer FLOPs per layer than the plain rows, with a token's cost
    ``c * (4 h^2 + 3 h f) + 4 h L`` (projections and MLP, then attention over its row of ``L`` tokens;
    ``h`` hidden, ``f`` MLP width, ``c = 2``): packing removes repeated prefix tokens but makes a row
    ``L_packed`` long. A 5-turn FrozenLake group of 8 (a 311-token prompt, ~600 own tokens each) packs
    to ~5.1k tokens and costs ~1.4x its plain rows; one-turn Bandit groups pack at ~0.2x."""
    hidden = getattr(config, "hidden_size", None)
    if hidden is None:
        return True
    token = 2 * (4 * hidden**2 + 3 * hidden * getattr(config, "intermediate_size", 4 * hidden))
    def cost(rows: torch.Tensor) -> float:
        rows = rows.double()
        return float((token * rows + 4 * hidden * rows**2).sum())
    return cost(packed_length) < cost(lengths)


@dataclass
class PackedUnits:
    """One row per unit: the shared prefix once, then each member's own tokens (see the module doc)."""

    input_ids: torch.Tensor  # [U, L], right-padded
    position_ids: torch.Tensor  # [U, L]: each token's position in its own episode
    attend: torch.Tensor  # [U, L, L] bool: query q may attend to key k
    column: torch.Tensor  # [B, T]: the packed column of input_ids[b, t] in row unit_of_row[b]


def pack_units(
    input_ids: torch.Tensor, lengths: torch.Tensor, unit_of_row: torch.Tensor, prefix_length: torch.Tensor
) -> PackedUnits:
    """Pack each unit's rows into one row; ``column`` maps every episode token to its packed column.

    Member ``i`` of a unit (in batch order) has segment ``i``, the prefix segment ``-1``, padding
    segment ``-2`` (pads attend to the prefix and earlier pads, so their values stay finite)."""
    device = input_ids.device
    column = torch.zeros(input_ids.shape, dtype=torch.long, device=device)
    packed_ids, packed_positions, segments = [], [], []
    for unit, prefix in enumerate(prefix_length.tolist()):
        members = (unit_of_row == unit).nonzero().flatten().tolist()
        ids = [input_ids[members[0], :prefix]]
        position = [torch.arange(prefix, device=device)]
        segment = [torch.full((prefix,), -1, device=device)]
        offset = prefix
        for index, row in enumerate(members):
            own = int(lengths[row]) - prefix
            column[row, :prefix] = torch.arange(prefix, device=device)
            column[row, prefix : prefix + own] = offset + torch.arange(own, device=device)
            ids.append(input_ids[row, prefix : prefix + own])
            position.append(prefix + torch.arange(own, device=device))
            segment.append(torch.full((own,), index, device=device))
            offset += own
        packed_ids.append(torch.cat(ids))
        packed_positions.append(torch.cat(position))
        segments.append(torch.cat(segment))
    width = max(len(ids) for ids in packed_ids)

    def pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
        return torch.stack([torch.nn.functional.pad(row, (0, width - len(row)), value=value) for row in rows])

    segment = pad(segments, -2)
    key_index = torch.arange(width, device=device)
    causal = key_index[None, :] <= key_index[:, None]  # [L, L]: k <= q
    visible = (segment[:, None, :] == -1) | (segment[:, None, :] == segment[:, :, None])  # [U, L(q), L(k)]
    # the padding's token id is arbitrary: no real token attends to it
    return PackedUnits(pad(packed_ids, 0), pad(packed_positions, 0), causal & visible, column)


def sharing_units(
    input_ids: torch.Tensor, lengths: torch.Tensor, group_index: torch.Tensor, min_shared_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(unit_of_row [B], prefix_length [U])``: which rows run on one prefix, and its length.

    A group's rows form one unit when their longest common prefix has ``>= min_shared_tokens``
    tokens, with ``P = min(common prefix, shortest row - 1)`` so every row keeps a suffix token;
    other rows are units of their own with ``P = max(n_b - 1, 1)``. Units follow their groups' first rows.
    """
    if min_shared_tokens < 1:
        raise ValueError(f"min_shared_tokens={min_shared_tokens} is invalid; allowed: an int >= 1")
    if group_index.shape != lengths.shape:
        raise ValueError(f"group_index has shape {tuple(group_index.shape)}; allowed: one label per row "
                         f"({tuple(lengths.shape)})")
    unit_of_row = torch.empty(len(lengths), dtype=torch.long)
    prefix_length: list[int] = []
    group_index, lengths_cpu = group_index.cpu(), lengths.cpu()
    for label in dict.fromkeys(group_index.tolist()):  # groups in order of first appearance
        members = (group_index == label).nonzero().flatten()
        shortest = int(lengths_cpu[members].min())
        tokens = input_ids[members.to(input_ids.device), :shortest]
        common = int((tokens == tokens[:1]).all(dim=0).long().cumprod(dim=0).sum())
        if len(members) > 1 and common >= min_shared_tokens:
            unit_of_row[members] = len(prefix_length)
            prefix_length.append(max(min(common, shortest - 1), 1))
        else:
            for member in members.tolist():
                unit_of_row[member] = len(prefix_length)
                prefix_length.append(max(int(lengths_cpu[member]) - 1, 1))
    device = input_ids.device
    return unit_of_row.to(device), torch.tensor(prefix_length, dtype=torch.long, device=device)


def shuffle_by_group(group_index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A permutation of the rows that shuffles whole groups (first-appearance order kept within one),
    so consecutive mini- and micro-batches hold whole groups and share their prompts."""
    labels, inverse = group_index.unique(return_inverse=True)
    rank = torch.empty(len(labels), dtype=torch.long)
    rank[torch.randperm(len(labels), generator=generator)] = torch.arange(len(labels))
    return torch.argsort(rank[inverse] * len(group_index) + torch.arange(len(group_index)))


def _scatter(
    logits_at: torch.Tensor, input_ids: torch.Tensor, positions: torch.Tensor, temperature: float,
    entropy_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T-1]`` log-probs and entropies from the logits ``[N, V]`` of the ``N`` generated tokens
    (row-major order of ``positions``), at the sampling temperature."""
    logits_at = logits_at.float() / temperature
    targets = input_ids[:, 1:][positions]
    token_logp = logits_at.gather(-1, targets[:, None]).squeeze(-1) - logits_at.logsumexp(dim=-1)
    logp = torch.zeros(positions.shape, dtype=token_logp.dtype, device=logits_at.device)
    entropy = torch.zeros_like(logp)
    logp[positions] = token_logp
    entropy[positions] = entropy_from_logits(logits_at if entropy_grad else logits_at.detach())
    return logp, entropy
