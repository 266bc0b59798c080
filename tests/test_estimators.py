"""Advantage estimators against hand-computed values, plus property tests on random reward batches."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algos import ESTIMATORS, compute_advantages, register_estimator

# Group 0: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = sqrt(1/3); group 1: constant (std 0).
REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
STD0 = math.sqrt(1 / 3)
EPS = 1e-6


def test_registry_holds_the_builtin_estimators():
    assert set(ESTIMATORS) >= {"grpo", "sr_grpo", "rloo", "reinforce_plus_plus", "reinforce_plus_plus_baseline"}


def test_grpo_normalises_by_group_std():
    adv, metrics = compute_advantages(REWARDS, "grpo", norm_adv_by_std_in_grpo=True, epsilon=EPS)
    a = 0.5 / (STD0 + EPS)  # 0.866...
    torch.testing.assert_close(adv, torch.tensor([[a, -a, -a, a], [0.0, 0.0, 0.0, 0.0]]))
    assert metrics["train/adv_mean"] == pytest.approx(0.0, abs=1e-7)
    # unbiased std of four +-a and four zeros: sqrt(4 a^2 / 7)
    assert metrics["train/adv_std"] == pytest.approx(math.sqrt(4 * a * a / 7), rel=1e-5)


def test_drgrpo_only_centres():
    adv, _ = compute_advantages(REWARDS, "grpo", norm_adv_by_std_in_grpo=False)
    torch.testing.assert_close(adv, torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]))


def test_drgrpo_soft_scales_groups_by_relative_std():
    # std: group 0 sqrt(1/3), group 1 (rewards 0, 0, 0, 1): mean 0.25, std sqrt((3*0.0625 + 0.5625)/3) = 0.5
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    adv, metrics = compute_advantages(
        rewards, "grpo", norm_adv_by_std_in_grpo=False, soft_advantage_reweight=True, epsilon=EPS
    )
    w0 = STD0 / (STD0 + EPS)
    w1 = 0.5 / (STD0 + EPS)  # 0.866
    expected = torch.tensor(
        [
            [0.5 * w0, -0.5 * w0, -0.5 * w0, 0.5 * w0],
            [-0.25 * w1, -0.25 * w1, -0.25 * w1, 0.75 * w1],
            [0.0] * 4,
        ]
    )
    torch.testing.assert_close(adv, expected)
    assert metrics["train/soft_reweight_min"] == 0.0
    assert metrics["train/soft_reweight_max"] == pytest.approx(w0)
    assert metrics["train/soft_reweight_mean"] == pytest.approx((w0 + w1) / 3)


def test_sr_grpo_broadcasts_the_softmax_weighted_reward():
    adv, metrics = compute_advantages(REWARDS, "sr_grpo", tau=0.5, epsilon=EPS)
    # z = +-0.5 / sqrt(1/3) = +-0.866; z / tau = +-1.732; weight of each reward-1 sample:
    w_high = 1 / (2 * (1 + math.exp(-2 * 0.5 / (STD0 + EPS) / 0.5)))
    a0 = 2 * w_high * 1.0  # 0.9696...
    expected = torch.tensor([[a0] * 4, [0.5] * 4])  # constant group: uniform weights -> its mean
    torch.testing.assert_close(adv, expected)
    assert metrics["soft_advantage_mean"] == pytest.approx((a0 + 0.5) / 2)
    assert metrics["soft_advantage_std"] == pytest.approx(abs(a0 - 0.5) / math.sqrt(2), rel=1e-5)


def test_sr_grpo_small_tau_approaches_the_best_reward():
    adv, _ = compute_advantages(torch.tensor([[0.0, 1.0, 3.0]]), "sr_grpo", tau=1e-3)
    torch.testing.assert_close(adv, torch.full((1, 3), 3.0))


def test_sr_grpo_huge_rewards_stay_finite():
    adv, _ = compute_advantages(torch.tensor([[1e30, -1e30, 0.0]]), "sr_grpo", tau=1e-4)
    assert torch.isfinite(adv).all()


def test_rloo_uses_leave_one_out_mean():
    adv, _ = compute_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 0.0, 0.0, 0.0]]), "rloo")
    # e.g. r=1: others (0, 0, 1) -> 1 - 1/3; r=3: others all 0 -> 3; r=0 in group 1: others (3, 0, 0) -> -1
    expected = torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3], [3.0, -1.0, -1.0, -1.0]])
    torch.testing.assert_close(adv, expected)


def test_reinforce_plus_plus_baseline_whitens_over_the_batch():
    adv, metrics = compute_advantages(REWARDS, "reinforce_plus_plus_baseline", epsilon=EPS)
    # baselined: (0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0): batch mean 0, unbiased std sqrt(1/7)
    a = 0.5 / (math.sqrt(1 / 7) + EPS)
    torch.testing.assert_close(adv, torch.tensor([[a, -a, -a, a], [0.0] * 4]))
    assert metrics["train/adv_std"] == pytest.approx(1.0, abs=1e-4)


# Group 0 (1, 0) has mean 0.5; group 1 (3, 3) is constant. Batch mean 1.75, unbiased batch std 1.5.
TWO_GROUPS = torch.tensor([[1.0, 0.0], [3.0, 3.0]])


def test_reinforce_plus_plus_whitens_rewards_without_group_baseline():
    adv, _ = compute_advantages(TWO_GROUPS, "reinforce_plus_plus", epsilon=EPS)
    # deviations from 1.75: -0.75, -1.75, 1.25, 1.25; squares sum 6.75, / 3 = 2.25 -> std 1.5
    expected = torch.tensor([[-0.75, -1.75], [1.25, 1.25]]) / (1.5 + EPS)
    torch.testing.assert_close(adv, expected)


def test_reinforce_plus_plus_variants_differ_on_the_same_batch():
    # with the group baseline: (0.5, -0.5, 0, 0), mean 0, std sqrt(0.5 / 3) -> +-sqrt(1.5) and exact zeros
    adv, _ = compute_advantages(TWO_GROUPS, "reinforce_plus_plus_baseline", epsilon=EPS)
    a = 0.5 / (math.sqrt(0.5 / 3) + EPS)
    torch.testing.assert_close(adv, torch.tensor([[a, -a], [0.0, 0.0]]))
    assert a == pytest.approx(math.sqrt(1.5), rel=1e-5)


def test_reinforce_plus_plus_of_a_constant_batch_is_zero():
    adv, _ = compute_advantages(torch.tensor([[-0.1] * 3, [-0.1] * 3]), "reinforce_plus_plus")
    assert (adv == 0).all()


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
@pytest.mark.parametrize("rewards", [[[0.3] * 16], [[0.3] * 7, [-0.1] * 7], [[1.0, 2.0]]])
def test_single_group_and_all_equal_batches_stay_finite(estimator, rewards):
    adv, metrics = compute_advantages(torch.tensor(rewards), estimator)
    assert torch.isfinite(adv).all()
    assert all(math.isfinite(value) for value in metrics.values())


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "reinforce_plus_plus_baseline"])
def test_constant_groups_get_exactly_zero_advantage(estimator):
    adv, _ = compute_advantages(torch.tensor([[0.3] * 16, [0.0] * 8 + [1.0] * 8]), estimator)
    assert (adv[0] == 0).all()


# Groups of one: verl's mean 0 / std 1 baseline, so the group-relative estimators return the rewards.
SINGLES = torch.tensor([[1.0], [0.0], [3.0]])
SINGLES_WHITENED = (SINGLES - 4 / 3) / (math.sqrt(7 / 3) + EPS)  # batch mean 4/3, unbiased std sqrt(7/3)


@pytest.mark.parametrize(
    ("estimator", "options", "expected"),
    [
        ("grpo", {}, SINGLES / (1 + EPS)),
        ("grpo", {"norm_adv_by_std_in_grpo": False}, SINGLES),
        ("grpo", {"norm_adv_by_std_in_grpo": False, "soft_advantage_reweight": True}, SINGLES / (1 + EPS)),
        ("sr_grpo", {}, SINGLES),
        ("rloo", {}, SINGLES),
        ("reinforce_plus_plus_baseline", {}, SINGLES_WHITENED),
    ],
)
def test_group_size_one_follows_verl_with_a_warning(estimator, options, expected):
    with pytest.warns(UserWarning, match="group_size=1: no in-group baseline"):
        adv, _ = compute_advantages(SINGLES, estimator, epsilon=EPS, **options)
    torch.testing.assert_close(adv, expected)


def test_estimators_without_groups_or_with_two_per_group_do_not_warn(recwarn):
    adv, _ = compute_advantages(SINGLES, "reinforce_plus_plus", epsilon=EPS)  # no group baseline to miss
    torch.testing.assert_close(adv, SINGLES_WHITENED)
    compute_advantages(TWO_GROUPS, "grpo")
    assert not [w for w in recwarn if "group_size=1" in str(w.message)]


@pytest.mark.parametrize(
    ("rewards", "estimator", "options", "message"),
    [
        (REWARDS, "ppo", {}, r"unknown advantage estimator 'ppo'; allowed: \['grpo'"),
        (REWARDS, "grpo", {"tua": 0.5}, r"unknown advantage option\(s\) \['tua'\]; allowed: .*'tau'"),
        (REWARDS, "sr_grpo", {"tau": 0.0}, "tau must be > 0"),
        (torch.tensor([1.0, 0.0]), "grpo", {}, r"shape \[num_groups, group_size\]"),
        (torch.zeros(0, 4), "grpo", {}, r"shape \[num_groups, group_size\]"),
        (torch.tensor([[1.0, float("nan")]]), "grpo", {}, "finite"),
    ],
)
def test_bad_input_is_a_clear_value_error(rewards, estimator, options, message):
    with pytest.raises(ValueError, match=message):
        compute_advantages(rewards, estimator, **options)


def test_each_estimator_receives_only_its_options():
    all_options = {
        "norm_adv_by_std_in_grpo": True,
        "soft_advantage_reweight": False,
        "tau": 0.5,
        "epsilon": EPS,
    }
    for name in ESTIMATORS:
        adv, _ = compute_advantages(REWARDS, name, **all_options)
        assert adv.shape == REWARDS.shape


def test_integer_rewards_are_accepted():
    adv, _ = compute_advantages(torch.tensor([[1, 0]]), "grpo", norm_adv_by_std_in_grpo=False)
    torch.testing.assert_close(adv, torch.tensor([[0.5, -0.5]]))


def test_register_estimator_adds_a_name_and_rejects_duplicates():
    @register_estimator("test_constant_one")
    def constant_one(rewards, *, scale: float = 1.0):
        return torch.full_like(rewards, scale), {}

    try:
        adv, _ = compute_advantages(REWARDS, "test_constant_one", scale=2.0, tau=0.5)
        torch.testing.assert_close(adv, torch.full_like(REWARDS, 2.0))
        with pytest.raises(ValueError, match="already registered"):
            register_estimator("test_constant_one")(constant_one)
    finally:
        del ESTIMATORS["test_constant_one"]


# Rewards from a small set, so ties and zero-variance groups are common.
reward_batches = st.integers(1, 6).flatmap(
    lambda groups: st.integers(2, 8).flatmap(
        lambda size: st.lists(
            st.lists(st.sampled_from([-1.0, -0.1, 0.0, 0.3, 1.0, 2.5]), min_size=size, max_size=size),
            min_size=groups,
            max_size=groups,
        )
    )
)


@settings(max_examples=60, deadline=None)
@given(reward_batches, st.sampled_from(sorted(ESTIMATORS)))
def test_property_shape_kept_and_finite(rewards, estimator):
    rewards = torch.tensor(rewards)
    adv, metrics = compute_advantages(rewards, estimator)
    assert adv.shape == rewards.shape
    assert torch.isfinite(adv).all()
    assert all(math.isfinite(value) for value in metrics.values())


@settings(max_examples=60, deadline=None)
@given(reward_batches, st.booleans(), st.booleans())
def test_property_grpo_advantages_sum_to_zero_per_group(rewards, norm, soft):
    adv, metrics = compute_advantages(
        torch.tensor(rewards), "grpo", norm_adv_by_std_in_grpo=norm, soft_advantage_reweight=soft
    )
    torch.testing.assert_close(adv.sum(dim=1), torch.zeros(len(rewards)), atol=1e-4, rtol=0)
    if soft:
        assert 0.0 <= metrics["train/soft_reweight_min"] <= metrics["train/soft_reweight_max"] <= 1.0
        any_variance = any(len(set(group)) > 1 for group in rewards)
        assert metrics["train/soft_reweight_max"] == pytest.approx(1.0 if any_variance else 0.0, abs=1e-4)


@settings(max_examples=60, deadline=None)
@given(reward_batches, st.floats(0.05, 5.0))
def test_property_sr_grpo_is_a_convex_combination_constant_in_group(rewards, tau):
    rewards = torch.tensor(rewards)
    adv, _ = compute_advantages(rewards, "sr_grpo", tau=tau)
    # z is shift-invariant, so A_soft(r + c) - A_soft(r) = c * sum(w): the weights sum to 1
    shifted, _ = compute_advantages(rewards + 3.0, "sr_grpo", tau=tau)
    torch.testing.assert_close(shifted - adv, torch.full_like(adv, 3.0))
    # positive weights summing to 1: A_soft lies between the group's min and max reward
    assert (adv >= rewards.min(dim=1, keepdim=True).values - 1e-5).all()
    assert (adv <= rewards.max(dim=1, keepdim=True).values + 1e-5).all()
    assert (adv == adv[:, :1]).all()
    # a group with rewards c, c, ... (weights 1/K each) gets exactly c
    constant = rewards.amax(dim=1) == rewards.amin(dim=1)
    torch.testing.assert_close(adv[constant, 0], rewards[constant, 0])
