"""Config dataclasses as Hydra structured configs, and the conf/algo group files merged onto them."""

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from algos import ActorConfig, AlgorithmConfig, EarlyStopConfig, RolloutFilterConfig

ALGO_DIR = Path(__file__).resolve().parents[1] / "conf" / "algo"


def schema():
    return OmegaConf.create(
        {
            "algorithm": OmegaConf.structured(AlgorithmConfig),
            "actor_rollout_ref": {
                "actor": OmegaConf.structured(ActorConfig),
                "rollout": OmegaConf.structured(RolloutFilterConfig),
            },
        }
    )


def load_algo(name: str):
    """Merge conf/algo/<name>.yaml (a _global_ package) onto the schema and build the dataclasses."""
    merged = OmegaConf.merge(schema(), OmegaConf.load(ALGO_DIR / f"{name}.yaml"))
    return (
        OmegaConf.to_object(merged.algorithm),
        OmegaConf.to_object(merged.actor_rollout_ref.actor),
        OmegaConf.to_object(merged.actor_rollout_ref.rollout),
    )


def test_defaults():
    algorithm, actor, rollout = AlgorithmConfig(), ActorConfig(), RolloutFilterConfig()
    assert (algorithm.adv_estimator, algorithm.norm_adv_by_std_in_grpo, algorithm.tau) == ("grpo", True, 0.5)
    assert (actor.loss_agg_mode, actor.use_kl_loss, actor.kl_loss_type) == ("token-mean", False, "low_var_kl")
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_c, actor.ppo_epochs) == (
        0.2,
        0.2,
        3.0,
        1,
    )
    assert (rollout.rollout_filter_strategy, rollout.rollout_filter_value) == ("top_k", 8.0)
    assert (rollout.rollout_filter_metric, rollout.rollout_filter_top_p_prob_mode) == ("reward_std", "linear")
    assert rollout.rollout_filter_max_rerolls == 0
    early_stop = EarlyStopConfig()
    assert (early_stop.early_stop_on_zero_variance, early_stop.early_stop_baseline_steps) == (False, 10)
    assert (early_stop.early_stop_window, early_stop.early_stop_ratio) == (10, 0.1)


def test_ragen_filter_names_are_accepted():
    rollout = RolloutFilterConfig(rollout_filter_strategy="top_k_frac", rollout_filter_value=0.5,
                                  rollout_filter_metric="reward_variance", rollout_filter_top_p_prob_mode="softmax")
    assert rollout.rollout_filter_strategy == "top_k_frac"
    RolloutFilterConfig(rollout_filter_strategy="top_k_abs", rollout_filter_value=4)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("early_stop_baseline_steps", 0, "trainer.early_stop_baseline_steps=0 is invalid; allowed: >= 1"),
        ("early_stop_window", 0, "trainer.early_stop_window=0 is invalid; allowed: >= 1"),
        ("early_stop_ratio", 1.5, r"trainer.early_stop_ratio=1.5 is invalid; allowed: \(0, 1\]"),
    ],
)
def test_early_stop_config_names_bad_values(key, value, message):
    with pytest.raises(ValueError, match=message):
        EarlyStopConfig(**{key: value})


@pytest.mark.parametrize(
    ("name", "estimator", "norm", "soft", "agg", "use_kl"),
    [
        ("grpo", "grpo", True, False, "seq-mean-token-mean", False),
        ("drgrpo", "grpo", False, False, "seq-mean-token-sum", False),
        ("drgrpo_soft", "grpo", False, True, "seq-mean-token-sum", False),
        ("sr_grpo", "sr_grpo", True, False, "seq-mean-token-mean", True),
        ("rloo", "rloo", True, False, "token-mean", False),
        ("reinforce_plus_plus", "reinforce_plus_plus", True, False, "token-mean", False),
        ("reinforce_plus_plus_baseline", "reinforce_plus_plus_baseline", True, False, "token-mean", False),
    ],
)
def test_algo_yaml_sets_the_seed_table(name, estimator, norm, soft, agg, use_kl):
    algorithm, actor, rollout = load_algo(name)
    assert isinstance(algorithm, AlgorithmConfig) and isinstance(actor, ActorConfig)
    assert algorithm.adv_estimator == estimator
    assert algorithm.norm_adv_by_std_in_grpo is norm
    assert algorithm.soft_advantage_reweight is soft
    assert actor.loss_agg_mode == agg
    assert actor.use_kl_loss is use_kl
    assert (rollout.rollout_filter_strategy, rollout.rollout_filter_value) == ("top_k", 8.0)


def test_sr_grpo_yaml_sets_tau_and_kl_beta():
    algorithm, actor, _ = load_algo("sr_grpo")
    assert algorithm.tau == 0.5
    assert (actor.kl_loss_coef, actor.kl_loss_type) == (0.1, "low_var_kl")


@pytest.mark.parametrize(("name", "strategy", "value", "clip_high", "entropy"),
                         [("ppo", "top_k", 8.0, 0.2, 0.0), ("starpo_s", "ratio", 0.25, 0.28, 0.001)])
def test_critic_yamls_set_ragens_ppo_and_starpo_s(name, strategy, value, clip_high, entropy):
    algorithm, actor, rollout = load_algo(name)
    assert (algorithm.adv_estimator, algorithm.gamma, algorithm.lam) == ("gae", 1.0, 1.0)
    assert (actor.loss_agg_mode, actor.use_kl_loss, actor.clip_ratio_high, actor.entropy_coeff) == (
        "token-mean", False, clip_high, entropy)
    assert (rollout.rollout_filter_strategy, rollout.rollout_filter_value) == (strategy, value)


def test_every_algo_yaml_is_tested():
    assert {path.stem for path in ALGO_DIR.glob("*.yaml")} == {
        "grpo",
        "drgrpo",
        "drgrpo_soft",
        "sr_grpo",
        "rloo",
        "reinforce_plus_plus",
        "reinforce_plus_plus_baseline",
        "ppo",
        "starpo_s",
    }


def test_hydra_composes_algo_group_at_global_package(tmp_path):
    shutil.copytree(ALGO_DIR, tmp_path / "algo")
    (tmp_path / "config.yaml").write_text(
        "defaults:\n  - turnrl_test_algo_schema\n  - algo: grpo\n  - _self_\n"
    )
    ConfigStore.instance().store(name="turnrl_test_algo_schema", node=schema())
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        cfg = compose(
            "config", overrides=["algo=drgrpo_soft", "actor_rollout_ref.rollout.rollout_filter_value=4"]
        )
    assert cfg.algorithm.soft_advantage_reweight is True
    assert cfg.actor_rollout_ref.actor.loss_agg_mode == "seq-mean-token-sum"
    assert cfg.actor_rollout_ref.rollout.rollout_filter_value == 4.0
    assert "algo" not in cfg


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("algorithm.adv_estimator", "ppo", r"algorithm.adv_estimator='ppo' is invalid; allowed: \['grpo'"),
        ("algorithm.tau", 0.0, "algorithm.tau=0.0 is invalid; allowed: > 0"),
        ("algorithm.epsilon", -1.0, "algorithm.epsilon=-1.0 is invalid"),
        (
            "actor_rollout_ref.actor.loss_agg_mode",
            "sum",
            r"loss_agg_mode='sum' is invalid; allowed: \['token-mean'",
        ),
        ("actor_rollout_ref.actor.kl_loss_type", "full", r"kl_loss_type='full' is invalid; allowed: \['kl'"),
        ("actor_rollout_ref.actor.clip_ratio_c", 1.0, r"clip_ratio_c=1.0 is invalid; allowed: > 1"),
        ("actor_rollout_ref.actor.clip_ratio_low", 1.0, r"clip_ratio_low=1.0 is invalid; allowed: \[0, 1\)"),
        ("actor_rollout_ref.actor.ppo_epochs", 0, "ppo_epochs=0 is invalid; allowed: >= 1"),
        ("actor_rollout_ref.actor.ppo_mini_batch_size", 0, "ppo_mini_batch_size=0 is invalid"),
        ("actor_rollout_ref.actor.lr", 0.0, "lr=0.0 is invalid; allowed: > 0"),
        ("actor_rollout_ref.actor.grad_clip", 0.0, "grad_clip=0.0 is invalid"),
        (
            "actor_rollout_ref.rollout.rollout_filter_strategy",
            "best",
            r"rollout_filter_strategy 'best'; allowed",
        ),
        ("actor_rollout_ref.rollout.rollout_filter_type", "most", r"rollout_filter_type 'most'; allowed"),
        ("actor_rollout_ref.rollout.rollout_filter_value", 2.5, "'top_k' must be an integer >= 1, got 2.5"),
        ("actor_rollout_ref.rollout.rollout_filter_metric", "bogus", r"rollout_filter_metric 'bogus'; allowed"),
        (
            "actor_rollout_ref.rollout.rollout_filter_top_p_prob_mode",
            "exp",
            r"rollout_filter_top_p_prob_mode 'exp'; allowed: \['linear', 'softmax'\]",
        ),
        (
            "actor_rollout_ref.rollout.rollout_filter_max_rerolls",
            -1,
            "rollout_filter_max_rerolls=-1 is invalid; allowed: >= 0",
        ),
    ],
)
def test_invalid_values_name_the_key_and_allowed_values(path, value, message):
    cfg = schema()
    OmegaConf.update(cfg, path, value)
    with pytest.raises(ValueError, match=message):
        OmegaConf.to_object(cfg)


def test_soft_reweight_needs_an_estimator_that_supports_it():
    with pytest.raises(
        ValueError, match=r"soft_advantage_reweight=True is invalid; allowed: false with adv_estimator='rloo'"
    ):
        AlgorithmConfig(adv_estimator="rloo", soft_advantage_reweight=True)


def test_schema_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(schema(), {"algorithm": {"tua": 0.5}})
    with pytest.raises(ValidationError):
        OmegaConf.merge(schema(), {"actor_rollout_ref": {"actor": {"ppo_epochs": "many"}}})
