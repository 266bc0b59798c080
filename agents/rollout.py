"""Multi-turn rollouts: groups of episodes played by the policy, returned as a token-level batch.

One rollout step plays ``env_groups x group_size`` episodes. Steps count from 1, as the trainer's do:
group ``g`` of step ``k`` uses the level ``seed = train_seed_start + (k - 1) * env_groups + g`` for all its members
(modulo ``es_manager.train_num_levels`` when set: a fixed pool of levels); member ``j`` resets with
``options={"member": j}`` (same level, its own dice). Each turn, every unfinished episode of every
group is sent to the backend in one batched call. A re-roll of the step (``attempt`` a >= 1, when the
group filter kept nothing) plays the levels ``seed + a * REROLL_SEED_STRIDE`` with sampling seeds of
its own, so every attempt is fresh and reproducible.

With ``es_manager.<split>.env_configs`` the split's groups play several envs (consecutive groups per
entry, ``EnvSplitConfig.group_envs``); each episode carries its entry's tag and the metrics are also
given per tag (``rollout/<tag>/*``).

Token-in, token-out: an episode's sequence is its prompt tokens, then per turn the ids the backend
generated (exactly as generated), then the template tokens of the next env message (see
``agents.prompts.ChatTokenizer``). ``loss_mask`` is 1 exactly on the generated ids; the prefilled
``<think>`` belongs to the prompt. The episode reward is the sum of the env rewards and one
``format_penalty`` per turn whose reply had a missing or invalid action. ``token_rewards`` places
rewards on tokens for the token-level estimators (gae): with ``agent_proxy.use_turn_scores`` each
turn's reward (with its penalty) on that turn's last generated token, else the episode reward on the
episode's last generated token.

An episode ends when the env terminates or truncates, after ``max_turn`` turns, when its
``max_actions_per_traj`` budget is spent, or, marked ``truncated``, when ``max_model_len`` leaves
no room for the next env message or reply.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

import envs
from agents.backends.base import Backend, SamplingParams, ScoringBackend, generate_checked
from agents.batch import RolloutBatch, action_choice_metrics, rollout_metrics
from agents.config import AgentConfig, AgentProxyConfig, EnvConfig, ESManagerConfig
from agents.parsing import parse_reply
from agents.prompts import (
    SYSTEM_PROMPT,
    ChatTokenizer,
    intro_message,
    pad_token_id,
    prefill_text,
    reward_message,
    turn_message,
)

_TRAIN_STREAM, _VALIDATION_STREAM, _REROLL_STREAM = 0, 1, 2
REROLL_SEED_STRIDE = 10**7
"""Level-seed offset per re-roll attempt: attempt ``a`` of step ``k`` reuses no level of any step
before ``k + REROLL_SEED_STRIDE / env_groups`` (far past any run)."""


@dataclass
class _Episode:
    env: envs.TextEnv
    tag: str
    group: int
    seed: int
    token_ids: list[int]
    loss_mask: list[int]
    messages: list[dict[str, str]]
    observation: str
    actions_left: int
    reward: float = 0.0
    last_turn_reward: float = 0.0
    last_generated: int = -1  # index of the newest generated token (-1: none yet)
    turn_rewards: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # (its last token, reward)
    replies_actions: list[list[int]] = dataclasses.field(default_factory=list)  # each reply's valid actions
    log_probs: list[float] = dataclasses.field(default_factory=list)  # the sampler's, per token (0: not generated)
    success: bool = False
    num_turns: int = 0
    format_errors: int = 0
    reply_ended_with_eos: bool = False
    done: bool = False
    truncated: bool = False

    def append(self, ids: list[int], generated: bool, log_probs: Sequence[float] | None = None) -> None:
        self.token_ids.extend(ids)
        self.loss_mask.extend([int(generated)] * len(ids))
        self.log_probs.extend([0.0] * len(ids) if log_probs is None else log_probs)


def train_level_seeds(es_manager: ESManagerConfig, index: int, attempt: int) -> list[int]:
    """Level seeds of the groups of step ``index + 1``, re-roll ``attempt``: ``train_seed_start + index *
    env_groups + g + attempt * REROLL_SEED_STRIDE``; with ``train_num_levels`` N the offset is taken modulo N
    and a re-roll ``a`` moves ``a * env_groups`` levels on within the pool instead of leaving it."""
    groups, pool = es_manager.train.env_groups, es_manager.train_num_levels
    if pool is None:
        return [es_manager.train_seed_start + index * groups + g + attempt * REROLL_SEED_STRIDE for g in range(groups)]
    return [es_manager.train_seed_start + ((index + attempt) * groups + g) % pool for g in range(groups)]


def actions_per_traj(config: AgentConfig, env: envs.TextEnv) -> int:
    """The episode's action budget: ``agent_proxy.max_actions_per_traj``, else the env class's default."""
    return config.agent_proxy.max_actions_per_traj or type(env).default_max_actions_per_traj


def opening(
    env: envs.TextEnv, config: AgentConfig, seed: int, member: int, max_new_tokens: int
) -> tuple[list[dict[str, str]], str]:
    """Reset ``env`` on level ``seed`` and return the episode's opening chat (system + first user
    message) and the first observation."""
    observation, _ = env.reset(seed=seed, options={"member": member})
    budget = actions_per_traj(config, env)
    proxy = config.agent_proxy
    first_user = intro_message(env.instructions, env.action_names, min(proxy.max_actions_per_turn, budget))
    first_user += turn_message(1, observation, budget, proxy.enable_think, max_new_tokens)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": first_user}], observation


@dataclass
class TurnOutcome:
    """What one reply did in its env (see :func:`act`)."""

    think: str
    actions: list[int]
    """The reply's valid actions in order, including any the action budget left unexecuted."""
    bad_format: bool
    """A missing/malformed answer or an invalid action: the turn pays ``format_penalty``."""
    env_reward: float = 0.0
    executed: int = 0
    env_done: bool = False
    """The env terminated or truncated."""
    observation: str = ""
    """The observation after the last executed action (empty when none ran)."""
    success: bool = False
    """``info["success"]`` after the last executed action."""


def act(
    env: envs.TextEnv,
    reply: str,
    proxy: AgentProxyConfig,
    actions_left: int,
    on_step: Callable[[envs.TextEnv], None] | None = None,
) -> TurnOutcome:
    """Play the reply text ``reply`` (prefill included) in ``env``: its valid actions in order, at most
    ``actions_left``, stopping when the env terminates or truncates; ``on_step(env)`` runs after each."""
    parsed = parse_reply(reply, proxy.enable_think, proxy.max_actions_per_turn)
    actions = [env.parse_action(action_text) for action_text in parsed.action_texts]
    valid = [action for action in actions if action is not None]
    outcome = TurnOutcome(parsed.think, valid, not parsed.format_ok or len(valid) < len(actions))
    for action in valid[:actions_left]:
        outcome.observation, reward, terminated, truncated, info = env.step(action)
        outcome.env_reward += float(reward)
        outcome.executed += 1
        outcome.success = bool(info.get("success", False))
        if on_step is not None:
            on_step(env)
        if terminated or truncated:
            outcome.env_done = True
            break
    return outcome


class RolloutEngine:
    """Plays batches of episodes with a backend; ``rollout(step)`` for training, ``validate()`` held out."""

    def __init__(self, config: AgentConfig, tokenizer: PreTrainedTokenizerBase, backend: Backend) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.backend = backend
        self.chat = ChatTokenizer(tokenizer)
        self.proxy = config.agent_proxy
        self.prefill = prefill_text(self.proxy.enable_think)
        self._envs: dict[tuple[str, str], list[envs.TextEnv]] = {}
        self.max_actions_per_traj = actions_per_traj(config, self._env(config.env, 0))
        self.pad_token_id = pad_token_id(tokenizer)

    def rollout(
        self, step: int, params: SamplingParams, groups: Sequence[int] | None = None, shard: int | None = None,
        attempt: int = 0,
    ) -> RolloutBatch:
        """Training episodes of ``step`` (1, 2, ...); its levels depend only on ``(train_seed_start, step, attempt)``.

        ``groups`` picks which of the step's ``env_groups`` levels to play (default all), e.g. one
        data-parallel rank's share; ``shard`` (the rank) keeps that share's sampling seeds its own.
        ``attempt`` a >= 1 is the a-th re-roll: levels ``+ a * REROLL_SEED_STRIDE``, its own sampling seeds.
        """
        if step < 1 or attempt < 0:
            raise ValueError(f"step={step}, attempt={attempt} are invalid; allowed: step >= 1, attempt >= 0")
        split, index = self.config.es_manager.train, step - 1
        seeds = train_level_seeds(self.config.es_manager, index, attempt)
        chosen = range(split.env_groups) if groups is None else groups
        key = (_TRAIN_STREAM, index) if attempt == 0 else (_REROLL_STREAM, index, attempt)
        key += () if shard is None else (shard,)
        group_envs = split.group_envs(self.config.env)
        return self.play([seeds[g] for g in chosen], split.group_size, params, key,
                         f"rollout {step}" + (f" (re-roll {attempt})" if attempt else ""), [group_envs[g] for g in chosen])

    def validate(
        self, params: SamplingParams, groups: Sequence[int] | None = None, shard: int | None = None
    ) -> RolloutBatch:
        """Episodes on the held-out levels ``val_seed_start, val_seed_start + 1, ...`` (``groups``, ``shard``:
        as in ``rollout``)."""
        split, first = self.config.es_manager.val, self.config.es_manager.val_seed_start
        chosen = range(split.env_groups) if groups is None else groups
        key = (_VALIDATION_STREAM, 0) if shard is None else (_VALIDATION_STREAM, 0, shard)
        group_envs = split.group_envs(self.config.env)
        return self.play([first + g for g in chosen], split.group_size, params, key, "validate",
                         [group_envs[g] for g in chosen])

    def play(
        self,
        group_seeds: list[int],
        group_size: int,
        params: SamplingParams,
        sampling_key: tuple[int, ...] = (),
        description: str = "rollout",
        group_envs: Sequence[tuple[str, EnvConfig]] | None = None,
    ) -> RolloutBatch:
        """Play ``group_size`` members on each level of ``group_seeds`` for up to ``agent_proxy.max_turn`` turns;
        group ``g`` plays ``group_envs[g] = (tag, env)`` (default: the run's ``env``, no tag)."""
        group_envs = group_envs or [("", self.config.env)] * len(group_seeds)
        episodes = [
            self._start(group_envs[g], g * group_size + j, g, seed, j, params)
            for g, seed in enumerate(group_seeds)
            for j in range(group_size)
        ]
        show = self.config.show_progress and sys.stderr.isatty()
        counters = dict(getattr(self.backend, "counters", {}))
        start, generated = time.perf_counter(), 0
        try:
            with tqdm(total=self.proxy.max_turn, desc=description, unit="turn", disable=not show) as bar:
                for turn in range(1, self.proxy.max_turn + 1):
                    if turn > 1:
                        for episode in episodes:
                            if not episode.done:
                                self._add_env_turn(episode, turn, params)
                    active = [episode for episode in episodes if not episode.done]
                    if not active:
                        break
                    caps = [min(params.max_new_tokens, self.config.max_model_len - len(e.token_ids)) for e in active]
                    replies, log_probs = generate_checked(self.backend, [e.token_ids for e in active],
                                                          self._turn_params(params, sampling_key, turn), caps,
                                                          len(self.tokenizer))
                    for episode, reply, scores in zip(active, replies, log_probs or [None] * len(active), strict=True):
                        self._play_turn(episode, reply, scores, turn)
                    generated += sum(len(reply) for reply in replies)
                    bar.set_postfix(episodes_done=f"{sum(e.done for e in episodes)}/{len(episodes)}",
                                    tok_s=f"{generated / (time.perf_counter() - start):.1f}")
                    bar.update()
        finally:
            if hasattr(self.backend, "clear_cache"):  # backends that keep per-episode KV caches (hf)
                self.backend.clear_cache()
        batch = self._collate(episodes, group_size)
        after = getattr(self.backend, "counters", {})
        batch.metrics |= {f"timing/rollout_{key}": after[key] - counters.get(key, 0.0) for key in after}
        return batch

    # ----------------------------------------------------------------- episode steps
    def _env(self, config: EnvConfig, index: int) -> envs.TextEnv:
        """Env instance ``index`` of ``config`` (instances are built once and reused across batches)."""
        pool = self._envs.setdefault((config.name, repr(sorted(config.kwargs.items()))), [])
        while len(pool) <= index:
            pool.append(envs.make(config.name, **config.kwargs))
        return pool[index]

    def _start(self, tagged_env: tuple[str, EnvConfig], env_index: int, group: int, seed: int, member: int,
               params: SamplingParams) -> _Episode:
        tag, env_config = tagged_env
        env = self._env(env_config, env_index)
        messages, observation = opening(env, self.config, seed, member, params.max_new_tokens)
        prompt = self.chat.prompt_ids(messages, self.prefill)
        episode = _Episode(env, tag, group, seed, [], [], messages, observation, actions_per_traj(self.config, env))
        if len(prompt) >= self.config.max_model_len:
            prompt = prompt[: self.config.max_model_len]
            episode.done = episode.truncated = True
        episode.append(prompt, generated=False)
        return episode

    def _add_env_turn(self, episode: _Episode, turn: int, params: SamplingParams) -> None:
        """Append the reward of the last turn and the state of ``turn``, or end the episode truncated."""
        content = reward_message(episode.last_turn_reward) + turn_message(
            turn, episode.observation, episode.actions_left, self.proxy.enable_think, params.max_new_tokens
        )
        ids = self.chat.env_turn_ids(content, self.prefill, episode.reply_ended_with_eos)
        if len(episode.token_ids) + len(ids) >= self.config.max_model_len:
            episode.done = episode.truncated = True
            return
        episode.append(ids, generated=False)
        episode.messages.append({"role": "user", "content": content})

    def _play_turn(self, episode: _Episode, reply: list[int], log_probs: list[float] | None, turn: int) -> None:
        """Record the reply, run its valid actions (stopping at the first done) and book the rewards."""
        episode.append(reply, generated=True, log_probs=log_probs)
        episode.last_generated = len(episode.token_ids) - 1 if reply else episode.last_generated
        episode.reply_ended_with_eos = bool(reply) and reply[-1] in self.chat.eos_token_ids
        text = self.prefill + self.tokenizer.decode(reply, skip_special_tokens=True)
        episode.messages.append({"role": "assistant", "content": text})
        outcome = act(episode.env, text, self.proxy, episode.actions_left)
        episode.replies_actions.append(outcome.actions)
        episode.format_errors += outcome.bad_format
        episode.actions_left -= outcome.executed
        if outcome.executed:
            episode.observation, episode.success = outcome.observation, outcome.success
        scored = outcome.env_reward + (self.config.es_manager.format_penalty if outcome.bad_format else 0.0)
        episode.reward += scored
        episode.turn_rewards.append((episode.last_generated, scored))
        episode.last_turn_reward = outcome.env_reward
        episode.num_turns = turn
        if outcome.env_done or episode.actions_left <= 0 or turn == self.proxy.max_turn:
            episode.done = True
        elif len(episode.token_ids) >= self.config.max_model_len:
            episode.done = episode.truncated = True

    @staticmethod
    def _turn_params(params: SamplingParams, sampling_key: tuple[int, ...], turn: int) -> SamplingParams:
        """A distinct, reproducible sampling seed per (stream, step, turn) when ``params.seed`` is set."""
        if params.seed is None:
            return params
        seed = int(np.random.SeedSequence([params.seed, *sampling_key, turn]).generate_state(1)[0])
        return dataclasses.replace(params, seed=seed)

    # ----------------------------------------------------------------- batch
    def _collate(self, episodes: list[_Episode], group_size: int) -> RolloutBatch:
        batch_size, length = len(episodes), max(len(e.token_ids) for e in episodes)
        input_ids = torch.full((batch_size, length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        loss_mask = torch.zeros((batch_size, length), dtype=torch.long)
        token_rewards = torch.zeros((batch_size, length))
        log_probs = torch.zeros((batch_size, length))
        for row, episode in enumerate(episodes):
            n = len(episode.token_ids)
            input_ids[row, :n] = torch.tensor(episode.token_ids, dtype=torch.long)
            attention_mask[row, :n] = 1
            loss_mask[row, :n] = torch.tensor(episode.loss_mask, dtype=torch.long)
            log_probs[row, :n] = torch.tensor(episode.log_probs)
            scores = episode.turn_rewards if self.proxy.use_turn_scores else [(episode.last_generated, episode.reward)]
            for position, reward in scores:  # a reply of no token (position -1) has nothing to credit
                if position >= 0:
                    token_rewards[row, position] += reward
        batch = RolloutBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            loss_mask=loss_mask,
            group_index=torch.tensor([e.group for e in episodes], dtype=torch.long),
            episode_reward=torch.tensor([e.reward for e in episodes], dtype=torch.float32),
            success=torch.tensor([e.success for e in episodes], dtype=torch.bool),
            num_turns=torch.tensor([e.num_turns for e in episodes], dtype=torch.long),
            truncated=torch.tensor([e.truncated for e in episodes], dtype=torch.bool),
            seeds=torch.tensor([e.seed for e in episodes], dtype=torch.long),
            turns=[e.messages for e in episodes],
            metrics={},
            group_size=group_size,
            token_rewards=token_rewards,
            rollout_log_probs=log_probs if isinstance(self.backend, ScoringBackend) else None,
            tags=[e.tag for e in episodes] if any(e.tag for e in episodes) else [],
        )
        batch.metrics = rollout_metrics(batch, format_errors=sum(e.format_errors for e in episodes)) | (
            action_choice_metrics([e.replies_actions for e in episodes], [e.group for e in episodes]))
        return batch
