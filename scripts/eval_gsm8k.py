"""GSM8K accuracy of a model or checkpoint: greedy, batched generation, a JSON report.

    python scripts/eval_gsm8k.py                                   # embedded SmolLM2-135M, test split
    python scripts/eval_gsm8k.py --model outputs/sr_grpo_gsm8k --limit 200 --output eval.json

``--model`` is a Hugging Face folder (e.g. what ``scripts/train_sr_grpo.py`` saves), a TurnRL run dir
(its ``hf_model`` export, written at the end of ``scripts/train.py``), a hub name, or omitted for the
embedded SmolLM2-135M. The prompt is the one the TRL example trains with
(`envs.gsm8k.chat_messages`); answers are graded by `envs.gsm8k_answers` exactly as in training.
The JSON holds ``accuracy`` (right number), ``format_rate`` (a closed ``<answer>`` tag with a number)
and, per problem, the question, reference, extracted answer and completion.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from agents.model import load_model_and_tokenizer
from algos.training.layout import hf_model_location
from envs.gsm8k import chat_messages
from envs.gsm8k_answers import (
    ANSWER_MODES,
    extract_answer,
    format_number,
    has_answer_format,
    reference_answer,
)
from envs.gsm8k_data import SOURCES, SPLITS, generated_split, load_gsm8k


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="HF folder, TurnRL run dir (its hf_model) or hub name; default: embedded SmolLM2-135M")
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--source", choices=SOURCES, default="auto", help="GSM8K from the hub or generated")
    parser.add_argument("--limit", type=int, default=None, help="first N problems only (default: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--answer-mode", choices=ANSWER_MODES, default="answer_tag")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    for name in ("limit", "batch_size", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')}={value} is invalid; allowed: an int >= 1")
    return args


@torch.no_grad()
def greedy_completions(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: list[str], batch_size: int,
    max_new_tokens: int,
) -> list[str]:
    """Greedy completions of the chat prompts of ``questions``, generated ``batch_size`` at a time."""
    tokenizer.padding_side = "left"  # decoder-only batched generation pads on the left
    completions: list[str] = []
    for start in range(0, len(questions), batch_size):
        texts = [tokenizer.apply_chat_template(chat_messages(q), tokenize=False, add_generation_prompt=True)
                 for q in questions[start : start + batch_size]]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        output = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens,
                                pad_token_id=tokenizer.pad_token_id)
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        completions.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        print(f"  {len(completions)}/{len(questions)}", file=sys.stderr)
    return completions


def evaluate(
    records: list[dict[str, str]], completions: list[str], answer_mode: str
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Accuracy and format rate of ``completions`` against GSM8K ``records``, and per-problem rows."""
    rows = []
    for record, completion in zip(records, completions, strict=True):
        reference = reference_answer(record["answer"])
        predicted = extract_answer(completion, answer_mode)
        rows.append({
            "question": record["question"],
            "reference": format_number(reference),
            "predicted": None if predicted is None else format_number(predicted),
            "correct": predicted == reference,
            "has_answer_format": has_answer_format(completion),
            "completion": completion,
        })
    count = len(rows)
    summary = {
        "accuracy": sum(row["correct"] for row in rows) / count,
        "format_rate": sum(row["has_answer_format"] for row in rows) / count,
    }
    return summary, rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        location = hf_model_location(args.model)
    except ValueError as error:
        sys.exit(str(error))
    data = load_gsm8k(args.split, args.source)
    records = list(data)[: args.limit]
    model, tokenizer = load_model_and_tokenizer(location)
    model.to(args.device).eval()
    started = time.perf_counter()
    completions = greedy_completions(model, tokenizer, [r["question"] for r in records], args.batch_size,
                                     args.max_new_tokens)
    summary, rows = evaluate(records, completions, args.answer_mode)
    report = {
        "model": location or "smollm2-135m-embedded",
        "split": args.split,
        "data": "generated (GSM8K format, not the benchmark)" if data is generated_split(args.split) else "openai/gsm8k",
        "answer_mode": args.answer_mode,
        "num_problems": len(rows),
        **summary,
        "seconds": round(time.perf_counter() - started, 1),
        "problems": rows,
    }
    text = json.dumps(report, indent=2)
    if args.output is None:
        print(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
        print(f"accuracy {summary['accuracy']:.3f} on {len(rows)} problems -> {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
