"""The rollout engine: token-in/token-out masks, seeds and groups, penalties, budgets, truncation."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

import envs
from agents.backends import HFBackend, SamplingParams
from agents.backends.base import resolve_caps
from agents.rollout import AgentConfig, RolloutEngine

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=8)
SCRIPTED = SamplingParams(temperature=0.0, max_new_tokens=64)



class RecordingBackend:
    """Wraps a backend and records each call's prompts and replies."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[tuple[list[list[int]], list[list[int]]]] = []

    def generate(self, prompts, params, max_new_tokens=None):
        replies = self.inner.generate(prompts, params, max_new_tokens)
        self.calls.append(([list(p) for p in prompts], replies))
        return replies

    def update_weights(self, model):
        self.inner.update_weights(model)


class ScriptedBackend:
    """Test double for a backend: every prompt of call ``t`` gets the token ids of ``replies[t]``."""

    def __init__(self, tokenizer, replies: Sequence[str]):
        self.replies = [tokenizer.encode(text, add_special_tokens=False) for text in replies]
        self.calls = 0

    def generate(self, prompts, params, max_new_tokens=None):
        caps = resolve_caps(prompts, params, max_new_tokens)
        reply = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        return [reply[:cap] for cap in caps]

    def update_weights(self, model):
        pass


def engine(tokenizer, backend, **config) -> RolloutEngine:
    return RolloutEngine(AgentConfig.of(**{"env_groups": 2, "group_size": 2, "max_turn": 3, **config}), tokenizer, backend)


def generated(batch, b: int) -> list[int]:
    return batch.input_ids[b][batch.loss_mask[b].bool()].tolist()


def test_loss_mask_is_exactly_the_generated_tokens(tokenizer, tiny):
    backend = RecordingBackend(HFBackend(tiny, tokenizer))
    batch = engine(tokenizer, backend, env="sokoban").rollout(1, GREEDY)
    assert len(backend.calls) == 3 and all(len(prompts) == 4 for prompts, _ in backend.calls)
    for b in range(4):
        row = batch.input_ids[b].tolist()
        expected_generated = []
        for prompts, replies in backend.calls:
            prompt, reply = prompts[b], replies[b]
            # What the model saw is a prefix of the training sequence, and its reply follows unchanged.
            assert row[: len(prompt)] == prompt
            assert row[len(prompt) : len(prompt) + len(reply)] == reply
            assert batch.loss_mask[b, len(prompt) : len(prompt) + len(reply)].tolist() == [1] * len(reply)
            assert batch.loss_mask[b, : len(prompt)].sum() == len(expected_generated)
            expected_generated += reply
        assert generated(batch, b) == expected_generated
        assert int(batch.attention_mask[b].sum()) == len(backend.calls[-1][0][b]) + len(backend.calls[-1][1][b])
        # The first prompt is the chat template of the opening messages plus the <think> prefill.
        opening = tokenizer.apply_chat_template(batch.turns[b][:2], tokenize=False, add_generation_prompt=True)
        first_prompt = backend.calls[0][0][b]
        assert first_prompt == tokenizer.encode(opening + "<think>", add_special_tokens=False)
        assert tokenizer.decode(first_prompt).endswith("<|im_start|>assistant\n<think>")
    assert batch.metrics["rollout/generated_tokens"] == batch.loss_mask.sum().item() == 4 * 3 * 8
    assert (batch.loss_mask <= batch.attention_mask).all()


def test_scripted_sokoban_episode_matches_chat_text_and_env_replay(tokenizer):
    replies = ["go up</think><answer>Up</answer>", "then</think> <answer>Left || Down</answer>"]
    backend = ScriptedBackend(tokenizer, replies)
    batch = engine(tokenizer, backend, env="sokoban", max_turn=2).rollout(4, SCRIPTED)
    reply_ids = [tokenizer.encode(text, add_special_tokens=False) for text in replies]
    for b in range(4):
        # Token-in/token-out: the generated spans are the scripted ids, in order.
        assert generated(batch, b) == reply_ids[0] + reply_ids[1]
        # The whole sequence is the chat of the logged messages (the last reply is still open).
        text = tokenizer.decode(batch.input_ids[b][batch.attention_mask[b].bool()])
        chat = tokenizer.apply_chat_template(batch.turns[b], tokenize=False)
        assert text + "<|im_end|>\n" == chat
        assert [m["role"] for m in batch.turns[b]] == ["system", "user", "assistant", "user", "assistant"]
        assert batch.turns[b][2]["content"] == "<think>" + replies[0]
        # Rewards: an independent replay of the same level and actions.
        env = envs.make("sokoban")
        env.reset(seed=int(batch.seeds[b]), options={"member": b % 2})
        first = env.step(env.action_names.index("Up"))[1]
        second = sum(env.step(env.action_names.index(name))[1] for name in ("Left", "Down"))
        assert batch.turns[b][3]["content"].startswith(f"Reward:\n{round(first, 4):g}\n\nTurn 2:\nState:\n")
        assert "You have 9 actions left." in batch.turns[b][3]["content"]
        assert batch.episode_reward[b].item() == pytest.approx(first + second)
    assert batch.num_turns.tolist() == [2, 2, 2, 2]
    assert batch.seeds.tolist() == [10006, 10006, 10007, 10007]


def test_turn_scores_sit_on_each_turns_last_generated_token(tokenizer):
    """3 turns: a valid move, a bad reply (format penalty -0.1, nothing runs), two moves. With
    ``use_turn_scores`` each turn's reward is on its reply's last token; without, the sum on the last."""
    replies = ["go</think><answer>Up</answer>", "hmm</think><answer>Fly</answer>", "x</think><answer>Left || Down</answer>"]
    turn_scored = engine(tokenizer, ScriptedBackend(tokenizer, replies), env="sokoban", use_turn_scores=True)
    batch = turn_scored.rollout(2, SCRIPTED)
    summed = engine(tokenizer, ScriptedBackend(tokenizer, replies), env="sokoban").rollout(2, SCRIPTED)
    assert batch.num_turns.tolist() == [3] * 4
    for b in range(4):
        env = envs.make("sokoban")
        env.reset(seed=int(batch.seeds[b]), options={"member": b % 2})
        turn_rewards = [env.step(env.action_names.index("Up"))[1], -0.1,
                        sum(env.step(env.action_names.index(name))[1] for name in ("Left", "Down"))]
        mask = batch.loss_mask[b].tolist()
        ends = [t for t in range(len(mask)) if mask[t] and (t + 1 == len(mask) or not mask[t + 1])]
        assert len(ends) == 3 and mask[ends[0] + 1] == 0 == mask[ends[1] + 1]  # env tokens between the turns
        expected = torch.zeros(len(mask))
        expected[ends] = torch.tensor(turn_rewards)
        torch.testing.assert_close(batch.token_rewards[b], expected)
        assert batch.episode_reward[b].item() == pytest.approx(sum(turn_rewards))
        only_last = torch.zeros(len(mask))
        only_last[ends[-1]] = sum(turn_rewards)
        torch.testing.assert_close(summed.token_rewards[b], only_last)
    kept = batch.select(torch.tensor([1]))
    torch.testing.assert_close(kept.token_rewards, batch.token_rewards[2:, : kept.input_ids.shape[1]])


@pytest.mark.parametrize(
    ("reply", "reward", "turns", "error_rate"),
    [
        ("calm</think><answer>Phoenix</answer>", 0.1, 1, 0.0),  # the safe arm always pays 0.1
        ("hmm</think><answer>Unicorn</answer>", -0.3, 3, 1.0),  # invalid name: -0.1 on each of 3 turns
        ("<answer>Phoenix</answer>", -0.3, 3, 1.0),  # no </think>: format error, nothing runs
        ("x</think><answer>Phoenix || Unicorn</answer>", 0.0, 1, 1.0),  # valid one runs, still penalised
        ("x</think><answer>Phoenix || Dragon</answer>", 0.1, 1, 0.0),  # one pull per episode: Dragon dropped
    ],
)
def test_format_penalty_once_per_bad_turn(tokenizer, reply, reward, turns, error_rate):
    batch = engine(tokenizer, ScriptedBackend(tokenizer, [reply]), env="bandit").rollout(1, SCRIPTED)
    assert batch.episode_reward.tolist() == pytest.approx([reward] * 4)
    assert batch.num_turns.tolist() == [turns] * 4
    assert not batch.success.any()  # Phoenix has the lower mean
    assert batch.metrics["rollout/format_error_rate"] == pytest.approx(error_rate)
    assert batch.metrics["rollout/mean_reward"] == pytest.approx(reward)
    assert batch.metrics["rollout/mean_turns"] == turns


def test_format_errors_are_counted_even_without_a_penalty(tokenizer):
    backend = ScriptedBackend(tokenizer, ["</think><answer>Unicorn</answer>"])
    batch = engine(tokenizer, backend, env="bandit", format_penalty=0.0, max_turn=2).rollout(1, SCRIPTED)
    assert batch.episode_reward.tolist() == [0.0] * 4
    assert batch.metrics["rollout/format_error_rate"] == 1.0


def test_choosing_the_better_arm_is_a_success(tokenizer):
    batch = engine(tokenizer, ScriptedBackend(tokenizer, ["bold</think><answer>Dragon</answer>"]), env="bandit",
                   group_size=8).rollout(1, SCRIPTED)
    assert batch.success.all() and batch.metrics["rollout/success_rate"] == 1.0
    assert set(batch.episode_reward.tolist()) <= {0.0, 1.0}
    # Members of a group share the level but not the dice: payouts differ within the 8 members.
    assert len(set(batch.episode_reward.tolist())) == 2


def test_actions_per_turn_and_per_trajectory_budgets(tokenizer):
    seven_ups = "up</think><answer>" + " || ".join(["Up"] * 7) + "</answer>"
    batch = engine(tokenizer, ScriptedBackend(tokenizer, [seven_ups]), env="sokoban", max_turn=5).rollout(1, SCRIPTED)
    # 5 actions per turn, 10 per trajectory (Sokoban's default) -> the budget ends after turn 2.
    assert "You have 5 actions left." in batch.turns[0][3]["content"]
    assert batch.num_turns.tolist() == [2, 2, 2, 2]
    short = engine(tokenizer, ScriptedBackend(tokenizer, [seven_ups]), env="sokoban", max_actions_per_traj=3)
    assert short.rollout(1, SCRIPTED).num_turns.tolist() == [1, 1, 1, 1]


def test_identical_seeds_give_identical_rollouts(tokenizer, tiny):
    def run(params, step=1):
        return engine(tokenizer, HFBackend(tiny, tokenizer), env="bandit", max_turn=2).rollout(step, params)

    first, again = run(GREEDY), run(GREEDY)
    assert torch.equal(first.input_ids, again.input_ids) and torch.equal(first.loss_mask, again.loss_mask)
    assert first.turns == again.turns
    sampled = SamplingParams(temperature=1.0, max_new_tokens=8, seed=11)
    assert torch.equal(run(sampled).input_ids, run(sampled).input_ids)
    other_seed = SamplingParams(temperature=1.0, max_new_tokens=8, seed=12)
    assert not torch.equal(run(sampled).input_ids, run(other_seed).input_ids)
    assert run(GREEDY, step=2).seeds.tolist() == [10002, 10002, 10003, 10003]


def test_groups_share_a_level_and_validation_uses_held_out_seeds(tokenizer):
    eng = engine(tokenizer, ScriptedBackend(tokenizer, ["</think><answer>Up</answer>"]), env="sokoban", env_groups=3,
                 max_turn=1, val_groups=2, val_group_size=3)
    batch = eng.rollout(1, SCRIPTED)
    first_messages = [turns[1]["content"] for turns in batch.turns]
    assert first_messages[0] == first_messages[1] and first_messages[2] == first_messages[3]
    assert len({first_messages[0], first_messages[2], first_messages[4]}) == 3
    assert batch.group_index.tolist() == [0, 0, 1, 1, 2, 2]
    assert batch.episode_reward.view(3, 2).shape == (3, 2)
    validation = eng.validate(SCRIPTED)
    assert validation.seeds.tolist() == [123, 123, 123, 124, 124, 124]
    assert validation.group_size == 3


def test_episodes_end_truncated_at_max_model_len(tokenizer, tiny):
    backend = RecordingBackend(HFBackend(tiny, tokenizer))
    engine(tokenizer, backend, env="sokoban", env_groups=1, max_turn=1).rollout(1, GREEDY)
    prompt_length = len(backend.calls[0][0][0])

    # Room for one 8-token reply but not for the next env message.
    batch = engine(tokenizer, HFBackend(tiny, tokenizer), env="sokoban", env_groups=1,
                   max_model_len=prompt_length + 20).rollout(1, GREEDY)
    assert batch.truncated.all() and batch.num_turns.tolist() == [1, 1]
    assert batch.input_ids.shape[1] == prompt_length + 8
    assert batch.metrics["rollout/truncated_rate"] == 1.0

    # The reply is capped by the room left; the sequence ends exactly at max_model_len.
    batch = engine(tokenizer, HFBackend(tiny, tokenizer), env="sokoban", env_groups=1,
                   max_model_len=prompt_length + 3).rollout(1, GREEDY)
    assert batch.truncated.all() and batch.loss_mask.sum(dim=1).tolist() == [3, 3]
    assert batch.attention_mask.sum(dim=1).tolist() == [prompt_length + 3] * 2

    # A prompt that does not fit: no turn is played, nothing is generated.
    silent = RecordingBackend(HFBackend(tiny, tokenizer))
    batch = engine(tokenizer, silent, env="sokoban", env_groups=1, max_model_len=prompt_length - 1).rollout(1, GREEDY)
    assert silent.calls == [] and batch.truncated.all() and batch.num_turns.tolist() == [0, 0]
    assert batch.loss_mask.sum() == 0 and batch.input_ids.shape[1] == prompt_length - 1


def test_select_keeps_whole_groups_in_order(tokenizer):
    batch = engine(tokenizer, ScriptedBackend(tokenizer, ["</think><answer>Up</answer>"]), env="sokoban", env_groups=3,
                   max_turn=1).rollout(1, SCRIPTED)
    kept = batch.select(torch.tensor([0, 2]))
    assert kept.group_index.tolist() == [0, 0, 2, 2]
    assert torch.equal(kept.episode_reward, batch.episode_reward[[0, 1, 4, 5]])
    assert kept.turns == [batch.turns[i] for i in (0, 1, 4, 5)]
    assert torch.equal(kept.input_ids, batch.input_ids[[0, 1, 4, 5], : kept.input_ids.shape[1]])
    assert len(kept) == 4 and kept.group_size == 2


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"env": "chess"}, "env"), ({"group_size": 0}, "group_size"), ({"max_actions_per_traj": 0}, "max_actions"),
     ({"train_seed_start": -1}, "train_seed_start")],
)
def test_agent_config_rejects_bad_values(tokenizer, kwargs, key):
    with pytest.raises(ValueError, match=key):
        engine(tokenizer, None, **kwargs)


class OutOfContractBackend:
    """Test double that answers every prompt with the same ``reply``, whatever the cap."""

    def __init__(self, reply):
        self.reply = reply

    def generate(self, prompts, params, max_new_tokens=None):
        return [list(self.reply) for _ in prompts]

    def update_weights(self, model):
        pass


@pytest.mark.parametrize("case", ["negative", "out_of_vocab", "not_an_int", "over_the_cap"])
def test_replies_outside_the_backend_contract_are_rejected_naming_backend_and_value(tokenizer, case):
    vocab = len(tokenizer)
    reply, message = {
        "negative": ([5, -3], rf"token id -3 for prompt 0; allowed: ints in \[0, {vocab}\)"),
        "out_of_vocab": ([7, vocab], rf"token id {vocab} for prompt 0; allowed: ints in \[0, {vocab}\)"),
        "not_an_int": ([1.5], r"token id 1\.5 for prompt 0"),
        "over_the_cap": ([9] * 9, r"9 ids for prompt 0; allowed: at most its cap 8"),  # GREEDY caps 8
    }[case]
    with pytest.raises(ValueError, match=r"OutOfContractBackend\.generate returned " + message):
        engine(tokenizer, OutOfContractBackend(reply), env="bandit").rollout(1, GREEDY)
