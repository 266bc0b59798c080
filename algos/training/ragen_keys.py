"""RAGEN's command-line spellings, rewritten to TurnRL's keys before Hydra composes (one table).

:data:`RAGEN_KEYS` maps each RAGEN key (``fnmatch`` patterns over the dotted key, ``+``/``++`` ignored)
to TurnRL's: a rename, a rewrite that depends on the value, a setting dropped because its value is
what TurnRL always does (``rollout.top_k=-1``), or a refusal that names TurnRL's way ("RAGEN's `X` is
TurnRL's `Y`") or says why it is not supported. :data:`RAGEN_CONFIG_NAMES` maps ``--config-name``.
A key in neither table goes to Hydra unchanged (and an unknown one gets "did you mean").
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

ENV_TAGS = {"SimpleSokoban": "sokoban", "CoordSokoban": "coord_sokoban", "FrozenLake": "frozenlake",
            "CoordFrozenLake": "coord_frozenlake", "Bandit": "bandit", "BanditTest": "bandit_test"}
"""RAGEN's ``custom_envs`` names (``es_manager.*.env_configs.tags``) -> TurnRL's ``env=`` choices."""
RAGEN_CONFIG_NAMES = {"base": None, "_1_bandit": "bandit", "_2_sokoban": "sokoban", "_3_frozen_lake": "frozenlake"}
"""RAGEN's ``--config-name`` -> TurnRL's ``env=`` choice (``base``: the defaults)."""
Rewrite = Callable[[str, Any, str], list[str]]  # (RAGEN key, parsed value, value text) -> TurnRL overrides


@dataclass(frozen=True)
class RagenKey:
    """One row of the table: RAGEN's key pattern(s), TurnRL's counterpart (README), the rewrite."""

    patterns: tuple[str, ...]
    turnrl: str
    rewrite: Rewrite


def _refuse(key: str, message: str) -> ValueError:
    return ValueError(f"RAGEN's `{key}`: {message}")


def rename(*targets: str) -> Rewrite:
    """The same value under TurnRL's key(s)."""
    return lambda key, value, text: [f"{target}={text}" for target in targets]


def is_turnrls(target: str) -> Rewrite:
    """No single override does it: say what TurnRL's way is."""
    def refuse(key: str, value: Any, text: str) -> list[str]:
        raise ValueError(f"RAGEN's `{key}` is TurnRL's `{target}`")
    return refuse


def unsupported(why: str, *same_as_turnrl: Any) -> Rewrite:
    """Dropped when the value is one of ``same_as_turnrl`` (what TurnRL always does), else refused."""
    def check(key: str, value: Any, text: str) -> list[str]:
        if value in same_as_turnrl:
            return []
        raise _refuse(key, f"{text} is not supported: {why}")
    return check


def _one(key: str, value: Any) -> Any:
    values = value if isinstance(value, list) else [value]
    if len(values) != 1:
        raise _refuse(key, "this spelling takes one env type per run; several env types in one split are "
                           f"TurnRL's `{key.split('.env_configs')[0]}.env_configs=[{{tag, n_groups, env: {{name, kwargs}}}}, ...]`")
    return values[0]


def _env_tags(key: str, value: Any, text: str) -> list[str]:
    tag = _one(key, value)
    if tag not in ENV_TAGS:
        raise _refuse(key, f"{tag} is not supported: TurnRL has no such env; RAGEN's envs it has: {sorted(ENV_TAGS)}")
    if key.startswith("es_manager.val."):
        return []  # validation plays the training env's held-out levels (checked against the train tag)
    return [f"env={ENV_TAGS[tag]}"]


def _n_groups(key: str, value: Any, text: str) -> list[str]:
    return [f"{key.split('.env_configs')[0]}.env_groups={_one(key, value)}"]


def _filter_type(key: str, value: Any, text: str) -> list[str]:
    rollout = "actor_rollout_ref.rollout."
    if value == "std":  # RAGEN's first filter: rank groups by their reward std, keep the largest
        return [rollout + "rollout_filter_metric=reward_std", rollout + "rollout_filter_type=largest"]
    if value == "max_mean":
        raise _refuse(key, "max_mean is not supported: use rollout_filter_metric=reward (groups by mean reward)")
    return [f"{rollout}rollout_filter_type={text}"]  # TurnRL's own largest / smallest


def _loggers(key: str, value: Any, text: str) -> list[str]:
    names = value if isinstance(value, list) else [value]
    return ["logger=wandb" if "wandb" in names else "logger=console"]


def _gpus(launcher_flag: str) -> Rewrite:
    def check(key: str, value: Any, text: str) -> list[str]:
        if value == 1:
            return []
        raise ValueError(f"RAGEN's `{key}={text}` is TurnRL's `torchrun {launcher_flag} {text} scripts/train.py ...` "
                         "(one process per GPU)")
    return check


def _env_kwarg(key: str, value: Any, text: str) -> list[str]:
    return [f"++env.kwargs.{key.rsplit('.', 1)[1]}={text}"]


VLLM_SETTING = "vLLM engine settings are chosen by TurnRL's vllm backend (agents/backends/vllm.py)"
RAGEN_KEYS: tuple[RagenKey, ...] = (
    RagenKey(("model_path",), "actor_rollout_ref.model.path", rename("actor_rollout_ref.model.path")),
    RagenKey(("micro_batch_size_per_gpu", "actor_rollout_ref.actor.micro_batch_size_per_gpu"),
             "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
             rename("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu")),
    RagenKey(("ppo_mini_batch_size",), "actor_rollout_ref.actor.ppo_mini_batch_size",
             rename("actor_rollout_ref.actor.ppo_mini_batch_size")),
    RagenKey(("actor_rollout_ref.actor.optim.lr",), "actor_rollout_ref.actor.lr", rename("actor_rollout_ref.actor.lr")),
    RagenKey(("actor_rollout_ref.actor.optim.weight_decay",), "actor_rollout_ref.actor.weight_decay",
             rename("actor_rollout_ref.actor.weight_decay")),
    RagenKey(("actor_rollout_ref.actor.optim.lr_warmup_steps",), "actor_rollout_ref.actor.lr_warmup_steps",
             rename("actor_rollout_ref.actor.lr_warmup_steps")),
    RagenKey(("actor_rollout_ref.actor.optim.betas",), "AdamW's (0.9, 0.999), fixed",
             unsupported("TurnRL's AdamW uses torch's betas (0.9, 0.999)", [0.9, 0.999])),
    RagenKey(("actor_rollout_ref.actor.clip_ratio",), "both clip_ratio_low and clip_ratio_high",
             rename("actor_rollout_ref.actor.clip_ratio_low", "actor_rollout_ref.actor.clip_ratio_high")),
    RagenKey(("actor_rollout_ref.actor.use_ref",), "actor_rollout_ref.actor.use_kl_loss",
             is_turnrls("actor_rollout_ref.actor.use_kl_loss (a reference model is built for the KL loss only)")),
    RagenKey(("actor_rollout_ref.actor.grpo_advantage_length_weight", "grpo_advantage_length_weight"),
             "not supported (false)", unsupported("advantages are not weighted by length", False)),
    RagenKey(("enable_response_mask",), "always on", unsupported("the loss always masks non-generated tokens", True)),
    RagenKey(("actor_rollout_ref.actor.fsdp_config.*", "actor_rollout_ref.ref.fsdp_config.*"),
             "actor_rollout_ref.actor.zero_stage", is_turnrls("actor_rollout_ref.actor.zero_stage (DeepSpeed ZeRO)")),
    RagenKey(("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
              "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu"),
             "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
             is_turnrls("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu (log-prob passes use it too)")),
    RagenKey(("actor_rollout_ref.rollout.top_k", "ctx_manager.generation.gen_config.top_k"), "not supported (-1)",
             unsupported("TurnRL's backends sample with temperature and top_p only", -1, 0)),
    RagenKey(("actor_rollout_ref.rollout.rollout_filter_ratio",),
             "rollout_filter_strategy=ratio + rollout_filter_value",
             lambda key, value, text: ["actor_rollout_ref.rollout.rollout_filter_strategy=ratio",
                                       f"actor_rollout_ref.rollout.rollout_filter_value={text}"]),
    RagenKey(("actor_rollout_ref.rollout.rollout_filter_type",), "std: rollout_filter_metric=reward_std, largest",
             _filter_type),
    RagenKey(("actor_rollout_ref.rollout.tensor_model_parallel_size",), "not supported (1)",
             unsupported("one model copy per process, no tensor parallelism", 1)),
    RagenKey(tuple(f"actor_rollout_ref.rollout.{name}" for name in (
        "gpu_memory_utilization", "max_num_batched_tokens", "enforce_eager", "free_cache_engine", "prompt_length",
        "tp_size_check", "enable_chunked_prefill")), "not supported", unsupported(VLLM_SETTING)),
    RagenKey(("ctx_manager.generation.gen_config.response_length", "ctx_manager.generation.gen_config.temperature",
              "ctx_manager.generation.gen_config.top_p"), "actor_rollout_ref.rollout.<same name>",
             lambda key, value, text: [f"actor_rollout_ref.rollout.{key.rsplit('.', 1)[1]}={text}"]),
    RagenKey(("lora.rank",), "actor_rollout_ref.model.lora_rank", rename("actor_rollout_ref.model.lora_rank")),
    RagenKey(("lora.alpha",), "actor_rollout_ref.model.lora_alpha", rename("actor_rollout_ref.model.lora_alpha")),
    RagenKey(("lora.target_modules",), "actor_rollout_ref.model.target_modules",
             rename("actor_rollout_ref.model.target_modules")),
    RagenKey(("lora.*",), "not supported", unsupported("adapters are checkpointed with the run, no temp folder")),
    RagenKey(("actor_rollout_ref.model.use_remove_padding",), "not supported",
             unsupported("groups share their prompt instead (actor_rollout_ref.actor.share_prompt_prefix)")),
    RagenKey(("algorithm.kl_ctrl.*", "algorithm.kl_penalty", "algorithm.use_kl_in_reward"),
             "actor_rollout_ref.actor.use_kl_loss / kl_loss_coef",
             unsupported("no KL penalty in the reward; use actor_rollout_ref.actor.use_kl_loss=true "
                         "actor_rollout_ref.actor.kl_loss_coef=<coef>", 0, False, "fixed", "kl")),
    RagenKey(("critic.optim.lr",), "critic.lr", rename("critic.lr")),
    RagenKey(("critic.model.path",), "critic.model_path", rename("critic.model_path")),
    RagenKey(("trainer.max_critic_ckpt_to_keep",), "trainer.max_ckpt_to_keep",
             is_turnrls("trainer.max_ckpt_to_keep (the critic is saved in the actor's checkpoints)")),
    RagenKey(("data.*",), "not used", unsupported("prompts come from the envs", None)),
    RagenKey(("seed.train",), "es_manager.train_seed_start", rename("es_manager.train_seed_start")),
    RagenKey(("seed.val",), "es_manager.val_seed_start", rename("es_manager.val_seed_start")),
    RagenKey(("trainer.logger",), "logger=wandb (when listed) or logger=console", _loggers),
    RagenKey(("trainer.n_gpus_per_node",), "torchrun --nproc_per_node N", _gpus("--nproc_per_node")),
    RagenKey(("trainer.nnodes",), "torchrun --nnodes N", _gpus("--nnodes")),
    RagenKey(("trainer.max_actor_ckpt_to_keep",), "trainer.max_ckpt_to_keep", rename("trainer.max_ckpt_to_keep")),
    RagenKey(("trainer.local_log_dir",), "hydra.run.dir", is_turnrls("hydra.run.dir (the run dir)")),
    RagenKey(("trainer.wandb_id",), "trainer.resume=auto",
             is_turnrls("trainer.resume=auto (the checkpoint keeps the wandb run id)")),
    RagenKey(("trainer.validation_steps",), "es_manager.val.env_groups",
             unsupported("validation plays each of es_manager.val.env_groups levels once; set that instead", 1)),
    RagenKey(("trainer.generations_to_log_to_wandb.*",), "not supported",
             unsupported("episodes are not sent to wandb (scripts/render_episode.py shows them)")),
    RagenKey(("es_manager.train.env_configs.tags", "es_manager.val.env_configs.tags"), "env=<name> (one tag)",
             _env_tags),
    RagenKey(("es_manager.train.env_configs.n_groups", "es_manager.val.env_configs.n_groups"),
             "es_manager.{train,val}.env_groups (one value)", _n_groups),
    RagenKey(("custom_envs.*.env_config.dim_x", "custom_envs.*.env_config.dim_y"), "env.kwargs.dim_room",
             is_turnrls("env.kwargs.dim_room=[rows,cols]")),
    RagenKey(("custom_envs.*.env_config.*",), "env.kwargs.<name>", _env_kwarg),
    RagenKey(("custom_envs.*.max_actions_per_traj",), "agent_proxy.max_actions_per_traj",
             rename("agent_proxy.max_actions_per_traj")),
    RagenKey(("custom_envs.*",), "env=<name> and env.kwargs",
             unsupported("TurnRL's envs write their own instructions and take their settings as env.kwargs")),
    RagenKey(("agent_proxy.action_sep",), "always ||", unsupported("TurnRL's parser splits actions on ||", "||")),
    RagenKey(("agent_proxy.max_context_window",), "not supported (-1)",
             unsupported("episodes keep their whole history (cut at max_model_len)", -1)),
    RagenKey(("agent_proxy.use_turn_scores",), "not supported (false)",
             unsupported("rewards are per episode", False)),
    RagenKey(("agent_proxy.reward_normalization.*",), "not supported (state, identity)",
             unsupported("rewards are used as the env gives them", "state", "identity")),
)


def _row(key: str) -> RagenKey | None:
    return next((row for row in RAGEN_KEYS if any(fnmatch.fnmatchcase(key, p) for p in row.patterns)), None)


def _rewrite(override: Override, line: str, train_env: str | None) -> list[str]:
    key = override.key_or_group
    row = None if override.is_delete() or override.package else _row(key)
    if row is None:
        return [line]
    text = line.split("=", 1)[1]
    value = None if override.is_sweep_override() else override.value()
    if key.endswith("env_configs.tags") and key.startswith("es_manager.val.") and train_env is not None:
        tag = _one(key, value)
        if ENV_TAGS.get(tag) != train_env:
            raise _refuse(key, f"{tag} differs from the training env ({train_env}); validation on other envs is "
                               "TurnRL's `es_manager.val.env_configs=[{tag, n_groups, env: {name, kwargs}}, ...]`")
    return row.rewrite(key, value, text)


def _parsed(arg: str) -> Override | None:
    """The override, or None for a flag or a line Hydra cannot parse (Hydra reports it later)."""
    try:
        return None if arg.startswith("-") else OverridesParser.create().parse_override(arg)
    except HydraException:
        return None


def ragen_arguments(args: list[str]) -> list[str]:
    """``scripts/train.py``'s arguments with RAGEN's spellings rewritten (``ValueError`` for a refused one)."""
    args = list(args)
    for flag in ("--config-name", "-cn"):
        for i, arg in enumerate(args):
            name = arg.split("=", 1)[1] if arg.startswith(flag + "=") else None
            if arg == flag and i + 1 < len(args):
                name = args[i + 1]
            if name is None or name == "config":
                continue
            if name not in RAGEN_CONFIG_NAMES:
                raise ValueError(f"RAGEN's `--config-name {name}`: not supported: TurnRL maps "
                                 f"{sorted(RAGEN_CONFIG_NAMES)} (or pick an env with env=<name>)")
            env = RAGEN_CONFIG_NAMES[name]
            args[i: i + (1 if "=" in arg else 2)] = [f"env={env}"] if env else []
            break
    parsed = [(_parsed(arg), arg) for arg in args]
    train_env = next((ENV_TAGS.get(_one(o.key_or_group, o.value())) for o, _ in parsed
                      if o is not None and o.key_or_group == "es_manager.train.env_configs.tags"), None)
    train_env = train_env or next((o.value() for o, _ in parsed if o is not None and o.key_or_group == "env"), None)
    return [new for override, arg in parsed
            for new in ([arg] if override is None else _rewrite(override, arg, train_env))]
