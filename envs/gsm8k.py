"""GSM8K grade-school math as a one-turn TurnRL env (``turnrl/GSM8K-v0``).

Each episode shows one word problem; the agent answers once and the episode ends with reward
``1`` for the right number (else ``0``), plus ``format_reward`` when the answer came in the required
format. Answers are read and compared by `envs.gsm8k_answers` (commas, ``$``, units, ``42.0`` all fine).

How a free-text answer fits the `TextEnv` contract (``Discrete`` actions, ``parse_action``):
the action *is the integer answer*. ``action_space = Discrete(2 * MAX_ANSWER + 1, start=-MAX_ANSWER)``;
``parse_action(text)`` returns the last number in ``text`` when it is a whole number in that range, else
None. GSM8K's answers are whole numbers, so nothing right is lost; a fractional answer is "no action",
which the rollout engine books as a format error. There are no named actions (``action_names == ()``):
the instructions say what to write. ``step`` also accepts the model's whole reply as a ``str`` and
then reads it with ``answer_mode`` (``"answer_tag"``: the number in ``<answer>...</answer>``;
``"last_number"``: the last number anywhere), so a plain gymnasium loop can pass text straight through.

Levels: ``reset(seed=s)`` draws the problem index from the seed, so all members of a group get the
same problem. Only ``render_mode="ansi"`` is offered (a picture of text adds nothing).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable
from decimal import Decimal
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from envs.base import MAX_OBSERVATION_LENGTH, OBSERVATION_CHARSET, TextEnv
from envs.gsm8k_answers import (
    ANSWER_MODES,
    extract_answer,
    format_number,
    has_answer_format,
    is_correct,
    last_number,
    reference_answer,
)
from envs.gsm8k_data import load_gsm8k

MAX_ANSWER = 10**12
SYSTEM_PROMPT = "You're a helpful assistant."
INSTRUCTIONS = (
    "Solve the grade-school math word problem. Think step by step, then give the final answer as a "
    "single number (digits only, no units) inside the answer tags."
)
REPLY_FORMAT = "<think> [your reasoning] </think> <answer> [the number] </answer>"

_CHARSET = frozenset(OBSERVATION_CHARSET)
_ASCII_SUBSTITUTES = {"\u2212": "-", "\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"',
                      "\u201d": '"', "\u00d7": "x", "\u00f7": "/", "\u20ac": "EUR ", "\u00a3": "GBP ", "\t": " "}


def to_observation_text(text: str) -> str:
    """``text`` folded into the observation charset (accents stripped, dashes/quotes made ASCII)."""
    folded = "".join(_ASCII_SUBSTITUTES.get(char, char) for char in text)
    folded = unicodedata.normalize("NFKD", folded)
    return "".join(char for char in folded if char in _CHARSET)[:MAX_OBSERVATION_LENGTH]


def user_prompt(question: str) -> str:
    """The single user message of the chat prompt (TRL training and evaluation)."""
    return f"{INSTRUCTIONS}\nAlways output: {REPLY_FORMAT}\n\nQuestion:\n{question}"


def chat_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_prompt(question)}]


def grade_reply(
    reply: object, reference: str | int | Decimal, answer_mode: str = "answer_tag", format_reward: float = 0.0
) -> tuple[float, bool]:
    """``(reward, correct)`` for a reply: ``reward = 1[correct] + format_reward * 1[<answer>number</answer>]``."""
    correct = is_correct(extract_answer(reply, answer_mode), reference)
    return float(correct) + (format_reward if has_answer_format(reply) else 0.0), correct


def completion_text(completion: object) -> str:
    """A TRL completion as text: a string, or the content of its chat messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return ""


def make_reward_funcs(answer_mode: str = "answer_tag", format_reward: float = 0.0) -> list[Callable[..., list[float]]]:
    """TRL-style reward functions ``f(completions, reference, **kwargs) -> list[float]``.

    ``correctness`` pays 1 for the right number; ``answer_format`` (only when ``format_reward != 0``) pays
    ``format_reward`` for a closed ``<answer>`` tag holding a number. The data set needs a ``reference`` column.
    """
    if answer_mode not in ANSWER_MODES:
        raise ValueError(f"answer_mode={answer_mode!r} is unknown; allowed: {list(ANSWER_MODES)}")

    def correctness(completions: list[Any], reference: list[str], **_: Any) -> list[float]:
        return [grade_reply(completion_text(c), r, answer_mode)[0] for c, r in zip(completions, reference, strict=True)]

    def answer_format(completions: list[Any], **_: Any) -> list[float]:
        return [format_reward * has_answer_format(completion_text(c)) for c in completions]

    return [correctness, answer_format] if format_reward != 0.0 else [correctness]


class GSM8KEnv(TextEnv):
    """One GSM8K problem per episode, answered in one step; see the module docstring."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 4}
    default_max_actions_per_traj: ClassVar[int] = 1

    def __init__(
        self,
        split: str = "train",
        source: str = "auto",
        answer_mode: str = "answer_tag",
        format_reward: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(action_names=(), render_mode=render_mode)
        if answer_mode not in ANSWER_MODES:
            raise ValueError(f"answer_mode={answer_mode!r} is unknown; allowed: {list(ANSWER_MODES)}")
        if isinstance(format_reward, bool) or not isinstance(format_reward, (int, float)) or not math.isfinite(
            format_reward
        ):
            raise ValueError(f"format_reward={format_reward!r} is invalid; allowed: a finite float")
        self.action_space = spaces.Discrete(2 * MAX_ANSWER + 1, start=-MAX_ANSWER)
        self.problems = load_gsm8k(split, source)
        self.answer_mode = answer_mode
        self.format_reward = float(format_reward)
        self.problem_index = 0
        self.reference = Decimal(0)
        self.given_answer: Decimal | None = None
        self.answered = False
        self.done = True

    @property
    def instructions(self) -> str:
        return INSTRUCTIONS

    @property
    def question(self) -> str:
        return to_observation_text(self.problems[self.problem_index]["question"])

    def _new_episode(self, rng: np.random.Generator) -> None:
        self.problem_index = int(rng.integers(len(self.problems)))
        self.reference = reference_answer(self.problems[self.problem_index]["answer"])
        self.given_answer = None
        self.answered = self.done = False

    def is_valid_action(self, action: object) -> bool:
        """True for an int (not bool) in ``[-MAX_ANSWER, MAX_ANSWER]``."""
        return (
            isinstance(action, (int, np.integer))
            and not isinstance(action, (bool, np.bool_))
            and -MAX_ANSWER <= int(action) <= MAX_ANSWER
        )

    def parse_action(self, text: object) -> int | None:
        """The last number in ``text`` as an action id if it is a whole number within range, else None."""
        number = last_number(text) if isinstance(text, str) else None
        if number is None or number != number.to_integral_value() or abs(number) > MAX_ANSWER:
            return None
        return int(number)

    def step(self, action: int | str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Answer the problem with an action id or a whole reply; the episode always ends.

        An int pays ``1[action == answer] + format_reward``; a reply pays `grade_reply`'s reward. An
        invalid action or a reply with no readable answer pays 0 (``action_is_valid=False``).
        """
        if self.done:
            raise RuntimeError("the GSM8K episode is over (one answer per episode); call reset()")
        self.answered = self.done = True
        if isinstance(action, str):
            self.given_answer = extract_answer(action, self.answer_mode)
            reward, correct = grade_reply(action, self.reference, self.answer_mode, self.format_reward)
        elif self.is_valid_action(action):
            self.given_answer = Decimal(int(action))
            correct = self.given_answer == self.reference
            reward = float(correct) + self.format_reward
        else:
            self.given_answer, reward, correct = None, 0.0, False
        valid = self.given_answer is not None
        info = self._info(success=correct, action_is_valid=valid, action_is_effective=valid,
                          reference=format_number(self.reference))
        return self._render_text(), reward if valid else 0.0, True, False, info

    def _render_text(self) -> str:
        if not self.answered:
            return self.question
        given = "none" if self.given_answer is None else format_number(self.given_answer)
        verdict = "correct" if self.given_answer == self.reference else "wrong"
        return f"{self.question}\nAnswer given: {given} ({verdict}). Reference answer: {format_number(self.reference)}."
