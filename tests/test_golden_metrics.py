"""The architecture move changed where the training code lives, not what it computes: fixed-seed
tiny-model runs (Sokoban Dr. GRPO+ Soft and Bandit GRPO with a KL loss; 2 PPO epochs x 2 mini-batches x 2
micro-batches, so gradient accumulation runs) log the metrics recorded before the move, at commit
10c14c8, to float tolerance (``tests/fixtures/golden_metrics.json``, written by ``tests/golden_run.py``).
Records are per CPU vector capability (AVX2, AVX512): fp32 rounding differs between them and 80 warm-up
steps at lr 1e-2 amplify it past any useful tolerance (Sokoban's warm-up loss 0.868 vs 0.845)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golden_run import GOLDEN_RUNS, cpu_capability, run

from algos.training.schema import register_schema, validate
from algos.training.trainer import train

FIXTURE = Path(__file__).parent / "fixtures" / "golden_metrics.json"
ACTION_CHOICE = ("actions_per_turn", "first_action_entropy", "first_action_entropy_in_group")
ADDED_SINCE = {"actor/nonfinite_steps", "rollout/logprob_diff_mean", "rollout/logprob_diff_max", "rollout/ratio_max",
               *(f"{split}/{name}" for split in ("rollout", "val") for name in ACTION_CHOICE)}  # metrics of features added after the recording; the recorded ones must not move

register_schema()


@pytest.mark.parametrize("name", sorted(GOLDEN_RUNS))
def test_training_logs_the_metrics_recorded_before_the_move(name):
    records = json.loads(FIXTURE.read_text())
    assert {"AVX2", "AVX512"} <= set(records)
    if cpu_capability() not in records:
        pytest.skip(f"no golden metrics recorded on a {cpu_capability()} CPU (recorded: {sorted(records)}); "
                    f"add them from a reference commit with: python tests/golden_run.py {FIXTURE}")
    expected = records[cpu_capability()][name]
    rows = run(name, validate, train)
    assert [row["step"] for row in rows] == [row["step"] for row in expected] == [0, 1, 2, 3]
    assert any(row.get("actor/grad_norm", 0) > 0.1 for row in expected)  # the runs really learn something
    for got, want in zip(rows, expected, strict=True):
        assert set(want) <= set(got) and set(got) - set(want) <= ADDED_SINCE, set(got) ^ set(want)
        assert {key: got[key] for key in want} == pytest.approx(want, rel=1e-4, abs=1e-6), got["step"]
