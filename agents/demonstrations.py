"""Format demonstrations: well-formed first-turn replies that name uniformly random valid actions.

A small model that never closes ``<answer> ... </answer>`` earns only the format penalty, so every
group has zero reward spread and group-relative RL has nothing to learn from. A few supervised steps
on these replies (``algos.training.format_warmup``) teach the reply format without teaching which action is
good: every action is drawn uniformly from the env's action names, so the warmed-up policy starts at
chance on the task and RL has to do the rest (a "cold start" before RL, as in DeepSeek-R1). The reply
continues the prefill the rollout engine puts at the start of every assistant turn::

    think on  (prefill "<think>"):  " I will play a1 || a2. </think> <answer> a1 || a2 </answer>"
    think off (prefill "<answer>"): " a1 || a2 </answer>"

Each demonstrated level gets several replies, so a warm-up batch runs each prompt once
(``algos.training.packed_logprobs``). The levels are drawn from ``seed``, apart from the train and validation levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

import envs
from agents.config import AgentConfig
from agents.parsing import ACTION_SEPARATOR
from agents.prompts import ChatTokenizer, prefill_text
from agents.rollout import actions_per_traj, opening

_FIRST_LEVEL_SEED = 2**31  # far from the train (10000 + ...) and validation (123 + ...) levels


@dataclass(frozen=True)
class Demonstration:
    """One supervised example: the opening ids of level ``level_seed`` (ending with the prefill) and a reply."""

    level_seed: int
    prompt_ids: list[int]
    reply_ids: list[int]
    reply_text: str


def demonstration_reply(actions: list[str], enable_think: bool) -> str:
    """The reply text that follows the prefill and names ``actions`` in the answer."""
    answer = f" {ACTION_SEPARATOR} ".join(actions)
    return f" I will play {answer}. </think> <answer> {answer} </answer>" if enable_think else f" {answer} </answer>"


def balanced_draws(rng: np.random.Generator, num_actions: int, count: int) -> list[int]:
    """``count`` uniform draws from ``range(num_actions)`` that use every action equally often as far
    as ``count`` allows: whole shuffled rounds of all actions, then a partial round without repeats."""
    rounds = [rng.permutation(num_actions) for _ in range(-(-count // num_actions))]
    return [int(action) for action in np.concatenate(rounds)[:count]]


def format_demonstrations(
    config: AgentConfig,
    tokenizer: PreTrainedTokenizerBase,
    levels: int,
    replies_per_level: int,
    max_new_tokens: int,
    seed: int,
) -> list[list[Demonstration]]:
    """``replies_per_level`` demonstrations on each of ``levels`` distinct random levels of ``config.env``
    (one list per level, sharing its prompt). Each reply names between 1 and ``min(max_actions_per_turn,
    action budget)`` actions (uniform), each uniform over the env's action names; the replies' first
    actions are balanced (``balanced_draws``), so a level never teaches a preference between actions.

    Raises ``ValueError`` for an env without named actions (GSM8K answers are free-form numbers).
    """
    for key, value in (("levels", levels), ("replies_per_level", replies_per_level)):
        if value < 1:
            raise ValueError(f"{key}={value} is invalid; allowed: an int >= 1")
    env = envs.make(config.env.name, **config.env.kwargs)
    if not env.action_names:
        raise ValueError(f"env={config.env.name!r} has free-form answers, so there is no random valid action to "
                         "demonstrate; allowed: an env with named actions (bandit, sokoban, frozenlake)")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDE40]))
    chat = ChatTokenizer(tokenizer)
    proxy = config.agent_proxy
    prefill = prefill_text(proxy.enable_think)
    max_actions = min(proxy.max_actions_per_turn, actions_per_traj(config, env))
    demonstrations = []
    for level in _FIRST_LEVEL_SEED + rng.choice(2**31, size=levels, replace=False):
        messages, _ = opening(env, config, int(level), member=0, max_new_tokens=max_new_tokens)
        prompt = chat.prompt_ids(messages, prefill)
        replies = []
        first_actions = balanced_draws(rng, len(env.action_names), replies_per_level)
        for first in first_actions:
            more = rng.integers(len(env.action_names), size=int(rng.integers(0, max_actions)))
            text = demonstration_reply([env.action_names[i] for i in (first, *more)], proxy.enable_think)
            replies.append(Demonstration(int(level), prompt, chat.encode(text), text))
        demonstrations.append(replies)
    env.close()
    return demonstrations
