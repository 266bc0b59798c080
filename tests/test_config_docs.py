"""One config source: every key is documented in its dataclass, ``train.py --help`` prints each with its
type and default, and the yaml files set no second default for a key (only the groups' own choices)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from algos.training.config_help import field_docs, leaf_keys
from algos.training.schema import TurnRLConfig, register_schema

REPO = Path(__file__).resolve().parents[1]
register_schema()


def test_every_leaf_key_has_a_doc():
    undocumented = [key for key, _, _, doc in leaf_keys(TurnRLConfig) if not doc]
    assert undocumented == []
    assert len(leaf_keys(TurnRLConfig)) > 60


def test_field_docs_are_read_from_the_class_body():
    @dataclasses.dataclass
    class Example:
        alpha: int = 1
        """The first."""
        beta: str = "b"

    assert field_docs(Example) == {"alpha": "The first."}


def test_help_lists_every_key_with_type_default_and_doc():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "--help"], capture_output=True,
                            text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    for key, kind, default, _ in leaf_keys(TurnRLConfig):
        assert f"  {key}: {kind} = {default!r}" in result.stdout, key
    assert "      AdamW learning rate, > 0" in result.stdout  # the doc under actor_rollout_ref.actor.lr
    assert "Setting accelerator" not in result.stdout + result.stderr  # --help imports no DeepSpeed


def flat(node, prefix: str = "") -> dict[str, object]:
    if dataclasses.is_dataclass(node):
        return {k: v for f in dataclasses.fields(node) for k, v in flat(getattr(node, f.name), prefix + f.name + ".").items()}
    return {prefix[:-1]: node}


def test_the_default_run_differs_from_the_dataclass_defaults_only_where_a_group_chooses():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        composed = OmegaConf.to_object(compose(config_name="config"))
    differing = {key for key, value in flat(composed).items() if flat(TurnRLConfig())[key] != value}
    assert differing == {
        "env.kwargs",  # env=sokoban: the room size, boxes and step budget
        "actor_rollout_ref.actor.loss_agg_mode",  # algo=grpo: GRPO's seq-mean-token-mean
        "format_warmup.steps",  # model=smollm2_135m: the 135M model needs the format warm-up
    }
