"""Loss aggregation, PPO policy loss, KL penalties and entropy against hand-computed values."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algos import aggregate_loss, entropy_from_logits, kl_penalty, policy_loss

LOSS_MAT = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 9.0, 9.0, 9.0]])
LOSS_MASK = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]])  # third row: no generated token


@pytest.mark.parametrize(
    ("mode", "norm_length", "expected"),
    [
        ("token-mean", None, (1 + 2 + 5 + 6 + 7) / 5),
        ("seq-mean-token-sum", None, (3 + 18) / 2),  # empty row left out of the mean
        ("seq-mean-token-mean", None, (1.5 + 6.0) / 2),
        ("seq-mean-token-sum-norm", None, 21 / 4),  # default normaliser: T = 4
        ("seq-mean-token-sum-norm", 7, 21 / 7),
    ],
)
def test_aggregate_loss_modes(mode, norm_length, expected):
    loss = aggregate_loss(LOSS_MAT, LOSS_MASK, mode, norm_length=norm_length)
    assert loss.item() == pytest.approx(expected)


@pytest.mark.parametrize(
    "mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
)
def test_empty_rows_never_make_nan(mode):
    loss_mat = LOSS_MAT.clone().requires_grad_(True)
    loss = aggregate_loss(loss_mat, LOSS_MASK, mode)
    loss.backward()
    assert torch.isfinite(loss_mat.grad).all()
    assert (loss_mat.grad[2] == 0).all()
    assert aggregate_loss(LOSS_MAT, torch.zeros_like(LOSS_MASK), mode).item() == 0.0


def test_aggregate_loss_rejects_bad_input():
    with pytest.raises(ValueError, match=r"unknown loss_agg_mode 'mean'; allowed: \['token-mean'"):
        aggregate_loss(LOSS_MAT, LOSS_MASK, "mean")
    with pytest.raises(ValueError, match="same shape"):
        aggregate_loss(LOSS_MAT, LOSS_MASK[:, :2], "token-mean")
    with pytest.raises(ValueError, match="norm_length must be > 0"):
        aggregate_loss(LOSS_MAT, LOSS_MASK, "seq-mean-token-sum-norm", norm_length=0)


# Token by token (clip_ratio_low 0.2, clip_ratio_high 0.28, clip_ratio_c 3):
#   A=+1 r=1.0 -> -1      (no clip)          A=-1 r=1.1 -> 1.1 (no clip)
#   A=+1 r=1.5 -> -1.28   (upper clip)       A=-1 r=5.0 -> max(5, 1.28)=5, dual clip -> 3
#   A=+1 r=0.5 -> -0.5    (min keeps ratio)  A=-1 r=0.5 -> max(0.5, 0.8) = 0.8 (lower clip)
RATIOS = torch.tensor([[1.0, 1.5, 0.5, 1.1, 5.0, 0.5]])
ADVANTAGES = torch.tensor([[1.0, 1.0, 1.0, -1.0, -1.0, -1.0]])
OLD_LOGP = torch.tensor([[-1.0, -2.0, -0.5, -3.0, -4.0, -1.5]])


def test_policy_loss_clip_higher_and_dual_clip():
    logp = (OLD_LOGP + RATIOS.log()).requires_grad_(True)
    mask = torch.ones_like(RATIOS)
    loss, metrics = policy_loss(logp, OLD_LOGP, ADVANTAGES, mask, 0.2, 0.28, 3.0, "token-mean")
    assert loss.item() == pytest.approx((-1 - 1.28 - 0.5 + 1.1 + 3 + 0.8) / 6, rel=1e-5)
    assert metrics["actor/pg_clipfrac"] == pytest.approx(2 / 6)
    assert metrics["actor/pg_clipfrac_lower"] == pytest.approx(1 / 6)
    assert metrics["actor/ppo_kl"] == pytest.approx(-math.log(1.5 * 0.5 * 1.1 * 5.0 * 0.5) / 6, rel=1e-5)
    loss.backward()
    # d(-A * r)/d logp = -A * r where the ratio is live; 0 where a clip holds it
    expected_grad = torch.tensor([[-1.0, 0.0, -0.5, 1.1, 0.0, 0.0]]) / 6
    torch.testing.assert_close(logp.grad, expected_grad)


def test_policy_loss_on_policy_is_minus_mean_advantage_and_respects_mask():
    logp = torch.zeros(2, 3)
    advantages = torch.tensor([[2.0, 2.0, 2.0], [-1.0, -1.0, 100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    loss, metrics = policy_loss(logp, logp, advantages, mask, loss_agg_mode="seq-mean-token-sum")
    assert loss.item() == pytest.approx((-4.0 + 2.0) / 2)
    assert metrics == {"actor/pg_clipfrac": 0.0, "actor/pg_clipfrac_lower": 0.0, "actor/ppo_kl": 0.0}


def test_policy_loss_rejects_bad_clip_settings():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="clip_ratio_c must be > 1"):
        policy_loss(x, x, x, x, clip_ratio_c=1.0)
    with pytest.raises(ValueError, match="clip ratios must be >= 0"):
        policy_loss(x, x, x, x, clip_ratio_low=-0.1)
    with pytest.raises(ValueError, match="same shape"):
        policy_loss(x, x, torch.zeros(1, 3), x)


LOGP = torch.tensor([[0.0, -1.0, -2.0]])
REF_LOGP = torch.tensor([[-1.0, -1.0, 0.0]])  # d = logp - ref = (1, 0, -2)


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (("kl", "k1"), [1.0, 0.0, -2.0]),
        (("abs",), [1.0, 0.0, 2.0]),
        (("mse", "k2"), [0.5, 0.0, 2.0]),
        (("low_var_kl", "k3"), [math.exp(-1), 0.0, math.exp(2) - 3]),  # exp(-d) + d - 1
    ],
)
def test_kl_penalty_kinds(kinds, expected):
    for kind in kinds:
        torch.testing.assert_close(kl_penalty(LOGP, REF_LOGP, kind), torch.tensor([expected]))


def test_low_var_kl_is_clamped_like_verl():
    values = kl_penalty(torch.tensor([-30.0, 30.0]), torch.zeros(2), "low_var_kl")
    torch.testing.assert_close(values, torch.tensor([10.0, 10.0]))


def test_kl_penalty_rejects_unknown_kind():
    with pytest.raises(ValueError, match=r"unknown kl kind 'full'; allowed: \['kl', 'k1', 'abs'"):
        kl_penalty(LOGP, REF_LOGP, "full")


def test_entropy_from_logits():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -1e4, -1e4], [1e4, 0.0, 0.0, 0.0]])
    # uniform over 4 -> ln 4; p = (1/4, 3/4) -> -(1/4 ln 1/4 + 3/4 ln 3/4); near one-hot -> 0
    expected = torch.tensor([math.log(4), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), 0.0])
    torch.testing.assert_close(entropy_from_logits(logits), expected)
    assert entropy_from_logits(torch.zeros(2, 3, 5)).shape == (2, 3)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 2**16))
def test_property_kl_kinds_nonnegative_and_zero_at_reference(batch, length, seed):
    generator = torch.Generator().manual_seed(seed)
    logp = -torch.rand(batch, length, generator=generator) * 5
    ref_logp = -torch.rand(batch, length, generator=generator) * 5
    for kind in ("abs", "mse", "low_var_kl"):
        assert (kl_penalty(logp, ref_logp, kind) >= 0).all()
        assert (kl_penalty(logp, logp, kind) == 0).all()
