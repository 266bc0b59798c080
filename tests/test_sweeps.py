"""Every wandb sweep in conf/sweeps expands (cartesian product of its parameters, formatted by wandb's
own agent code) into command lines whose Hydra overrides compose and pass the schema validation, and
its `description` holds the Hydra multirun command that runs exactly the same grid locally."""

from __future__ import annotations

import itertools
import math
import shlex
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from algos.training.schema import register_schema, validate

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "conf" / "sweeps").glob("*.yaml"))
AGENT_MACROS = {"env": ["/usr/bin/env"], "interpreter": ["python"]}  # what `wandb agent` substitutes

register_schema()


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def grid(sweep: dict) -> list[dict[str, object]]:
    """Every run of a grid sweep: one {parameter: value} per point of the cartesian product."""
    names = list(sweep["parameters"])
    choices = [spec["values"] if "values" in spec else [spec["value"]] for spec in sweep["parameters"].values()]
    return [dict(zip(names, point, strict=True)) for point in itertools.product(*choices)]


def agent_command(sweep: dict, run: dict[str, object]) -> list[str]:
    """The command line `wandb agent` runs for `run` (its macro substitution, wandb's arg formatting)."""
    variables = create_sweep_command_args({"args": {name: {"value": value} for name, value in run.items()}})
    variables |= AGENT_MACROS | {"program": [sweep["program"]]}
    command = []
    for item in sweep["command"]:
        command += variables[item[2:-1]] if item.startswith("${") else [item]
    return command


def hydra_overrides(command: list[str], program: str) -> list[str]:
    """The arguments after the program: what Hydra receives."""
    return command[command.index(program) + 1 :]


def multirun_grid(description: str) -> set[tuple[str, ...]]:
    """The runs `python scripts/train.py -m ...` starts, expanded by Hydra's own basic sweeper."""
    words = shlex.split(description)
    assert words[:3] == ["python", "scripts/train.py", "-m"]
    overrides = OverridesParser.create().parse_overrides(words[3:])
    batches = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    return {tuple(sorted(job)) for batch in batches for job in batch}


@pytest.mark.parametrize("path", SWEEPS, ids=[path.stem for path in SWEEPS])
def test_every_sweep_run_is_a_valid_hydra_command(path):
    sweep = load(path)
    assert sweep["method"] == "grid"
    assert (REPO / sweep["program"]).is_file()
    assert "${args_no_hyphens}" in sweep["command"]
    runs = grid(sweep)
    sizes = [len(spec.get("values", [None])) for spec in sweep["parameters"].values()]
    assert len(runs) == math.prod(sizes)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        for run in runs:
            command = agent_command(sweep, run)
            assert command[:3] == ["/usr/bin/env", "python", sweep["program"]]
            overrides = hydra_overrides(command, sweep["program"])
            config = validate(compose(config_name="config", overrides=overrides))
            assert config.seed == run["seed"]
            assert config.env.name == run["env"]
            assert config.logger.wandb.mode == "online"


def test_drgrpo_grid_covers_the_ablation():
    sweep = load(REPO / "conf" / "sweeps" / "drgrpo_grid.yaml")
    runs = grid(sweep)
    assert len(runs) == 3 * 2 * 3
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        soft_filtered = next(run for run in runs if run["algo"] == "drgrpo_soft"
                             and run["actor_rollout_ref.rollout.rollout_filter_value"] == 4)
        config = validate(compose(config_name="config",
                                  overrides=hydra_overrides(agent_command(sweep, soft_filtered), sweep["program"])))
    assert config.algorithm.soft_advantage_reweight is True
    assert config.algorithm.norm_adv_by_std_in_grpo is False
    assert config.actor_rollout_ref.actor.loss_agg_mode == "seq-mean-token-sum"
    assert config.actor_rollout_ref.rollout.rollout_filter_value == 4
    assert config.es_manager.train.env_groups == 8


def test_sr_grpo_sweep_sets_tau():
    sweep = load(REPO / "conf" / "sweeps" / "sr_grpo_tau.yaml")
    runs = grid(sweep)
    assert sorted({run["algorithm.tau"] for run in runs}) == [0.1, 0.3, 0.5, 1.0]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        taus = {validate(compose(config_name="config",
                                 overrides=hydra_overrides(agent_command(sweep, run), sweep["program"])))
                .algorithm.tau for run in runs}
    assert taus == {0.1, 0.3, 0.5, 1.0}


@pytest.mark.parametrize("path", SWEEPS, ids=[path.stem for path in SWEEPS])
def test_description_is_the_same_grid_as_a_hydra_multirun(path):
    sweep = load(path)
    wandb_runs = {tuple(sorted(hydra_overrides(agent_command(sweep, run), sweep["program"])))
                  for run in grid(sweep)}
    wandb_runs = {tuple(item for item in run if item != "logger.wandb.mode=online") for run in wandb_runs}
    assert multirun_grid(sweep["description"]) == wandb_runs
