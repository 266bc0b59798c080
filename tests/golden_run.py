"""Fixed-seed tiny-model training runs whose metrics pin the trainer's behaviour across refactors.

``python tests/golden_run.py OUT.json [--replace]`` records ``{name: [per-step metrics]}`` for each run in
``GOLDEN_RUNS`` under this CPU's vector capability (``torch.backends.cpu.get_cpu_capability()``: the
fp32 kernels, and so the rounding that 80 warm-up steps at lr 1e-2 amplify, differ between AVX2 and
AVX512 machines), keeping the other capabilities' records in OUT.json; ``tests/test_golden_metrics.py``
reruns them and compares with ``tests/fixtures/golden_metrics.json`` (AVX2: made before the architecture
move, at commit 10c14c8, on an AVX2-only VM; AVX512: recorded on 2026-12-02 from the code of 48a9299,
whose AVX2 figures matched). Timing and memory figures are left out: they are not behaviour.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[1] / "conf"
COMMON = [
    "logger=console",
    "logger.progress_bar=false",
    "actor_rollout_ref.model.path=tiny-random",
    "actor_rollout_ref.rollout.name=hf",
    "actor_rollout_ref.rollout.response_length=12",
    "es_manager.train.env_groups=2",
    "es_manager.train.group_size=4",
    "es_manager.val.env_groups=2",
    "actor_rollout_ref.actor.ppo_epochs=2",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",  # 8 episodes: 2 mini-batches per epoch
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",  # 2 micro-batches per mini-batch
    "actor_rollout_ref.actor.lr=1e-3",
    "trainer.total_training_steps=3",
    "trainer.test_freq=3",
    "format_warmup.steps=80",
    "format_warmup.lr=1e-2",
    "agent_proxy.enable_think=false",
    "actor_rollout_ref.model.enable_gradient_checkpointing=false",  # as recorded (the default since 2026-12-02)
]
GOLDEN_RUNS = {
    "sokoban_drgrpo_soft": ["env=sokoban", "algo=drgrpo_soft", "agent_proxy.max_turn=2"],
    "bandit_grpo_kl": ["env=bandit", "algo=grpo", "actor_rollout_ref.actor.use_kl_loss=true"],
}


def cpu_capability() -> str:
    """The vector instruction set torch's CPU kernels use here, e.g. "AVX2" or "AVX512"."""
    return torch.backends.cpu.get_cpu_capability()


def is_behaviour(key: str) -> bool:
    return not key.startswith("timing/") and "seconds" not in key


def run(name: str, validate, train) -> list[dict[str, float]]:
    """The metrics rows (behaviour keys only) of golden run ``name``, made with ``validate`` and ``train``."""
    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=[*COMMON, *GOLDEN_RUNS[name]])
    config = validate(cfg)
    with tempfile.TemporaryDirectory() as run_dir:
        train(config, Path(run_dir))
        rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in row.items() if is_behaviour(key)} for row in rows]


if __name__ == "__main__":
    from algos.training.schema import register_schema, validate
    from algos.training.trainer import train

    register_schema()
    out, replace = Path(sys.argv[1]), "--replace" in sys.argv[2:]
    records = json.loads(out.read_text()) if out.is_file() else {}
    if cpu_capability() in records and not replace:
        sys.exit(f"{out} already holds {cpu_capability()} figures; rerecording them from changed code would hide "
                 "a regression. Record from the reference commit, or pass --replace to overwrite on purpose.")
    records[cpu_capability()] = {name: run(name, validate, train) for name in GOLDEN_RUNS}
    out.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
