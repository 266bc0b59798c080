"""Bad command lines, each refused before any model loads with its key named: ``python scripts/fuzz_config.py``.

Every case runs what ``scripts/train.py`` runs before ``hydra.main`` (RAGEN rewriting, then
``check_command_line``: key names, composition, the schema, the pre-load checks) on a tiny Bandit run
plus the case's overrides, and must raise ``ValueError`` whose message contains the expected text.
Prints one line per case and exits 1 when a case passes or names the wrong thing.
"""

from __future__ import annotations

import sys

from algos.training.preflight import check_command_line
from algos.training.ragen_keys import ragen_arguments

BASE = ["env=bandit", "logger=console", "actor_rollout_ref.model.path=tiny-random", "format_warmup.steps=0",
        "es_manager.train.env_groups=2", "es_manager.train.group_size=2"]
ARR, ACTOR, ROLLOUT = "actor_rollout_ref.", "actor_rollout_ref.actor.", "actor_rollout_ref.rollout."
CASES: list[tuple[str, str]] = [  # (override line, text the error must contain)
    ("+trainer.totl_training_steps=5", "did you mean trainer.total_training_steps"),
    ("++algorithm.tua=0.3", "did you mean algorithm.tau"),
    ("trainer.totl_training_steps=5", "did you mean trainer.total_training_steps"),
    ("+actor_rollout_ref.actor.learning_rate=1e-5", "'actor_rollout_ref.actor.learning_rate'"),
    ("++es_manager.train.group_sise=4", "did you mean es_manager.train.group_size"),
    ("+seeds=3", "unknown key 'seeds'"),
    ("~trainer.save_freqq", "did you mean trainer.save_freq"),
    ("seed=-1", "seed=-1 is invalid"),
    ("es_manager.train_seed_start=-5", "es_manager.train_seed_start=-5"),
    ("es_manager.val_seed_start=-1", "es_manager.val_seed_start=-1"),
    ("es_manager.format_penalty=nan", "es_manager.format_penalty=nan"),
    ("es_manager.format_penalty=inf", "es_manager.format_penalty=inf"),
    ("es_manager.format_penalty=0.5", "es_manager.format_penalty=0.5"),
    ("es_manager.train.env_groups=0", "es_manager.train.env_groups=0"),
    ("es_manager.train.group_size=0", "es_manager.train.group_size=0"),
    ("es_manager.val.env_groups=-2", "es_manager.val.env_groups=-2"),
    (ARR + "model.dtype=float99", "actor_rollout_ref.model.dtype='float99'"),
    (ARR + "model.path=/no/such/dir", "actor_rollout_ref.model.path='/no/such/dir' is invalid: no such folder"),
    (ARR + "model.path=./no/such/dir", "actor_rollout_ref.model.path='./no/such/dir'"),
    (ARR + "model.path=/etc", "actor_rollout_ref.model.path='/etc' is invalid: /etc has no config.json"),
    ("trainer.default_local_dir=/proc/turnrl/ckpt", "trainer.default_local_dir='/proc/turnrl/ckpt'"),
    ("trainer.default_local_dir=/etc/hostname/ckpt", "/etc/hostname is not a folder"),
    (ROLLOUT + "max_model_len=10", "actor_rollout_ref.rollout.max_model_len=10"),
    (ROLLOUT + "max_model_len=100", "every episode ends before its first reply"),
    (ROLLOUT + "response_length=0", "actor_rollout_ref.rollout.response_length=0"),
    (ROLLOUT + "temperature=0", "actor_rollout_ref.rollout.temperature=0"),
    (ROLLOUT + "top_p=1.5", "actor_rollout_ref.rollout.top_p=1.5"),
    (ROLLOUT + "name=sglang", "actor_rollout_ref.rollout.name='sglang'"),
    (ROLLOUT + "val_kwargs.temperature=-1", "actor_rollout_ref.rollout.val_kwargs.temperature=-1"),
    (ROLLOUT + "rollout_filter_strategy=top_q", "top_q"),
    (ROLLOUT + "rollout_filter_metric=entropy", "rollout_filter_metric='entropy'"),
    (ROLLOUT + "rollout_filter_max_rerolls=-1", "rollout_filter_max_rerolls=-1"),
    (ACTOR + "lr=0", "actor_rollout_ref.actor.lr=0"),
    (ACTOR + "lr=-1e-5", "actor_rollout_ref.actor.lr=-1e-05"),
    (ACTOR + "zero_stage=7", "actor_rollout_ref.actor.zero_stage=7"),
    (ACTOR + "bf16=maybe", "actor_rollout_ref.actor.bf16='maybe'"),
    (ACTOR + "clip_ratio_low=1.5", "actor_rollout_ref.actor.clip_ratio_low=1.5"),
    (ACTOR + "clip_ratio_c=0.5", "actor_rollout_ref.actor.clip_ratio_c=0.5"),
    (ACTOR + "ppo_epochs=0", "actor_rollout_ref.actor.ppo_epochs=0"),
    (ACTOR + "ppo_mini_batch_size=0", "actor_rollout_ref.actor.ppo_mini_batch_size=0"),
    (ACTOR + "ppo_micro_batch_size_per_gpu=0", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=0"),
    (ACTOR + "loss_agg_mode=mean", "actor_rollout_ref.actor.loss_agg_mode='mean'"),
    (ACTOR + "kl_loss_type=k9", "actor_rollout_ref.actor.kl_loss_type='k9'"),
    (ACTOR + "policy_loss=dpo", "actor_rollout_ref.actor.policy_loss='dpo'"),
    (ACTOR + "grad_clip=0", "actor_rollout_ref.actor.grad_clip=0"),
    (ACTOR + "entropy_coeff=-0.1", "actor_rollout_ref.actor.entropy_coeff=-0.1"),
    ("algorithm.adv_estimator=vtrace", "algorithm.adv_estimator='vtrace'"),
    ("algorithm.gamma=1.5", "algorithm.gamma=1.5"),
    (["algorithm.adv_estimator=grpo", "agent_proxy.use_turn_scores=true"][1], "use_turn_scores"),
    ("algorithm.tau=0", "algorithm.tau=0"),
    ("algorithm.epsilon=-1", "algorithm.epsilon=-1"),
    ("trainer.total_training_steps=0", "trainer.total_training_steps=0"),
    ("trainer.resume=always", "trainer.resume='always'"),
    ("trainer.max_ckpt_to_keep=0", "trainer.max_ckpt_to_keep=0"),
    ("trainer.max_nonfinite_steps=0", "trainer.max_nonfinite_steps=0"),
    ("agent_proxy.max_turn=0", "agent_proxy.max_turn=0"),
    ("agent_proxy.max_actions_per_turn=0", "agent_proxy.max_actions_per_turn=0"),
    ("format_warmup.steps=-1", "format_warmup.steps=-1"),
    ("logger.wandb.mode=loud", "logger.wandb.mode='loud'"),
    ("system.cpu_heap_mmap_threshold_kib=-1", "system.cpu_heap_mmap_threshold_kib=-1"),
    ("env.name=chess", "env.name='chess'"),
    ("+env.kwargs.no_such_option=3", "no_such_option"),
    ("actor_rollout_ref.rollout.top_k=50", "RAGEN's `actor_rollout_ref.rollout.top_k`: 50 is not supported"),
    ("critic.lr=0", "critic.lr=0"),
    ("trainer.n_gpus_per_node=8", "is TurnRL's `torchrun --nproc_per_node 8"),
    ("critic.optim.betas=[0.9,0.95]", "critic.optim.betas"),
]


def failure(line: str, expected: str) -> str | None:
    """None when ``line`` is refused naming ``expected``, else what happened instead."""
    try:
        check_command_line(ragen_arguments([*BASE, line]))
    except ValueError as error:
        return None if expected in str(error) else f"wrong message: {error}"
    return "accepted"


def main() -> int:
    failures = [(line, problem) for line, expected in CASES if (problem := failure(line, expected))]
    for line, problem in failures:
        print(f"FAIL {line}: {problem}")
    loaded = "deepspeed" in sys.modules  # the model stack: nothing of it may load before a config passes
    print(f"{len(CASES) - len(failures)} of {len(CASES)} bad override lines refused with the key named"
          f"{'; DeepSpeed was imported' if loaded else ''}")
    return 1 if failures or loaded else 0


if __name__ == "__main__":
    sys.exit(main())
