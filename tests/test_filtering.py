"""Rollout filtering against hand-computed group selections, plus top_k property tests."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algos import filter_groups, group_scores, reward_variance_collapsed, should_reroll

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
            r"rollout_filter_strategy 'top_n'; allowed: \['top_k', 'top_k_abs', 'ratio', 'top_k_frac', 'top_p'",
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
        ("top_k_abs", 0, "largest", "'top_k_abs' must be an integer >= 1, got 0"),
        ("top_k_frac", 4, "largest", r"'top_k_frac' must be in \(0, 1\], got 4"),
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


# Eight groups (0, 0, 0, x): in-group std x / 2 (mean x/4, squares 3x^2/4, / 3), for x = 3, 8, 1, 6, 2, 7, 4, 5.
EIGHT = torch.tensor([[0.0, 0.0, 0.0, x] for x in (3, 8, 1, 6, 2, 7, 4, 5)])


@pytest.mark.parametrize(
    ("count", "expected"),
    [(8, list(range(8))), (4, [1, 3, 5, 7]), (2, [1, 5]), (1, [1])],
)
def test_seed_table_top_k_is_the_count_and_top_k_abs_its_alias(count, expected):
    # the seed's table: top_k 8 of 8 keeps all, 4 keeps half (x = 8, 7, 6, 5 sit at 1, 5, 3, 7)
    assert kept_list(EIGHT, "top_k", value=count) == expected
    assert kept_list(EIGHT, "top_k_abs", value=count) == expected


@pytest.mark.parametrize(
    ("num_groups", "fraction", "count"),
    [(8, 1.0, 8), (8, 0.5, 4), (8, 0.25, 2), (8, 0.1, 1), (6, 0.5, 3), (6, 0.3, 1), (5, 0.6, 3), (5, 0.5, 2)],
)
def test_ragen_fraction_keeps_floor_of_fraction_times_groups_as_a_count(num_groups, fraction, count):
    # RAGEN's fractional top_k keeps max(int(fraction * G), 1) groups: TurnRL's top_k_frac (= ratio)
    rewards = EIGHT[:num_groups]
    by_fraction = kept_list(rewards, "top_k_frac", value=fraction)
    assert by_fraction == kept_list(rewards, "ratio", value=fraction)
    assert by_fraction == kept_list(rewards, "top_k", value=count)
    assert len(by_fraction) == count


# softmax over the sorted stds (1.1547, 0.5774, 0.5774, 0.5, 0): exps 3.1733, 1.7813, 1.7813, 1.6487, 1
# (sum 9.3846) -> probabilities 0.3381, 0.1898, 0.1898, 0.1757, 0.1066, cumulative 0.338, 0.528, 0.718, 0.893, 1.
SOFTMAX_CUMULATIVE = [0.3381, 0.5280, 0.7178, 0.8935, 1.0]


def test_softmax_probabilities_of_the_written_out_batch():
    exps = [math.exp(std) for std in sorted(STDS, reverse=True)]
    cumulative = [sum(exps[: i + 1]) / sum(exps) for i in range(5)]
    assert cumulative == pytest.approx(SOFTMAX_CUMULATIVE, abs=1e-4)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.3, [4]), (0.5, [0, 4]), (0.7, [0, 3, 4]), (0.89, [0, 2, 3, 4]), (0.9, [0, 1, 2, 3, 4]), (1.0, [0, 1, 2, 3, 4])],
)
def test_top_p_softmax_keeps_the_nucleus_of_softmax_std(value, expected):
    assert kept_list(REWARDS, "top_p", value=value, top_p_prob_mode="softmax") == expected


def test_top_p_softmax_and_linear_differ_on_the_same_batch():
    # at 0.9 the softmax nucleus also keeps the zero-std group (its probability is e^0 / 9.38 = 0.107);
    # the linear share never does (it adds 0 to the cumulative std)
    assert kept_list(REWARDS, "top_p", value=0.9, top_p_prob_mode="softmax") == [0, 1, 2, 3, 4]
    assert kept_list(REWARDS, "top_p", value=0.9) == [0, 2, 3, 4]
    assert kept_list(REWARDS, "top_p", value=0.9, top_p_prob_mode="linear") == [0, 2, 3, 4]


def test_top_p_softmax_smallest_uses_reflected_scores():
    # logits max - s: g1 1.1547, g2 0.6547, g0/g3 0.5774, g4 0; first probability 3.1733 / 9.6605 = 0.328
    assert kept_list(REWARDS, "top_p", value=0.3, filter_type="smallest", top_p_prob_mode="softmax") == [1]


def test_top_p_softmax_accepts_negative_scores():
    scores = torch.tensor([-1.0, -3.0, 0.0, -2.0, -5.0])  # softmax is shift invariant: ranks g2, g0, g3, ...
    assert kept_list(REWARDS, "top_p", value=0.5, scores=scores, top_p_prob_mode="softmax") == [2]


LENGTHS = torch.tensor([[10.0] * 4, [50.0] * 4, [5.0, 5.0, 5.0, 5.0], [20.0, 30.0, 10.0, 20.0], [1.0] * 4])
ENTROPIES = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 0.0, 2.0], [0.5] * 4, [3.0] * 4, [0.2, 0.2, 0.2, 0.5]])


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("reward_std", STDS),
        ("reward_variance", STDS),  # RAGEN's name: it ranks by the std too
        ("reward", [0.5, 0.5, 0.25, 0.5, 1.0]),
        ("reward_sum", [2.0, 2.0, 1.0, 2.0, 4.0]),
        ("length", [10.0, 50.0, 5.0, 20.0, 1.0]),
        ("entropy", [1.0, 1.0, 0.5, 3.0, 0.275]),
        # g1 (0, 2, 0, 2): squares 4 / 3; g4 (0.2, 0.2, 0.2, 0.5): mean 0.275, squares 0.0675 / 3 = 0.15^2
        ("entropy_std", [0.0, math.sqrt(4 / 3), 0.0, 0.0, 0.15]),
        ("entropy_variance", [0.0, math.sqrt(4 / 3), 0.0, 0.0, 0.15]),
    ],
)
def test_group_scores_per_metric(metric, expected):
    scores = group_scores(metric, REWARDS, lengths=LENGTHS, entropies=ENTROPIES)
    torch.testing.assert_close(scores, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_filter_by_reward_and_length_scores():
    by_reward = group_scores("reward", REWARDS)  # means 0.5, 0.5, 0.25, 0.5, 1.0: g4, then the tie's lowest g0
    assert kept_list(REWARDS, "top_k", value=2, scores=by_reward) == [0, 4]
    by_length = group_scores("length", REWARDS, lengths=LENGTHS)
    assert kept_list(REWARDS, "top_k", value=2, scores=by_length) == [1, 3]
    assert kept_list(REWARDS, "top_k", value=1, scores=by_length, filter_type="smallest") == [4]


def test_group_scores_name_what_is_missing():
    with pytest.raises(ValueError, match="'entropy' needs per-episode entropies"):
        group_scores("entropy", REWARDS)
    with pytest.raises(ValueError, match=r"lengths must be finite with shape \(5, 4\)"):
        group_scores("length", REWARDS, lengths=torch.ones(5, 3))
    with pytest.raises(ValueError, match=r"unknown rollout_filter_metric 'bogus'; allowed: \['reward_std'"):
        group_scores("bogus", REWARDS)


def test_unknown_top_p_prob_mode_is_named():
    with pytest.raises(ValueError, match=r"rollout_filter_top_p_prob_mode 'exp'; allowed: \['linear', 'softmax'\]"):
        filter_groups(REWARDS, "top_p", value=0.5, top_p_prob_mode="exp")


ALL_CONSTANT = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.3, 0.3]])


def test_allow_empty_keeps_nothing_when_every_group_scores_zero():
    kept, metrics = filter_groups(ALL_CONSTANT, "top_k", value=2, include_zero=False, allow_empty=True)
    assert kept.tolist() == [] and kept.dtype == torch.long
    assert metrics["rollout/filter_kept_ratio"] == 0.0 and metrics["rollout/chosen_in_group_std"] == 0.0
    # with some variance it filters as usual; without allow_empty the old fallback keeps the top_k
    assert kept_list(REWARDS, "top_k", value=5, include_zero=False, allow_empty=True) == [0, 2, 3, 4]
    assert kept_list(ALL_CONSTANT, "top_k", value=2, include_zero=False) == [0, 1]


def test_should_reroll_an_empty_keep_until_the_cap():
    empty, some = torch.tensor([], dtype=torch.long), torch.tensor([3])
    assert should_reroll(some, rerolls_done=0, max_rerolls=2) is False
    assert should_reroll(empty, rerolls_done=0, max_rerolls=2) is True
    assert should_reroll(empty, rerolls_done=1, max_rerolls=2) is True
    assert should_reroll(empty, rerolls_done=2, max_rerolls=2) is False  # spent: the caller trains it whole
    assert should_reroll(empty, rerolls_done=0, max_rerolls=0) is False


# Baseline: mean of the first 10 stds = 1.0, so the threshold is 0.1.
BASELINE = [1.2, 0.8] * 5


@pytest.mark.parametrize(
    ("later", "collapsed"),
    [
        ([0.05] * 9, False),  # the window needs 10 steps after the baseline
        ([0.05] * 10, True),
        ([0.5] * 5 + [0.09] * 10, True),  # only the last 10 count
        ([0.05] * 9 + [0.1], False),  # 0.1 is not below 0.1
        ([0.05] * 4 + [0.2] + [0.05] * 5, False),
    ],
)
def test_reward_variance_collapse_predicate(later, collapsed):
    assert reward_variance_collapsed(BASELINE + later) is collapsed


def test_reward_variance_collapse_options():
    assert reward_variance_collapsed([0.0] * 30) is False  # a zero baseline has nothing to collapse from
    assert reward_variance_collapsed([1.0, 0.4, 0.4], baseline_steps=1, window=2, ratio=0.5) is True
    with pytest.raises(ValueError, match="ratio=0 is invalid"):
        reward_variance_collapsed([1.0] * 20, ratio=0)
    with pytest.raises(ValueError, match="window=0 are invalid"):
        reward_variance_collapsed([1.0] * 20, window=0)


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
