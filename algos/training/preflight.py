"""Everything checked before any model loads, and before Hydra creates a run dir.

:func:`check_config` is the whole check of one composed config: its keys (``config_keys``), the schema's
values (``schema.validate``), then what needs the file system or the tokenizer (:func:`check_before_load`).
:func:`check_command_line` runs it on every run a ``scripts/train.py`` command line asks for (each
combination of a ``-m`` sweep), composing with Hydra's compose API before ``hydra.main`` runs, so a
config that fails leaves no run dir behind.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import warnings
from functools import cache
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

import envs
from agents.model import load_tokenizer, looks_like_local_path
from agents.prompts import ChatTokenizer, prefill_text
from agents.rollout import opening
from algos import compute_advantages
from algos.training.config_keys import check_composed_keys, check_override_keys
from algos.training.schema import (
    TINY_RANDOM_MODEL,
    TurnRLConfig,
    advantage_options,
    register_schema,
    validate,
)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
MULTIRUN_FLAGS = ("-m", "--multirun")
_announced: set[str] = set()


def loud_warning(message: str) -> None:
    """Print ``message`` framed on stderr, once per process."""
    if message not in _announced:
        _announced.add(message)
        print(f"\n{'!' * 100}\nWARNING: {message}\n{'!' * 100}\n", file=sys.stderr)


def check_model_path(path: str | None) -> None:
    """``actor_rollout_ref.model.path``: a local path must be a model folder (``config.json``); a hub
    name is checked only offline (``HF_HUB_OFFLINE=1``: it must be in the Hugging Face cache)."""
    key = "actor_rollout_ref.model.path"
    if path is None or path == TINY_RANDOM_MODEL:
        return
    folder = Path(path).expanduser()
    if folder.exists() and not (folder / "config.json").is_file():
        raise ValueError(f"{key}={path!r} is invalid: {folder} has no config.json (not a Hugging Face model folder)")
    if folder.exists():
        return
    if looks_like_local_path(path):
        raise ValueError(f"{key}={path!r} is invalid: no such folder")
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(path, "config.json"), str):
        raise ValueError(f"{key}={path!r} is invalid: not a local folder, and HF_HUB_OFFLINE=1 with the model "
                         "not in the Hugging Face cache (download it, or give its folder)")


def check_checkpoint_dir(path: str | None) -> None:
    """``trainer.default_local_dir``: a folder, or a path whose nearest existing parent is a folder we
    can write in (tried with a temporary file, so it holds for root and read-only mounts too)."""
    if path is None:
        return  # the run dir, which Hydra creates
    target = Path(path).expanduser()
    existing = next(parent for parent in (target, *target.parents) if parent.exists())
    problem = None if existing.is_dir() else f"{existing} is not a folder"
    if problem is None:
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as error:
            problem = f"cannot write in {existing}: {error.strerror}"
    if problem:
        raise ValueError(f"trainer.default_local_dir={path!r} is invalid: {problem}")


@cache
def _tokenizer(path: str | None) -> PreTrainedTokenizerBase | None:
    try:
        return load_tokenizer(None if path == TINY_RANDOM_MODEL else path)
    except OSError:
        return None  # a hub model not available here: its load reports it


def check_prompt_fits(config: TurnRLConfig) -> None:
    """``actor_rollout_ref.rollout.max_model_len`` against the first training level's prompt: refuse it
    when the prompt alone fills it (every episode ends before its first reply: nothing trains), warn
    when the first reply is cut below ``response_length``. Skipped when the tokenizer is unavailable."""
    tokenizer = _tokenizer(config.actor_rollout_ref.model.path)
    if tokenizer is None:
        return
    rollout, proxy = config.actor_rollout_ref.rollout, config.agent_proxy
    env = envs.make(config.env.name, **config.env.kwargs)
    seed = config.es_manager.train_seed_start
    messages, _ = opening(env, config.agent_config(), seed, 0, rollout.response_length)
    env.close()
    prompt = len(ChatTokenizer(tokenizer).prompt_ids(messages, prefill_text(proxy.enable_think)))
    key = f"actor_rollout_ref.rollout.max_model_len={rollout.max_model_len}"
    where = f"the first prompt of env {config.env.name!r} (level {seed}) has {prompt} tokens"
    if prompt >= rollout.max_model_len:
        raise ValueError(f"{key} is invalid: {where}, so every episode ends before its first reply and nothing "
                         f"trains; allowed: > {prompt}")
    if prompt + rollout.response_length > rollout.max_model_len:
        loud_warning(f"{key}: {where}, which leaves {rollout.max_model_len - prompt} tokens for the first reply "
                     f"(actor_rollout_ref.rollout.response_length={rollout.response_length}): replies get cut")


def warn_group_of_one(config: TurnRLConfig) -> None:
    """Warn once when ``es_manager.train.group_size=1`` meets an estimator with a group baseline (it warns
    about the missing baseline on a dry run): every advantage is then the raw reward."""
    if config.es_manager.train.group_size != 1:
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compute_advantages(torch.tensor([[1.0], [0.0]]), **advantage_options(config))
    if caught:
        loud_warning(f"es_manager.train.group_size=1 with algorithm.adv_estimator={config.algorithm.adv_estimator}: "
                     f"{caught[0].message}; a group baseline needs group_size >= 2")


def check_before_load(config: TurnRLConfig) -> None:
    """The checks that need the file system or the tokenizer (no model)."""
    check_model_path(config.actor_rollout_ref.model.path)
    check_checkpoint_dir(config.trainer.default_local_dir)
    check_prompt_fits(config)
    warn_group_of_one(config)


def check_config(cfg: DictConfig) -> TurnRLConfig:
    """The typed config of a composed one, every check passed; ``ValueError`` naming the key otherwise."""
    check_composed_keys(cfg)
    config = validate(cfg)
    check_before_load(config)
    return config


def sweep_runs(overrides: list[str]) -> list[list[str]]:
    """Each run of a ``-m`` sweep: one override list per combination of the swept values."""
    choices = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    return [list(run) for run in itertools.product(*choices)]


def check_command_line(args: list[str]) -> None:
    """:func:`check_config` on every run of ``scripts/train.py``'s command line (overrides and ``-m``).

    Overrides are checked by name first (a typo gets "did you mean"). Lines with other Hydra flags, and
    compositions Hydra itself refuses (e.g. an unknown group option), are left to ``hydra.main``, which
    reports them before creating a run dir.
    """
    overrides = [arg for arg in args if arg not in MULTIRUN_FLAGS]
    if any(arg.startswith("-") for arg in overrides):
        return
    register_schema()
    try:
        check_override_keys(overrides, {path.name for path in CONF_DIR.iterdir() if path.is_dir()})
        runs = sweep_runs(overrides) if len(overrides) < len(args) else [overrides]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            composed = [compose(config_name="config", overrides=run) for run in runs]
    except HydraException:
        return
    for cfg in composed:
        check_config(cfg)
