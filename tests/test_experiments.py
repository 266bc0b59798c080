"""The experiment tools: the six-job compare script (dry run, bad options, a real CPU run where one job
fails), plot_compare's means and bands on hand-written metrics, evaluate.py, render_episode.py and
eval_gsm8k.py on the tiny model's run dirs (their hf_model export or a DeepSpeed checkpoint)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from agents.config import AgentProxyConfig
from agents.model import build_tiny_model, load_tokenizer
from agents.replay import replay
from algos.training.checkpoint import checkpoint_state_dict, load_weights
from algos.training.layout import hf_model_location
from algos.training.policy import find_weights
from algos.training.schema import register_schema, validate
from algos.training.tracking import METRICS_FILE

REPO = Path(__file__).resolve().parents[1]
COMPARE = REPO / "scripts" / "runs" / "run_drgrpo_compare.sh"
sys.path.insert(0, str(REPO / "scripts"))

import eval_gsm8k  # noqa: E402
import evaluate  # noqa: E402
import plot_compare  # noqa: E402
import render_episode  # noqa: E402

JOBS = ["GRPO-NoFilter", "DrGRPO-NoFilter", "DrGRPO-Soft", "GRPO-Filter0.5", "DrGRPO-Filter0.5",
        "DrGRPO-Soft-Filter0.5"]
ALGOS = ["grpo", "drgrpo", "drgrpo_soft"] * 2
TINY_JOB = [  # overrides after `--` that make each job a one-step tiny-model run with a checkpoint
    "logger=console", "logger.progress_bar=false", "actor_rollout_ref.model.path=tiny-random",
    "actor_rollout_ref.rollout.name=hf", "actor_rollout_ref.rollout.response_length=8",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "es_manager.train.group_size=2",
    "trainer.test_freq=-1", "trainer.save_freq=1", "format_warmup.steps=0",
]

register_schema()


def run_compare(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """The compare script run with this interpreter (it composes the printed settings), unless ``env`` says."""
    return subprocess.run(["bash", str(COMPARE), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TURNRL_PYTHON": sys.executable, **(env or {})}, cwd=REPO)


def dry_run_commands(stdout: str) -> list[str]:
    """The job command lines of a ``--dry-run`` output (after its key settings and ``commands:``)."""
    lines = stdout.strip().splitlines()
    return lines[lines.index("commands:") + 1 :]


def parse_command(line: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(environment assignments, Hydra overrides as a dict, overrides in order) of a dry-run line."""
    words = shlex.split(line)
    assert words[0] == "env"
    train = next(i for i, word in enumerate(words) if word.endswith("scripts/train.py"))
    assignments = dict(word.split("=", 1) for word in words[1 : train - 1])
    overrides = words[train + 1 :]
    return assignments, dict(item.split("=", 1) for item in overrides), overrides


# ----------------------------------------------------------------- compare script
def test_dry_run_prints_the_six_jobs_with_their_filters_and_gpus():
    result = run_compare("--task", "sokoban", "--steps", "7", "--model_size", "0.5B", "--gpus", "2,5",
                         "--env_groups", "6", "--dry-run", "--", "es_manager.train.group_size=16")
    assert result.returncode == 0, result.stderr
    lines = dry_run_commands(result.stdout)
    assert len(lines) == 6
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        for index, (line, job, algo) in enumerate(zip(lines, JOBS, ALGOS, strict=True)):
            assignments, overrides, ordered = parse_command(line)
            gpu = "25"[index % 2]
            assert assignments == {"CUDA_VISIBLE_DEVICES": gpu}
            assert overrides["logger.wandb.group"] == "drgrpo-compare-sokoban"
            assert overrides["algo"] == algo
            assert overrides["actor_rollout_ref.rollout.rollout_filter_value"] == ("3" if index >= 3 else "6")
            assert overrides["trainer.experiment_name"] == f"{job}-seed0"
            assert overrides["hydra.run.dir"].endswith(f"/sokoban/{job}-seed0")
            assert ordered[-1] == "es_manager.train.group_size=16"  # pass-through comes last, so it wins
            config = validate(compose(config_name="config",
                                      overrides=[o for o in ordered if not o.startswith("hydra.")]))
            assert gpu == config.system.CUDA_VISIBLE_DEVICES
            assert config.env.name == "sokoban" and overrides["env"] == "coord_sokoban"  # scale=ragen: RAGEN's env
            assert config.logger.wandb.group == "drgrpo-compare-sokoban"
            assert config.trainer.total_training_steps == 7
            assert config.es_manager.train.env_groups == 6
            assert config.es_manager.train.group_size == 16
            assert config.actor_rollout_ref.model.path == "Qwen/Qwen2.5-0.5B-Instruct"
            assert config.actor_rollout_ref.rollout.rollout_filter_strategy == "top_k"
            assert config.algorithm.soft_advantage_reweight == (algo == "drgrpo_soft")
            assert config.algorithm.norm_adv_by_std_in_grpo == (algo == "grpo")


def test_dry_run_on_cpu_lists_every_seed_with_no_gpu_visible():
    result = run_compare("--task", "bandit", "--gpus", "cpu", "--seeds", "0,1", "--model_size", "135M", "--dry-run")
    assert result.returncode == 0, result.stderr
    parsed = [parse_command(line) for line in dry_run_commands(result.stdout)]
    assert [o["trainer.experiment_name"] for _, o, _ in parsed] == [f"{j}-seed{s}" for s in (0, 1) for j in JOBS]
    assert [o["seed"] for _, o, _ in parsed] == ["0"] * 6 + ["1"] * 6
    assert all(a["CUDA_VISIBLE_DEVICES"] == "" and o["system.CUDA_VISIBLE_DEVICES"] == "" for a, o, _ in parsed)
    assert all(o["model"] == "smollm2_135m" and o["trainer.total_training_steps"] == "200" for _, o, _ in parsed)
    assert all(o["scale"] == "cpu" and o["env"] == "bandit" for _, o, _ in parsed)
    assert [o["actor_rollout_ref.rollout.rollout_filter_value"] for _, o, _ in parsed[:6]] == ["8"] * 3 + ["4"] * 3
    # the six jobs of a seed share its training levels (paired); the seeds' levels differ (independent runs)
    assert [o["es_manager.train_seed_start"] for _, o, _ in parsed] == ["10000"] * 6 + ["110000"] * 6


@pytest.mark.parametrize("args", [
    [],
    ["--task", "chess"],
    ["--task"],
    ["--task", "bandit", "--steps", "0"],
    ["--task", "bandit", "--model_size", "13B"],
    ["--task", "bandit", "--scale", "tpu"],
    ["--task", "bandit", "--env_groups", "5"],
    ["--task", "bandit", "--gpus", "a,b"],
    ["--task", "bandit", "--seeds", "0;1"],
    ["--task", "bandit", "--frobnicate"],
    ["--task", "bandit", "--env_config", "chess"],
    ["--task", "bandit", "--gpus", "cpu", "--cpu_jobs", "0"],
    ["--task", "bandit", "--gpus", "0,1", "--cpu_jobs", "2"],
])
def test_bad_options_print_usage_and_exit_2(args):
    result = run_compare(*args, "--dry-run")
    assert result.returncode == 2
    assert "error:" in result.stderr and "Usage:" in result.stderr
    assert result.stdout == ""


def test_gpu_jobs_queue_one_per_gpu_and_a_failure_does_not_stop_the_others(tmp_path):
    """Six jobs on GPUs 0,1 with a fake trainer (TURNRL_PYTHON) that logs start/end and sleeps: at most
    one job per GPU at a time, every job runs with its GPU in both CUDA_VISIBLE_DEVICES spellings."""
    log = tmp_path / "events.log"
    fake = tmp_path / "fake-python.sh"
    fake.write_text(
        "#!/bin/bash\n"
        'case "$1" in *config_summary.py) exit 0 ;; esac\n'  # the settings printed before the jobs
        'name=$(printf "%s\\n" "$@" | sed -n "s/^trainer.experiment_name=//p")\n'
        'flag=$(printf "%s\\n" "$@" | sed -n "s/^system.CUDA_VISIBLE_DEVICES=//p")\n'
        f'echo "start $name $CUDA_VISIBLE_DEVICES $flag" >> {log}\n'
        "sleep 0.5\n"
        f'echo "end $name $CUDA_VISIBLE_DEVICES" >> {log}\n'
        '[[ "$name" == GRPO-Filter0.5-seed0 ]] && exit 4\n'
        "exit 0\n")
    fake.chmod(0o755)
    result = run_compare("--task", "frozenlake", "--gpus", "0,1", "--steps", "1",
                         env={"TURNRL_PYTHON": str(fake), "TURNRL_COMPARE_DIR": str(tmp_path / "runs")})
    assert result.returncode == 1
    assert "1 of 6 jobs failed: GRPO-Filter0.5-seed0" in result.stderr
    events = [line.split() for line in log.read_text().splitlines()]
    starts = [event for event in events if event[0] == "start"]
    assert sorted(event[1] for event in starts) == sorted(f"{job}-seed0" for job in JOBS)
    assert all(event[2] == event[3] and event[2] in ("0", "1") for event in starts)
    busy: dict[str, str] = {}
    for kind, name, gpu, *_ in events:
        if kind == "start":
            assert gpu not in busy, f"{name} started on GPU {gpu} while {busy.get(gpu)} ran there"
            busy[gpu] = name
        else:
            assert busy.pop(gpu) == name
    assert max(sum(1 for e in events[: i + 1] if e[0] == "start") - sum(1 for e in events[: i + 1] if e[0] == "end")
               for i in range(len(events))) == 2


def test_cpu_jobs_run_side_by_side_sharing_the_cores(tmp_path):
    """`--gpus cpu --cpu_jobs 2`: two jobs at a time, none with a GPU, each given half the cores as its
    OMP/MKL threads (when OMP_NUM_THREADS is unset), on the env config that --env_config names."""
    log = tmp_path / "events.log"
    fake = tmp_path / "fake-python.sh"
    fake.write_text(
        "#!/bin/bash\n"
        'case "$1" in *config_summary.py) exit 0 ;; esac\n'
        'name=$(printf "%s\\n" "$@" | sed -n "s/^trainer.experiment_name=//p")\n'
        'env_config=$(printf "%s\\n" "$@" | sed -n "s/^env=//p")\n'
        f'echo "start $name $OMP_NUM_THREADS $MKL_NUM_THREADS x$CUDA_VISIBLE_DEVICES $env_config" >> {log}\n'
        "sleep 0.3\n"
        f'echo "end $name" >> {log}\n')
    fake.chmod(0o755)
    environment = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    result = subprocess.run(
        ["bash", str(COMPARE), "--task", "frozenlake", "--gpus", "cpu", "--cpu_jobs", "2", "--steps", "1",
         "--env_config", "coord_frozenlake"], capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**environment, "TURNRL_PYTHON": str(fake), "TURNRL_COMPARE_DIR": str(tmp_path / "runs")})
    assert result.returncode == 0, result.stderr
    events = [line.split() for line in log.read_text().splitlines()]
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    starts = [event for event in events if event[0] == "start"]
    assert sorted(event[1] for event in starts) == sorted(f"{job}-seed0" for job in JOBS)
    assert all(event[2:] == [threads, threads, "x", "coord_frozenlake"] for event in starts)
    running = [sum(1 for e in events[: i + 1] if e[0] == "start") - sum(1 for e in events[: i + 1] if e[0] == "end")
               for i in range(len(events))]
    assert max(running) == 2


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    """A real `--gpus cpu` run: 1 step, bandit, 1 seed, tiny model; DrGRPO-NoFilter is made to fail by an
    interpreter wrapper (TURNRL_PYTHON) that exits 3 for it and runs the real Python for the others."""
    root = tmp_path_factory.mktemp("compare")
    wrapper = root / "python-failing-one-job.sh"
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *DrGRPO-NoFilter-seed0*) echo injected >&2; exit 3;; esac\n'
                       f'exec {shlex.quote(sys.executable)} "$@"\n')
    wrapper.chmod(0o755)
    rendezvous = {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"}
    environment = {k: v for k, v in os.environ.items() if k not in rendezvous}
    result = subprocess.run(
        ["bash", str(COMPARE), "--task", "bandit", "--steps", "1", "--model_size", "135M", "--gpus", "cpu",
         "--seeds", "0", "--env_groups", "2", "--", *TINY_JOB],
        capture_output=True, text=True, timeout=400, cwd=REPO,
        env={**environment, "TURNRL_PYTHON": str(wrapper), "TURNRL_COMPARE_DIR": str(root / "runs")},
    )
    return result, root / "runs" / "bandit"


def test_a_failing_job_is_reported_and_the_others_finish(compare_run):
    result, runs = compare_run
    assert result.returncode == 1
    assert "[FAIL]  DrGRPO-NoFilter-seed0  exit 3" in result.stderr
    assert "1 of 6 jobs failed: DrGRPO-NoFilter-seed0" in result.stderr
    assert "injected" in (runs / "DrGRPO-NoFilter-seed0" / "job.log").read_text()
    for job in JOBS:
        if job == "DrGRPO-NoFilter":
            assert not (runs / f"{job}-seed0" / METRICS_FILE).exists()
            continue
        assert f"[done]  {job}-seed0" in result.stdout
        rows = [json.loads(line) for line in (runs / f"{job}-seed0" / METRICS_FILE).read_text().splitlines()]
        assert [row["step"] for row in rows] == [1]
        # env_groups 2: NoFilter keeps top_k 2 of 2 groups, Filter0.5 keeps 1 of 2
        assert rows[0]["rollout/filter_kept_ratio"] == (0.5 if "Filter0.5" in job else 1.0)
        assert (runs / f"{job}-seed0" / "checkpoints" / "global_step_1" / "trainer_state.pt").is_file()
        assert (runs / f"{job}-seed0" / "hf_model" / "config.json").is_file()


# ----------------------------------------------------------------- plot_compare
def write_run(run_dir: Path, rows: list[dict]) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"step": 9, "rew')


def test_plot_compare_means_bands_and_final_table(tmp_path):
    write_run(tmp_path / "A-seed0", [
        {"step": 1, "rollout/success_rate": 0.0, "reward": 0.0},
        {"step": 2, "rollout/success_rate": 0.5, "reward": 1.0},
        {"step": 3, "rollout/success_rate": 1.0, "reward": 2.0, "val/success_rate": 0.75},
    ])
    write_run(tmp_path / "A-seed1", [  # a shorter run: step 3's mean is seed 0 alone
        {"step": 1, "rollout/success_rate": 0.5, "reward": 1.0},
        {"step": 2, "rollout/success_rate": 0.5, "reward": 3.0},
    ])
    write_run(tmp_path / "B-seed0", [{"step": s, "rollout/success_rate": 0.25, "reward": -1.0} for s in (1, 2, 3)])
    (tmp_path / "not-a-run").mkdir()
    summary = plot_compare.compare(sorted(tmp_path.iterdir()), tmp_path / "out" / "cmp", last=2)

    assert list(summary) == ["A", "B"]
    success = summary["A"]["curves"]["rollout/success_rate"]
    assert success["step"] == [1, 2, 3]
    assert success["mean"] == [0.25, 0.5, 1.0]
    assert success["std"] == [0.25, 0.0, 0.0]
    reward = summary["A"]["curves"]["reward"]
    assert reward["mean"] == [0.5, 2.0, 2.0] and reward["std"] == [0.5, 1.0, 0.0]
    # final = each seed's mean over its last 2 steps: success 0.75 and 0.5, reward 1.5 and 2.0
    assert summary["A"]["final"]["rollout/success_rate"] == [0.75, 0.5]
    assert summary["A"]["final"]["reward"] == [1.5, 2.0]
    assert summary["A"]["final"]["val/success_rate"] == [0.75]
    # the 95% CI of a mean of two seeds: resampled means are a, (a + b) / 2, b with p 1/4, 1/2, 1/4
    assert success["ci_low"] == [0.0, 0.5, 1.0] and success["ci_high"] == [0.5, 0.5, 1.0]
    table = (tmp_path / "out" / "cmp.md").read_text()
    assert ("| A | 2 | 3 | 0.625 [0.500, 0.750] (n=2) | 1.750 [1.500, 2.000] (n=2) | 0.750 [0.750, 0.750] (n=1) |"
            in table)
    assert "| B | 1 | 3 | 0.250 [0.250, 0.250] (n=1) | -1.000 [-1.000, -1.000] (n=1) | – |" in table
    # B has no val/success_rate: rliable's IQM is of the train success rate; A's seeds (0.75, 0.5) beat B's 0.25
    across = json.loads((tmp_path / "out" / "cmp.json").read_text())["across_runs"]
    assert across["metric"] == "rollout/success_rate"
    assert across["probability_of_improvement"]["A"]["B"]["estimate"] == 1.0
    assert across["methods"]["B"]["iqm"]["estimate"] == 0.25
    with Image.open(tmp_path / "out" / "cmp.png") as image:
        assert image.size[0] > 600 and image.size[1] > 300


def write_validation(run_dir: Path, by_step: dict[int, list[int]]) -> None:
    rows = [{"step": step, "level": 100 + level, "success": bool(hit), "reward": float(hit)}
            for step, hits in by_step.items() for level, hit in enumerate(hits)]
    (run_dir / "validation.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_plot_compare_level_table_bootstraps_seeds_then_levels(tmp_path):
    """Two labels x 2 seeds x 4 held-out levels, validated at steps 0 and 3: A solves every level at step
    3, B none, so A's interval is [1, 1] and B's [0, 0]; A's step 0 is 3 of 8 = 0.375, its change +0.625."""
    for name, first, last in (("A-seed0", [1, 0, 0, 0], [1] * 4), ("A-seed1", [1, 1, 0, 0], [1] * 4),
                              ("B-seed0", [1, 0, 0, 0], [0] * 4), ("B-seed1", [0, 0, 0, 0], [0] * 4)):
        write_run(tmp_path / name, [{"step": 3, "rollout/success_rate": 0.5, "reward": 0.5, "val/success_rate": 0.5}])
        write_validation(tmp_path / name, {0: first, 3: last})
    plot_compare.compare(sorted(tmp_path.iterdir()), tmp_path / "out" / "cmp", last=1)
    levels = json.loads((tmp_path / "out" / "cmp.json").read_text())["validation_levels"]
    a, b = levels["A"], levels["B"]
    assert a["3"] == {"estimate": 1.0, "low": 1.0, "high": 1.0, "n": 8, "confidence": 0.95}
    assert (b["3"]["estimate"], b["3"]["low"], b["3"]["high"]) == (0.0, 0.0, 0.0)
    # A resample of A's step 0 is all misses with p = 1/4 (3/4)^8 + 1/2 (3/4)^4 (1/2)^4 + 1/4 (1/2)^8 = 0.036
    # > 2.5%, so the lower bound is exactly 0
    assert a["0"]["estimate"] == 0.375 and a["0"]["low"] == 0.0 and 0.375 < a["0"]["high"] <= 1.0
    assert b["0"]["estimate"] == 0.125 and b["change"]["estimate"] == -0.125
    # A's change is 1 - step 0 per level: 0 on the solved levels, 1 elsewhere; the mean 5 of 8 = 0.625
    assert a["change"]["estimate"] == 0.625 and a["change"]["low"] < 0.625 < a["change"]["high"] == 1.0
    table = (tmp_path / "out" / "cmp.md").read_text()
    assert "| A | 2x4 | 0 | 0.375 [0.000, " in table and "| 3 | 1.000 [1.000, 1.000] | 0.625 [" in table


def test_plot_compare_without_runs_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="metrics.jsonl"):
        plot_compare.compare([tmp_path], tmp_path / "out")
    with pytest.raises(SystemExit):
        plot_compare.main([str(tmp_path / "nothing-*"), "--out", str(tmp_path / "out")])


# ----------------------------------------------------------------- evaluate / render
def test_load_weights_copies_every_tensor_and_rejects_a_mismatch():
    tokenizer = load_tokenizer(None)
    source, target = build_tiny_model(tokenizer, seed=0), build_tiny_model(tokenizer, seed=1)
    state = {k: v for k, v in source.state_dict().items() if k != "lm_head.weight"}  # tied to the embeddings
    load_weights(target, state)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values(),
                                                 strict=True))
    with pytest.raises(ValueError, match="unexpected"):
        load_weights(target, {**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="missing"):
        load_weights(target, {k: v for k, v in state.items() if "layers.1." not in k})


def test_evaluate_a_checkpoint_greedy_and_sampled(compare_run, tmp_path):
    _, runs = compare_run
    run_dir = runs / "DrGRPO-Soft-seed0"
    out = tmp_path / "eval" / "soft"
    evaluate.main(["--checkpoint", str(run_dir), "--num-seeds", "3", "--samples", "2", "--out", str(out)])
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["policy"] == "DrGRPO-Soft-seed0 @ hf_model (step 1)"  # the export: same step as the checkpoint
    # the export holds merged weights: its folder is the model, with no adapters on top
    assert report["overrides"][-2:] == [f"actor_rollout_ref.model.path='{run_dir / 'hf_model'}'",
                                        "actor_rollout_ref.model.lora_rank=0"]
    results = {r["mode"]: r for r in report["results"]}
    assert (results["greedy"]["episodes"], results["sampled"]["episodes"]) == (3, 6)
    for r in results.values():
        assert r["env"] == "bandit" and r["first_seed"] == 123 and r["mean_turns"] == 1.0
        # a random 2-layer model never writes a valid answer: no success, -0.1 per penalised turn
        assert r["success_rate"] == 0.0
        assert r["mean_reward"] == pytest.approx(-0.1 * r["format_error_rate"], abs=1e-6)
    assert out.with_suffix(".md").read_text().count("| bandit |") == 2
    # nothing succeeds: every bootstrap interval over the 3 levels is [0, 0]; one JSON row per episode
    assert results["greedy"]["success_rate_ci"] == {"estimate": 0.0, "low": 0.0, "high": 0.0, "n": 3,
                                                    "confidence": 0.95}
    assert [(e["mode"], e["seed"], e["member"]) for e in report["episodes"]][:5] == [
        ("greedy", 123, 0), ("greedy", 124, 0), ("greedy", 125, 0), ("sampled", 123, 0), ("sampled", 123, 1)]
    assert [e["reward"] for e in report["episodes"] if e["mode"] == "greedy"] == pytest.approx(
        [-0.1 * (not e["success"]) * e["num_turns"] for e in report["episodes"] if e["mode"] == "greedy"])
    # the same weights loaded from the DeepSpeed checkpoint play the same greedy episodes
    step_dir = run_dir / "checkpoints" / "global_step_1"
    evaluate.main(["--checkpoint", str(step_dir), "--num-seeds", "3", "--modes", "greedy", "--out", str(out)])
    from_checkpoint = json.loads(out.with_suffix(".json").read_text())
    assert from_checkpoint["policy"] == "DrGRPO-Soft-seed0 @ global_step_1"
    assert from_checkpoint["results"][0] == results["greedy"]
    assert "model.embed_tokens.weight" in checkpoint_state_dict(step_dir)


def test_a_newer_checkpoint_wins_over_an_older_export(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "hf_model").mkdir()
    (run_dir / "hf_model" / "turnrl_export.json").write_text('{"step": 1}')
    for step in (1, 2):
        (run_dir / "checkpoints" / f"global_step_{step}").mkdir(parents=True)
        (run_dir / "checkpoints" / f"global_step_{step}" / "trainer_state.pt").write_bytes(b"")
    assert find_weights(run_dir) == (run_dir, run_dir / "checkpoints" / "global_step_2")
    (run_dir / "hf_model" / "turnrl_export.json").write_text('{"step": 2}')
    assert find_weights(run_dir) == (run_dir, run_dir / "hf_model")
    assert find_weights(run_dir / "checkpoints" / "global_step_1")[1].name == "global_step_1"
    with pytest.raises(ValueError, match="no hf_model export and no complete global_step"):
        find_weights(tmp_path)


def test_eval_gsm8k_takes_a_run_dir_and_refuses_a_bare_checkpoint(compare_run, tmp_path, capsys):
    _, runs = compare_run
    run_dir = runs / "GRPO-NoFilter-seed0"
    assert hf_model_location(str(run_dir)) == str(run_dir / "hf_model")
    assert hf_model_location(str(run_dir / "hf_model")) == str(run_dir / "hf_model")
    assert hf_model_location("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(ValueError, match="without an hf_model export"):
        hf_model_location(str(run_dir / "checkpoints" / "global_step_1"))
    out = tmp_path / "gsm8k.json"
    eval_gsm8k.main(["--model", str(run_dir), "--source", "generated", "--limit", "2", "--max-new-tokens", "4",
                     "--device", "cpu", "--output", str(out)])
    report = json.loads(out.read_text())
    assert report["model"] == str(run_dir / "hf_model") and report["num_problems"] == 2
    assert report["accuracy"] == 0.0  # 4 random tokens never hold the answer tag


def test_render_episode_writes_gif_png_html(compare_run, tmp_path):
    _, runs = compare_run
    out = tmp_path / "render"
    render_episode.main(["--checkpoint", str(runs / "GRPO-NoFilter-seed0"), "--seed", "5", "--out", str(out)])
    record = json.loads((out / "episode.json").read_text())
    assert (record["env"], record["seed"], record["num_turns"]) == ("bandit", 5, 1)
    assert record["num_frames"] == 1 + sum(turn["actions_executed"] for turn in record["turns"])
    with Image.open(out / "episode.gif") as gif:
        assert gif.n_frames == record["num_frames"]
    page = (out / "episode.html").read_text()
    assert page.count("<h3>Turn ") == 1
    assert page.count("data:image/png;base64,") == 2 + 4  # before/after + the legend's four bandit tiles
    generated = [token for token in record["turns"][0]["tokens"] if token["loss_mask"]]
    assert len(generated) >= 1 and all(token["logprob"] < 0 for token in generated)
    assert page.count('class="tok gen"') == len(generated) + 1  # + the legend's sample


def test_replay_follows_the_rollout_rules_and_reproduces_the_frames():
    """Sokoban level 7: turn 1 names an unknown action (format error), turn 2 asks for 4 moves but the
    trajectory budget of 3 leaves 3; the frames are the board after each executed move."""
    messages = [{"role": "system", "content": "s"},
                {"role": "user", "content": "obs 1"},
                {"role": "assistant", "content": "<think>go</think><answer>Up || Jump</answer>"},
                {"role": "user", "content": "obs 2"},
                {"role": "assistant", "content": "<think>more</think><answer>Left || Down || Right || Up</answer>"}]
    episode = replay("sokoban", {}, 7, 0, messages, AgentProxyConfig(max_actions_per_turn=5), max_actions_per_traj=4,
                     format_penalty=-0.1, render=True)
    first, turns, success = episode.first_frame, episode.turns, episode.success
    assert [t.actions for t in turns] == [["Up"], ["Left", "Down", "Right", "Up"]]
    assert [t.format_ok for t in turns] == [False, True]
    assert [len(t.frames) for t in turns] == [1, 3]
    assert [t.think for t in turns] == ["go", "more"]
    import envs

    env = envs.make("sokoban", render_mode="rgb_array")
    env.reset(seed=7, options={"member": 0})
    assert np.array_equal(first, env.render())
    expected, total = [], 0.0
    for action in (0, 2, 1, 3):  # Up, Left, Down, Right
        _, reward, *_ = env.step(action)
        total += reward
        expected.append(env.render())
    assert all(np.array_equal(a, b) for a, b in zip([f for t in turns for f in t.frames], expected, strict=True))
    assert sum(t.env_reward for t in turns) == pytest.approx(total)
    assert [t.reward - t.env_reward for t in turns] == pytest.approx([-0.1, 0.0])  # the format penalty of turn 1
    assert success is False
