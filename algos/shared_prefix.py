"""Response log-probs with each group's shared prompt computed once (exact, fewer token-forwards).

All ``group_size`` episodes of a group start with the same prompt tokens (same level, same chat), so
the plain forward recomputes that prompt once per member. The grouped forward runs it once per group::

    P_u           = min(longest common prefix of unit u's members, shortest member length - 1)
    cache[U, P]   = model(prefix tokens of each unit, use_cache=True)          # one row per unit
    cache[B, P]   = cache[unit_of_row]                                          # expanded to the members
    logits[B, S]  = model(tokens P_u .. n_b - 1 of row b, position_ids = P_u + arange(S), cache)

A *unit* is a group's members in the batch when they share at least ``min_shared_tokens`` tokens,
else each member alone (then ``P = n_b - 1``: the whole episode but its last token). Causal
attention over ``[prefix, suffix]`` with the padded prefix tail masked sees exactly the keys and
positions of the plain forward, and autograd sums the members' gradients into the shared prefix,
so log-probs, entropies and parameter gradients equal :func:`response_log_probs` up to float
rounding. A logit at a prefix position (the one predicting the first generated token, or any
generated token all members share) is read from the unit's prefix pass.
"""

from __future__ import annotations

import torch

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
    positions = response_mask.bool()
    columns = positions.any(dim=0).nonzero().flatten()
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=columns).logits
    return _scatter(logits[positions[:, columns]], input_ids, positions, temperature, entropy_grad)


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
    """:func:`response_log_probs` with the prompt shared by episodes of equal ``group_index`` run once.

    ``input_ids``/``attention_mask`` must be right-padded (as the rollout collates them). ``model`` is
    a Hugging Face causal LM or an engine that passes keyword arguments on to one (DeepSpeed).
    Falls back to the plain forward when no two episodes share a prefix, when ``group_index`` is None
    and while gradient checkpointing trains (it cannot keep a cache).
    """
    lengths = attention_mask.sum(dim=1)
    width = input_ids.shape[1]
    if not torch.equal(attention_mask.bool(), torch.arange(width, device=lengths.device) < lengths[:, None]):
        raise ValueError("attention_mask is not right-padded; allowed: ones then zeros in every row")
    module = getattr(model, "module", model)
    checkpointing = getattr(module, "is_gradient_checkpointing", False) and module.training
    if group_index is None or checkpointing:
        return response_log_probs(model, input_ids, attention_mask, response_mask, temperature, entropy_grad)
    unit_of_row, prefix_length = sharing_units(input_ids, lengths, group_index, min_shared_tokens)
    if len(prefix_length) == len(input_ids):
        return response_log_probs(model, input_ids, attention_mask, response_mask, temperature, entropy_grad)

    device = input_ids.device
    row_prefix = prefix_length[unit_of_row]  # [B]
    positions = response_mask.bool()
    in_prefix = positions & (torch.arange(width - 1, device=device) < row_prefix[:, None])
    prefix_columns = in_prefix.any(dim=0).nonzero().flatten()

    first_row = torch.full((len(prefix_length),), len(input_ids), device=device).scatter_reduce(
        0, unit_of_row, torch.arange(len(input_ids), device=device), reduce="amin")
    prefix_width = int(prefix_length.max())
    prefix_mask = (torch.arange(prefix_width, device=device) < prefix_length[:, None]).long()
    prefix = model(input_ids=input_ids[first_row, :prefix_width], attention_mask=prefix_mask, use_cache=True,
                   logits_to_keep=prefix_columns)
    cache = prefix.past_key_values
    cache.batch_select_indices(unit_of_row)  # [U, ..] -> [B, ..]; backward sums the members' gradients

    suffix_width = int((lengths - row_prefix).max())
    suffix_positions = row_prefix[:, None] + torch.arange(suffix_width, device=device)  # [B, S]
    suffix_ids = input_ids.gather(1, suffix_positions.clamp(max=width - 1))
    suffix_mask = (suffix_positions < lengths[:, None]).long()
    in_suffix = positions & ~in_prefix
    suffix_rows, suffix_cols = in_suffix.nonzero(as_tuple=True)
    suffix_offsets = suffix_cols - row_prefix[suffix_rows]
    suffix_columns = torch.zeros(suffix_width, dtype=torch.bool, device=device)
    suffix_columns[suffix_offsets] = True
    suffix_columns = suffix_columns.nonzero().flatten()
    suffix = model(input_ids=suffix_ids, attention_mask=torch.cat([prefix_mask[unit_of_row], suffix_mask], dim=1),
                   position_ids=suffix_positions, past_key_values=cache, use_cache=True,
                   logits_to_keep=suffix_columns)

    # Each generated token's logit row in [prefix logits (U x Kp rows); suffix logits (B x Ks rows)].
    prefix_slot = torch.zeros(prefix_width, dtype=torch.long, device=device)
    prefix_slot[prefix_columns] = torch.arange(len(prefix_columns), device=device)
    suffix_slot = torch.zeros(suffix_width, dtype=torch.long, device=device)
    suffix_slot[suffix_columns] = torch.arange(len(suffix_columns), device=device)
    rows, cols = positions.nonzero(as_tuple=True)
    from_prefix = in_prefix[rows, cols]
    prefix_row = unit_of_row[rows] * len(prefix_columns) + prefix_slot[cols.clamp(max=prefix_width - 1)]
    suffix_row = len(prefix_length) * len(prefix_columns) + rows * len(suffix_columns) + \
        suffix_slot[(cols - row_prefix[rows]).clamp(0, suffix_width - 1)]
    vocab = suffix.logits.shape[-1]
    all_logits = torch.cat([prefix.logits.reshape(-1, vocab), suffix.logits.reshape(-1, vocab)])
    logits_at = all_logits[torch.where(from_prefix, prefix_row, suffix_row)]
    return _scatter(logits_at, input_ids, positions, temperature, entropy_grad)


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
