"""The training loop with a tiny random model: every algo yaml runs a step, the config schema rejects
bad input before a model loads, micro-batching is exact, the policy learns in the right direction,
checkpoints are atomic, a run killed with SIGKILL resumes to the same metrics, and the final policy
exported to ``hf_model`` is the checkpoint's, and two ranks under torchrun train as one process would."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from transformers import AutoModelForCausalLM, AutoTokenizer

from agents.backends.hf import HFBackend
from agents.model import build_tiny_model, load_tokenizer
from agents.rollout import RolloutBatch, RolloutEngine
from algos import aggregate_loss, loss_normaliser
from algos.training.checkpoint import checkpoint_state_dict, load_weights, save_checkpoint
from algos.training.data_parallel import group_share, rank_share
from algos.training.engine import build_engine
from algos.training.layout import checkpoints, export_step, latest_checkpoint
from algos.training.packed_logprobs import response_log_probs
from algos.training.schema import LoggerConfig, TrainerActorConfig, WandbConfig, register_schema, validate
from algos.training.tracking import RunLogger
from algos.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
ALGOS = sorted(path.stem for path in (CONF / "algo").glob("*.yaml"))
TINY_RUN = [  # a bandit run small enough for a test: 2 groups x 2 episodes, 8 new tokens
    "env=bandit",
    "logger=console",
    "logger.progress_bar=false",
    "actor_rollout_ref.model.path=tiny-random",
    "actor_rollout_ref.rollout.name=hf",
    "actor_rollout_ref.rollout.response_length=8",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "es_manager.train.env_groups=2",
    "es_manager.train.group_size=2",
    "es_manager.val.env_groups=1",
    "trainer.total_training_steps=1",
    "format_warmup.steps=0",  # tests of the warm-up turn it on themselves
]

register_schema()


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="config", overrides=overrides)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(None)


# ----------------------------------------------------------------- config schema
def test_schema_rejects_unknown_key_naming_it():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config([*TINY_RUN, "actor_rollout_ref.actor.not_a_key=1"])
    assert "not_a_key" in str(error.value.__cause__ or error.value)


def test_schema_rejects_bad_values_naming_key_and_allowed_values():
    with pytest.raises(ValueError, match=r"actor_rollout_ref\.actor\.loss_agg_mode='bogus'.*token-mean"):
        validate(compose_config([*TINY_RUN, "actor_rollout_ref.actor.loss_agg_mode=bogus"]))
    with pytest.raises(ValueError, match=r"trainer\.resume='sometimes'.*disable"):
        validate(compose_config([*TINY_RUN, "trainer.resume=sometimes"]))
    with pytest.raises(ValueError, match=r"env\.kwargs for 'bandit'.*no_such_option"):
        validate(compose_config([*TINY_RUN, "+env.kwargs.no_such_option=3"]))


def test_schema_refuses_filter_options_the_trainer_does_not_compute_yet():
    rollout = "actor_rollout_ref.rollout."
    with pytest.raises(ValueError, match=r"rollout_filter_metric='entropy' is invalid; allowed: reward_std"):
        validate(compose_config([*TINY_RUN, rollout + "rollout_filter_metric=entropy"]))
    assert validate(compose_config([*TINY_RUN, rollout + "rollout_filter_max_rerolls=2"])).actor_rollout_ref.rollout \
        .rollout_filter_max_rerolls == 2  # wired: tests/test_reroll_early_stop.py


@pytest.mark.parametrize(
    ("env", "kwargs"),
    [
        ("coord_sokoban", {"observation_format": "grid_coord", "dim_room": [6, 6], "num_boxes": 1}),
        ("coord_frozenlake", {"observation_format": "grid_coord", "success_rate": 1.0}),
        ("bandit_test", {"name_split": "test"}),
    ],
)
def test_ragen_env_variants_compose_and_build(env, kwargs):
    config = validate(compose_config([*(o for o in TINY_RUN if not o.startswith("env=")), f"env={env}"]))
    assert {key: config.env.kwargs[key] for key in kwargs} == kwargs


def test_schema_accepts_groups_of_one_with_verls_warning():
    with pytest.warns(UserWarning, match="group_size=1: no in-group baseline"):
        validate(compose_config([*TINY_RUN, "es_manager.train.group_size=1"]))


def test_cli_reports_a_bad_value_before_loading_any_model():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), *TINY_RUN,
         "actor_rollout_ref.model.path=/no/such/model", "actor_rollout_ref.actor.zero_stage=7"],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=_fresh_environment(),
    )
    assert result.returncode != 0
    assert "actor_rollout_ref.actor.zero_stage=7 is invalid; allowed: 0, 1, 2 or 3" in result.stderr
    assert "/no/such/model" not in result.stderr  # failed before trying to load the model


# ----------------------------------------------------------------- pieces of the update
def test_loss_normalisers_are_the_mini_batch_counts_and_make_micro_batches_add_up():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    assert loss_normaliser(mask, "token-mean") == 6  # generated tokens
    assert loss_normaliser(mask, "seq-mean-token-sum") == loss_normaliser(mask, "seq-mean-token-mean") == 3
    assert loss_normaliser(mask, "seq-mean-token-sum-norm") == 3  # the width T
    assert loss_normaliser(torch.zeros(2, 4), "token-mean") == 1  # floored: an empty mask aggregates to 0
    losses = torch.tensor([[1.0, 2.0, 9.0], [4.0, 9.0, 9.0], [0.5, 1.5, 2.5]])
    # by hand: token-mean (1+2+4+.5+1.5+2.5)/6; seq-mean-token-mean ((1+2)/2 + 4/1 + 4.5/3)/3
    assert aggregate_loss(losses, mask, "token-mean").item() == pytest.approx(11.5 / 6)
    assert aggregate_loss(losses, mask, "seq-mean-token-mean").item() == pytest.approx((1.5 + 4 + 1.5) / 3)
    micro = [(losses[:2, :2], mask[:2, :2]), (losses[2:], mask[2:])]  # the first trimmed to its width 2
    for mode in ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        normaliser = loss_normaliser(mask, mode)
        parts = sum(aggregate_loss(loss, m, mode, normaliser=normaliser) for loss, m in micro)
        assert parts.item() == pytest.approx(aggregate_loss(losses, mask, mode).item()), mode


def test_response_log_probs_use_the_previous_position_and_only_generated_tokens(tokenizer):
    model = build_tiny_model(tokenizer, seed=1)
    input_ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    response_mask = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 0]])  # = loss_mask[:, 1:]: tokens 8, 9 and 12
    logp, entropy = response_log_probs(model, input_ids, attention_mask, response_mask, temperature=1.0)
    with torch.no_grad():
        full = torch.log_softmax(model(input_ids=input_ids, attention_mask=attention_mask).logits, dim=-1)
    assert logp[0, 2].item() == pytest.approx(full[0, 2, 8].item(), abs=1e-5)  # token 8 from position 2
    assert logp[0, 3].item() == pytest.approx(full[0, 3, 9].item(), abs=1e-5)
    assert logp[1, 1].item() == pytest.approx(full[1, 1, 12].item(), abs=1e-5)
    assert (logp[response_mask == 0] == 0).all() and (entropy[response_mask == 0] == 0).all()
    assert 0 < entropy[0, 2].item() <= torch.log(torch.tensor(float(full.shape[-1]))).item() + 1e-4


# ----------------------------------------------------------------- a fake rollout: answer A pays 1, B pays 0
class FixedAnswers:
    """Every group has the same prompt; the first half of each group answers A (reward 1), the rest B."""

    def __init__(self, tokenizer, env_groups: int = 2, group_size: int = 4) -> None:
        self.prompt = tokenizer.encode("Which answer pays? Answer:")
        self.answers = (tokenizer.encode(" yes"), tokenizer.encode(" no, definitely not"))
        self.env_groups, self.group_size = env_groups, group_size
        self.backend = self  # update_weights: the model is shared

    def update_weights(self, model) -> None:
        pass

    def rollout(self, step: int, params, attempt: int = 0) -> RolloutBatch:
        rows = [0 if member < self.group_size // 2 else 1 for _ in range(self.env_groups)
                for member in range(self.group_size)]
        width = len(self.prompt) + max(len(answer) for answer in self.answers)
        size = len(rows)
        input_ids = torch.zeros(size, width, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        loss_mask = torch.zeros_like(input_ids)
        for b, choice in enumerate(rows):
            ids = self.prompt + self.answers[choice]
            input_ids[b, : len(ids)] = torch.tensor(ids)
            attention_mask[b, : len(ids)] = 1
            loss_mask[b, len(self.prompt): len(ids)] = 1
        reward = torch.tensor([1.0 - choice for choice in rows])
        return RolloutBatch(
            input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask,
            group_index=torch.arange(size) // self.group_size, episode_reward=reward, success=reward > 0,
            num_turns=torch.ones(size, dtype=torch.long), truncated=torch.zeros(size, dtype=torch.bool),
            seeds=torch.arange(size) // self.group_size, turns=[[] for _ in rows],
            metrics={"rollout/success_rate": 0.5, "rollout/tokens": float(attention_mask.sum())},
            group_size=self.group_size,
        )

    def validate(self, params) -> RolloutBatch:
        return self.rollout(0, params)

    def answer_log_prob(self, model, choice: int) -> float:
        ids = torch.tensor([self.prompt + self.answers[choice]])
        response_mask = torch.zeros(1, ids.shape[1] - 1, dtype=torch.long)
        response_mask[0, len(self.prompt) - 1:] = 1
        with torch.no_grad():
            logp, _ = response_log_probs(model, ids, torch.ones_like(ids), response_mask, temperature=1.0)
        return logp.sum().item()


def fake_run_config(overrides: list[str]):
    return validate(compose_config([*TINY_RUN, "es_manager.train.group_size=4", *overrides]))


def test_policy_learns_to_prefer_the_rewarded_answer(tokenizer, tmp_path):
    config = fake_run_config(["actor_rollout_ref.actor.lr=3e-3", "trainer.total_training_steps=2",
                              "algo=grpo", "actor_rollout_ref.actor.ppo_epochs=2",
                              "actor_rollout_ref.actor.ppo_mini_batch_size=4"])
    model, rollout = build_tiny_model(tokenizer, seed=0), FixedAnswers(tokenizer)
    before = [rollout.answer_log_prob(model, choice) for choice in (0, 1)]
    result = Trainer(config, tmp_path, model=model, tokenizer=tokenizer, rollout_engine=rollout).fit()
    after = [rollout.answer_log_prob(model, choice) for choice in (0, 1)]
    assert after[0] > before[0] + 0.5  # log p(rewarded answer) rises
    assert after[1] < before[1] - 0.5  # log p(unrewarded answer) falls
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    assert result["metrics"]["actor/ppo_kl"] != 0.0  # epochs 2: the second pass is off-policy
    assert (tmp_path / "learning_curve.png").stat().st_size > 0


def _gradient_of_one_update(tokenizer, tmp_path, micro: int, mode: str, extra: tuple[str, ...] = ()) -> torch.Tensor:
    config = fake_run_config([f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
                              f"actor_rollout_ref.actor.loss_agg_mode={mode}", "trainer.test_freq=-1", *extra])
    model = build_tiny_model(tokenizer, seed=0)
    Trainer(config, tmp_path / f"{micro}{len(extra)}", model=model, tokenizer=tokenizer,
            rollout_engine=FixedAnswers(tokenizer)).fit()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_gradient_accumulation_over_micro_batches_equals_the_full_batch(tokenizer, tmp_path, monkeypatch, mode):
    # Keep the accumulated gradient instead of stepping (Adam's first step hides its scale).
    def backward_only(engine, loss, is_last):
        engine.backward(loss, scale_wrt_gas=False)

    monkeypatch.setattr("algos.training.actor.accumulate", backward_only)
    full = _gradient_of_one_update(tokenizer, tmp_path, micro=8, mode=mode)
    split = _gradient_of_one_update(tokenizer, tmp_path, micro=3, mode=mode)
    # by tokens (use_dynamic_bsz): a budget that fits two of these <= 12-token episodes per pass
    from algos.training.update_batch import UpdateBatch

    cut_sizes, cut = [], UpdateBatch.micro_batches

    def recorded_cut(self, rows, size, max_tokens=None):
        cuts = cut(self, rows, size, max_tokens)
        cut_sizes.extend(len(c) for c in cuts if max_tokens is not None)
        return cuts

    monkeypatch.setattr(UpdateBatch, "micro_batches", recorded_cut)
    by_tokens = _gradient_of_one_update(tokenizer, tmp_path, micro=8, mode=mode, extra=(
        "actor_rollout_ref.actor.use_dynamic_bsz=true", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=25"))
    assert full.abs().max() > 1e-3
    torch.testing.assert_close(split, full, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(by_tokens, full, atol=1e-6, rtol=1e-4)
    assert sum(cut_sizes) == 8 and max(cut_sizes) == 2  # the 8 episodes went in passes of two


def test_dynamic_micro_batches_hold_at_most_the_token_budget_in_order():
    from algos.training.update_batch import UpdateBatch

    lengths = [10, 30, 20, 50, 5, 5, 5]
    mask = torch.tensor([[1] * n + [0] * (50 - n) for n in lengths])
    batch = UpdateBatch(mask, mask, mask[:, 1:], mask[:, 1:].float(), torch.arange(7))
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 6])
    cuts = [cut.tolist() for cut in batch.micro_batches(rows, size=4, max_tokens=60)]
    # padded tokens = rows x longest: [10, 30] -> 60; + 20 -> 90 > 60; [20] + 50 -> 100; [50] alone (50);
    # [5, 5, 5] -> 15
    assert cuts == [[0, 1], [2], [3], [4, 5, 6]]
    assert [cut.tolist() for cut in batch.micro_batches(rows, size=4)] == [[0, 1, 2, 3], [4, 5, 6]]
    assert [cut.tolist() for cut in batch.micro_batches(rows, size=4, max_tokens=1)] == [[i] for i in range(7)]
    assert batch.micro_batches(rows[:0], size=4, max_tokens=60) == []


# ----------------------------------------------------------------- every algo yaml, one real step
@pytest.mark.parametrize("algo", ALGOS)
def test_every_algo_config_trains_one_step_on_bandit(algo, tmp_path):
    validation = algo == "grpo"  # one of them also validates
    config = validate(compose_config([*TINY_RUN, f"algo={algo}", f"trainer.test_freq={1 if validation else -1}"]))
    result = Trainer(config, tmp_path).fit()
    metrics = result["metrics"]
    for key in ("reward", "reward_std", "completion_length", "actor/pg_loss", "actor/entropy", "actor/lr",
                "actor/grad_norm", "rollout/success_rate", "rollout/filter_kept_ratio", "timing/step_s",
                *(["val/success_rate", "val/reward"] if validation else [])):
        assert key in metrics and torch.isfinite(torch.tensor(metrics[key])), key
    if config.algorithm.soft_advantage_reweight:
        assert {"train/soft_reweight_min", "train/soft_reweight_max", "train/soft_reweight_mean"} <= set(metrics)
    if config.algorithm.adv_estimator == "sr_grpo":
        assert {"soft_advantage_mean", "soft_advantage_std", "kl"} <= set(metrics)
    assert ("kl" in metrics) == config.actor_rollout_ref.actor.use_kl_loss
    critic_keys = {"critic/vf_loss", "critic/vf_clipfrac", "critic/vpred_mean", "critic/vf_explained_var",
                   "critic/grad_norm", "critic/lr", "critic/returns_mean", "critic/values_mean"}
    if config.algorithm.adv_estimator == "gae":
        assert all(key in metrics and torch.isfinite(torch.tensor(metrics[key])) for key in critic_keys)
        assert metrics["critic/lr"] == config.critic.lr and metrics["critic/vpred_mean"] == 0.0  # zero head
    else:
        assert not critic_keys & set(metrics)
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row["step"] == 1 and row["reward"] == pytest.approx(metrics["reward"])


def test_format_warmup_runs_before_rl_logs_at_step_0_and_is_skipped_on_resume(tmp_path, capsys):
    warmup = ["format_warmup.steps=2", "format_warmup.levels_per_step=1", "format_warmup.replies_per_level=2",
              "trainer.save_freq=1", "agent_proxy.enable_think=false"]
    Trainer(validate(compose_config([*TINY_RUN, *warmup])), tmp_path).fit()
    first = _metric_rows(tmp_path)[0]
    assert first["step"] == 0 and first["format_warmup/loss_end"] < first["format_warmup/loss_start"]
    assert "format warm-up: 2 steps" in capsys.readouterr().out
    resumed = Trainer(validate(compose_config([*TINY_RUN, *warmup, "trainer.resume=auto",
                                               "trainer.total_training_steps=2"])), tmp_path)
    resumed.setup()
    assert resumed.warmup_metrics == {} and resumed.step == 1  # the checkpoint already holds the warmed-up weights
    assert "format warm-up" not in capsys.readouterr().out


def test_a_resumed_kl_run_measures_kl_to_the_same_warmed_up_reference(tmp_path):
    # the resumed run skips the warm-up, so it must read the reference back, not copy the un-warmed model
    run = [*TINY_RUN, "format_warmup.steps=2", "format_warmup.levels_per_step=1", "format_warmup.replies_per_level=2",
           "trainer.save_freq=1", "agent_proxy.enable_think=false", "actor_rollout_ref.actor.use_kl_loss=true"]
    first = Trainer(validate(compose_config(run)), tmp_path)
    first.fit()
    warmed = {name: value.clone() for name, value in first.reference.state_dict().items()}
    untouched = Trainer(validate(compose_config(run)), tmp_path / "other").model.state_dict()
    assert any(not torch.equal(warmed[name], untouched[name]) for name in warmed)  # the warm-up moved it
    resumed = Trainer(validate(compose_config([*run, "trainer.resume=auto", "trainer.total_training_steps=2"])), tmp_path)
    resumed.setup()
    assert resumed.step == 1 and resumed.warmup_metrics == {}
    for name, value in resumed.reference.state_dict().items():
        torch.testing.assert_close(value, warmed[name], atol=0, rtol=0)
    (tmp_path / "checkpoints" / "reference" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no saved KL reference.*use_kl_loss=false"):
        Trainer(validate(compose_config([*run, "trainer.resume=auto", "trainer.total_training_steps=2"])),
                tmp_path).setup()


def test_warmed_up_weights_reach_the_rollout_backend_before_the_first_rollout(tokenizer, tmp_path):
    class SnapshotBackend(HFBackend):
        """Keeps its own copy of the weights (as a vLLM engine does) and records each push."""

        def __init__(self, model, tokenizer) -> None:
            super().__init__(copy.deepcopy(model), tokenizer)
            self.pushes = 0

        def update_weights(self, model) -> None:
            self.model.load_state_dict(model.state_dict())
            self.pushes += 1

    config = validate(compose_config([*TINY_RUN, "format_warmup.steps=2", "agent_proxy.enable_think=false"]))
    model = build_tiny_model(tokenizer, seed=0)
    initial = {name: value.clone() for name, value in model.state_dict().items()}
    backend = SnapshotBackend(model, tokenizer)
    trainer = Trainer(config, tmp_path, model=model, tokenizer=tokenizer,
                      rollout_engine=RolloutEngine(config.agent_config(), tokenizer, backend))
    trainer.setup()
    assert backend.pushes == 0  # pushed lazily, before the first rollout
    trainer.rollout_engine_in_sync()
    trainer.rollout_engine_in_sync()
    assert backend.pushes == 1  # once: the weights did not change in between
    for name, value in backend.model.state_dict().items():
        assert torch.equal(value, trainer.engine.module.state_dict()[name]), name
    assert any(not torch.equal(initial[name], value) for name, value in backend.model.state_dict().items())


def test_format_warmup_is_skipped_for_free_form_answers_and_bad_values_are_rejected(tmp_path, capsys):
    config = validate(compose_config([*TINY_RUN, "env=gsm8k", "format_warmup.steps=3"]))
    trainer = Trainer(config, tmp_path)
    trainer.setup()
    assert trainer.warmup_metrics == {}
    assert "format warm-up skipped: env=gsm8k has free-form answers" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"format_warmup\.levels_per_step=0 is invalid; allowed: >= 1"):
        validate(compose_config([*TINY_RUN, "format_warmup.levels_per_step=0"]))


def test_negative_heap_threshold_is_rejected():
    with pytest.raises(ValueError, match=r"system\.cpu_heap_mmap_threshold_kib=-1 is invalid; allowed: >= 0"):
        validate(compose_config([*TINY_RUN, "system.cpu_heap_mmap_threshold_kib=-1"]))


# ----------------------------------------------------------------- checkpoints
def test_checkpoints_are_atomic_and_only_the_newest_are_kept(tmp_path):
    engine = build_engine(torch.nn.Linear(3, 2), TrainerActorConfig(lr=0.1))
    (tmp_path / ".tmp-global_step_9").mkdir()  # a save killed half-way
    (tmp_path / "global_step_8").mkdir()  # no trainer_state.pt: incomplete
    for step in (1, 2, 3):
        save_checkpoint(engine, tmp_path, step, {"note": step}, keep=2)
    assert [step for step, _ in checkpoints(tmp_path)] == [2, 3]
    assert latest_checkpoint(tmp_path) == tmp_path / "global_step_3"
    assert not list(tmp_path.glob(".tmp-*"))


def test_sigterm_checkpoints_after_the_current_step_and_stops(tokenizer, tmp_path):
    class TerminatedDuringRollout(FixedAnswers):
        def rollout(self, step, params, attempt=0):
            os.kill(os.getpid(), signal.SIGTERM)
            return super().rollout(step, params)

    config = fake_run_config(["trainer.total_training_steps=5"])
    result = Trainer(config, tmp_path, model=build_tiny_model(tokenizer), tokenizer=tokenizer,
                     rollout_engine=TerminatedDuringRollout(tokenizer)).fit()
    assert result["stopped_by"] == "SIGTERM" and result["step"] == 1
    assert latest_checkpoint(tmp_path / "checkpoints") == tmp_path / "checkpoints" / "global_step_1"


def _train_command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "train.py"), *TINY_RUN, "trainer.total_training_steps=3",
            "trainer.save_freq=1", "trainer.max_ckpt_to_keep=5", "actor_rollout_ref.actor.lr=1e-3",
            # SR-GRPO gives every episode a nonzero advantage and a reference model; with the entropy
            # bonus the weights, the Adam state and the sampled tokens change every step.
            "algo=sr_grpo", "actor_rollout_ref.actor.entropy_coeff=0.01", "es_manager.train.group_size=3",
            "trainer.test_freq=-1", f"hydra.run.dir={run_dir}", *extra]


def _fresh_environment() -> dict[str, str]:
    """This process's environment without the rendezvous variables an in-process engine has set."""
    taken = {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"}
    return {key: value for key, value in os.environ.items() if key not in taken}


def _metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("timing/")} for row in rows]


@pytest.mark.slow  # three training subprocesses
@pytest.mark.parametrize("extra", [[], ["actor_rollout_ref.model.lora_rank=4"]],
                         ids=["full", "lora"])
def test_run_killed_with_sigkill_resumes_to_the_same_metrics(tmp_path, extra):
    """A LoRA run's checkpoints hold only the adapters and their optimizer state, and still resume exactly."""
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    env = _fresh_environment()
    subprocess.run(_train_command(reference, *extra), check=True, capture_output=True, timeout=300, cwd=REPO, env=env)
    process = subprocess.Popen(_train_command(killed, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=REPO, env=env)
    deadline = time.monotonic() + 240
    while latest_checkpoint(killed / "checkpoints") is None and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed_from = int(latest_checkpoint(killed / "checkpoints").name.rsplit("_", 1)[1])
    assert resumed_from < 3, "the run finished before it could be killed"
    result = subprocess.run(_train_command(killed, *extra, "trainer.resume=auto"), check=True, capture_output=True,
                            text=True, timeout=300, cwd=REPO, env=env)
    assert f"(step {resumed_from})" in result.stdout
    expected = _metric_rows(reference)
    assert [row["step"] for row in expected] == [1, 2, 3]
    assert len({row["actor/entropy"] for row in expected}) == 3  # the policy really changes every step
    assert _metric_rows(killed) == expected


# ----------------------------------------------------------------- the Hugging Face export
@pytest.mark.parametrize("zero_stage", [0, 3])
def test_hf_model_export_loads_with_from_pretrained_and_equals_the_checkpoint(tmp_path, tokenizer, zero_stage):
    config = validate(compose_config([*TINY_RUN, "trainer.save_freq=1", "actor_rollout_ref.actor.lr=1e-2",
                                      f"actor_rollout_ref.actor.zero_stage={zero_stage}"]))
    result = Trainer(config, tmp_path).fit()
    export = tmp_path / "hf_model"
    assert result["hf_model"] == export and export_step(export) == 1
    exported = AutoModelForCausalLM.from_pretrained(export).eval()
    assert len(AutoTokenizer.from_pretrained(export)) == len(tokenizer)
    trained = build_tiny_model(tokenizer, seed=config.seed)
    initial_logits = trained(torch.tensor([[1, 2, 3, 4, 5]])).logits
    load_weights(trained, checkpoint_state_dict(tmp_path / "checkpoints" / "global_step_1"))
    input_ids = torch.tensor([[tokenizer.bos_token_id or 1, 510, 2113, 314, 4127, 30]])
    with torch.no_grad():
        expected, got = trained(input_ids).logits, exported(input_ids).logits
    assert not torch.allclose(initial_logits, trained(torch.tensor([[1, 2, 3, 4, 5]])).logits)  # it trained
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------- wandb
def test_wandb_run_gets_the_configured_group_offline(tmp_path):
    config = LoggerConfig(wandb=WandbConfig(mode="offline", group="drgrpo-compare-bandit", tags=["t"]),
                          progress_bar=False)
    logger = RunLogger(tmp_path, config, project="turnrl-test", name="grouped", run_config={"seed": 3},
                       total_steps=1)
    try:
        assert logger.wandb_run.group == "drgrpo-compare-bandit"
        assert logger.wandb_run.settings.mode == "offline"
        logger.log({"reward": 0.5}, step=1)
    finally:
        outputs = logger.finish()
    assert Path(outputs["wandb"]).parent == tmp_path / "wandb"


# ----------------------------------------------------------------- data parallel (torchrun, gloo)
def test_group_share_is_contiguous_and_balanced():
    assert [group_share(5, rank, 2) for rank in (0, 1)] == [range(0, 3), range(3, 5)]
    assert [list(group_share(4, rank, 3)) for rank in (0, 1, 2)] == [[0, 1], [2], [3]]
    assert list(group_share(3, 0, 1)) == [0, 1, 2]


def test_rank_share_deals_micro_batches_round_robin_and_pads():
    micro = ["a", "b", "c"]
    # rank 1 pads its second pass with the first micro-batch (its loss is scaled by 0)
    assert rank_share(micro, 0, 2) == [("a", False), ("c", False)]
    assert rank_share(micro, 1, 2) == [("b", False), ("a", True)]
    assert rank_share(micro, 0, 1) == [("a", False), ("b", False), ("c", False)]


def _torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


@pytest.mark.slow  # two training subprocesses, one of them with two ranks (~30 s)
@pytest.mark.parametrize("algo", ["drgrpo", "ppo"])
def test_two_ranks_log_the_same_metrics_and_gradients_as_one_process(tmp_path, algo):
    """A scripted rollout (tests/data_parallel_worker.py), 4 groups of 4, top-3 kept = 12
    episodes in micro-batches of 5 (5, 5, 2: rank 0 runs two, rank 1 one plus a padding pass), two PPO
    epochs (old log-probs computed shared), seq-mean-token-mean: every metric, the gradient norm
    included, must equal one process's; a missing x world-size factor would halve the norm. ``ppo``:
    the critic's values, its update and ``critic/*`` metrics too."""
    rollout, actor = "actor_rollout_ref.rollout.", "actor_rollout_ref.actor."
    overrides = [f"algo={algo}", "critic.ppo_micro_batch_size_per_gpu=5", "critic.lr=1e-3",
                 "es_manager.train.env_groups=4", rollout + "rollout_filter_strategy=top_k",
                 rollout + "rollout_filter_value=3", actor + "ppo_micro_batch_size_per_gpu=5",
                 actor + "ppo_mini_batch_size=12", actor + "ppo_epochs=2",
                 actor + "loss_agg_mode=seq-mean-token-mean", actor + "lr=1e-3",
                 "trainer.total_training_steps=2", "trainer.test_freq=-1"]
    worker = str(REPO / "tests" / "data_parallel_worker.py")
    env = _fresh_environment()
    subprocess.run([sys.executable, worker, str(tmp_path / "one"), *overrides], check=True, capture_output=True,
                   timeout=300, cwd=REPO, env=env)
    subprocess.run([*_torchrun(2), worker, str(tmp_path / "two"), *overrides], check=True, capture_output=True,
                   timeout=300, cwd=REPO, env=env)
    one, two = _metric_rows(tmp_path / "one"), _metric_rows(tmp_path / "two")
    assert [row["step"] for row in two] == [1, 2]
    assert one[0]["rollout/num_episodes"] == 16 and one[0]["rollout/filter_kept_ratio"] == 0.75
    assert one[0]["actor/grad_norm"] > 0.1 and one[1]["actor/ppo_kl"] != 0
    assert (one[1].get("critic/grad_norm", 1.0) > 0) and (algo == "ppo") == ("critic/vf_loss" in one[1])
    for row_one, row_two in zip(one, two, strict=True):
        assert row_two == pytest.approx(row_one, rel=1e-5, abs=1e-7)


@pytest.mark.slow  # a two-rank training subprocess
def test_sigterm_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    """Only rank 1 gets SIGTERM (during step 1): both ranks must agree to stop after step 1 and save
    one checkpoint together; without the agreement rank 0 would start step 2 alone and hang."""
    env = _fresh_environment() | {"SIGTERM_RANK": "1"}
    result = subprocess.run(
        [*_torchrun(2), str(REPO / "tests" / "data_parallel_worker.py"), str(tmp_path), "algo=drgrpo",
         "es_manager.train.env_groups=4", "trainer.total_training_steps=5", "trainer.test_freq=-1"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [row["step"] for row in _metric_rows(tmp_path)] == [1]
    assert [path.name for path in (tmp_path / "checkpoints").iterdir()] == ["global_step_1"]


def test_torchrun_two_ranks_train_on_all_groups(tmp_path):
    """The train script under torchrun on CPU: 3 groups split 2 + 1 over the ranks, the top-2 filter
    ranks all 3, the metrics (rank 0's file) count every episode, and the export is written once."""
    result = subprocess.run(
        [*_torchrun(2), str(REPO / "scripts" / "train.py"), *TINY_RUN, "es_manager.train.env_groups=3",
         "actor_rollout_ref.rollout.rollout_filter_strategy=top_k",
         "actor_rollout_ref.rollout.rollout_filter_value=2", "trainer.test_freq=1", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=_fresh_environment())
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = _metric_rows(tmp_path)
    assert row["rollout/num_episodes"] == 6 and row["rollout/filter_kept_ratio"] == pytest.approx(2 / 3)
    assert row["rollout/generated_tokens"] == 6 * 8  # a random model always writes all 8 tokens
    assert row["val/tokens"] > 0 and row["rollout/format_error_rate"] == 1.0
    assert result.stdout.count("hf model:") == 1 and (tmp_path / "hf_model" / "config.json").is_file()


HEAP_SLACK_PROBE = """
import sys, psutil, torch
from algos.training.memory import limit_heap_slack
if sys.argv[1] == "on":
    assert limit_heap_slack(128 * 2**10)
rss = lambda: psutil.Process().memory_info().rss / 2**20
del_me = torch.ones(16 * 2**20 // 4); del del_me   # glibc raises its mmap threshold to 16 MiB here
before = rss()
blocks, keep = [], []
for _ in range(256):
    blocks.append(torch.ones(2**20 // 4))         # 1 MiB each, with small live blocks between them
    keep.append(torch.ones(1024))
del blocks
print(round(rss() - before))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_limit_heap_slack_returns_freed_blocks_to_the_os():
    """256 freed 1 MiB tensors stay resident in glibc's heap by default; with the trainer's setting
    each had its own mapping and leaves nothing behind."""
    def retained_mib(mode: str) -> int:
        result = subprocess.run([sys.executable, "-c", HEAP_SLACK_PROBE, mode], capture_output=True, text=True,
                                cwd=REPO, timeout=120, env=_fresh_environment())
        assert result.returncode == 0, result.stderr[-2000:]
        return int(result.stdout.split()[-1])

    assert retained_mib("off") > 200
    assert retained_mib("on") < 20
