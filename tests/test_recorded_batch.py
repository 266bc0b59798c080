"""A recorded rollout round-trips through its file weights-only, and replays at every step."""

from __future__ import annotations

import pickle

import pytest
import torch

from agents.rollout import RolloutBatch
from algos.training.recorded_batch import FixedRollout, load_batch, run_variants, save_batch


def test_a_recorded_batch_round_trips_and_replays(tmp_path):
    ids = torch.tensor([[5, 6, 7], [5, 8, 0]])
    batch = RolloutBatch(input_ids=ids, attention_mask=(ids > 0).long(), loss_mask=torch.tensor([[0, 1, 1], [0, 1, 0]]),
                         group_index=torch.tensor([0, 0]), episode_reward=torch.tensor([1.0, 0.0]),
                         success=torch.tensor([True, False]), num_turns=torch.tensor([1, 1]),
                         truncated=torch.tensor([False, False]), seeds=torch.tensor([3, 3]),
                         turns=[[{"role": "user", "content": "hi"}], []], metrics={"reward": 0.5}, group_size=2)
    save_batch(batch, tmp_path / "batch.pt")
    loaded = load_batch(tmp_path / "batch.pt")
    assert torch.equal(loaded.input_ids, ids) and loaded.turns == batch.turns and loaded.metrics == {"reward": 0.5}
    assert FixedRollout(loaded).rollout(7, None, attempt=2) is loaded


class Payload:
    def __reduce__(self):
        return (print, ("ran",))


def test_a_pickled_object_is_refused(tmp_path):
    torch.save({"input_ids": Payload()}, tmp_path / "evil.pt", pickle_module=pickle)
    with pytest.raises(pickle.UnpicklingError):
        load_batch(tmp_path / "evil.pt")


CHILD = '''
import argparse, json
from algos.training.recorded_batch import add_child_arguments
parser = argparse.ArgumentParser()
parser.add_argument("--tag")
add_child_arguments(parser)
args = parser.parse_args()
if args.role == "record":
    args.batch.write_text("recorded")
elif args.role == "train":
    args.result.write_text(json.dumps({"variant": args.variant, "tag": args.tag, "batch": args.batch.read_text()}))
'''


def test_run_variants_records_once_then_trains_each_variant_in_its_own_child(tmp_path):
    script = tmp_path / "bench_child.py"
    script.write_text(CHILD)
    results = run_variants(script, ["a", "b"], ["--tag", "t"])
    assert results == {name: {"variant": name, "tag": "t", "batch": "recorded"} for name in ("a", "b")}


class StubTrainer:
    """Stands in for the trainer: setup and fit do nothing, so only the peak bookkeeping runs."""

    def __init__(self, config, run_dir, rollout_engine):
        self.rollout_engine = rollout_engine

    def setup(self):
        pass

    def fit(self):
        return {"steps": 0}


@pytest.mark.parametrize(("restarted", "expected_train_peak"), [(True, 2.5), (False, None)])
def test_the_training_peak_is_reported_only_where_it_could_be_restarted(tmp_path, monkeypatch, restarted,
                                                                        expected_train_peak):
    import algos.training.recorded_batch as recorded
    import algos.training.trainer as trainer_module

    ids = torch.tensor([[5, 6]])
    save_batch(RolloutBatch(input_ids=ids, attention_mask=ids, loss_mask=ids, group_index=torch.tensor([0]),
                            episode_reward=torch.tensor([1.0]), success=torch.tensor([True]),
                            num_turns=torch.tensor([1]), truncated=torch.tensor([False]), seeds=torch.tensor([0]),
                            turns=[[]], metrics={}, group_size=1), tmp_path / "batch.pt")
    monkeypatch.setattr(trainer_module, "Trainer", StubTrainer)
    monkeypatch.setattr(recorded, "reset_peak_rss", lambda: restarted)
    peaks = iter([4.0, 2.5])  # lifetime peak before training, then the peak read after fit()
    monkeypatch.setattr(recorded, "peak_rss_gib", lambda: next(peaks))
    _, result, reported = recorded.train_on_batch(None, tmp_path / "batch.pt")
    assert result == {"steps": 0}
    assert reported == {"train_peak_rss_gib": expected_train_peak, "peak_rss_gib": 4.0}
    assert recorded.gib_text(reported["train_peak_rss_gib"]) == ("2.50" if restarted else "n/a")
    assert recorded.ratio_text(reported["train_peak_rss_gib"], 5.0) == ("0.50" if restarted else "n/a")
