"""Format warm-up: a few supervised steps on format demonstrations before RL (``agents.demonstrations``).

Step ``i`` takes the next ``levels_per_step`` demonstrated levels (each level is used once) with all
their replies, and minimises the mean negative log-likelihood of the reply tokens::

    loss = - (1 / |R|) * sum_{(b, t) in R} log pi(y_{b,t} | y_{b,<t})      R = the batch's reply tokens

with a plain torch AdamW at a constant ``lr``; a level's shared prompt runs once
(``grouped_response_log_probs``), and the step's gradient is accumulated level by level, each level's
token sum divided by the step's ``|R|``, so only one level's activations are held at a time. It runs
on the bare model, before DeepSpeed wraps it (and before the frozen reference is copied, so KL is
measured to the warmed-up policy); the optimizer is dropped afterwards, so RL starts with a fresh
optimizer state.
"""

from __future__ import annotations

import time

import torch

import envs
from agents.console import bar, note
from agents.demonstrations import Demonstration
from agents.model import is_embedded
from algos.training.memory import release_free_heap
from algos.training.packed_logprobs import grouped_response_log_probs
from algos.training.schema import TINY_RANDOM_MODEL, TurnRLConfig


def demonstration_batch(
    levels: list[list[Demonstration]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` ``[B, T]``, ``response_mask`` ``[B, T-1]`` (1 where
    column ``j`` predicts a reply token ``j + 1``) and each row's level index ``[B]``."""
    rows = [(index, demo) for index, level in enumerate(levels) for demo in level]
    width = max(len(demo.prompt_ids) + len(demo.reply_ids) for _, demo in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    reply_mask = torch.zeros_like(input_ids)
    for row, (_, demo) in enumerate(rows):
        prompt, end = len(demo.prompt_ids), len(demo.prompt_ids) + len(demo.reply_ids)
        input_ids[row, :end] = torch.tensor(demo.prompt_ids + demo.reply_ids)
        attention_mask[row, :end] = 1
        reply_mask[row, prompt:end] = 1
    level_index = torch.tensor([index for index, _ in rows])
    return input_ids, attention_mask, reply_mask[:, 1:], level_index


def reply_nll_sum(
    model: torch.nn.Module, levels: list[list[Demonstration]], pad_token_id: int
) -> tuple[torch.Tensor, int]:
    """``(sum of the reply tokens' negative log-likelihoods, number of reply tokens)`` over ``levels``."""
    device = next(model.parameters()).device
    input_ids, attention_mask, mask, level_index = (
        tensor.to(device) for tensor in demonstration_batch(levels, pad_token_id))
    logp, _ = grouped_response_log_probs(model, input_ids, attention_mask, mask, level_index, temperature=1.0)
    return -(logp * mask).sum(), int(mask.sum())


def reply_nll(model: torch.nn.Module, levels: list[list[Demonstration]], pad_token_id: int) -> torch.Tensor:
    """Mean negative log-likelihood per reply token of the demonstrations of ``levels`` under ``model``."""
    total, tokens = reply_nll_sum(model, levels, pad_token_id)
    return total / tokens


def backward_reply_nll(model: torch.nn.Module, levels: list[list[Demonstration]], pad_token_id: int) -> float:
    """Add the gradient of ``reply_nll(model, levels)`` to the parameters' ``.grad``, one level's forward
    and backward at a time (the same gradient, up to rounding, with one level's activations); return the loss."""
    tokens = sum(len(demo.reply_ids) for level in levels for demo in level)
    loss = 0.0
    for level in levels:
        total, _ = reply_nll_sum(model, [level], pad_token_id)
        (total / tokens).backward()
        loss += total.item() / tokens
    return loss


def format_warmup(
    model: torch.nn.Module, levels: list[list[Demonstration]], levels_per_step: int, lr: float, pad_token_id: int
) -> dict[str, float]:
    """Train ``model`` in place on ``len(levels) // levels_per_step`` steps of ``levels_per_step`` levels
    each; return ``format_warmup/{loss_start,loss_end,seconds}``."""
    steps = len(levels) // levels_per_step
    if levels_per_step < 1 or steps < 1 or lr <= 0:
        raise ValueError(f"levels_per_step={levels_per_step} with {len(levels)} levels, lr={lr} is invalid; "
                         "allowed: 1 <= levels_per_step <= number of levels, lr > 0")
    start = time.perf_counter()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    was_training = model.training
    model.train()
    losses = []
    with bar(steps, "format warm-up", "step") as progress:
        for step in range(steps):
            optimizer.zero_grad(set_to_none=True)
            losses.append(backward_reply_nll(model, levels[step * levels_per_step : (step + 1) * levels_per_step],
                                             pad_token_id))
            optimizer.step()
            release_free_heap()  # the level-by-level activations' pages (accumulate's docstring says why)
            progress.set_postfix(nll=f"{losses[-1]:.3f}")
            progress.update()
            note(f"format warm-up step {step + 1}/{steps}: reply NLL {losses[-1]:.3f}")
    model.train(was_training)
    optimizer.zero_grad(set_to_none=True)
    del optimizer  # its AdamW moments (2x the trainable weights) go back to the OS before RL starts
    release_free_heap()
    return {"format_warmup/loss_start": losses[0], "format_warmup/loss_end": losses[-1],
            "format_warmup/seconds": time.perf_counter() - start}


def warmup_lr(config: TurnRLConfig) -> float:
    """The warm-up's learning rate: ``format_warmup.lora_lr`` when only LoRA adapters train
    (``actor_rollout_ref.model.lora_rank > 0``), else ``format_warmup.lr``."""
    warmup = config.format_warmup
    return warmup.lora_lr if config.actor_rollout_ref.model.lora_rank > 0 else warmup.lr


def warmup_skip_reason(config: TurnRLConfig) -> str | None:
    """Why a fresh run skips its ``format_warmup.steps`` (None: it runs): any model but the embedded one
    (a TurnRL export or another model already writes the format; warming it up would push a trained
    policy back toward chance), or an env with free-form answers (no random valid action to demonstrate)."""
    path = config.actor_rollout_ref.model.path
    if not (is_embedded(path) or path == TINY_RANDOM_MODEL):
        return f"model.path={path} is not the embedded SmolLM2-135M"
    env = envs.make(config.env.name, **config.env.kwargs)
    env.close()
    if not env.action_names:
        return f"env={config.env.name} has free-form answers, no random valid action to demonstrate"
    return None
