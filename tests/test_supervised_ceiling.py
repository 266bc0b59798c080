"""The supervised-ceiling diagnostic's scoring: labels are shortest-path first moves of the very prompt the
rollout engine builds, a choice is right when it starts a shortest path, and the board-blind references
are computed by hand."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import envs
from agents.model import load_tokenizer
from agents.prompts import ChatTokenizer
from algos.training.compose import compose_config
from envs.frozenlake import DOWN, LEFT, RIGHT, UP

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_supervised_ceiling.py"
spec = importlib.util.spec_from_file_location("bench_supervised_ceiling", SCRIPT)
ceiling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ceiling)


def test_references_and_accuracy_by_hand() -> None:
    boards = [([], [DOWN]), ([], [DOWN, RIGHT]), ([], [UP]), ([], [LEFT, UP])]
    references = ceiling.first_move_references(boards, actions=4)
    # a random move is right 1/4, 2/4, 1/4, 2/4 of the time; Down and Up each start 2 of the 4 boards' paths
    assert references == {"uniformly random move": pytest.approx(6 / 16), "best single move": 0.5}
    assert ceiling.accuracy(np.array([DOWN, LEFT, UP, UP]), boards).tolist() == [1.0, 0.0, 1.0, 1.0]


def test_a_labelled_board_is_the_rollout_prompt_and_its_shortest_path_moves() -> None:
    config = compose_config(["bench=frozenlake"]).agent_config()
    chat = ChatTokenizer(load_tokenizer(None))
    env = envs.make(config.env.name, **config.env.kwargs)
    prompt, moves = ceiling.labelled_board(env, config, chat, 123, max_new_tokens=16)
    text = chat.tokenizer.decode(prompt)
    observation, _ = env.reset(seed=123)
    assert observation in text and text.endswith("<answer>")  # the first turn, prefilled for answer-only
    # level 123: start (1, 3), goal (1, 2) right beside it: Left is the only shortest first move
    assert (env.start, env.goal, moves) == ((1, 3), (1, 2), [LEFT])


def test_records_of_seeds_run_side_by_side_combine_into_one_curve(tmp_path) -> None:
    def record(seed: int, hits: dict[str, list[float]], lr: float = 5e-5) -> dict:
        return {"overrides": [], "eval_levels": 2, "first_eval_level": 123, "lr": lr, "batch": 8, "bf16": "true",
                "seeds": [seed], "minutes": 1.0, "policies": {}, "per_level": {str(seed): hits},
                "seen_per_level": {str(seed): hits}}

    paths = [tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"]
    paths[0].write_text(json.dumps(record(0, {"0": [0.0, 0.0], "8": [1.0, 1.0]})))
    paths[1].write_text(json.dumps(record(1, {"0": [0.0, 1.0], "8": [1.0, 0.0], "16": [1.0, 1.0]})))
    ceiling.combine(paths[:2], tmp_path / "out.json")
    combined = json.loads((tmp_path / "out.json").read_text())
    assert combined["seeds"] == [0, 1] and combined["minutes"] == [1.0, 1.0]
    start, end = combined["first_move_accuracy"]  # 16 boards: only seed 1 got there, so it is left out
    assert (start["boards"], start["estimate"], start["n"]) == (0, 0.25, 4)
    assert (end["boards"], end["estimate"], end["high"]) == (8, 0.75, 1.0)
    assert combined["seen_board_accuracy"] == combined["first_move_accuracy"]  # the same hits pooled the same way
    paths[2].write_text(json.dumps(record(2, {"0": [0.0, 0.0]}, lr=1e-4)))
    with pytest.raises(SystemExit, match=r"differs .* in \['lr'\]"):
        ceiling.combine([paths[0], paths[2]], tmp_path / "out.json")


def test_training_fits_the_boards_it_sees_and_reports_the_fit(tmp_path, tokenizer, tiny, one_torch_thread) -> None:
    tiny.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    full = compose_config(["bench=frozenlake"])
    config, chat = full.agent_config(), ChatTokenizer(tokenizer)
    env = envs.make(config.env.name, **config.env.kwargs)
    eval_boards = [ceiling.labelled_board(env, config, chat, level, 16) for level in (123, 124)]
    args = argparse.Namespace(model=str(tmp_path / "tiny"), lr=1e-2, examples=1, epochs=40, batch=1,
                              eval_at=[1, 40], fit_levels=1, bf16="false")
    run = ceiling.train_and_evaluate(0, args, env, config, chat, eval_boards, 16)
    assert list(run["held_out"]) == list(run["seen"]) == list(run["train_nll"]) == [0, 1, 40]
    assert [len(run["held_out"][0]), len(run["seen"][0]), run["train_nll"][0]] == [2, 1, None]
    # 40 passes over one board: its label is learnt, whatever the held-out boards do
    assert run["train_nll"][40] < run["train_nll"][1] / 4
    assert run["seen"][0].tolist() == [0.0] and run["seen"][40].tolist() == [1.0]
