"""Benchmark one policy-update pass (forward + backward) of the real model: plain vs shared prompt prefix.

    python scripts/bench_update.py [--out benchmarks/update.json] [--groups 1] [--group-size 4]
                                   [--prompt-tokens 250] [--reply-tokens 48] [--repeats 1]

A Bandit-shaped micro-batch: ``groups`` groups of ``group_size`` episodes, each group one random
``prompt-tokens`` prompt, each episode its own random reply of ``reply-tokens`` tokens (the loss is the
sum of the reply log-probs). The embedded SmolLM2-135M runs in fp32 on one thread and is timed in CPU
seconds (``time.process_time``), so other load on the machine does not distort it. Also reports the
largest log-prob and relative gradient differences between the two paths. Writes JSON, prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from agents.model import load_model_and_tokenizer
from algos.shared_prefix import grouped_response_log_probs


def bandit_shaped_batch(groups: int, group_size: int, prompt_tokens: int, reply_tokens: int,
                        vocab: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(10, vocab, (groups, prompt_tokens), generator=generator)
    replies = torch.randint(10, vocab, (groups * group_size, reply_tokens), generator=generator)
    input_ids = torch.cat([prompts.repeat_interleave(group_size, dim=0), replies], dim=1)
    loss_mask = torch.zeros_like(input_ids)
    loss_mask[:, prompt_tokens:] = 1
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "response_mask": loss_mask[:, 1:], "group_index": torch.arange(groups).repeat_interleave(group_size)}


def time_update(model: torch.nn.Module, batch: dict[str, torch.Tensor], share: bool,
                repeats: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(best CPU seconds of forward + backward, log-probs, flat gradient) of one path."""
    group_index = batch["group_index"] if share else None
    best = float("inf")
    for _ in range(repeats):
        model.zero_grad()
        start = time.process_time()
        logp, _ = grouped_response_log_probs(model, batch["input_ids"], batch["attention_mask"],
                                             batch["response_mask"], group_index, temperature=1.0)
        logp.sum().backward()
        best = min(best, time.process_time() - start)
    gradient = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return best, logp.detach(), gradient


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/update.json")
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=250)
    parser.add_argument("--reply-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, tokenizer = load_model_and_tokenizer(None)
    model.train()
    batch = bandit_shaped_batch(args.groups, args.group_size, args.prompt_tokens, args.reply_tokens, len(tokenizer))
    plain_s, plain_logp, plain_grad = time_update(model, batch, share=False, repeats=args.repeats)
    shared_s, shared_logp, shared_grad = time_update(model, batch, share=True, repeats=args.repeats)
    episodes = args.groups * args.group_size
    results = {
        "plain_cpu_s": plain_s,
        "shared_prefix_cpu_s": shared_s,
        "speedup": plain_s / shared_s,
        "plain_token_positions": episodes * (args.prompt_tokens + args.reply_tokens),
        "shared_token_positions": args.groups * args.prompt_tokens + episodes * args.reply_tokens,
        "max_abs_logp_diff": (plain_logp - shared_logp).abs().max().item(),
        "relative_grad_diff": ((plain_grad - shared_grad).norm() / plain_grad.norm()).item(),
    }
    report = {
        "command": "python " + " ".join(["scripts/bench_update.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "timer": "time.process_time, one thread, fp32"},
        "settings": vars(args),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| path | CPU s (fwd+bwd) | token positions |\n|---|---:|---:|")
    print(f"| plain | {plain_s:.2f} | {results['plain_token_positions']} |")
    print(f"| shared prefix | {shared_s:.2f} | {results['shared_token_positions']} |")
    print(f"speedup {results['speedup']:.2f}x; max |logp diff| {results['max_abs_logp_diff']:.2e}; "
          f"relative gradient diff {results['relative_grad_diff']:.2e}")
    return report


if __name__ == "__main__":
    main()
