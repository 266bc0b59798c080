"""Names of the runs of a Hydra multirun, so that ``scripts/plot_compare.py`` reads seeds of one method
without extra flags.

A multirun job writes ``<sweep dir>/<label>-seed<seed>`` (``hydra.sweep.subdir`` in ``conf/config.yaml``)
where ``label`` is the algo choice followed by ``-<key>=<value>`` for every other swept key (last
component of its path), e.g. ``drgrpo_soft-rollout_filter_value=4-seed1``: seeds of one method share
the label, and a grid that sweeps more than the algo never writes two jobs into one dir. Its wandb run
is named ``<env>-<label>-seed<seed>`` and grouped as ``<env>-<label>`` (unless ``logger.wandb.group`` is set).
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import OmegaConf

RESOLVER = "turnrl_label"
_SWEEP_FUNCTIONS = ("range(", "choice(", "glob(", "interval(", "tag(")
_NOT_IN_LABEL = {"algo", "seed"}


def swept_keys(arguments: Sequence[str]) -> set[str]:
    """Keys a command line sweeps: ``key=a,b`` or ``key=range(...)`` / ``choice(...)`` / ``glob(...)``."""
    keys = set()
    for argument in arguments:
        key, sep, value = argument.partition("=")
        if sep and not key.startswith("hydra.") and ("," in value or value.startswith(_SWEEP_FUNCTIONS)):
            keys.add(key.lstrip("+~"))
    return keys


def method_label(algo: str, task_overrides: Sequence[str], swept: set[str]) -> str:
    """``algo`` plus ``-<last key part>=<value>`` for each swept key of this job other than algo and seed."""
    parts = [algo]
    for override in task_overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key in swept and key not in _NOT_IN_LABEL:
            parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    return "-".join(parts)


def register_label_resolver(arguments: Sequence[str]) -> None:
    """``${turnrl_label:<algo>,<task overrides>}`` for ``hydra.sweep.subdir``, with this command line's swept keys."""
    swept = swept_keys(arguments)
    OmegaConf.register_new_resolver(RESOLVER, lambda algo, task: method_label(algo, list(task), swept), replace=True)
