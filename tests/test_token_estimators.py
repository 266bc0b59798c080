"""GAE, bi-level GAE, the batch whitening and the clipped value loss against values worked out by hand.

The episode used throughout (one row, T = 8)::

    column   0       1     2     3    4    5     6     7
    kind     prompt  turn 1      env  env  turn 2      pad
    mask     0       1     1     0    0    1     1     0
    value    9       .5    .4    9    9    .3    .2    9      (9 where no step is: never read)
    reward   5       0     .1    5    0    0     1     0      (5 off the mask: never read)
"""

from __future__ import annotations

import pytest
import torch

from algos import AlgorithmConfig, compute_token_advantages, explained_variance, value_loss
from algos.token_estimators import bi_level_gae, gae, masked_whiten, turn_ends

MASK = torch.tensor([[0, 1, 1, 0, 0, 1, 1, 0]])
VALUES = torch.tensor([[9.0, 0.5, 0.4, 9.0, 9.0, 0.3, 0.2, 9.0]])
REWARDS = torch.tensor([[5.0, 0.0, 0.1, 5.0, 0.0, 0.0, 1.0, 0.0]])


def test_gae_skips_env_tokens_between_turns():
    advantages, returns = gae(REWARDS, VALUES, MASK, gamma=0.9, lam=0.8)
    # steps (r, V): (0, .5) (.1, .4) | (0, .3) (1, .2); gamma * lam = .72
    # A4 = 1 - .2 = .8
    # A3 = 0 + .9 * .2 - .3 + .72 * .8 = .456                 (turn 2's first token)
    # A2 = .1 + .9 * .3 - .4 + .72 * .456 = .29832             (turn 1's last token bootstraps from column 5)
    # A1 = 0 + .9 * .4 - .5 + .72 * .29832 = .0747904
    expected = torch.tensor([[0, 0.0747904, 0.29832, 0, 0, 0.456, 0.8, 0]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, torch.tensor([[0, 0.5747904, 0.69832, 0, 0, 0.756, 1.0, 0]]))


def test_gae_with_gamma_and_lambda_one_is_the_reward_to_go_minus_the_value():
    advantages, returns = gae(REWARDS, VALUES, MASK, gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[0, 1.1 - 0.5, 1.1 - 0.4, 0, 0, 1 - 0.3, 1 - 0.2, 0]]))
    torch.testing.assert_close(returns, torch.tensor([[0, 1.1, 1.1, 0, 0, 1.0, 1.0, 0]]))


def test_bi_level_gae_by_hand():
    advantages, returns = bi_level_gae(REWARDS, VALUES, MASK, gamma=0.9, lam=0.8, high_level_gamma=0.5)
    # turn ends e1 = column 2 (r .1, V .4), e2 = column 6 (r 1, V .2); high_level_gamma * lam = .4
    # H2 = 1 - .2 = .8;  H1 = .1 + .5 * .2 - .4 + .4 * .8 = .12
    # column 5: 0 + .9 * .2 - .3 + .72 * H2 = .456;  column 1: 0 + .9 * .4 - .5 + .72 * H1 = -.0536
    torch.testing.assert_close(advantages, torch.tensor([[0, -0.0536, 0.12, 0, 0, 0.456, 0.8, 0]]))
    # returns = A + V; at a turn's end that is its return G_k = H_k + V_{e_k}
    torch.testing.assert_close(returns, torch.tensor([[0, 0.4464, 0.52, 0, 0, 0.756, 1.0, 0]]))


def test_turn_ends_are_the_last_token_of_each_reply():
    mask = torch.tensor([[0, 1, 1, 0, 1, 0, 1, 1]])
    assert turn_ends(mask).int().tolist() == [[0, 0, 1, 0, 1, 0, 0, 1]]


def test_rows_are_independent_and_an_empty_row_gets_zeros():
    rewards = torch.cat([REWARDS, torch.zeros(1, 8)])
    values = torch.cat([VALUES, torch.ones(1, 8)])
    mask = torch.cat([MASK, torch.zeros(1, 8, dtype=torch.long)])
    for estimator in (gae, bi_level_gae):
        advantages, returns = estimator(rewards, values, mask)
        alone, _ = estimator(REWARDS, VALUES, MASK)
        torch.testing.assert_close(advantages[:1], alone)
        assert advantages[1].eq(0).all() and returns[1].eq(0).all()


def test_masked_whiten_uses_the_bessel_corrected_variance_over_the_mask():
    whitened = masked_whiten(torch.tensor([[1.0, 2.0, 3.0, 100.0]]), torch.tensor([[1, 1, 1, 0]]))
    torch.testing.assert_close(whitened, torch.tensor([[-1.0, 0.0, 1.0, 0.0]]))  # mean 2, var (1+0+1)/2


def test_compute_token_advantages_whitens_the_advantages_not_the_returns():
    advantages, returns, metrics = compute_token_advantages("gae", REWARDS, VALUES, MASK, gamma=0.9, lam=0.8,
                                                            high_level_gamma=0.5)
    raw, expected_returns = gae(REWARDS, VALUES, MASK, gamma=0.9, lam=0.8)
    torch.testing.assert_close(advantages, masked_whiten(raw, MASK))
    torch.testing.assert_close(returns, expected_returns)
    assert metrics["train/adv_mean"] == pytest.approx((0.0747904 + 0.29832 + 0.456 + 0.8) / 4)
    assert metrics["critic/returns_mean"] == pytest.approx((0.5747904 + 0.69832 + 0.756 + 1.0) / 4)
    with pytest.raises(ValueError, match=r"unknown token-level advantage option\(s\) \['tau'\]"):
        compute_token_advantages("gae", REWARDS, VALUES, MASK, tau=0.5)
    with pytest.raises(ValueError, match="unknown token-level advantage estimator 'nope'"):
        compute_token_advantages("nope", REWARDS, VALUES, MASK)


def test_algorithm_config_selects_the_token_estimator_and_checks_its_keys():
    assert AlgorithmConfig(adv_estimator="gae").token_estimator == "gae"
    assert AlgorithmConfig(adv_estimator="gae", bi_level_gae=True).token_estimator == "bi_level_gae"
    assert AlgorithmConfig(adv_estimator="grpo").token_estimator is None
    with pytest.raises(ValueError, match=r"algorithm\.bi_level_gae=True is invalid; allowed: false with adv"):
        AlgorithmConfig(adv_estimator="grpo", bi_level_gae=True)
    with pytest.raises(ValueError, match=r"algorithm\.lam=1\.5 is invalid; allowed: \[0, 1\]"):
        AlgorithmConfig(adv_estimator="gae", lam=1.5)


def test_clipped_value_loss_and_its_metrics_by_hand():
    vpreds = torch.tensor([[1.0, 0.0, 0.6, 7.0]])
    old = torch.tensor([[0.5, 0.5, 0.5, 0.0]])
    returns = torch.tensor([[2.0, 0.0, 2.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, metrics = value_loss(vpreds, old, returns, mask, cliprange_value=0.2)
    # token 1: V_clip .7, max((1-2)^2, (.7-2)^2) = 1.69; token 2: V_clip .3, max(0, .09) = .09
    # token 3: V_clip = vpred = .6, both 1.96 (not counted as clipped); halved, token-mean over 3
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.09 + 1.96) / 3)
    assert metrics == pytest.approx({"critic/vf_clipfrac": 2 / 3, "critic/vpred_mean": 1.6 / 3})
    seq_sum, _ = value_loss(vpreds, old, returns, mask, cliprange_value=0.2, loss_agg_mode="seq-mean-token-sum")
    assert seq_sum.item() == pytest.approx(0.5 * (1.69 + 0.09 + 1.96))


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert explained_variance(returns, returns, mask) == 1.0
    assert explained_variance(torch.full_like(returns, 2.0), returns, mask) == pytest.approx(0.0)
    # errors (0, 0, 1): var 1/3 against var(returns) 1
    assert explained_variance(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), returns, mask) == pytest.approx(1 - 1 / 3)
