"""A run config composed from ``conf/`` as ``scripts/train.py`` composes it, for tools that run outside Hydra's
command line (evaluation, benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir

from algos.training.schema import TurnRLConfig, register_schema, validate

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_config(overrides: Sequence[str]) -> TurnRLConfig:
    """The validated config of ``conf/config.yaml`` with Hydra ``overrides`` (the last value of a key wins)."""
    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return validate(compose(config_name="config", overrides=list(overrides)))
