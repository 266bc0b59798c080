"""Reply parsing on clean, messy and hostile model text."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.parsing import ParsedReply, parse_reply


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>box is left</think><answer>Left</answer>", ParsedReply("box is left", ("Left",), True)),
        (
            "<think>\n plan \n</think>\n\n  <answer> Up ||  Left|| Down </answer>",
            ParsedReply("plan", ("Up", "Left", "Down"), True),
        ),
        # Empty parts between separators are dropped.
        ("<think></think><answer>Up || || Right ||</answer>", ParsedReply("", ("Up", "Right"), True)),
        # Text around the block is ignored; the first well-formed block wins.
        (
            "Sure! <think>a</think><answer>Up</answer> then <think>b</think><answer>Down</answer>",
            ParsedReply("a", ("Up",), True),
        ),
        # A </think> not followed by <answer> belongs to the reasoning.
        ("<think>x</think> y </think><answer>Up</answer>", ParsedReply("x y", ("Up",), True)),
        # Stray tags inside the answer are removed.
        ("<think>t</think><answer><think>Up</answer>", ParsedReply("t", ("Up",), True)),
    ],
)
def test_well_formed_replies(text, expected):
    assert parse_reply(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Left",
        "<think>no answer</think>",
        "<answer>Up</answer>",  # thinking required but missing
        "<think>a</think> text <answer>Up</answer>",  # text between the blocks
        "<think>a</think><answer>Up",  # unclosed answer (cut by the token limit)
        "<think>a</think><answer> || </answer>",  # no action named
        "<think>a</think><answer></answer>",
    ],
)
def test_malformed_replies_have_no_actions(text):
    parsed = parse_reply(text)
    assert parsed.action_texts == ()
    assert parsed.format_ok is False


def test_answer_only_format_when_thinking_is_disabled():
    assert parse_reply("<answer>Dragon</answer>", enable_think=False) == ParsedReply("", ("Dragon",), True)
    # A full think/answer reply still yields its answer, the reasoning is not kept.
    parsed = parse_reply("<think>hmm</think><answer>Up || Down</answer>", enable_think=False)
    assert parsed == ParsedReply("", ("Up", "Down"), True)


def test_actions_are_capped_at_max_actions():
    text = "<think>go</think><answer>" + " || ".join(["A", "B", "C", "D", "E", "F", "G"]) + "</answer>"
    assert parse_reply(text).action_texts == ("A", "B", "C", "D", "E")
    assert parse_reply(text, max_actions=2).action_texts == ("A", "B")
    assert parse_reply(text, max_actions=0) == ParsedReply("go", (), True)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(list("<>/| \n\tab") + ["<think>", "</think>", "<answer>", "</answer>", "||"]),
        max_size=60,
    ).map("".join)
    | st.text(max_size=200),
    st.booleans(),
    st.integers(min_value=0, max_value=6),
)
def test_never_raises_and_keeps_invariants(text, enable_think, max_actions):
    parsed = parse_reply(text, enable_think=enable_think, max_actions=max_actions)
    assert len(parsed.action_texts) <= max_actions
    for action in parsed.action_texts:
        assert action and action == action.strip() and "||" not in action
        assert "<answer>" not in action and "</answer>" not in action
    if not parsed.format_ok:
        assert parsed.action_texts == ()
    if "</answer>" not in text:
        assert not parsed.format_ok


_ACTION = st.text(alphabet=st.characters(blacklist_characters="|<>", blacklist_categories=("Cs",)), min_size=1,
                  max_size=12).filter(lambda s: s.strip())


@settings(max_examples=200, deadline=None)
@given(st.lists(_ACTION, min_size=1, max_size=8), st.text(alphabet=st.characters(blacklist_characters="<>"),
                                                          max_size=30))
def test_round_trip_of_written_actions(actions, thought):
    text = f"<think>{thought}</think> <answer>{' || '.join(actions)}</answer>"
    parsed = parse_reply(text, max_actions=5)
    assert parsed.action_texts == tuple(a.strip() for a in actions)[:5]
    assert parsed.think == thought.strip()
    assert parsed.format_ok


_TAG_SOUP = st.lists(
    st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "Up", "||", "x", "<", ">"]),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(_TAG_SOUP, st.booleans())
def test_same_block_as_the_reference_regex(text, enable_think):
    pattern = r"<think>(.*?)</think>\s*<answer>(.*?)</answer>" if enable_think else r"<answer>(.*?)</answer>"
    match = re.search(pattern, text, re.DOTALL)
    parsed = parse_reply(text, enable_think=enable_think, max_actions=100)
    if match is None:
        assert parsed == ParsedReply("", (), False)
    else:
        answer = re.sub(r"</?(?:think|answer)>", "", match.group(match.lastindex))
        assert parsed.action_texts == tuple(p.strip() for p in answer.split("||") if p.strip())


def test_hostile_long_text_parses_in_linear_time():
    hostile = ["<think>" * 20_000 + "</think>" * 20_000, "<think>a</think>" * 20_000, "<answer>" * 50_000]
    start = time.perf_counter()
    assert all(not parse_reply(text).format_ok for text in hostile)
    assert time.perf_counter() - start < 1.0
