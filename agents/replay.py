"""Replaying a played episode on a fresh env: what each turn saw, wrote, did and earned.

A rollout keeps only the chat (``RolloutBatch.turns``) and the episode totals. Replaying its assistant
replies on level ``seed``, member ``member`` (the same dice) with the rollout's own turn rule
(``agents.rollout.act``) gives the per-turn record back: the env observation before the turn, the
parsed actions, the env reward and the turn's reward ``env_reward + format_penalty * bad_format``,
whose sum is the episode reward. Used by the trainer's ``trajectories.jsonl`` and the episode page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import envs
from agents.config import AgentProxyConfig
from agents.rollout import act


@dataclass
class ReplayedTurn:
    """One turn: the env observation before it, the reply, the actions it took, and the board after each."""

    observation: str
    reply: str
    think: str
    actions: list[str]
    format_ok: bool
    env_reward: float
    reward: float
    """``env_reward`` plus the format penalty when the reply had a missing or invalid action."""
    frames: list[np.ndarray] = field(default_factory=list)


@dataclass
class ReplayedEpisode:
    turns: list[ReplayedTurn]
    success: bool
    first_frame: np.ndarray | None = None

    @property
    def reward(self) -> float:
        return sum(turn.reward for turn in self.turns)


def replay(env_name: str, env_kwargs: dict, seed: int, member: int, messages: list[dict[str, str]],
           proxy: AgentProxyConfig, max_actions_per_traj: int, format_penalty: float,
           render: bool = False) -> ReplayedEpisode:
    """Play the assistant replies of ``messages`` again on level ``seed``; the episode's budget of
    ``max_actions_per_traj`` actions carries over from turn to turn, and it ends when the env does.
    ``render`` draws the board before the episode and after every action."""
    env = envs.make(env_name, **env_kwargs, render_mode="rgb_array" if render else None)
    observation, _ = env.reset(seed=seed, options={"member": member})
    first_frame = env.render() if render else None
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    turns, actions_left, success, frames = [], max_actions_per_traj, False, []
    for reply in replies:
        first = len(frames)
        outcome = act(env, reply, proxy, actions_left,
                      on_step=(lambda played: frames.append(played.render())) if render else None)
        penalty = format_penalty if outcome.bad_format else 0.0
        turns.append(ReplayedTurn(observation, reply, outcome.think, [env.action_names[a] for a in outcome.actions],
                                  not outcome.bad_format, outcome.env_reward, outcome.env_reward + penalty,
                                  frames[first:]))
        actions_left -= outcome.executed
        if outcome.executed:
            observation, success = outcome.observation, outcome.success
        if outcome.env_done:
            break
    env.close()
    return ReplayedEpisode(turns, success, first_frame)
