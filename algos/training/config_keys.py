"""Which keys a run config may hold: the schema's, nothing else, with "did you mean" for the rest.

The schema is registered as a Hydra structured config, which rejects an unknown key on a plain override
but lets ``+key=value`` / ``++key=value`` add one (Hydra opens the node to add it). So the keys are
checked twice, both times against :func:`schema_keys` (the dataclasses' fields): the override strings
before Hydra composes (:func:`check_override_keys`), and the composed config
(:func:`check_composed_keys`, which also catches a key a yaml file adds). Only the open dicts
(:data:`OPEN_DICTS`, dict-typed fields such as ``env.kwargs``, which the env checks) take new keys.
"""

from __future__ import annotations

import difflib
from functools import cache

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from algos.training.config_help import leaf_keys
from algos.training.schema import TurnRLConfig


@cache
def schema_keys() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """``(leaves, nodes, open dicts)``: every dotted leaf key, every node above one, the dict-typed leaves."""
    rows = leaf_keys(TurnRLConfig)
    leaves = frozenset(key for key, *_ in rows)
    nodes = frozenset(key.rsplit(".", depth)[0] for key in leaves for depth in range(1, key.count(".") + 1))
    open_dicts = frozenset(key for key, kind, *_ in rows if kind.startswith("dict"))
    return leaves, nodes, open_dicts


OPEN_DICTS = schema_keys()[2]
"""Dict-typed keys that accept any sub-key (``env.kwargs``: the env's constructor checks them)."""


def is_known(key: str) -> bool:
    """A leaf or node of the schema, or a key under one of its open dicts."""
    leaves, nodes, open_dicts = schema_keys()
    return key in leaves or key in nodes or any(key.startswith(name + ".") for name in open_dicts)


def unknown_key(key: str) -> ValueError:
    """The error for a key the schema lacks, with up to three close schema keys as suggestions."""
    matches = difflib.get_close_matches(key, sorted(schema_keys()[0]), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(matches)}?" if matches else ""
    return ValueError(f"unknown key {key!r}{hint} (`python scripts/train.py --help` lists every key; only "
                      f"{', '.join(sorted(OPEN_DICTS))} take new keys, also with + or ++)")


def check_override_keys(overrides: list[str], groups: set[str]) -> None:
    """Raise :func:`unknown_key` for the first override (``key=v``, ``+key=v``, ``++key=v``, ``~key``)
    whose key is not in the schema; config group choices (``env=bandit``) and ``hydra.*`` pass."""
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.key_or_group
        if key.split(".")[0].split("/")[0] == "hydra" or key in groups or "/" in key or override.package:
            continue
        if not is_known(key):
            raise unknown_key(key)


def check_composed_keys(cfg: DictConfig, prefix: str = "") -> None:
    """Raise :func:`unknown_key` for the first key of the composed config that the schema lacks."""
    leaves, nodes, open_dicts = schema_keys()
    for name in cfg:
        key = prefix + str(name)
        if key in open_dicts or key in leaves:
            continue
        child = cfg._get_node(name)
        if key not in nodes:
            raise unknown_key(key)
        if isinstance(child, DictConfig):
            check_composed_keys(child, key + ".")
