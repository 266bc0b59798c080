"""Trusting a checkpoint folder's files: a sha256 manifest against corruption, weights-only unpickling
against planted code.

``manifest.json`` lists every file of the folder with its size and sha256; it is written last (temp
file + ``os.replace``), so a folder whose files match it is exactly what the save wrote. It guards
against torn writes, truncation and bit rot, not against an attacker, who can rewrite it: that is the
job of :func:`weights_only_loads`, under which every ``torch.load`` (DeepSpeed's own included) builds
only tensors, plain containers and the few DeepSpeed classes in :data:`DEEPSPEED_GLOBALS`, and never
calls anything a pickle names (``os.system`` via ``__reduce__``, ...).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from deepspeed.runtime.fp16.loss_scaler import LossScaler
from deepspeed.runtime.zero.config import ZeroStageEnum
from deepspeed.utils.tensor_fragment import fragment_address

MANIFEST_FILE = "manifest.json"
# What DeepSpeed's ZeRO 1-3 optimizer states pickle besides tensors and plain types (bf16 or not):
# an enum, a plain loss-scale record and a dataclass; their construction runs no code of the file's.
DEEPSPEED_GLOBALS = [ZeroStageEnum, LossScaler, fragment_address]
_CHUNK = 1 << 22


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted or written: corrupted, incomplete, unsafe, or a failed save."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` but the manifest, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != MANIFEST_FILE and not p.name.startswith(MANIFEST_FILE))


def write_manifest(folder: Path) -> None:
    """Write ``folder/manifest.json`` = {relative path: {"bytes", "sha256"}} of every file, atomically."""
    entries = {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
               for name in _files(folder)}
    temp = folder / f"{MANIFEST_FILE}.tmp"
    with open(temp, "w") as file:
        json.dump({"files": entries}, file, indent=1)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, folder / MANIFEST_FILE)


def verify_manifest(folder: Path) -> None:
    """Raise :class:`CheckpointError` saying why unless ``folder``'s files are exactly its manifest's."""
    try:
        entries: dict[str, Any] = json.loads((folder / MANIFEST_FILE).read_text())["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no {MANIFEST_FILE} (the save did not finish, or the checkpoint "
                              "predates manifests)") from None
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{folder}: {MANIFEST_FILE} is unreadable ({error})") from None
    unlisted = sorted(set(_files(folder)) - set(entries))
    if unlisted:
        raise CheckpointError(f"{folder}: {unlisted[0]} is not in {MANIFEST_FILE}")
    for name, entry in entries.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{folder}: {name} is missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(f"{folder}: {name} has {size} bytes, {MANIFEST_FILE} says {entry['bytes']} "
                                  "(truncated or overwritten)")
        if sha256_file(path) != entry["sha256"]:
            raise CheckpointError(f"{folder}: {name} does not match its sha256 in {MANIFEST_FILE} (corrupted)")


def _refusal(path: Any, error: pickle.UnpicklingError) -> CheckpointError:
    """The error for a file the weights-only unpickler refused; the reason is torch's line naming the global
    (its wording varies between torch versions), else its first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or ["unpickling failed"]
    reason = next((line for line in lines if "GLOBAL" in line or "WeightsUnpickler error" in line), lines[0])
    return CheckpointError(f"refused to unpickle {path}: {reason}. A TurnRL checkpoint holds only tensors and "
                           "plain types; this file asks to build or call something else (possibly planted "
                           "code), so nothing of it was loaded")


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Within the block every ``torch.load`` runs with ``weights_only=True`` (whatever the caller asked,
    DeepSpeed asks False) and :data:`DEEPSPEED_GLOBALS` allowed; a refused file raises
    :class:`CheckpointError` naming it. Not thread-safe: it swaps ``torch.load`` for the block."""
    original = torch.load

    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        try:
            return original(f, *args, **kwargs)
        except pickle.UnpicklingError as error:
            raise _refusal(f, error) from None

    with torch.serialization.safe_globals(DEEPSPEED_GLOBALS):
        torch.load = load
        try:
            yield
        finally:
            torch.load = original


def safe_load(path: Path, **kwargs: Any) -> Any:
    """``torch.load(path, weights_only=True)`` with :data:`DEEPSPEED_GLOBALS`; CheckpointError if refused."""
    with weights_only_loads():
        return torch.load(path, **kwargs)
