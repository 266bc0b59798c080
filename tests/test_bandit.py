"""BanditEnv: RAGEN's payouts, presentation order, success, configurable arms, bad arguments."""

from __future__ import annotations

import pytest

from envs.bandit import HIGH_RISK, LOW_RISK, BanditEnv


def pull(env: BanditEnv, arm: int, seed: int, member: int) -> tuple[float, dict]:
    env.reset(seed=seed, options={"member": member})
    _, reward, terminated, truncated, info = env.step(arm)
    assert terminated is True and truncated is False
    return reward, info


def test_defaults_follow_ragen() -> None:
    env = BanditEnv()
    assert env.action_names == ("Phoenix", "Dragon")
    assert env.arm_means == pytest.approx((0.1, 0.25))  # 0.25 * 1.0 + 0.75 * 0.0
    assert env.best_arm == HIGH_RISK


def test_low_risk_arm_always_pays_point_one_and_is_not_a_success() -> None:
    env = BanditEnv()
    for member in range(50):
        reward, info = pull(env, LOW_RISK, seed=0, member=member)
        assert reward == 0.1 and info["success"] is False


def test_high_risk_arm_pays_one_a_quarter_of_the_time() -> None:
    env = BanditEnv()
    rewards = [pull(env, HIGH_RISK, seed=1, member=member)[0] for member in range(4000)]
    assert set(rewards) == {0.0, 1.0}
    # Binomial(4000, 0.25): std of the mean is 0.0068, so +-0.03 is over 4 standard deviations.
    assert sum(rewards) / len(rewards) == pytest.approx(0.25, abs=0.03)
    assert all(pull(env, HIGH_RISK, seed=1, member=member)[1]["success"] for member in range(10))


def test_presentation_order_is_random_per_seed_and_shown_in_the_observation() -> None:
    env = BanditEnv()
    dragon_first = 0
    for seed in range(200):
        obs, _ = env.reset(seed=seed)
        first, second = (env.action_names[arm] for arm in env.presented_order)
        assert obs == f"Arm 1: {first}\nArm 2: {second}\nPull one arm."
        dragon_first += first == "Dragon"
    assert 70 <= dragon_first <= 130  # Binomial(200, 0.5) has std 7.1


def test_observation_after_the_pull_reports_arm_and_reward() -> None:
    env = BanditEnv()
    env.reset(seed=0)
    assert env.presented_order == (LOW_RISK, HIGH_RISK)  # seed 0 shows Phoenix first (pinned)
    obs, reward, *_ = env.step(LOW_RISK)
    assert reward == 0.1
    assert obs == "Arm 1: Phoenix\nArm 2: Dragon\nYou pulled Phoenix and got reward 0.1."


def test_parse_action_names_and_shown_positions() -> None:
    env = BanditEnv()
    env.reset(seed=0)
    order = env.presented_order
    expected = {
        "Phoenix": LOW_RISK, "dragon": HIGH_RISK, "I choose Dragon.": HIGH_RISK, "**phoenix**": LOW_RISK,
        "pull the Dragon arm": HIGH_RISK, "1": order[0], "Arm 2": order[1], "first": order[0],
        "second": order[1], "option 1": order[0],
    }
    for text, arm in expected.items():
        assert env.parse_action(text) == arm, text
    for text in ("3", "both", "Phoenix Dragon", "neither", "", "arm"):
        assert env.parse_action(text) is None, text
    for seed in range(50):
        env.reset(seed=seed)
        if env.presented_order[0] == HIGH_RISK:
            break
    assert env.parse_action("1") == HIGH_RISK and env.parse_action("arm 2") == LOW_RISK


def test_instructions_name_the_valid_actions() -> None:
    text = BanditEnv(low_risk_name="Sparrow", high_risk_name="Tiger").instructions
    assert "Valid actions: Sparrow, Tiger" in text


def test_custom_names_and_reversed_payouts() -> None:
    env = BanditEnv(low_risk_name="Sparrow", high_risk_name="Tiger", low_risk_reward=0.3)
    assert env.arm_means == pytest.approx((0.3, 0.25)) and env.best_arm == LOW_RISK
    obs, _ = env.reset(seed=0)
    assert "Sparrow" in obs and "Tiger" in obs and "Phoenix" not in obs
    assert env.parse_action("tiger") == HIGH_RISK
    reward, info = pull(env, LOW_RISK, seed=0, member=0)
    assert reward == 0.3 and info["success"] is True
    assert pull(env, HIGH_RISK, seed=0, member=0)[1]["success"] is False


def test_invalid_action_pays_nothing_and_ends_the_episode() -> None:
    env = BanditEnv()
    env.reset(seed=0)
    obs, reward, terminated, _, info = env.step(7)
    assert (reward, terminated) == (0.0, True)
    assert info == {"success": False, "action_is_valid": False, "action_is_effective": False}
    assert obs.endswith("Pull one arm.")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"low_risk_name": "Dragon"}, "read the same"),
        ({"low_risk_name": "dragon!"}, "read the same"),
        ({"high_risk_name": ""}, "high_risk_name=''"),
        ({"high_risk_name": "2"}, "high_risk_name='2'"),
        ({"low_risk_name": "Phoe\nnix"}, "low_risk_name="),
        ({"low_risk_name": "Fénix"}, "low_risk_name='Fénix'"),
        ({"low_risk_name": 3}, "low_risk_name=3"),
        ({"high_risk_prob": 1.5}, "high_risk_prob=1.5"),
        ({"high_risk_prob": True}, "high_risk_prob=True"),
        ({"high_risk_reward": float("nan")}, "high_risk_reward=nan"),
        ({"low_risk_reward": "0.1"}, "low_risk_reward='0.1'"),
        ({"low_risk_reward": 0.25}, "different means"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        BanditEnv(**kwargs)


def test_name_split_test_uses_ragens_held_out_names() -> None:
    env = BanditEnv(name_split="test")
    assert env.action_names == ("Trader", "Librarian") and env.name_split == "test"
    obs, _ = env.reset(seed=0)
    assert obs == "Arm 1: Trader\nArm 2: Librarian\nPull one arm."  # seed 0 shows the low-risk arm first
    assert env.best_arm == HIGH_RISK and env.parse_action("librarian") == HIGH_RISK
    assert BanditEnv(name_split="train").action_names == BanditEnv().action_names == ("Phoenix", "Dragon")
    assert BanditEnv(name_split="test", high_risk_name="Gambler").action_names == ("Trader", "Gambler")
    with pytest.raises(ValueError, match=r"name_split='val' is invalid; allowed: \['test', 'train'\]"):
        BanditEnv(name_split="val")
