"""The learning benchmark's bookkeeping on hand-written run folders: validation episodes become per-step
intervals over seeds x levels, timings and memory are averaged and maxed, a finished run is not rerun."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from agents.batch import RolloutBatch
from algos.training.compose import compose_config
from algos.training.tracking import (
    append_validation_episodes,
    keep_rows_up_to,
    read_metrics,
    validation_scores,
    validation_summary,
)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_learning.py"
spec = importlib.util.spec_from_file_location("bench_learning_script", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def write_run(path: Path, successes: dict[int, list[int]], step_s: float, rss: float) -> None:
    path.mkdir(parents=True)
    rows = [{"step": 0, "format_warmup/seconds": 30.0, "timing/val_s": 6.0}] + [{"step": step, "rollout/success_rate": 0.5, "timing/rollout_s": step_s / 2,
                             "timing/log_prob_s": 0.0, "timing/update_s": step_s / 2, "timing/step_s": step_s,
                             "timing/peak_rss_gib": rss} for step in (1, 2)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    episodes = [{"step": step, "level": 100 + i, "success": bool(s), "reward": float(s)}
                for step, levels in successes.items() for i, s in enumerate(levels)]
    (path / "validation.jsonl").write_text("".join(json.dumps(row) + "\n" for row in episodes))


def test_summary_gives_per_step_intervals_over_seeds_and_levels(tmp_path):
    # step 0: every seed fails every level; step 2: all succeed on seed 0, half on seeds 1 and 2
    write_run(tmp_path / "seed0", {0: [0, 0, 0, 0], 2: [1, 1, 1, 1]}, step_s=10.0, rss=3.0)
    write_run(tmp_path / "seed1", {0: [0, 0, 0, 0], 2: [1, 0, 1, 0]}, step_s=20.0, rss=3.5)
    write_run(tmp_path / "seed2", {0: [0, 0, 0, 0], 2: [0, 1, 0, 1]}, step_s=30.0, rss=2.5)
    runs = {seed: tmp_path / f"seed{seed}" for seed in range(3)}
    record = bench.summarise("frozenlake", runs, {0: 60.0, 1: 120.0, 2: 180.0}, [])
    start, end = record["validation"]
    assert (start["step"], start["estimate"], start["low"], start["high"], start["n"]) == (0, 0.0, 0.0, 0.0, 12)
    assert end["step"] == 2 and end["estimate"] == pytest.approx(8 / 12)
    assert end["low"] < 8 / 12 < end["high"] and end["high"] == 1.0  # all-seed-0 resamples reach 1.0
    assert record["time_per_step_s"]["step_s"] == pytest.approx(20.0) and record["peak_rss_gib"] == 3.5
    assert record["levels"] == 4 and record["wall_min"] == {0: 1.0, 1: 2.0, 2: 3.0}
    assert record["run_min"] == pytest.approx({0: (36 + 20) / 60, 1: (36 + 40) / 60, 2: (36 + 60) / 60})
    # per level, 2 of 3 runs succeed at step 2 against all-fail at step 0: P(X > Y) + P(X = Y) / 2 = 2/3 + 1/6
    improvement = record["first_vs_last"]["probability_of_improvement"]["step 2"]["step 0"]["estimate"]
    assert improvement == pytest.approx(5 / 6)
    assert "| 2 | 0.667 |" in bench.markdown(record)


def test_a_resumed_validation_counts_each_level_once(tmp_path):
    write_run(tmp_path / "run", {0: [0, 1]}, step_s=1.0, rss=1.0)
    with (tmp_path / "run" / "validation.jsonl").open("a") as handle:  # step 0 validated again after a resume
        handle.write(json.dumps({"step": 0, "level": 100, "success": True, "reward": 1.0}) + "\n")
    scores = validation_scores(tmp_path / "run")
    assert list(scores) == [0] and scores[0].tolist() == [1.0, 1.0]


def test_a_finished_run_is_not_rerun(tmp_path):
    write_run(tmp_path / "seed0", {0: [0]}, step_s=1.0, rss=1.0)
    (tmp_path / "seed0" / "wall_s.json").write_text("42.0")
    assert bench.run_seed("bandit", 0, 2, tmp_path / "seed0", ["no.such.key=1"]) == 42.0  # no subprocess ran


def test_a_run_dir_started_with_other_settings_is_refused(tmp_path):
    write_run(tmp_path / "seed0", {0: [0]}, step_s=1.0, rss=1.0)
    (tmp_path / "seed0" / "wall_s.json").write_text("42.0")
    started = {"env": "bandit", "seed": 0, "train_seed_start": 10_000, "overrides": []}
    (tmp_path / "seed0" / "bench_settings.json").write_text(json.dumps(started))
    assert bench.run_seed("bandit", 0, 2, tmp_path / "seed0", []) == 42.0  # same settings: done, not rerun
    with pytest.raises(SystemExit, match=r"seed0 was started with .*'overrides': \[\]\}, not .*lr=1'\]\}: pass another"):
        bench.run_seed("bandit", 0, 2, tmp_path / "seed0", ["actor_rollout_ref.actor.lr=1"])
    with pytest.raises(SystemExit, match="pass another --runs-dir"):
        bench.run_seed("frozenlake", 0, 2, tmp_path / "seed0", [])


def test_the_run_summary_gives_first_and_last_validation_with_intervals(tmp_path):
    write_run(tmp_path / "run", {0: [0, 1], 3: [1, 1]}, step_s=1.0, rss=1.0)
    assert validation_summary(tmp_path / "run") == (
        "validation success: step 0 0.500 [0.000, 1.000] (n=2) -> step 3 1.000 [1.000, 1.000] (n=2)")
    assert validation_summary(tmp_path / "empty") is None


def test_a_resumed_run_keeps_rows_up_to_its_checkpoint_even_after_a_torn_line(tmp_path):
    path = tmp_path / "trajectories.jsonl"  # a run killed while writing its step-3 rows
    path.write_text(json.dumps({"step": 1, "seed": 7}) + "\n" + json.dumps({"step": 2}) + "\n" + '{"step": 3, "se')
    keep_rows_up_to(path, 1)
    assert read_metrics(path) == [{"step": 1, "seed": 7}]
    keep_rows_up_to(tmp_path / "absent.jsonl", 1)
    assert not (tmp_path / "absent.jsonl").exists()


def test_each_seed_trains_on_levels_of_its_own_never_the_validation_levels():
    # 1000 steps of 64 groups fit in a seed's block of levels; validation plays 123, 124, ... (64 levels)
    steps, groups, validation = 1000, 64, set(range(123, 123 + 64))
    levels = {seed: set(range(bench.train_levels_start(seed), bench.train_levels_start(seed) + steps * groups))
              for seed in range(5)}
    assert bench.train_levels_start(0) == 10_000 and bench.train_levels_start(2) == 210_000
    for seed, mine in levels.items():
        assert not mine & validation
        assert all(not mine & levels[other] for other in levels if other != seed)


def test_a_pool_run_validates_on_its_training_levels_and_is_a_run_of_its_own(tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(bench.subprocess, "run", lambda command, **_: commands.append(command))
    bench.run_seed("frozenlake", 1, 2, tmp_path / "seed1", ["x=1"], train_levels=8)
    assert commands[0][-4:] == ["es_manager.train_num_levels=8", "es_manager.val_seed_start=110000",
                                "es_manager.val.env_groups=8", "x=1"]
    with pytest.raises(SystemExit, match="'train_num_levels': 8"):  # the same dir without the pool is refused
        bench.run_seed("frozenlake", 1, 2, tmp_path / "seed1", ["x=1"])
    write_run(tmp_path / "seed0", {0: [0, 1], 2: [1, 1]}, step_s=1.0, rss=1.0)
    record = bench.summarise("frozenlake", {0: tmp_path / "seed0"}, {0: 60.0}, [], train_levels=8)
    assert record["validated_on"] == "the 8 training levels" and "(the 8 training levels;" in bench.markdown(record)


def test_several_episodes_a_level_average_into_that_level(tmp_path):
    # es_manager.val.group_size=2: level 100 solved by 1 of 2 members, level 101 by both; a resumed
    # validation repeats member 1 of level 100 (now a success: the last row wins)
    rows = [(100, 0, False), (100, 1, False), (101, 0, True), (101, 1, True), (100, 1, True)]
    (tmp_path / "validation.jsonl").write_text("".join(
        json.dumps({"step": 0, "level": level, "member": member, "success": success, "reward": float(success)}) + "\n"
        for level, member, success in rows))
    assert validation_scores(tmp_path)[0].tolist() == [0.5, 1.0]


def test_validation_rows_name_each_episode_s_member(tmp_path):
    batch = RolloutBatch(*[torch.zeros(4, 1)] * 3, torch.arange(4) // 2, torch.tensor([0.0, 1.0, 1.0, 1.0]),
                         torch.tensor([False, True, True, True]), *[torch.zeros(4)] * 2,
                         torch.tensor([100, 100, 101, 101]), [[]] * 4, {}, 2)
    append_validation_episodes(tmp_path, 3, batch)
    rows = read_metrics(tmp_path / "validation.jsonl")
    assert [(row["level"], row["member"], row["success"]) for row in rows] == [
        (100, 0, False), (100, 1, True), (101, 0, True), (101, 1, True)]
    assert validation_scores(tmp_path)[3].tolist() == [0.5, 1.0]


def test_references_are_board_blind_play_on_each_run_s_validation_levels(tmp_path):
    # seed 0's pool-8 levels (10000-10007, BENCHMARKS "Why nothing learns"): repeating Down solves 2 of 8
    run = tmp_path / "seed0"
    run.mkdir()
    rows = [{"step": step, "level": 10_000 + i, "member": 0, "success": False, "reward": 0.0}
            for step in (0, 10) for i in range(8)]
    (run / "validation.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    references = bench.board_blind_references(compose_config(["bench=frozenlake"]), {0: run}, episodes=200)
    assert references["actions_per_episode"] == 10  # 5 turns x 2 actions (conf/bench/frozenlake.yaml)
    assert references["best single action repeated"] == 0.25
    random = references["uniformly random valid actions"]
    assert random["n"] == 8 and random["low"] < random["estimate"] < random["high"]
    assert 0.12 < random["estimate"] < 0.28  # 0.194 with 1,000 episodes a level
    record = {"env": "frozenlake", "date": "d", "machine": "m", "seeds": [0], "levels": 8, "overrides": [],
              "validation": [], "references": references, "run_min": {0: 1.0}, "wall_min": {0: 1.0},
              "peak_rss_gib": 1.0, "time_per_step_s": dict.fromkeys(("step_s", "rollout_s", "log_prob_s", "update_s"), 1.0)}
    assert "the best single action repeated 0.250" in bench.markdown(record)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no validation episodes"):
        bench.board_blind_references(compose_config(["bench=frozenlake"]), {0: tmp_path / "empty"})
