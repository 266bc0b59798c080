"""Checkpoint safety: planted pickles are refused before anything runs, corrupted checkpoints fall back to
the newest one that verifies, non-finite weights are never saved, a full disk is named and cleaned up,
and a run stopped by SIGTERM exits 143 after its checkpoint."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from algos.training.checkpoint import checkpoint_state_dict, resume_checkpoint, save_checkpoint
from algos.training.checkpoint_files import CheckpointError, verify_manifest, write_manifest
from algos.training.engine import build_engine, full_parameters
from algos.training.layout import checkpoints, latest_checkpoint
from algos.training.schema import TrainerActorConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODEL_STATES = "model/mp_rank_00_model_states.pt"
OPTIM_STATES = "model/zero_pp_rank_0_mp_rank_00_optim_states.pt"


class PlantedCode:
    """A pickle whose loading runs ``touch <marker>`` (what an attacker would make run a shell command)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def engine_with_weights(value: float, zero_stage: int = 0):
    """A DeepSpeed engine over a 3 -> 2 linear layer whose every weight and bias is ``value``."""
    engine = build_engine(torch.nn.Linear(3, 2), TrainerActorConfig(lr=0.1, zero_stage=zero_stage))
    set_weights(engine, value)
    return engine


def set_weights(engine, value: float) -> None:
    with torch.no_grad():
        for parameter in engine.module.parameters():
            parameter.fill_(value)


def weights(engine) -> list[float]:
    return torch.cat([p.detach().flatten() for p in engine.module.parameters()]).tolist()


def saved_steps(ckpt_dir: Path, values: dict[int, float], zero_stage: int = 0):
    """Save ``global_step_<k>`` holding weights ``values[k]`` for each k; return the engine."""
    engine = engine_with_weights(0.0, zero_stage)
    for step, value in values.items():
        set_weights(engine, value)
        save_checkpoint(engine, ckpt_dir, step, {"note": step}, keep=5)
    return engine


# ----------------------------------------------------------------- weights-only loading
def test_trainer_state_is_plain_data_and_restores_every_rng(tmp_path):
    engine = saved_steps(tmp_path, {1: 0.5})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(1)  # move every generator on
    set_weights(engine, 9.0)
    path, state = resume_checkpoint(engine, tmp_path)
    assert path == tmp_path / "global_step_1" and state["step"] == 1 and state["note"] == 1
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert weights(engine) == [0.5] * 8
    # the file itself loads with plain weights_only=True, no allow-list needed
    assert torch.load(path / "trainer_state.pt", weights_only=True)["step"] == 1


def train_step(engine) -> list[float]:
    """One AdamW step on a fixed batch; the weights after it (gathered under ZeRO-3)."""
    loss = engine(torch.ones(2, 3)).square().sum()
    engine.backward(loss)
    engine.step()
    with full_parameters(engine) as module:
        return torch.cat([p.detach().flatten() for p in module.parameters()]).tolist()


@pytest.mark.parametrize("zero_stage", [0, 1, 3])
def test_resume_restores_weights_and_optimizer_state_under_weights_only_loading(tmp_path, zero_stage):
    """Save after one step, take a second; resumed, the second step gives the same weights again, which
    needs the weights and the Adam moments back (a fresh Adam would take a different second step)."""
    torch.manual_seed(0)
    engine = build_engine(torch.nn.Linear(3, 2), TrainerActorConfig(lr=0.1, zero_stage=zero_stage))
    first = train_step(engine)
    save_checkpoint(engine, tmp_path, 1, {}, keep=1)
    second = train_step(engine)
    assert second != first
    resume_checkpoint(engine, tmp_path)
    assert train_step(engine) == second


@pytest.mark.parametrize("planted", ["trainer_state.pt", MODEL_STATES, OPTIM_STATES])
def test_a_planted_pickle_is_refused_on_resume_naming_the_file_and_nothing_runs(tmp_path, planted):
    ckpt_dir, marker = tmp_path / "checkpoints", tmp_path / "code_ran"
    engine = saved_steps(ckpt_dir, {1: 0.5}, zero_stage=1)  # ZeRO-1: model and optimizer in separate files
    step_dir = ckpt_dir / "global_step_1"
    torch.save({"module": PlantedCode(marker)}, step_dir / planted)
    write_manifest(step_dir)  # an attacker rewrites the manifest too: the manifest is no defence here
    with pytest.raises(CheckpointError, match=rf"refused to unpickle {step_dir / planted}: .*system"):
        resume_checkpoint(engine, ckpt_dir)
    assert not marker.exists()
    torch.load(step_dir / planted, weights_only=False)  # the planted file does run code when trusted
    assert marker.exists()


@pytest.mark.parametrize("zero_stage, planted", [(0, MODEL_STATES), (3, OPTIM_STATES)])
def test_a_planted_pickle_is_refused_by_checkpoint_state_dict(tmp_path, zero_stage, planted):
    """What ``scripts/evaluate.py`` reads: the module states (ZeRO 0-2) or DeepSpeed's zero_to_fp32 (ZeRO-3)."""
    marker = tmp_path / "code_ran"
    saved_steps(tmp_path / "checkpoints", {1: 0.5}, zero_stage=zero_stage)
    step_dir = tmp_path / "checkpoints" / "global_step_1"
    assert {key: list(value.shape) for key, value in checkpoint_state_dict(step_dir).items()} == {
        "weight": [2, 3], "bias": [2]}
    torch.save({"module": PlantedCode(marker)}, step_dir / planted)
    write_manifest(step_dir)
    with pytest.raises(CheckpointError, match=rf"refused to unpickle .*{Path(planted).name}"):
        checkpoint_state_dict(step_dir)
    assert not marker.exists()


# ----------------------------------------------------------------- manifest and fallback
def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))


DAMAGE = {
    "flipped": (flip_bytes, "does not match its sha256 in manifest.json \\(corrupted\\)"),
    "truncated": (lambda path: path.write_bytes(path.read_bytes()[:100]), "bytes, manifest.json says"),
    "missing": (Path.unlink, "mp_rank_00_model_states.pt is missing"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, damage):
    damage_file, reason = DAMAGE[damage]
    engine = saved_steps(tmp_path, {1: 0.25, 2: 0.5})
    damage_file(tmp_path / "global_step_2" / MODEL_STATES)
    path, state = resume_checkpoint(engine, tmp_path)
    assert path == tmp_path / "global_step_1" and state["step"] == 1
    assert weights(engine) == [0.25] * 8
    out = capsys.readouterr().out
    assert f"checkpoint global_step_2 skipped: {tmp_path / 'global_step_2'}: " in out
    assert "falling back to global_step_1, the newest checkpoint that verifies" in out
    # the broken one is set aside: never loaded, counted or pruned again, kept for inspection
    assert [step for step, _ in checkpoints(tmp_path)] == [1]
    assert (tmp_path / "corrupt-global_step_2" / MODEL_STATES).parent.is_dir()
    # every checkpoint damaged: a clear error with each reason, not a traceback from deep inside
    (tmp_path / "global_step_1" / MODEL_STATES).write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointError, match=rf"no checkpoint in {tmp_path} verifies: .*global_step_1: "
                                              "model/mp_rank_00_model_states.pt has 10 bytes"):
        resume_checkpoint(engine, tmp_path)
    with pytest.raises(CheckpointError, match=reason):
        verify_manifest(tmp_path / "corrupt-global_step_2")


def test_manifest_lists_every_file_and_rejects_an_unlisted_or_absent_one(tmp_path):
    saved_steps(tmp_path, {1: 0.5})
    step_dir = tmp_path / "global_step_1"
    verify_manifest(step_dir)
    (step_dir / "model" / "extra.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="model/extra.pt is not in manifest.json"):
        verify_manifest(step_dir)
    (step_dir / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no manifest.json"):
        verify_manifest(step_dir)


def test_non_finite_weights_are_never_saved_and_the_last_checkpoint_stays(tmp_path):
    engine = saved_steps(tmp_path, {1: 0.5})
    with torch.no_grad():
        engine.module.bias[1] = float("nan")
    with pytest.raises(CheckpointError, match=rf"not saving {tmp_path / 'global_step_2'}: the weights are not "
                                              rf"finite \(bias: NaN or inf\); the newest checkpoint stays "
                                              rf"{tmp_path / 'global_step_1'}"):
        save_checkpoint(engine, tmp_path, 2, {}, keep=1)
    assert [step for step, _ in checkpoints(tmp_path)] == [1]
    verify_manifest(tmp_path / "global_step_1")


def test_the_checkpoint_just_written_is_never_pruned(tmp_path):
    saved_steps(tmp_path, {7: 0.5})  # left by an earlier run with more steps
    engine = saved_steps(tmp_path, {1: 0.25})
    save_checkpoint(engine, tmp_path, 2, {}, keep=1)
    assert [step for step, _ in checkpoints(tmp_path)] == [2, 7]


# ----------------------------------------------------------------- a full disk
def test_a_full_disk_is_named_the_partial_folder_removed_and_the_previous_checkpoint_kept(tmp_path, monkeypatch):
    engine = saved_steps(tmp_path, {1: 0.5})

    def disk_full(obj, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(torch, "save", disk_full)  # DeepSpeed's writer and ours
    staging = tmp_path / ".tmp-global_step_2"
    with pytest.raises(CheckpointError, match=rf"saving a checkpoint failed writing {staging}/model/\S+: No space "
                                              rf"left on device\. Removed {staging}; the newest checkpoint stays "
                                              rf"{tmp_path / 'global_step_1'}"):
        save_checkpoint(engine, tmp_path, 2, {}, keep=1)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["global_step_1"]
    verify_manifest(tmp_path / "global_step_1")


TMPFS_SAVE = """
import sys
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[2])
from test_checkpoints import engine_with_weights
from algos.training.checkpoint import save_checkpoint
from algos.training.checkpoint_files import CheckpointError, verify_manifest
from algos.training.layout import checkpoints
torch.set_num_threads(1)
folder, engine = Path(sys.argv[1]), engine_with_weights(0.5)
try:
    for step in range(1, 100):
        save_checkpoint(engine, folder, step, {}, keep=100)
except CheckpointError as error:
    print(error)
    print(type(error.__cause__).__name__, step, sorted(path.name for path in folder.iterdir()))
    print(all(verify_manifest(path) is None for _, path in checkpoints(folder)))
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare to mount a private tmpfs")
def test_a_real_full_tmpfs_is_reported_as_no_space_left(tmp_path):
    """Save into a 48 KiB tmpfs until it is full (the 2nd save, in torch.save, which reports a full disk as
    a bare RuntimeError): the error says so, and the complete checkpoints before it stay and verify."""
    from test_trainer import _fresh_environment

    mount = tmp_path / "small"
    mount.mkdir()
    script = f"mount -t tmpfs -o size=48k tmpfs {mount} && exec {sys.executable} -c '{TMPFS_SAVE}' {mount} " \
             f"{Path(__file__).parent}"
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                            env=_fresh_environment() | {"PYTHONPATH": str(Path(__file__).parents[1])})
    if "mount" in result.stderr and result.returncode:
        pytest.skip(f"no private tmpfs here: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stderr[-2000:]
    message, failure, verified = result.stdout.strip().splitlines()[-3:]
    cause, step, names = failure.split(" ", 2)
    assert f"saving a checkpoint failed writing {mount}/.tmp-global_step_{step}" in message
    assert ": No space left on device. Removed" in message
    assert int(step) >= 2 and names == str([f"global_step_{k}" for k in range(1, int(step))])
    assert cause in ("RuntimeError", "OSError") and verified == "True"


# ----------------------------------------------------------------- exit status after a signal
def test_a_run_stopped_by_sigterm_exits_143_after_its_checkpoint(tmp_path):
    from test_trainer import REPO, _fresh_environment, _train_command

    command = [*_train_command(tmp_path), "trainer.total_training_steps=50"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env=_fresh_environment())
    deadline = time.monotonic() + 240
    while latest_checkpoint(tmp_path / "checkpoints") is None and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 128 + signal.SIGTERM == 143, stderr[-3000:]
    assert "SIGTERM received: saving a checkpoint after this step" in stdout
    newest = latest_checkpoint(tmp_path / "checkpoints")
    assert newest.name != "global_step_50"
    verify_manifest(newest)
