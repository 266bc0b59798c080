"""Rollout filtering against hand-computed group selections, plus top_k property tests."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algos import filter_groups

# In-group unbiased stds: g0 sqrt(1/3)=0.577, g1 0, g2 0.5, g3 sqrt(1/3), g4 sqrt(4/3)=1.155.
REWARDS = torch.tensor(
    [
        [1.0, 0.0, 0.0, 1.0],
        [0.5, 0.5, 0.5, 0.5],
        [0.0, 0.0, 0.0, 1.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, 0.0, 2.0, 2.0],
    ]
)
STDS = [math.sqrt(1 / 3), 0.0, 0.5, math.sqrt(1 / 3), math.sqrt(4 / 3)]


def kept_list(*args, **kwargs):
    kept, _ = filter_groups(*args, **kwargs)
    assert kept.dtype == torch.long
    return kept.tolist()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, [4]), (2, [0, 4]), (3, [0, 3, 4]), (4, [0, 2, 3, 4]), (5, [0, 1, 2, 3, 4]), (8, [0, 1, 2, 3, 4])],
)
def test_top_k_keeps_highest_std_and_ties_keep_lower_index(value, expected):
    # value 2: g0 and g3 tie at sqrt(1/3) -> the lower index g0 is kept
    assert kept_list(REWARDS, "top_k", value=value) == expected


def test_top_k_smallest_keeps_least_varied():
    assert kept_list(REWARDS, "top_k", value=2, filter_type="smallest") == [1, 2]


def test_top_k_metrics():
    _, metrics = filter_groups(REWARDS, "top_k", value=2)
    assert metrics["rollout/filter_kept_ratio"] == pytest.approx(2 / 5)
    assert metrics["rollout/in_group_std"] == pytest.approx(sum(STDS) / 5)
    assert metrics["rollout/chosen_in_group_std"] == pytest.approx((STDS[0] + STDS[4]) / 2)


@pytest.mark.parametrize(
    ("value", "expected"), [(0.2, [4]), (0.5, [0, 4]), (0.6, [0, 3, 4]), (0.1, [4]), (1.0, [0, 1, 2, 3, 4])]
)
def test_ratio_keeps_floor_of_fraction_at_least_one(value, expected):
    # 0.5 * 5 = 2.5 -> 2 groups; 0.1 * 5 = 0.5 -> 0, raised to the minimum of one group
    assert kept_list(REWARDS, "ratio", value=value) == expected


def test_ratio_is_robust_to_float_products():
    rewards = torch.arange(200.0).reshape(100, 2)  # 0.29 * 100 = 28.999999999999996 in floating point
    assert len(kept_list(rewards, "ratio", value=0.29)) == 29


def test_top_p_keeps_prefix_reaching_share_of_total():
    # sorted: 1.155, 0.577, 0.577, 0.5, 0 (total 2.809); cumulative shares 0.411, 0.616, 0.822, 1.0, 1.0
    assert kept_list(REWARDS, "top_p", value=0.4) == [4]
    assert kept_list(REWARDS, "top_p", value=0.5) == [0, 4]
    assert kept_list(REWARDS, "top_p", value=0.8) == [0, 3, 4]
    assert kept_list(REWARDS, "top_p", value=0.9) == [0, 2, 3, 4]
    # the zero-std group adds nothing to the cumulative score, so even value 1 leaves it out
    assert kept_list(REWARDS, "top_p", value=1.0) == [0, 2, 3, 4]


def test_min_p_keeps_groups_above_share_of_best():
    # best 1.155: threshold 0.5 -> 0.577 keeps g0, g3 (0.577 >= 0.577); 0.45 -> 0.52 ; 0.4 -> 0.462 adds g2
    assert kept_list(REWARDS, "min_p", value=0.5) == [0, 3, 4]
    assert kept_list(REWARDS, "min_p", value=0.4) == [0, 2, 3, 4]
    assert kept_list(REWARDS, "min_p", value=0.0) == [0, 1, 2, 3, 4]
    assert kept_list(REWARDS, "min_p", value=1.0) == [4]


def test_smallest_with_min_p_uses_reflected_score():
    # reflected scores max - s: g1 1.155, g2 0.655, g0/g3 0.577, g4 0 -> threshold 0.5 * 1.155 = 0.577
    assert kept_list(REWARDS, "min_p", value=0.5, filter_type="smallest") == [0, 1, 2, 3]


def test_include_zero_false_drops_zero_std_groups_first():
    assert kept_list(REWARDS, "top_k", value=5, include_zero=False) == [0, 2, 3, 4]
    assert kept_list(REWARDS, "top_k", value=1, filter_type="smallest", include_zero=False) == [2]


def test_include_zero_false_on_constant_float_rewards():
    # -0.1 repeated 16 times has float32 std ~1e-8 when computed naively: it still counts as zero
    rewards = torch.tensor([[-0.1] * 16, [0.0] * 15 + [1.0]])
    assert kept_list(rewards, "top_k", value=2, include_zero=False) == [1]


def test_all_zero_std_still_keeps_a_group():
    rewards = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.3, 0.3]])
    assert kept_list(rewards, "top_k", value=2, include_zero=False) == [0, 1]
    assert kept_list(rewards, "top_p", value=0.5) == [0]
    _, metrics = filter_groups(rewards, "top_p", value=0.5)
    assert metrics["rollout/chosen_in_group_std"] == 0.0


def test_custom_scores_rank_groups():
    assert kept_list(REWARDS, "top_k", value=2, scores=torch.tensor([0.0, 5.0, 1.0, 4.0, 2.0])) == [1, 3]


def test_group_size_one_keeps_all_with_zero_std():
    kept, metrics = filter_groups(torch.tensor([[1.0], [0.0]]), "top_k", value=8)
    assert kept.tolist() == [0, 1]
    assert metrics["rollout/in_group_std"] == 0.0


@pytest.mark.parametrize(
    ("strategy", "value", "filter_type", "message"),
    [
        (
            "top_n",
            4,
            "largest",
            r"rollout_filter_strategy 'top_n'; allowed: \['top_k', 'ratio', 'top_p', 'min_p'\]",
        ),
        ("top_k", 4, "biggest", r"rollout_filter_type 'biggest'; allowed: \['largest', 'smallest'\]"),
        ("top_k", 0, "largest", "'top_k' must be an integer >= 1, got 0"),
        ("top_k", 2.5, "largest", "'top_k' must be an integer >= 1, got 2.5"),
        ("ratio", 0.0, "largest", r"'ratio' must be in \(0, 1\]"),
        ("ratio", 1.5, "largest", r"'ratio' must be in \(0, 1\]"),
        ("top_p", 0.0, "largest", r"'top_p' must be in \(0, 1\]"),
        ("min_p", -0.1, "largest", r"'min_p' must be in \[0, 1\]"),
        ("top_k", "4", "largest", "must be a finite number, got '4'"),
        ("top_k", float("nan"), "largest", "must be a finite number"),
    ],
)
def test_invalid_options_are_named(strategy, value, filter_type, message):
    with pytest.raises(ValueError, match=message):
        filter_groups(REWARDS, strategy, value=value, filter_type=filter_type)


def test_invalid_scores_and_rewards():
    with pytest.raises(ValueError, match=r"scores must be finite with shape \(5,\)"):
        filter_groups(REWARDS, value=2, scores=torch.ones(3))
    with pytest.raises(ValueError, match="scores must be >= 0"):
        filter_groups(REWARDS, "top_p", value=0.5, scores=-torch.ones(5))
    with pytest.raises(ValueError, match="finite"):
        filter_groups(torch.tensor([[float("inf"), 0.0]]), value=1)


groups_and_k = st.tuples(
    st.lists(
        st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=3, max_size=3), min_size=1, max_size=10
    ),
    st.integers(1, 12),
)


@settings(max_examples=80, deadline=None)
@given(groups_and_k)
def test_property_top_k_keeps_min_k_g_groups_of_highest_std(case):
    rewards, k = case
    rewards = torch.tensor(rewards)
    kept, metrics = filter_groups(rewards, "top_k", value=k)
    num_groups = rewards.shape[0]
    assert kept.numel() == min(k, num_groups)
    assert kept.tolist() == sorted(set(kept.tolist()))
    stds = rewards.std(dim=1)
    dropped = [g for g in range(num_groups) if g not in kept.tolist()]
    if dropped:
        assert stds[kept].min() >= stds[dropped].max() - 1e-6
    assert metrics["rollout/filter_kept_ratio"] == pytest.approx(kept.numel() / num_groups)
    assert metrics["rollout/chosen_in_group_std"] >= metrics["rollout/in_group_std"] - 1e-6


@settings(max_examples=60, deadline=None)
@given(groups_and_k, st.sampled_from(["ratio", "top_p", "min_p"]), st.floats(0.01, 1.0), st.booleans())
def test_property_every_strategy_keeps_a_nonempty_valid_subset(case, strategy, value, include_zero):
    rewards = torch.tensor(case[0])
    kept, _ = filter_groups(rewards, strategy, value=value, include_zero=include_zero)
    assert 1 <= kept.numel() <= rewards.shape[0]
    assert kept.tolist() == sorted(set(kept.tolist()))
    assert kept.min() >= 0 and kept.max() < rewards.shape[0]
