"""Reading numbers out of GSM8K solutions and model replies (pure functions, no I/O).

Used by the GSM8K env (`envs.gsm8k`), the TRL reward functions and `scripts/eval_gsm8k.py`, so
training and evaluation grade answers the same way.

- A *number* is an optional sign, an optional ``$``, digits with optional thousands commas and an
  optional decimal part: ``-3``, ``$1,234.50``, ``42.0``. Units, ``%`` and words around it are ignored.
  A ``-`` right after a letter or digit is a hyphen, not a sign (``3-4`` reads as 3 and 4).
- Numbers compare as exact decimals: ``"1,000"``, ``"1000.00"`` and ``"$1000"`` are all 1000.
- GSM8K solutions end with ``#### <answer>``; `reference_answer` reads that line.
"""

from __future__ import annotations

import re
from decimal import Decimal

ANSWER_MODES = ("answer_tag", "last_number")

_NUMBER = re.compile(
    r"(?:(?<![\w.])(?P<sign>[-\u2212]))?\$?(?<![\d.])"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<fraction>\.\d+)?"
)
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)
_CLOSED_ANSWER_TAG = re.compile(r"<answer>.*?</answer>", re.DOTALL)
_REFERENCE = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)


def numbers_in(text: str) -> list[Decimal]:
    """Every number in ``text``, in order (see the module docstring for what counts as one)."""
    found = []
    for match in _NUMBER.finditer(text):
        sign = "-" if match["sign"] else ""
        found.append(Decimal(sign + match["digits"].replace(",", "") + (match["fraction"] or "")))
    return found


def last_number(text: str) -> Decimal | None:
    """The last number in ``text``, or None."""
    numbers = numbers_in(text)
    return numbers[-1] if numbers else None


def answer_tag_content(text: str) -> str | None:
    """Text inside the last ``<answer>...</answer>``; an unclosed final tag (generation stopped) counts."""
    contents = _ANSWER_TAG.findall(text)
    return contents[-1] if contents else None


def extract_answer(text: object, mode: str = "answer_tag") -> Decimal | None:
    """The answer a reply states, or None (never raises on any input).

    ``mode="answer_tag"``: the last number inside the last ``<answer>`` tag (None without a tag);
    ``mode="last_number"``: the last number anywhere in the reply.
    """
    if mode not in ANSWER_MODES:
        raise ValueError(f"answer mode {mode!r} is unknown; allowed: {list(ANSWER_MODES)}")
    if not isinstance(text, str):
        return None
    if mode == "last_number":
        return last_number(text)
    content = answer_tag_content(text)
    return None if content is None else last_number(content)


def has_answer_format(text: object) -> bool:
    """True iff the reply has a closed ``<answer>...</answer>`` holding a number (format reward)."""
    if not isinstance(text, str) or not _CLOSED_ANSWER_TAG.search(text):
        return False
    return extract_answer(text, "answer_tag") is not None


def reference_answer(solution: str) -> Decimal:
    """The number after ``####`` in a GSM8K solution (``"... \\n#### 1,200"`` -> 1200)."""
    match = _REFERENCE.search(solution)
    number = last_number(match.group(1)) if match else None
    if number is None:
        raise ValueError(f"GSM8K solution has no '#### <number>' line: {solution[-80:]!r}")
    return number


def parse_decimal(value: str | int | float | Decimal) -> Decimal:
    """A reference given as ``72``, ``"72"``, ``"1,200"`` or ``"#### 72"`` as a Decimal (ValueError if none)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = Decimal(str(value))
        if not number.is_finite():
            raise ValueError(f"reference answer {value!r} is not a finite number")
        return number
    if isinstance(value, str):
        number = reference_answer(value) if "####" in value else last_number(value)
        if number is not None:
            return number
    raise ValueError(f"reference answer {value!r} holds no number; allowed: a number or a string with one")


def is_correct(predicted: Decimal | None, reference: str | int | float | Decimal) -> bool:
    """True iff ``predicted`` equals the reference number exactly (as decimals: 42 == 42.0)."""
    return predicted is not None and predicted == parse_decimal(reference)


def format_number(value: Decimal) -> str:
    """Canonical text of a number: no exponent, no trailing zeros (``Decimal("1200.0")`` -> ``"1200"``)."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
