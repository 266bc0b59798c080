"""GSM8K: answer extraction on many formats, the generated problems' answers, the env and its rewards."""

from __future__ import annotations

import ast
import importlib.util
import operator
import re
import warnings
from decimal import Decimal
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
from envs import gsm8k_data
from envs.gsm8k import (
    MAX_ANSWER,
    GSM8KEnv,
    chat_messages,
    grade_reply,
    make_reward_funcs,
    to_observation_text,
)
from envs.gsm8k_answers import (
    extract_answer,
    format_number,
    has_answer_format,
    is_correct,
    numbers_in,
    parse_decimal,
    reference_answer,
)
from envs.gsm8k_data import TEMPLATES, generate_problems, generated_split, load_gsm8k

REPO = Path(__file__).resolve().parents[1]
GSM8K_ID = envs.ENV_IDS["gsm8k"]


# ----------------------------------------------------------------- answer extraction
@pytest.mark.parametrize(("text", "numbers"), [
    ("The answer is 42.", ["42"]),
    ("$1,234.50 in total", ["1234.50"]),
    ("12,345,678 grains", ["12345678"]),
    ("3-4 hours", ["3", "4"]),              # a hyphen after a digit is no minus sign
    ("-5 degrees, x = -7", ["-5", "-7"]),
    ("\u22123 (unicode minus)", ["-3"]),
    ("costs $-5 or -$6", ["-5", "-6"]),
    ("1,2,3", ["1", "2", "3"]),             # a list, not a thousands separator
    ("1,2345", ["1", "2345"]),
    ("it is 25% off", ["25"]),
    ("42.0.", ["42.0"]),
    ("the 2nd and 10th", ["2", "10"]),
    ("no digits here", []),
])
def test_numbers_in_hand_listed(text: str, numbers: list[str]) -> None:
    assert numbers_in(text) == [Decimal(n) for n in numbers]


@pytest.mark.parametrize(("reply", "mode", "expected"), [
    ("<think>48/2 = 24, 48 + 24 = 72</think><answer>72</answer>", "answer_tag", "72"),
    ("<answer>The total is $1,080.00 dollars</answer>", "answer_tag", "1080"),
    ("<answer>5 + 13 = 18</answer> and later 99", "answer_tag", "18"),     # last number inside the tag
    ("<answer>1</answer> oops <answer>2 apples</answer>", "answer_tag", "2"),  # last tag wins
    ("<think>so</think><answer>17", "answer_tag", "17"),                    # cut at the stop string
    ("The answer is 72.", "answer_tag", None),                              # no tag
    ("<answer>seventy-two</answer>", "answer_tag", None),
    ("The answer is 72.", "last_number", "72"),
    ("48/2 = 24 so 48+24 = 72 clips.", "last_number", "72"),
    ("<answer>72</answer> (checked 3 times)", "last_number", "3"),
    ("nothing", "last_number", None),
])
def test_extract_answer_hand_listed(reply: str, mode: str, expected: str | None) -> None:
    assert extract_answer(reply, mode) == (None if expected is None else Decimal(expected))


def test_extract_answer_rejects_unknown_mode_and_tolerates_non_text() -> None:
    with pytest.raises(ValueError, match="'first_number'.*answer_tag"):
        extract_answer("1", "first_number")
    for value in (None, 42, b"<answer>1</answer>", ["42"]):
        assert extract_answer(value) is None and has_answer_format(value) is False


@pytest.mark.parametrize(("predicted", "reference", "correct"), [
    ("<answer>1,000</answer>", "1000", True),
    ("<answer>$18.00</answer>", "#### 18", True),
    ("<answer>72 clips</answer>", 72, True),
    ("<answer>72.5</answer>", "72", False),
    ("<answer>-3</answer>", "3", False),
    ("<answer>0</answer>", "#### 0", True),
    ("no answer", "5", False),
])
def test_is_correct_tolerates_commas_dollars_units_and_trailing_zeros(predicted: str, reference: object,
                                                                       correct: bool) -> None:
    assert is_correct(extract_answer(predicted), reference) is correct


def test_reference_answer_and_parse_decimal() -> None:
    solution = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = <<48+24=72>>72.\n#### 72"
    assert reference_answer(solution) == 72
    assert reference_answer("...\n#### 1,200") == 1200
    assert parse_decimal(7.5) == Decimal("7.5") and parse_decimal("#### -4") == -4
    with pytest.raises(ValueError, match="no '#### <number>' line"):
        reference_answer("just 72")
    for bad in ("none", float("nan"), True, None):
        with pytest.raises(ValueError, match="reference answer"):
            parse_decimal(bad)
    assert format_number(Decimal("1200.0")) == "1200" and format_number(Decimal("72.50")) == "72.5"


def test_has_answer_format_needs_closed_tag_with_number() -> None:
    assert has_answer_format("<think>x</think><answer> 12 </answer>")
    assert not has_answer_format("<answer>12")
    assert not has_answer_format("<answer>twelve</answer>")


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_extraction_never_raises(text: str) -> None:
    for mode in ("answer_tag", "last_number"):
        answer = extract_answer(text, mode)
        assert answer is None or answer.is_finite()
    env = GSM8KEnv(source="generated")
    action = env.parse_action(text)
    assert action is None or env.action_space.contains(action)


# ----------------------------------------------------------------- generated problems
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate(expression: str) -> float:
    """Value of an arithmetic expression of numbers and + - * / (no eval())."""
    def visit(node: ast.AST) -> float:
        if isinstance(node, ast.BinOp):
            return _OPERATORS[type(node.op)](visit(node.left), visit(node.right))
        if isinstance(node, ast.Constant):
            return node.value
        raise ValueError(f"unexpected node {ast.dump(node)}")
    return visit(ast.parse(expression, mode="eval").body)


# One problem per template from np.random.default_rng(7); answers worked out by hand.
HAND_CHECKED = {
    "_sold_half": ("Ravi sold 78 cards in April", 117),                     # 78 + 78/2
    "_hourly_pay": ("Ravi earns $21 an hour babysitting. He works 6 hours a day for 5 days", 630),  # 21*6*5
    "_money_left": ("Ravi has $114. He buys 7 packs of marbles that cost $10 each", 44),  # 114 - 70
    "_pages_left": ("Ravi is reading a 217-page book. Yesterday he read 26 pages", 139),  # 217 - 26 - 52
    "_boxes_given": ("A box holds 17 marbles. Ravi has 8 boxes and gives away 122 marbles", 14),  # 136 - 122
    "_share_equally": ("8 friends share 104 toys equally. Then each friend gives away 9", 4),  # 104/8 - 9
    "_weekly_running": ("Ravi runs 8 miles a day, 6 days a week. How many miles does he run in 9 weeks", 432),
    "_sale_price": ("A backpack costs $500. It is on sale for 50% off", 250),  # 500 - 250
}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.__name__)
def test_each_template_matches_a_hand_worked_answer(template) -> None:
    record = template(np.random.default_rng(7))
    opening, answer = HAND_CHECKED[template.__name__]
    assert record["question"].startswith(opening)
    assert reference_answer(record["answer"]) == answer


def test_generated_solutions_are_arithmetically_right_and_end_in_their_answer() -> None:
    problems = generate_problems(300, seed=3)
    for record in problems:
        notes = re.findall(r"<<([^=]+)=([^>]+)>>", record["answer"])
        assert notes, record
        for expression, value in notes:
            assert evaluate(expression) == int(value), record["answer"]
        answer = reference_answer(record["answer"])
        assert answer == int(notes[-1][1]) and answer >= 0
        assert record["answer"].splitlines()[-1] == f"#### {answer}"
    assert {r["question"] for r in problems} == {r["question"] for r in generate_problems(300, seed=3)}
    assert len({r["question"] for r in problems}) == 300


def test_generated_splits_are_fixed_sized_and_disjoint() -> None:
    train, test = generated_split("train"), generated_split("test")
    assert (len(train), len(test)) == (1000, 200)
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    assert generate_problems(5, seed=0) == list(train[:5])
    with pytest.raises(ValueError, match="num_problems=0"):
        generate_problems(0, seed=0)


def test_load_gsm8k_falls_back_with_a_clear_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(split: str) -> None:
        raise ConnectionError("huggingface.co is not reachable")

    monkeypatch.setattr(gsm8k_data, "_load_hf", unreachable)
    load_gsm8k.cache_clear()
    try:
        with pytest.warns(UserWarning, match="could not load openai/gsm8k.*generated GSM8K-format"):
            assert load_gsm8k("test", "auto") == generated_split("test")
        with pytest.raises(ConnectionError):
            load_gsm8k("train", "hf")
    finally:
        load_gsm8k.cache_clear()
    with pytest.raises(ValueError, match="split 'dev'.*train"):
        load_gsm8k("dev", "generated")
    with pytest.raises(ValueError, match="source 'web'.*generated"):
        load_gsm8k("train", "web")


# ----------------------------------------------------------------- env
def test_env_rewards_the_right_number_only() -> None:
    env = GSM8KEnv(source="generated")
    question, info = env.reset(seed=11)
    reference = env.reference
    assert question == to_observation_text(env.problems[env.problem_index]["question"])
    assert env.parse_action(f"{reference:,}") == int(reference) and env.default_max_actions_per_traj == 1
    obs, reward, terminated, truncated, info = env.step(int(reference))
    assert (reward, terminated, truncated, info["success"], info["reference"]) == (1.0, True, False, True,
                                                                                  str(reference))
    assert obs.endswith(f"Answer given: {reference} (correct). Reference answer: {reference}.")
    env.reset(seed=11)
    _, reward, _, _, info = env.step(int(reference) + 1)
    assert reward == 0.0 and info["success"] is False and info["action_is_valid"] is True
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(int(reference))


def test_env_step_reads_a_whole_reply_with_its_answer_mode_and_format_reward() -> None:
    tagged = GSM8KEnv(source="generated", format_reward=0.25)
    tagged.reset(seed=4)
    right = format_number(tagged.reference)
    assert tagged.step(f"<think>...</think><answer>{right} dollars</answer>")[1] == 1.25
    tagged.reset(seed=4)
    assert tagged.step("<answer>-1</answer>")[1] == 0.25                      # format only
    tagged.reset(seed=4)
    _, reward, _, _, info = tagged.step(f"I think it is {right}")               # no tag: no answer read
    assert reward == 0.0 and info["action_is_valid"] is False
    loose = GSM8KEnv(source="generated", answer_mode="last_number")
    loose.reset(seed=4)
    assert loose.step(f"I think it is {right}")[1] == 1.0


def test_parse_action_only_whole_numbers_in_range() -> None:
    env = GSM8KEnv(source="generated")
    assert env.parse_action("about 1,200 dollars") == 1200 and env.parse_action("-7") == -7
    assert env.parse_action("42.0") == 42
    for text in ("3.5", "", "none", str(MAX_ANSWER + 1), None, 42, ["1"]):
        assert env.parse_action(text) is None, text
    assert env.is_valid_action(MAX_ANSWER) and not env.is_valid_action(True) and not env.is_valid_action(1.0)


def test_members_get_the_same_problem_and_seeds_vary() -> None:
    env = GSM8KEnv(source="generated")
    assert {env.reset(seed=9, options={"member": m})[0] for m in range(4)} == {env.reset(seed=9)[0]}
    assert len({env.reset(seed=seed)[0] for seed in range(20)}) > 10


def test_env_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="answer_mode='first'"):
        GSM8KEnv(source="generated", answer_mode="first")
    with pytest.raises(ValueError, match="format_reward=nan"):
        GSM8KEnv(source="generated", format_reward=float("nan"))
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        GSM8KEnv(source="generated", render_mode="rgb_array")


@pytest.mark.parametrize("render_mode", [None, "ansi"])
def test_gymnasium_check_env_passes(render_mode: str | None) -> None:
    env = gym.make(GSM8K_ID, source="generated", render_mode=render_mode).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)


def test_observation_text_is_folded_into_the_charset() -> None:
    assert to_observation_text("Jos\u00e9\u2019s caf\u00e9 \u2014 \u20ac5\t\u00d7 2") == "Jose's cafe - EUR 5 x 2"
    env = GSM8KEnv(source="generated")
    assert env.observation_space.contains(env.reset(seed=0)[0])


# ----------------------------------------------------------------- TRL reward functions and prompt
def test_reward_funcs_grade_conversational_and_plain_completions() -> None:
    (correctness,) = make_reward_funcs()
    completions = [[{"role": "assistant", "content": "<answer>72</answer>"}], "<answer>71</answer>", "72"]
    assert correctness(completions, reference=["72", "72", "72"]) == [1.0, 0.0, 0.0]
    correctness, answer_format = make_reward_funcs("last_number", format_reward=0.5)
    assert correctness(completions, reference=["72"] * 3) == [1.0, 0.0, 1.0]
    assert answer_format(completions) == [0.5, 0.5, 0.0]
    assert grade_reply("<answer>72</answer>", "72", format_reward=0.5) == (1.5, True)
    with pytest.raises(ValueError, match="answer_mode='tag'"):
        make_reward_funcs("tag")
    messages = chat_messages("How many?")
    assert [m["role"] for m in messages] == ["system", "user"] and messages[1]["content"].endswith("How many?")


# ----------------------------------------------------------------- native trainer
def test_one_native_sr_grpo_step_on_gsm8k(tmp_path) -> None:
    from hydra import compose, initialize_config_dir

    from algos.training.schema import register_schema, validate
    from algos.training.trainer import Trainer

    register_schema()
    overrides = ["env=gsm8k", "algo=sr_grpo", "env.kwargs.source=generated", "logger=console",
                 "logger.progress_bar=false", "actor_rollout_ref.model.path=tiny-random",
                 "actor_rollout_ref.rollout.name=hf", "actor_rollout_ref.rollout.response_length=8",
                 "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "es_manager.train.env_groups=2",
                 "es_manager.train.group_size=2", "es_manager.val.env_groups=1", "trainer.total_training_steps=1",
                 "trainer.test_freq=0"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        config = validate(compose(config_name="config", overrides=overrides))
    metrics = Trainer(config, tmp_path).fit()["metrics"]
    # a random model never writes "<think>...</think><answer>...</answer>": every episode is a format error
    assert metrics["reward"] == pytest.approx(config.es_manager.format_penalty)
    assert metrics["soft_advantage_mean"] == pytest.approx(config.es_manager.format_penalty, abs=1e-6)
    assert np.isfinite(metrics["kl"]) and metrics["rollout/mean_turns"] == 1.0


# ----------------------------------------------------------------- scripts/eval_gsm8k.py
def load_eval_script():
    spec = importlib.util.spec_from_file_location("eval_gsm8k", REPO / "scripts" / "eval_gsm8k.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_scores_completions_by_hand() -> None:
    evaluate = load_eval_script().evaluate
    records = [{"question": "q1", "answer": "#### 72"}, {"question": "q2", "answer": "#### 1,000"},
               {"question": "q3", "answer": "#### 5"}, {"question": "q4", "answer": "#### 9"}]
    completions = ["<answer>72</answer>", "<answer>$1000.00</answer>", "it is 5", "<answer>8</answer>"]
    summary, rows = evaluate(records, completions, "answer_tag")
    assert summary == {"accuracy": 0.5, "format_rate": 0.75}
    assert [(r["reference"], r["predicted"], r["correct"]) for r in rows] == [
        ("72", "72", True), ("1000", "1000", True), ("5", None, False), ("9", "8", False)]
    assert evaluate(records, completions, "last_number")[0]["accuracy"] == 0.75


def test_eval_batched_greedy_generation_matches_one_at_a_time() -> None:
    from agents.model import build_tiny_model, load_tokenizer

    greedy_completions = load_eval_script().greedy_completions
    tokenizer = load_tokenizer()
    model = build_tiny_model(tokenizer)
    questions = ["What is 2 + 3?", "Tom has 4 boxes of 12 pencils and gives away 7. How many are left?", "1+1?"]
    batched = greedy_completions(model, tokenizer, questions, batch_size=3, max_new_tokens=6)
    single = greedy_completions(model, tokenizer, questions, batch_size=1, max_new_tokens=6)
    assert batched == single and all(batched)


def test_free_answer_prompt_has_no_action_list() -> None:
    """GSM8K has no named actions: the intro must not promise an action list or a `||` separator."""
    from agents.prompts import intro_message

    env = envs.make("gsm8k", source="generated")
    text = intro_message(env.instructions, env.action_names, 1)
    assert text == env.instructions + "\n"
    assert "available actions" not in text and "||" not in text
    assert "available actions are:\nUp, Down" in intro_message("rules", ("Up", "Down"), 5)
