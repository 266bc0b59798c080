"""Action-choice metrics of a rollout batch: valid actions per reply and the entropy of the first move,
pooled and within groups (a board-blind policy has no gap between the two)."""

from __future__ import annotations

import math

import pytest
from test_multi_env import PerPromptBackend
from test_rollout import SCRIPTED, engine

from agents.batch import action_choice_metrics


def test_values_computed_by_hand():
    # first moves: 0, 0 (group 0); 2, -, 1 (group 1; episode 3's first reply had no valid action)
    replies = [[[0, 1]], [[0]], [[2], [1]], [[]], [[1, 1]]]
    metrics = action_choice_metrics(replies, [0, 0, 1, 1, 1])
    assert metrics["rollout/actions_per_turn"] == pytest.approx(7 / 6)
    # pooled [0, 0, 2, 1]: p = 1/2, 1/4, 1/4
    assert metrics["rollout/first_action_entropy"] == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(4))
    # group 0 [0, 0]: 0; group 1 [2, 1]: ln 2
    assert metrics["rollout/first_action_entropy_in_group"] == pytest.approx(math.log(2) / 2)
    assert action_choice_metrics([[[]], [[], []]], [0, 0]) == {}


def test_a_rollout_reports_them(tokenizer):
    # Sokoban, 2 groups x 2, one turn: group 0 moves Up and Up, group 1 Left and Left || Down
    replies = ["x</think><answer>Up</answer>"] * 2 + ["x</think><answer>Left</answer>",
                                                     "x</think><answer>Left || Down</answer>"]
    batch = engine(tokenizer, PerPromptBackend(tokenizer, replies), max_turn=1).rollout(1, SCRIPTED)
    assert batch.metrics["rollout/actions_per_turn"] == pytest.approx(5 / 4)
    assert batch.metrics["rollout/first_action_entropy"] == pytest.approx(math.log(2))
    assert batch.metrics["rollout/first_action_entropy_in_group"] == 0.0
