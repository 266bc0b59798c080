"""Token-level advantage estimators that use a learned value function: GAE and RAGEN's bi-level GAE.

Unlike :mod:`algos.estimators` (one scalar reward per episode, compared within groups), these read
``[B, T]`` tensors: ``token_rewards`` (a reward on some generated tokens: each turn's on its last token,
or the episode's on its last one), the critic's ``values`` and the 0/1 ``response_mask`` of the tokens
the policy generated. Only generated tokens are steps: the prompt, the env's messages between turns and
the padding are skipped by the recursions (a turn's last token is followed by the next turn's first).
Each estimator returns ``(advantages, returns)``, both ``[B, T]`` and 0 off the mask, with
``returns = advantages + values`` (the critic's regression target); :func:`compute_token_advantages`
then whitens the advantages over the batch (:func:`masked_whiten`, as verl and RAGEN do).

Adding one is one function plus one decorator line::

    @register_token_estimator("my_estimator")
    def my_estimator(token_rewards, values, response_mask, *, gamma=1.0): ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

TokenEstimator = Callable[..., tuple[torch.Tensor, torch.Tensor]]

TOKEN_ESTIMATORS: dict[str, TokenEstimator] = {}
"""Token-level estimators by name: ``gae`` (``algorithm.adv_estimator=gae``) and ``bi_level_gae``
(``adv_estimator=gae`` with ``algorithm.bi_level_gae=true``)."""


def register_token_estimator(name: str) -> Callable[[TokenEstimator], TokenEstimator]:
    """Decorator adding ``fn(token_rewards, values, response_mask, *, option=default, ...)`` under ``name``."""

    def decorator(fn: TokenEstimator) -> TokenEstimator:
        if name in TOKEN_ESTIMATORS:
            raise ValueError(f"token-level advantage estimator {name!r} is already registered")
        TOKEN_ESTIMATORS[name] = fn
        return fn

    return decorator


def turn_ends(response_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool: the last token of each run of generated tokens (a turn's reply)."""
    mask = response_mask.bool()
    following = torch.nn.functional.pad(mask[:, 1:], (0, 1), value=False)
    return mask & ~following


def _compact(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(order [B, N], valid [B, N])``: each row's masked columns in order, left-aligned, N = max count."""
    count = mask.sum(dim=1)
    width = max(int(count.max()), 1) if len(count) else 1
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]
    return order, torch.arange(width, device=mask.device) < count[:, None]


def _reverse_scan(
    rewards: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, gamma: float, lam: float,
    restart: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """GAE over left-aligned steps ``[B, N]`` (``valid`` marks real ones):
    ``A_i = r_i + gamma * V_{i+1} - V_i + gamma * lam * A_{i+1}`` with ``V_{n+1} = A_{n+1} = 0``.
    ``restart = (where [B, N], value [B, N])``: at those steps ``A_i = value_i`` instead (a turn's end in
    :func:`bi_level_gae`)."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    width = rewards.shape[1]
    for i in reversed(range(width)):
        next_value = values[:, i + 1] * valid[:, i + 1] if i + 1 < width else torch.zeros_like(last)
        last = rewards[:, i] + gamma * next_value - values[:, i] + gamma * lam * last
        if restart is not None:
            last = torch.where(restart[0][:, i], restart[1][:, i], last)
        last = last * valid[:, i]
        advantages[:, i] = last
    return advantages


def _scatter_back(dense: torch.Tensor, order: torch.Tensor, valid: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    out = torch.zeros(shape, dtype=dense.dtype, device=dense.device)
    return out.scatter_add_(1, order, dense * valid)


@register_token_estimator("gae")
def gae(
    token_rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor, *, gamma: float = 1.0,
    lam: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation over the generated tokens ``t_1 < ... < t_n`` of each episode
    (all its turns; RAGEN's ``compute_gae_advantage_return_with_loss_mask``)::

        delta_i = r_{t_i} + gamma * V_{t_{i+1}} - V_{t_i}        (V_{t_{n+1}} = 0)
        A_i     = delta_i + gamma * lam * A_{i+1}               (A_{n+1} = 0)
        R_i     = A_i + V_{t_i}

    Env-message tokens between two turns are not steps: the last token of a turn bootstraps from the
    value of the next turn's first generated token. With ``gamma = lam = 1`` (RAGEN's PPO),
    ``A_i = sum_{j >= i} r_{t_j} - V_{t_i}``.
    """
    mask = response_mask.bool()
    order, valid = _compact(mask)
    dense_rewards, dense_values = token_rewards.gather(1, order), values.gather(1, order)
    advantages = _scatter_back(_reverse_scan(dense_rewards, dense_values, valid, gamma, lam), order, valid,
                               mask.shape)
    return advantages, (advantages + values) * mask


@register_token_estimator("bi_level_gae")
def bi_level_gae(
    token_rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor, *, gamma: float = 1.0,
    lam: float = 1.0, high_level_gamma: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RAGEN's bi-level GAE (``compute_bi_level_gae_advantage_return``): a turn-level GAE across turns,
    then a token-level one inside each turn that starts from the turn's return.

    With turn ``k``'s last generated token ``e_k`` (k = 1..m, :func:`turn_ends`) and its reward ``r_{e_k}``::

        delta_k = r_{e_k} + high_level_gamma * V_{e_{k+1}} - V_{e_k}    (V_{e_{m+1}} = 0)
        H_k     = delta_k + high_level_gamma * lam * H_{k+1}             (H_{m+1} = 0)
        A_{e_k} = H_k,   R_{e_k} = H_k + V_{e_k}   (the turn's return G_k)

    and for the other tokens ``t`` of turn ``k`` (next token ``t'`` of the same turn)::

        A_t = r_t + gamma * V_{t'} - V_t + gamma * lam * A_{t'},   R_t = A_t + V_t

    so a turn's tokens see the rest of the episode only through ``G_k`` (no bootstrapping across the
    turn boundary at the token level).
    """
    mask = response_mask.bool()
    ends = turn_ends(mask)
    end_order, end_valid = _compact(ends)
    high = _reverse_scan(token_rewards.gather(1, end_order), values.gather(1, end_order), end_valid,
                         high_level_gamma, lam)
    turn_advantage = _scatter_back(high, end_order, end_valid, mask.shape)
    order, valid = _compact(mask)
    restart = (ends.gather(1, order), turn_advantage.gather(1, order))
    low = _reverse_scan(token_rewards.gather(1, order), values.gather(1, order), valid, gamma, lam, restart)
    advantages = _scatter_back(low, order, valid, mask.shape)
    return advantages, (advantages + values) * mask


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, epsilon: float = 1e-8) -> torch.Tensor:
    """verl's ``masked_whiten``: ``(x - mean) / sqrt(var + epsilon)`` with the mean and the Bessel-corrected
    variance over every masked element of the batch (each generated token counts once, so longer
    episodes weigh more); 0 off the mask. A single element gives 0."""
    mask = mask.to(values.dtype)
    count = mask.sum()
    mean = (values * mask).sum() / count.clamp(min=1)
    variance = ((values - mean).square() * mask).sum() / (count - 1).clamp(min=1)
    return (values - mean) * torch.rsqrt(variance + epsilon) * mask


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """``1 - Var(R - V) / Var(R)`` over the masked tokens (1: the critic predicts the returns exactly,
    0: no better than their mean); 0 when the returns do not vary."""
    mask = mask.bool()
    target, error = returns[mask], (returns - values)[mask]
    if target.numel() < 2 or float(target.var()) == 0.0:
        return 0.0
    return 1.0 - float(error.var()) / float(target.var())


def token_estimator_options(name: str) -> frozenset[str]:
    """Keyword options the token-level estimator ``name`` accepts."""
    if name not in TOKEN_ESTIMATORS:
        raise ValueError(f"unknown token-level advantage estimator {name!r}; allowed: {sorted(TOKEN_ESTIMATORS)}")
    parameters = inspect.signature(TOKEN_ESTIMATORS[name]).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def compute_token_advantages(
    name: str, token_rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor, **options: float
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """``(advantages, returns, metrics)`` of the token-level estimator ``name``, the advantages whitened
    over the batch's generated tokens (:func:`masked_whiten`), the returns not.

    ``options`` may hold every token-level option (``gamma``, ``lam``, ``high_level_gamma``); each
    estimator receives the ones it declares. Metrics: ``train/adv_mean`` / ``train/adv_std`` (of the
    raw advantages, over generated tokens) and ``critic/returns_mean``.
    """
    accepted = token_estimator_options(name)
    known = frozenset().union(*(token_estimator_options(other) for other in TOKEN_ESTIMATORS))
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown token-level advantage option(s) {unknown}; allowed: {sorted(known)}")
    shapes = {tuple(t.shape) for t in (token_rewards, values, response_mask)}
    if len(shapes) != 1 or token_rewards.dim() != 2:
        raise ValueError(f"token_rewards, values and response_mask must share one [batch, tokens] shape, got {shapes}")
    if not (torch.isfinite(token_rewards).all() and torch.isfinite(values).all()):
        raise ValueError("token_rewards and values must be finite, got NaN or inf")
    token_rewards, values = token_rewards.float(), values.float()
    with torch.no_grad():
        advantages, returns = TOKEN_ESTIMATORS[name](
            token_rewards, values, response_mask, **{key: value for key, value in options.items() if key in accepted}
        )
    raw = advantages[response_mask.bool()]
    metrics = {
        "train/adv_mean": raw.mean().item() if raw.numel() else 0.0,
        "train/adv_std": raw.std().item() if raw.numel() > 1 else 0.0,
        "critic/returns_mean": returns[response_mask.bool()].mean().item() if raw.numel() else 0.0,
    }
    return masked_whiten(advantages, response_mask), returns, metrics
