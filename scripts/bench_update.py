"""Benchmark one policy-update pass (forward + backward) of the real model: plain vs shared prompt prefix
(and, with ``--bf16``, the plain pass in bf16 autocast: ``actor.bf16=true`` on a CPU).

    python scripts/bench_update.py [--out benchmarks/update.json] [--groups 1] [--group-size 4]
                                   [--prompt-tokens 250] [--reply-tokens 48] [--repeats 1] [--bf16]

A Bandit-shaped micro-batch: ``groups`` groups of ``group_size`` episodes, each group one random
``prompt-tokens`` prompt, each episode its own random reply of ``reply-tokens`` tokens (the loss is the
sum of the reply log-probs). The embedded SmolLM2-135M runs in fp32 on one thread and is timed in CPU
seconds (``time.process_time``), so other load on the machine does not distort it. Memory: how far
the resident memory rises during one more forward + backward (``peak_memory_gib``), after the timed
passes have paged in the weights.
Also reports the largest log-prob and relative gradient differences between the two paths. Writes JSON,
prints Markdown.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from agents.model import load_model_and_tokenizer
from algos.training.engine import cpu_autocast
from algos.training.memory import PeakRSS, release_free_heap
from algos.training.packed_logprobs import grouped_response_log_probs


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


def forward_backward(model: torch.nn.Module, batch: dict[str, torch.Tensor], share: bool,
                     bf16: bool = False) -> torch.Tensor:
    """One forward + backward of the summed reply log-probs (gradients start from None), the forward in bf16
    autocast with ``bf16`` (``engine.cpu_autocast``, the trainer's context); the log-probs."""
    model.zero_grad(set_to_none=True)
    with cpu_autocast("true" if bf16 else "false"):
        logp, _ = grouped_response_log_probs(model, batch["input_ids"], batch["attention_mask"],
                                             batch["response_mask"], batch["group_index"] if share else None,
                                             temperature=1.0)
    logp.sum().backward()
    return logp.detach()


def cpu_seconds(model: torch.nn.Module, batch: dict[str, torch.Tensor], share: bool, repeats: int,
                bf16: bool = False) -> float:
    """Best CPU seconds of ``repeats`` forward + backward passes."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        forward_backward(model, batch, share, bf16)
        best = min(best, time.process_time() - start)
    return best


def peak_memory_gib(model: torch.nn.Module, batch: dict[str, torch.Tensor], share: bool) -> float:
    """How far resident memory rises above its start during one forward + backward (sampled every 2 ms).

    The heap's free memory is first handed back to the OS (glibc ``malloc_trim``), so what the pass
    reuses is faulted in again and counted; freed blocks stay resident, so this is the pass's high-water mark."""
    model.zero_grad(set_to_none=True)
    gc.collect()
    release_free_heap()
    before = psutil.Process().memory_info().rss / 2**30
    sampler = PeakRSS(interval_s=0.002)
    forward_backward(model, batch, share)
    sampler.stop()
    return max(sampler.peak_gib, psutil.Process().memory_info().rss / 2**30) - before


def flat_gradient(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/update.json")
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=250)
    parser.add_argument("--reply-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="also time the plain pass in bf16 autocast")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, tokenizer = load_model_and_tokenizer(None)
    model.train()
    batch = bandit_shaped_batch(args.groups, args.group_size, args.prompt_tokens, args.reply_tokens, len(tokenizer))
    plain_logp = forward_backward(model, batch, share=False)  # also pages in the weights and warms the kernels
    plain_grad = flat_gradient(model)
    shared_logp = forward_backward(model, batch, share=True)
    shared_grad = flat_gradient(model)
    seconds = {share: cpu_seconds(model, batch, share, args.repeats) for share in (False, True)}
    memory = {share: peak_memory_gib(model, batch, share) for share in (False, True)}
    episodes = args.groups * args.group_size
    results = {
        "plain_cpu_s": seconds[False],
        "shared_prefix_cpu_s": seconds[True],
        "speedup": seconds[False] / seconds[True],
        "plain_peak_rise_gib": memory[False],
        "shared_prefix_peak_rise_gib": memory[True],
        "plain_token_positions": episodes * (args.prompt_tokens + args.reply_tokens),
        "shared_token_positions": args.groups * args.prompt_tokens + episodes * args.reply_tokens,
        "max_abs_logp_diff": (plain_logp - shared_logp).abs().max().item(),
        "relative_grad_diff": ((plain_grad - shared_grad).norm() / plain_grad.norm()).item(),
    }
    if args.bf16:
        bf16_logp = forward_backward(model, batch, share=False, bf16=True)
        bf16_grad = flat_gradient(model)
        on = batch["response_mask"].bool()
        bf16_seconds = cpu_seconds(model, batch, False, args.repeats, bf16=True)
        results |= {"bf16_cpu_s": bf16_seconds, "bf16_speedup": seconds[False] / bf16_seconds,
                    "bf16_mean_abs_logp_diff": (plain_logp - bf16_logp)[on].abs().mean().item(),
                    "bf16_max_abs_logp_diff": (plain_logp - bf16_logp)[on].abs().max().item(),
                    "bf16_relative_grad_diff": ((plain_grad - bf16_grad).norm() / plain_grad.norm()).item(),
                    "bf16_grad_cosine": torch.nn.functional.cosine_similarity(plain_grad.double(), bf16_grad.double(),
                                                                             dim=0).item()}
    report = {
        "command": "python " + " ".join(["scripts/bench_update.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "timer": "time.process_time, one thread, fp32"},
        "settings": vars(args),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| path | CPU s (fwd+bwd) | token positions | memory rise, fwd+bwd |\n|---|---:|---:|---:|")
    for name, share, key in (("plain", False, "plain"), ("shared prefix", True, "shared")):
        print(f"| {name} | {seconds[share]:.2f} | {results[key + '_token_positions']} | {memory[share]:.2f} GiB |")
    print(f"speedup {results['speedup']:.2f}x; max |logp diff| {results['max_abs_logp_diff']:.2e}; "
          f"relative gradient diff {results['relative_grad_diff']:.2e}")
    if args.bf16:
        print(f"bf16 autocast (plain): {results['bf16_cpu_s']:.2f} CPU s, {results['bf16_speedup']:.2f}x fp32; "
              f"|logp diff| mean {results['bf16_mean_abs_logp_diff']:.3f} max {results['bf16_max_abs_logp_diff']:.3f}; "
              f"gradient cosine {results['bf16_grad_cosine']:.4f}")
    return report


if __name__ == "__main__":
    main()
