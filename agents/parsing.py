"""Parse a model reply into its reasoning and a list of action texts (RAGEN's reply format).

A well-formed reply is ``<think> ... </think> <answer> a1 || a2 </answer>`` (only the answer part
when thinking is disabled). The first match wins; the answer is split on the separator, each part
stripped, empty parts dropped and at most ``max_actions`` kept. Parsing never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ACTION_SEPARATOR = "||"
_THINK_END = re.compile(r"</think>\s*<answer>")
_TAGS = re.compile(r"</?(?:think|answer)>")


@dataclass(frozen=True)
class ParsedReply:
    """``format_ok`` is True iff the reply matched the format and named at least one action."""

    think: str
    action_texts: tuple[str, ...]
    format_ok: bool


def parse_reply(
    text: str, enable_think: bool = True, max_actions: int = 5, separator: str = ACTION_SEPARATOR
) -> ParsedReply:
    """Extract the reasoning and up to ``max_actions`` action texts from ``text``."""
    span = _first_block(text, enable_think)
    if span is None:
        return ParsedReply(think="", action_texts=(), format_ok=False)
    think, answer = (_TAGS.sub("", part) for part in span)
    actions = tuple(part.strip() for part in answer.split(separator) if part.strip())
    return ParsedReply(think=think.strip(), action_texts=actions[: max(max_actions, 0)], format_ok=bool(actions))


def _first_block(text: str, enable_think: bool) -> tuple[str, str] | None:
    """(think, answer) of the first ``<think>(.*?)</think>\\s*<answer>(.*?)</answer>`` match, in linear time.

    Equivalent to the lazy regex: a match can only start at the first ``<think>``, and if the first
    ``</think>\\s*<answer>`` after it has no ``</answer>`` behind it, no later one has.
    """
    if enable_think:
        start = text.find("<think>")
        middle = _THINK_END.search(text, start + len("<think>")) if start >= 0 else None
        if middle is None:
            return None
        think, answer_start = text[start + len("<think>") : middle.start()], middle.end()
    else:
        start = text.find("<answer>")
        if start < 0:
            return None
        think, answer_start = "", start + len("<answer>")
    end = text.find("</answer>", answer_start)
    return None if end < 0 else (think, text[answer_start:end])
