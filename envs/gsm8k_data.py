"""GSM8K problems: the real data set through Hugging Face ``datasets``, or a generated offline stand-in.

Every record is GSM8K's schema, ``{"question": str, "answer": str}``, where ``answer`` is a worked
solution with calculator notes (``<<48/2=24>>``) ending in ``#### <number>``.

``load_gsm8k(split, source)``:
- ``source="hf"``: ``openai/gsm8k`` (config ``main``) via ``datasets``; an error if that is impossible.
- ``source="generated"``: templated arithmetic word problems made here, deterministic (split
  ``train`` from seed 0, ``test`` from seed 1, test questions never repeat a train question).
- ``source="auto"``: ``hf`` when ``datasets`` is installed and the hub is reachable (or cached with
  ``HF_DATASETS_OFFLINE=1``), else a warning saying why and ``generated``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import socket
import urllib.parse
import warnings
from collections.abc import Callable

import numpy as np

HF_DATASET = ("openai/gsm8k", "main")
SPLITS = ("train", "test")
SOURCES = ("auto", "hf", "generated")
GENERATED_SIZES = {"train": 1000, "test": 200}
GENERATED_SEEDS = {"train": 0, "test": 1}

Record = dict[str, str]
_PEOPLE = (("Natalia", "she"), ("James", "he"), ("Maria", "she"), ("Tom", "he"), ("Aisha", "she"),
           ("Carlos", "he"), ("Mei", "she"), ("Omar", "he"), ("Lena", "she"), ("Ravi", "he"))
_ITEMS = ("apples", "pencils", "stickers", "cookies", "marbles", "cards", "books", "toys")


def _solution(steps: list[tuple[str, str, int]], answer: int) -> str:
    """GSM8K-style solution: one line per (text, expression, value) step, then ``#### answer``."""
    lines = [f"{text} {expr} = <<{expr}={value}>>{value}." for text, expr, value in steps]
    return "\n".join([*lines, f"#### {answer}"])


def _sold_half(rng: np.random.Generator) -> Record:
    (name, he), first = _PEOPLE[rng.integers(len(_PEOPLE))], 2 * int(rng.integers(5, 60))
    item = _ITEMS[rng.integers(len(_ITEMS))]
    second, total = first // 2, first + first // 2
    question = (f"{name} sold {first} {item} in April, and then {he} sold half as many {item} in May. "
                f"How many {item} did {name} sell altogether in April and May?")
    return {"question": question, "answer": _solution(
        [(f"{name} sold", f"{first}/2", second), ("Altogether", f"{first}+{second}", total)], total)}


def _hourly_pay(rng: np.random.Generator) -> Record:
    (name, he), rate, hours = _PEOPLE[rng.integers(len(_PEOPLE))], int(rng.integers(8, 30)), int(rng.integers(2, 9))
    days = int(rng.integers(2, 6))
    daily, total = rate * hours, rate * hours * days
    question = (f"{name} earns ${rate} an hour babysitting. {he.capitalize()} works {hours} hours a day for "
                f"{days} days. How many dollars does {name} earn in total?")
    return {"question": question, "answer": _solution(
        [("Each day", f"{rate}*{hours}", daily), ("In total", f"{daily}*{days}", total)], total)}


def _money_left(rng: np.random.Generator) -> Record:
    (name, he), count, price = _PEOPLE[rng.integers(len(_PEOPLE))], int(rng.integers(2, 10)), int(rng.integers(2, 15))
    cost = count * price
    start = cost + int(rng.integers(1, 50))
    item = _ITEMS[rng.integers(len(_ITEMS))]
    question = (f"{name} has ${start}. {he.capitalize()} buys {count} packs of {item} that cost ${price} each. "
                f"How much money does {name} have left?")
    return {"question": question, "answer": _solution(
        [("The packs cost", f"{count}*{price}", cost), ("Left over", f"{start}-{cost}", start - cost)], start - cost)}


def _pages_left(rng: np.random.Generator) -> Record:
    (name, he), yesterday = _PEOPLE[rng.integers(len(_PEOPLE))], int(rng.integers(5, 40))
    today, read = 2 * yesterday, 3 * yesterday
    total = read + int(rng.integers(10, 200))
    question = (f"{name} is reading a {total}-page book. Yesterday {he} read {yesterday} pages, and today {he} "
                f"read twice as many pages as yesterday. How many pages are left to read?")
    return {"question": question, "answer": _solution(
        [("Today", f"{yesterday}*2", today), ("So far", f"{yesterday}+{today}", read),
         ("Pages left", f"{total}-{read}", total - read)], total - read)}


def _boxes_given(rng: np.random.Generator) -> Record:
    (name, he), per_box, boxes = _PEOPLE[rng.integers(len(_PEOPLE))], int(rng.integers(4, 25)), int(rng.integers(2, 12))
    have = per_box * boxes
    given = int(rng.integers(1, have))
    item = _ITEMS[rng.integers(len(_ITEMS))]
    question = (f"A box holds {per_box} {item}. {name} has {boxes} boxes and gives away {given} {item}. "
                f"How many {item} does {he} have now?")
    return {"question": question, "answer": _solution(
        [(f"{name} had", f"{per_box}*{boxes}", have), ("Now", f"{have}-{given}", have - given)], have - given)}


def _share_equally(rng: np.random.Generator) -> Record:
    friends, each = int(rng.integers(2, 9)), int(rng.integers(3, 20))
    eaten = int(rng.integers(1, each))
    total = friends * each
    item = _ITEMS[rng.integers(len(_ITEMS))]
    question = (f"{friends} friends share {total} {item} equally. Then each friend gives away {eaten} of them. "
                f"How many {item} does each friend have left?")
    return {"question": question, "answer": _solution(
        [("Each friend gets", f"{total}/{friends}", each), ("Left", f"{each}-{eaten}", each - eaten)],
        each - eaten)}


def _weekly_running(rng: np.random.Generator) -> Record:
    (name, he), miles, days = _PEOPLE[rng.integers(len(_PEOPLE))], int(rng.integers(2, 12)), int(rng.integers(2, 8))
    weeks = int(rng.integers(2, 10))
    weekly, total = miles * days, miles * days * weeks
    question = (f"{name} runs {miles} miles a day, {days} days a week. How many miles does {he} run in "
                f"{weeks} weeks?")
    return {"question": question, "answer": _solution(
        [("Each week", f"{miles}*{days}", weekly), ("In all", f"{weekly}*{weeks}", total)], total)}


def _sale_price(rng: np.random.Generator) -> Record:
    percent = int(rng.choice([10, 20, 25, 50]))
    price = 20 * int(rng.integers(1, 40))
    discount = price * percent // 100
    thing = ("jacket", "bicycle", "lamp", "backpack", "chair")[rng.integers(5)]
    question = f"A {thing} costs ${price}. It is on sale for {percent}% off. What is the sale price in dollars?"
    steps = [("The discount is", f"{price}*{percent}/100", discount),
             ("The sale price is", f"{price}-{discount}", price - discount)]
    return {"question": question, "answer": _solution(steps, price - discount)}


TEMPLATES: tuple[Callable[[np.random.Generator], Record], ...] = (
    _sold_half, _hourly_pay, _money_left, _pages_left, _boxes_given, _share_equally, _weekly_running, _sale_price,
)


def generate_problems(num_problems: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[Record]:
    """``num_problems`` distinct templated problems from ``seed`` (template drawn uniformly each time).

    Questions in ``exclude`` are skipped. The same (num_problems, seed, exclude) always gives the same list.
    """
    if num_problems < 1:
        raise ValueError(f"num_problems={num_problems} is invalid; allowed: an int >= 1")
    rng = np.random.default_rng(seed)
    problems: list[Record] = []
    seen = set(exclude)
    while len(problems) < num_problems:
        record = TEMPLATES[rng.integers(len(TEMPLATES))](rng)
        if record["question"] not in seen:
            seen.add(record["question"])
            problems.append(record)
    return problems


@functools.cache
def generated_split(split: str) -> tuple[Record, ...]:
    """The generated stand-in for ``split``; test questions never appear in train."""
    _check_split(split)
    exclude = frozenset(r["question"] for r in generated_split("train")) if split == "test" else frozenset()
    return tuple(generate_problems(GENERATED_SIZES[split], GENERATED_SEEDS[split], exclude))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"GSM8K split {split!r} is unknown; allowed: {list(SPLITS)}")


def _offline_mode() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes")
               for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Cheap check before ``datasets`` (whose retries take ~30 s without a network).

    Connects to ``$HF_ENDPOINT`` (default huggingface.co); behind an HTTP(S) proxy it cannot tell, so says yes.
    """
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return True
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout_s).close()
    except (OSError, TypeError):
        return False
    return True


def _load_hf(split: str) -> tuple[Record, ...]:
    if importlib.util.find_spec("datasets") is None:
        raise ModuleNotFoundError("loading openai/gsm8k needs the package 'datasets' (pip install 'turnrl[trl]')")
    if not _offline_mode() and not _hub_reachable():
        raise ConnectionError("the Hugging Face hub is not reachable (set HF_DATASETS_OFFLINE=1 to use a local cache)")
    import datasets

    rows = datasets.load_dataset(*HF_DATASET, split=split)
    return tuple({"question": row["question"], "answer": row["answer"]} for row in rows)


@functools.cache
def load_gsm8k(split: str = "train", source: str = "auto") -> tuple[Record, ...]:
    """GSM8K records of ``split`` from ``source`` (see the module docstring); cached per process."""
    _check_split(split)
    if source not in SOURCES:
        raise ValueError(f"GSM8K source {source!r} is unknown; allowed: {list(SOURCES)}")
    if source == "generated":
        return generated_split(split)
    try:
        return _load_hf(split)
    except Exception as error:  # no package, no network, no cache: all mean "use the offline set"
        if source == "hf":
            raise
        warnings.warn(
            f"GSM8K: could not load {HF_DATASET[0]} ({type(error).__name__}: {error}); using the "
            f"{GENERATED_SIZES[split]} generated GSM8K-format problems of split {split!r} instead "
            "(templated arithmetic, not the real benchmark).",
            stacklevel=2,
        )
        return generated_split(split)
