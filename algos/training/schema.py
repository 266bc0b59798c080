"""The typed schema of a TurnRL run: every key ``scripts/train.py`` accepts, with RAGEN/verl paths.

Registered in Hydra's ConfigStore as ``turnrl_schema`` (``conf/config.yaml`` lists it first in its
defaults), so composing a config with an unknown key or a value of the wrong type fails at once with
Hydra's message naming the key. :func:`validate` then builds the dataclasses
(``OmegaConf.to_object``), which runs every ``__post_init__`` check (a ``ValueError`` naming the key
and the allowed values), and builds the env once to check its kwargs -- all before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from agents.backends.factory import BACKEND_NAMES
from agents.config import AgentConfig, AgentProxyConfig, EnvConfig, ESManagerConfig
from agents.model import DTYPES
from algos import compute_advantages
from algos.config import ActorConfig, AlgorithmConfig, EarlyStopConfig, RolloutFilterConfig, require
from algos.filtering import canonical_metric

TINY_RANDOM_MODEL = "tiny-random"
"""``actor_rollout_ref.model.path`` value that builds a random 2-layer model (tests, smoke runs)."""
BF16_CHOICES = ("auto", "true", "false")
RESUME_CHOICES = ("disable", "auto")
LOGGER_CHOICES = ("wandb", "console")
WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class ModelConfig:
    """``actor_rollout_ref.model.*``."""

    path: str | None = None
    """null = embedded SmolLM2-135M-Instruct; a local HF folder or hub name; ``tiny-random`` for tests."""
    dtype: str = "float32"
    """Weights' dtype on load (training runs fp32 master weights; bf16 compute comes from ``actor.bf16``)."""
    enable_gradient_checkpointing: bool = True
    """Recompute activations in backward (verl's default): far less activation memory for ~25% more update
    compute; works with ``share_prompt_prefix`` and LoRA. It keeps ``make train`` under 4 GiB on CPU."""
    lora_rank: int = 0
    """LoRA adapter rank (``peft``), >= 0; 0 = off (every weight trains). Also the critic's (``algos.training.lora``)."""
    lora_alpha: int = 16
    """LoRA scaling numerator, > 0: the update is ``(lora_alpha / lora_rank) * B @ A``."""
    target_modules: Any = "all-linear"
    """Layers that get adapters: ``all-linear`` (every linear layer but the LM head) or a list of module names."""

    def __post_init__(self) -> None:
        key = "actor_rollout_ref.model."
        require(self.dtype in DTYPES, key + "dtype", self.dtype, str(sorted(DTYPES)))
        require(self.lora_rank >= 0, key + "lora_rank", self.lora_rank, ">= 0 (0 = off)")
        require(self.lora_alpha > 0, key + "lora_alpha", self.lora_alpha, "> 0")
        names = [self.target_modules] if isinstance(self.target_modules, str) else self.target_modules
        require(isinstance(names, (list, tuple)) and len(names) > 0 and all(isinstance(n, str) and n for n in names),
                key + "target_modules", self.target_modules, "all-linear or a non-empty list of module names")


@dataclass
class TrainerActorConfig(ActorConfig):
    """``actor_rollout_ref.actor.*``: the algos options plus how the update runs."""

    ppo_micro_batch_size_per_gpu: int = 4
    """Episodes per forward/backward pass; gradients accumulate to a ``ppo_mini_batch_size`` step."""
    use_dynamic_bsz: bool = False
    """Cut micro-batches by tokens instead (verl's key): each forward/backward and log-prob pass holds as
    many episodes as fit in ``ppo_max_token_len_per_gpu`` padded tokens (one episode at least), so the
    per-pass activation memory no longer grows with the episode count (attention scores and logits still
    grow with the budget). The loss is the same: each mini-batch's normaliser is computed over the whole
    mini-batch. The critic's passes use the same budget (its ``ppo_micro_batch_size_per_gpu`` then unused)."""
    ppo_max_token_len_per_gpu: int = 16384
    """With ``use_dynamic_bsz``: padded tokens (episodes x the longest) per pass, >= 1."""
    share_prompt_prefix: bool = True
    """Run the prompt shared by a group's episodes once per micro-batch, packed with the members' own
    tokens under a tree-shaped attention mask (``algos.training.packed_logprobs``): same log-probs and gradients,
    fewer token-forwards, less activation memory. Mini-batches then shuffle whole groups; the saving is
    largest when ``ppo_micro_batch_size_per_gpu`` is a multiple of ``es_manager.train.group_size``."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage: 0 (plain data parallel), 1, 2 or 3."""
    bf16: str = "auto"
    """auto (DeepSpeed's bf16 where the GPU supports it, never on CPU) | true | false. On a CPU true is bf16
    autocast over fp32 weights (``engine.cpu_autocast``: ~1.9x faster updates with ``avx512_bf16``)."""
    tis_imp_ratio_cap: float = -1.0
    """Truncated importance sampling: each token's policy loss times ``min(pi_old / pi_sampler, cap)``
    (``algos.training.actor``); > 1, or -1 = off. Needs a backend that returns rollout log-probs."""

    @property
    def micro_batch_tokens(self) -> int | None:
        """A pass's token budget: ``ppo_max_token_len_per_gpu`` with ``use_dynamic_bsz``, else None."""
        return self.ppo_max_token_len_per_gpu if self.use_dynamic_bsz else None

    def __post_init__(self) -> None:
        super().__post_init__()
        key = "actor_rollout_ref.actor."
        require(self.ppo_micro_batch_size_per_gpu >= 1, key + "ppo_micro_batch_size_per_gpu",
                 self.ppo_micro_batch_size_per_gpu, ">= 1")
        require(self.ppo_max_token_len_per_gpu >= 1, key + "ppo_max_token_len_per_gpu",
                self.ppo_max_token_len_per_gpu, ">= 1")
        require(self.zero_stage in (0, 1, 2, 3), key + "zero_stage", self.zero_stage, "0, 1, 2 or 3")
        self.bf16 = {"True": "true", "False": "false"}.get(self.bf16, self.bf16)  # Hydra reads bare true as a bool
        require(self.bf16 in BF16_CHOICES, key + "bf16", self.bf16, str(list(BF16_CHOICES)))
        require(self.tis_imp_ratio_cap == -1 or self.tis_imp_ratio_cap > 1, key + "tis_imp_ratio_cap",
                self.tis_imp_ratio_cap, "> 1, or -1 (off)")


@dataclass
class ValKwargs:
    """``actor_rollout_ref.rollout.val_kwargs.*``: sampling for validation rollouts."""

    do_sample: bool = False
    """false = greedy decoding."""
    temperature: float = 1.0
    """Validation sampling temperature (> 0), used when ``do_sample``."""
    top_p: float = 1.0
    """Validation nucleus sampling, (0, 1], used when ``do_sample``."""


@dataclass
class RolloutConfig(RolloutFilterConfig):
    """``actor_rollout_ref.rollout.*``: generation settings plus the group filter (algos)."""

    name: str = "auto"
    """Generation backend: auto (vLLM where measured faster, one turn or many: CUDA and CPUs with native bf16;
    else hf; ``agents.backends.hardware.vllm_is_faster_here``) | hf | vllm."""
    temperature: float = 1.0
    """Sampling temperature of training rollouts (> 0); the update's log-probs use the same one."""
    top_p: float = 1.0
    """Nucleus sampling of training rollouts, (0, 1]; 1 = off."""
    response_length: int = 64
    """Max new tokens per turn."""
    max_model_len: int = 2048
    """Max tokens of a whole episode; longer episodes end truncated."""
    kv_cache_gib: float = 2.0
    """KV cache memory: vLLM's cache size; the hf backend's cap on episode caches kept between turns
    (rows past it are prefilled again; 0 turns the reuse off)."""
    val_kwargs: ValKwargs = field(default_factory=ValKwargs)

    def __post_init__(self) -> None:
        super().__post_init__()
        key = "actor_rollout_ref.rollout."
        require(canonical_metric(self.rollout_filter_metric) not in ("entropy", "entropy_std"),
                key + "rollout_filter_metric", self.rollout_filter_metric,
                "reward_std, reward, reward_sum or length (the trainer computes entropies after filtering)")
        require(self.name in BACKEND_NAMES, key + "name", self.name, str(list(BACKEND_NAMES)))
        require(self.temperature > 0, key + "temperature", self.temperature, "> 0")
        require(0 < self.top_p <= 1, key + "top_p", self.top_p, "(0, 1]")
        require(self.response_length >= 1, key + "response_length", self.response_length, ">= 1")
        require(self.kv_cache_gib >= 0, key + "kv_cache_gib", self.kv_cache_gib, ">= 0")
        require(self.max_model_len > self.response_length, key + "max_model_len", self.max_model_len,
                 f"> response_length ({self.response_length})")
        require(self.val_kwargs.temperature > 0, key + "val_kwargs.temperature",
                 self.val_kwargs.temperature, "> 0")
        require(0 < self.val_kwargs.top_p <= 1, key + "val_kwargs.top_p", self.val_kwargs.top_p, "(0, 1]")


@dataclass
class ActorRolloutRefConfig:
    """``actor_rollout_ref.*`` (verl's grouping: one model acting as actor, rollout and reference)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    actor: TrainerActorConfig = field(default_factory=TrainerActorConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)


@dataclass
class CriticConfig:
    """``critic.*``: the value model of ``algorithm.adv_estimator=gae`` (``algos.training.critic``; not
    built for the other estimators). It trains on the actor's mini-batches and epochs with the actor's
    ``loss_agg_mode``, ``grad_clip``, ``weight_decay`` and ``bf16``."""

    model_path: str | None = None
    """Trunk of the value model (a causal LM's, plus a linear head); null = the policy's
    ``actor_rollout_ref.model.path``."""
    lr: float = 1e-5
    """AdamW learning rate, > 0 (verl's critic default)."""
    cliprange_value: float = 0.5
    """Value clipping: the loss stops rewarding predictions more than this far from the rollout's
    values, > 0 (verl's default)."""
    ppo_micro_batch_size_per_gpu: int = 4
    """Episodes per critic forward/backward pass, >= 1."""
    warmup: int = 0
    """Steps 1..warmup train the critic only; the actor is not updated (verl's ``trainer.critic_warmup``), >= 0."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage of the critic's own engine: 0, 1, 2 or 3."""

    def __post_init__(self) -> None:
        require(self.lr > 0, "critic.lr", self.lr, "> 0")
        require(self.cliprange_value > 0, "critic.cliprange_value", self.cliprange_value, "> 0")
        require(self.ppo_micro_batch_size_per_gpu >= 1, "critic.ppo_micro_batch_size_per_gpu",
                self.ppo_micro_batch_size_per_gpu, ">= 1")
        require(self.warmup >= 0, "critic.warmup", self.warmup, ">= 0")
        require(self.zero_stage in (0, 1, 2, 3), "critic.zero_stage", self.zero_stage, "0, 1, 2 or 3")


@dataclass
class FormatWarmupConfig:
    """``format_warmup.*``: supervised steps on well-formed replies with uniformly random valid actions,
    before RL, for a model too small to follow the reply format (``algos.training.format_warmup``). Teaches the
    format, not the task. Skipped when a run resumes from a checkpoint, and for envs with free-form
    answers (GSM8K), which have no random valid action to demonstrate."""

    steps: int = 0
    """0 = off."""
    lr: float = 1e-4
    """Constant AdamW learning rate of the warm-up (its own optimizer, dropped afterwards)."""
    lora_lr: float = 1e-3
    """The warm-up's learning rate when only LoRA adapters train (``actor_rollout_ref.model.lora_rank > 0``):
    low-rank updates need ~10x full fine-tuning's rate. At ``lr`` (1e-4) a rank-32 (alpha 32) warm-up left the 135M
    model's reply NLL at 1.44 (0.55 in full fine-tuning) and 99% of FrozenLake replies malformed; 1e-3 reached 0.70."""
    levels_per_step: int = 2
    """Levels per step; ``steps * levels_per_step`` distinct levels are demonstrated, each once."""
    replies_per_level: int = 4
    """Demonstrated replies per level (they share the level's prompt, which runs once)."""

    def __post_init__(self) -> None:
        require(self.steps >= 0, "format_warmup.steps", self.steps, ">= 0 (0 = off)")
        require(self.lr > 0, "format_warmup.lr", self.lr, "> 0")
        require(self.lora_lr > 0, "format_warmup.lora_lr", self.lora_lr, "> 0")
        require(self.levels_per_step >= 1, "format_warmup.levels_per_step", self.levels_per_step, ">= 1")
        require(self.replies_per_level >= 1, "format_warmup.replies_per_level", self.replies_per_level, ">= 1")


@dataclass
class TrainerConfig(EarlyStopConfig):
    """``trainer.*``: run length, naming, checkpoints, validation and the early stop (``early_stop_*``)."""

    project_name: str = "turnrl"
    """wandb project."""
    experiment_name: str | None = None
    """null = ``<env>-<algo>`` (the Hydra group choices; ``<env>-<adv_estimator>`` outside Hydra)."""
    total_training_steps: int = 3
    """RL steps (one rollout batch and its update each), >= 1."""
    save_freq: int = -1
    """Checkpoint every N steps (and on SIGINT/SIGTERM); <= 0 = only on a signal."""
    test_freq: int = 10
    """Validate every N steps and after the last one; <= 0 = never."""
    val_before_train: bool = False
    """Validate once before the first step (logged as step 0)."""
    resume: str = "disable"
    """disable | auto: continue from the newest complete checkpoint in ``default_local_dir`` (to resume
    a killed run, pass its folder: ``trainer.resume=auto hydra.run.dir=<its run dir>``)."""
    default_local_dir: str | None = None
    """Checkpoint folder; null = ``<run dir>/checkpoints``."""
    max_ckpt_to_keep: int = 2
    """Newest checkpoints kept (>= 1); older ones are deleted after each save."""
    max_nonfinite_steps: int = 3
    """Stop the run after this many steps in a row whose update had a non-finite loss or gradient norm
    (each such optimizer step is skipped and counted in ``actor/nonfinite_steps``), >= 1."""
    log_trajectories_freq: int = 10
    """Every N steps, write the step's episodes (per turn: observation, reply, parsed actions, reward; the
    episode's success, reward and advantage) to ``<run dir>/trajectories.jsonl`` and a few to a wandb
    Table (``algos.training.trajectories``); 0 = off."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.total_training_steps >= 1, "trainer.total_training_steps", self.total_training_steps,
                 ">= 1")
        require(self.resume in RESUME_CHOICES, "trainer.resume", self.resume, str(list(RESUME_CHOICES)))
        require(self.max_ckpt_to_keep >= 1, "trainer.max_ckpt_to_keep", self.max_ckpt_to_keep, ">= 1")
        require(self.max_nonfinite_steps >= 1, "trainer.max_nonfinite_steps", self.max_nonfinite_steps, ">= 1")
        require(self.log_trajectories_freq >= 0, "trainer.log_trajectories_freq", self.log_trajectories_freq,
                ">= 0 (0 = off)")


@dataclass
class WandbConfig:
    """``logger.wandb.*``."""

    mode: str = "offline"
    """offline (default: no account, no network; ``wandb sync`` later) | online | disabled."""
    entity: str | None = None
    """wandb entity (user or team); null = your default."""
    group: str | None = None
    """Runs sharing a group are shown together (e.g. ``drgrpo-compare-bandit``); null = no group."""
    tags: list[str] = field(default_factory=list)
    """wandb tags of the run."""

    def __post_init__(self) -> None:
        require(self.mode in WANDB_MODES, "logger.wandb.mode", self.mode, str(list(WANDB_MODES)))


@dataclass
class LoggerConfig:
    """``logger.*``: where metrics go besides ``metrics.jsonl`` (always written)."""

    backend: str = "wandb"
    """wandb | console."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    progress_bar: bool = True
    """A tqdm bar over training steps on the console."""

    def __post_init__(self) -> None:
        require(self.backend in LOGGER_CHOICES, "logger.backend", self.backend, str(list(LOGGER_CHOICES)))


@dataclass
class SystemConfig:
    """``system.*``."""

    CUDA_VISIBLE_DEVICES: str | None = None
    """GPU ids for this run (e.g. "0" or "0,1"); null leaves the environment as it is."""
    cpu_heap_mmap_threshold_kib: int = 0
    """CPU runs on Linux: host allocations of at least this many KiB (e.g. 128) get their own mappings,
    returned to the OS when freed (``algos.training.memory.limit_heap_slack``): lower peak memory, slower CPU
    updates (page faults). 0 (default) keeps glibc's behaviour, which reuses freed memory without
    giving it back."""

    def __post_init__(self) -> None:
        require(self.cpu_heap_mmap_threshold_kib >= 0, "system.cpu_heap_mmap_threshold_kib",
                self.cpu_heap_mmap_threshold_kib, ">= 0 (0 = glibc's default)")


@dataclass
class TurnRLConfig:
    """The whole run (``conf/config.yaml`` + groups + command-line overrides)."""

    seed: int = 0
    """Seeds torch/numpy, the format warm-up, the sampling of every step and the mini-batch shuffles (>= 0)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    actor_rollout_ref: ActorRolloutRefConfig = field(default_factory=ActorRolloutRefConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    es_manager: ESManagerConfig = field(default_factory=ESManagerConfig)
    agent_proxy: AgentProxyConfig = field(default_factory=AgentProxyConfig)
    format_warmup: FormatWarmupConfig = field(default_factory=FormatWarmupConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    system: SystemConfig = field(default_factory=SystemConfig)

    def __post_init__(self) -> None:
        require(self.seed >= 0, "seed", self.seed, ">= 0")

    def agent_config(self, show_progress: bool = False) -> AgentConfig:
        """The rollout engine's view of this run: its ``env``, ``es_manager`` and ``agent_proxy`` nodes."""
        return AgentConfig(self.env, self.es_manager, self.agent_proxy, self.actor_rollout_ref.rollout.max_model_len,
                           show_progress)


def register_schema() -> None:
    """Store :class:`TurnRLConfig` as ``turnrl_schema`` (idempotent)."""
    ConfigStore.instance().store(name="turnrl_schema", node=TurnRLConfig)


def token_advantage_options(config: TurnRLConfig) -> dict[str, Any]:
    """``compute_token_advantages`` keywords from ``algorithm.*`` (gae)."""
    algorithm = config.algorithm
    return {"gamma": algorithm.gamma, "lam": algorithm.lam, "high_level_gamma": algorithm.high_level_gamma}


def advantage_options(config: TurnRLConfig) -> dict[str, Any]:
    """``compute_advantages`` keywords from ``algorithm.*`` (each estimator takes the ones it declares)."""
    algorithm = config.algorithm
    return {
        "estimator": algorithm.adv_estimator,
        "norm_adv_by_std_in_grpo": algorithm.norm_adv_by_std_in_grpo,
        "soft_advantage_reweight": algorithm.soft_advantage_reweight,
        "tau": algorithm.tau,
        "epsilon": algorithm.epsilon,
    }


def env_nodes(config: TurnRLConfig) -> list[tuple[str, EnvConfig]]:
    """``(key, env)`` of the run's ``env`` and of every ``es_manager.<split>.env_configs`` entry."""
    nodes = [("env", config.env)]
    for split in ("train", "val"):
        entries = getattr(config.es_manager, split).env_configs
        nodes += [(f"es_manager.{split}.env_configs[{i}].env", entry.env) for i, entry in enumerate(entries)]
    return nodes


def validate(cfg: DictConfig | TurnRLConfig) -> TurnRLConfig:
    """The typed, checked config; raises ``ValueError`` naming the bad key and the allowed values.

    Cheap: builds the dataclasses and the env once (which checks ``env.kwargs``), loads no model.
    """
    import envs  # local: keeps `algos.training.schema` importable without the env package's registrations

    config = cfg if isinstance(cfg, TurnRLConfig) else OmegaConf.to_object(cfg)
    if not isinstance(config, TurnRLConfig):
        raise ValueError(f"expected a TurnRL config (turnrl_schema), got {type(config).__name__}")
    for key, env in env_nodes(config):
        require(env.name in envs.ENV_IDS, key + ".name", env.name, str(sorted(envs.ENV_IDS)))
        try:
            envs.make(env.name, **env.kwargs).close()
        except (TypeError, ValueError) as error:  # TypeError: an unknown constructor keyword
            raise ValueError(f"{key}.kwargs for {env.name!r}: {error}") from None
    require(not config.agent_proxy.use_turn_scores or config.algorithm.token_estimator is not None,
            "agent_proxy.use_turn_scores", True, f"false with algorithm.adv_estimator="
            f"{config.algorithm.adv_estimator!r}, which takes one reward per episode (turn scores need gae)")
    if config.algorithm.token_estimator is not None:
        return config
    groups = config.es_manager.train
    try:  # a dry run on zero rewards checks the estimator and its options on the group shape
        compute_advantages(torch.zeros(groups.env_groups, groups.group_size), **advantage_options(config))
    except ValueError as error:
        raise ValueError(f"algorithm / es_manager.train: {error}") from None
    return config
