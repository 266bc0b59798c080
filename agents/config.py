"""What the rollout engine reads: the run config's ``env``, ``es_manager`` and ``agent_proxy`` nodes.

These dataclasses *are* the nodes of the run schema (``algos.training.schema.TurnRLConfig`` embeds
them), so one class holds each key's default and its check, and the engine reads the keys under
the names RAGEN gives them. Every check raises ``ValueError`` naming the full key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _require(condition: bool, key: str, value: object, allowed: str) -> None:
    if not condition:
        raise ValueError(f"{key}={value!r} is invalid; allowed: {allowed}")


@dataclass
class EnvConfig:
    """``env.*``: which game, and the keyword arguments of its constructor."""

    name: str = "sokoban"
    """bandit | sokoban | frozenlake | gsm8k (``envs.ENV_IDS``)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Passed to the env constructor (e.g. ``dim_room`` for Sokoban, ``is_slippery`` for FrozenLake);
    the env checks them when the config is validated."""


@dataclass
class EnvGroupConfig:
    """One entry of ``es_manager.{train,val}.env_configs``: ``n_groups`` of the split's groups play ``env``."""

    tag: str = ""
    """Name of this env config (e.g. RAGEN's ``CoordSokoban``), the prefix of its metrics
    (``rollout/<tag>/*``, ``val/<tag>/*``); non-empty, unique in the list, no ``/``."""
    n_groups: int | None = None
    """Groups of the split that play it, >= 1; null in every entry = ``env_groups`` split equally."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The game and its constructor kwargs, as the run's top-level ``env``."""


@dataclass
class EnvSplitConfig:
    """``es_manager.{train,val}.*``: ``env_groups`` levels, ``group_size`` episodes on each."""

    env_groups: int = 2
    """Levels per training step (or held-out levels per validation)."""
    group_size: int = 4
    """Episodes per level: the group a group-baseline estimator compares."""
    env_configs: list[EnvGroupConfig] = field(default_factory=list)
    """Several env types in one split (RAGEN's ``env_configs.tags`` / ``n_groups``): a list of
    ``{tag, n_groups, env: {name, kwargs}}`` whose ``n_groups`` add up to ``env_groups``; consecutive
    groups play the entries in list order and are also logged under ``rollout/<tag>/*`` (``val/<tag>/*``).
    Empty (default): every group plays the run's ``env``."""

    def group_envs(self, default: EnvConfig) -> list[tuple[str, EnvConfig]]:
        """``(tag, env)`` of groups ``0 .. env_groups - 1``; ``("", default)`` each without ``env_configs``."""
        if not self.env_configs:
            return [("", default)] * self.env_groups
        share = self.env_groups // len(self.env_configs)
        return [(entry.tag, entry.env) for entry in self.env_configs
                for _ in range(share if entry.n_groups is None else entry.n_groups)]

    def check(self, key: str) -> None:
        """Raise ``ValueError`` naming ``key`` (``es_manager.<split>``) unless the sizes and env configs fit."""
        _require(self.env_groups >= 1, f"{key}.env_groups", self.env_groups, ">= 1")
        _require(self.group_size >= 1, f"{key}.group_size", self.group_size, ">= 1")
        if not self.env_configs:
            return
        tags = [entry.tag for entry in self.env_configs]
        _require(all(tags) and len(set(tags)) == len(tags) and not any("/" in tag for tag in tags),
                 f"{key}.env_configs tags", tags, "non-empty, unique, without '/'")
        counts = [entry.n_groups for entry in self.env_configs]
        if all(count is None for count in counts):
            _require(self.env_groups % len(counts) == 0, f"{key}.env_groups", self.env_groups,
                     f"a multiple of the {len(counts)} env_configs when their n_groups are null")
        else:
            _require(all(count is not None and count >= 1 for count in counts), f"{key}.env_configs n_groups",
                     counts, "each >= 1, or null in every entry")
            _require(sum(counts) == self.env_groups, f"{key}.env_configs n_groups", counts,
                     f"adding up to {key}.env_groups={self.env_groups}")


@dataclass
class ESManagerConfig:
    """``es_manager.*``: how many environments run per step and on which levels (RAGEN's env-state manager)."""

    train: EnvSplitConfig = field(default_factory=EnvSplitConfig)
    """Training rollouts: group ``g`` of step ``k`` plays level ``train_seed_start + (k - 1) * env_groups + g``
    (re-roll ``a`` of the step: that plus ``a * 10**7``, see ``agents.rollout.REROLL_SEED_STRIDE``)."""
    val: EnvSplitConfig = field(default_factory=lambda: EnvSplitConfig(env_groups=2, group_size=1))
    """Validation: levels ``val_seed_start, val_seed_start + 1, ...``."""
    format_penalty: float = -0.1
    """Added once for each turn whose reply has a missing or invalid action (finite, <= 0)."""
    train_seed_start: int = 10000
    """First training level seed (>= 0)."""
    train_num_levels: int | None = None
    """null: every group of every step plays a level of its own; N (>= 1): training plays only the N levels
    ``train_seed_start ... train_seed_start + N - 1``, cycling (Procgen's ``num_levels``), to tell what a
    run can learn on a fixed pool from what carries to held-out levels."""
    val_seed_start: int = 123
    """First validation level seed (>= 0); keep the ranges apart so validation is held out."""

    def __post_init__(self) -> None:
        self.train.check("es_manager.train")
        self.val.check("es_manager.val")
        _require(self.format_penalty == self.format_penalty and abs(self.format_penalty) != float("inf")
                 and self.format_penalty <= 0, "es_manager.format_penalty", self.format_penalty, "a finite value <= 0")
        for key in ("train_seed_start", "val_seed_start"):
            _require(getattr(self, key) >= 0, f"es_manager.{key}", getattr(self, key), ">= 0")
        _require(self.train_num_levels is None or self.train_num_levels >= 1, "es_manager.train_num_levels",
                 self.train_num_levels, "null or an integer >= 1")


@dataclass
class AgentProxyConfig:
    """``agent_proxy.*``: the multi-turn agent's limits and reply style."""

    max_turn: int = 2
    """Turns per episode (one reply each), >= 1."""
    max_actions_per_turn: int = 5
    """Actions one reply may take (the rest are ignored), >= 1."""
    max_actions_per_traj: int | None = None
    """Action budget of an episode; null = the env's default (Bandit 1, others 10)."""
    enable_think: bool = True
    """Ask for ``<think>...</think><answer>...</answer>``; false asks for ``<answer>...</answer>`` only."""
    use_turn_scores: bool = False
    """Token rewards for gae: each turn's reward (env reward plus its format penalty) on that turn's
    last generated token; false puts the episode's sum on its last generated token (RAGEN's default).
    Only for ``algorithm.adv_estimator=gae``: the other estimators take one reward per episode."""

    def __post_init__(self) -> None:
        _require(self.max_turn >= 1, "agent_proxy.max_turn", self.max_turn, ">= 1")
        _require(self.max_actions_per_turn >= 1, "agent_proxy.max_actions_per_turn", self.max_actions_per_turn,
                 ">= 1")
        _require(self.max_actions_per_traj is None or self.max_actions_per_traj >= 1,
                 "agent_proxy.max_actions_per_traj", self.max_actions_per_traj, "null or >= 1")


@dataclass
class AgentConfig:
    """The rollout engine's settings: the three run-config nodes and the episode length cap."""

    env: EnvConfig = field(default_factory=EnvConfig)
    es_manager: ESManagerConfig = field(default_factory=ESManagerConfig)
    agent_proxy: AgentProxyConfig = field(default_factory=AgentProxyConfig)
    max_model_len: int = 2048
    """``actor_rollout_ref.rollout.max_model_len``: max tokens of a whole episode."""
    show_progress: bool = True
    """A tqdm bar over turns (on a terminal only)."""

    @classmethod
    def of(cls, env: str = "sokoban", *, env_kwargs: dict[str, Any] | None = None, env_groups: int = 2,
           group_size: int = 4, val_groups: int = 2, val_group_size: int = 1, max_model_len: int = 2048,
           show_progress: bool = False, **keys: Any) -> AgentConfig:
        """A config from flat keywords (scripts and tests): the splits' sizes, and any other key of
        ``es_manager`` (``format_penalty``, ``*_seed_start``) or ``agent_proxy`` under its own name."""
        es_keys = {key: keys.pop(key) for key in ("format_penalty", "train_seed_start", "train_num_levels",
                                                  "val_seed_start")
                   if key in keys}
        splits = EnvSplitConfig(env_groups, group_size), EnvSplitConfig(val_groups, val_group_size)
        return cls(EnvConfig(env, dict(env_kwargs or {})), ESManagerConfig(*splits, **es_keys),
                   AgentProxyConfig(**keys), max_model_len, show_progress)
