"""Benchmark one rollout step per backend against the bare engine on the same prompts and token counts.

For each backend (``hf``: KV reuse across turns; ``hf-noreuse``: every turn re-prefills the whole
history, as before issue 15; ``hf-bf16``: ``hf`` played under the trainer's CPU bf16 autocast
(``engine.cpu_autocast``), which runs never sample in, being slower than fp32 there; ``vllm`` when it
imports) the script plays one training rollout step
(default: Sokoban, 8 groups x 4 episodes, 5 turns, 96 new tokens per turn) with the real default
model, recording every ``generate`` call. It then replays those calls on the bare engine
(``model.generate`` / ``LLM.generate``) with the same prompts, the same sampling settings and seeds,
and each call's recorded number of new tokens forced (``min_new_tokens`` / ``min_tokens``, no stop
strings). The prefix cache is reset before the replay so it warms up as in the rollout.

    overhead = rollout wall time / bare replay time   (goal <= 1.10; ``--no-bare`` skips the replay)
    positions ratio = token positions the model computed (prefill + decode, hf: padding included)
                      / tokens in the final sequences   (1.0 = every token computed once)

``--time-cap-s`` stops a backend's rollout after the first turn that ends past the cap; its row is
marked partial (figures of the turns played).
Everything else in the rollout (env stepping, parsing, prompt building, batching, stop handling)
is the difference. Writes JSON (``--out``) and prints a Markdown table.

    python scripts/bench_rollout.py --out benchmarks/rollout.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agents.backends import Backend, SamplingParams, make_backend
from agents.backends.hf import HFBackend, left_padded
from agents.model import default_model_dir, load_model_and_tokenizer
from agents.rollout import AgentConfig, RolloutEngine
from algos.training.engine import cpu_autocast
from algos.training.memory import peak_rss_gib


@dataclass
class GenerateCall:
    prompts: list[list[int]]
    params: SamplingParams
    completions: list[list[int]]


class OverTime(Exception):
    """The rollout ran past ``--time-cap-s``."""


@dataclass
class RecordingBackend:
    """Passes calls to ``backend`` and records each call's prompts, settings and outputs; raises
    ``OverTime`` after a call that ends past ``deadline`` (``time.perf_counter()`` seconds)."""

    backend: Backend
    calls: list[GenerateCall] = field(default_factory=list)
    deadline: float = float("inf")

    def generate(self, prompts, params, max_new_tokens=None):
        completions = self.backend.generate(prompts, params, max_new_tokens)
        self.calls.append(GenerateCall([list(p) for p in prompts], params, [list(c) for c in completions]))
        if time.perf_counter() > self.deadline:
            raise OverTime
        return completions

    def clear_cache(self) -> None:
        if hasattr(self.backend, "clear_cache"):
            self.backend.clear_cache()

    def update_weights(self, model: torch.nn.Module) -> None:
        self.backend.update_weights(model)

    def close(self) -> None:
        self.backend.close()


def bare_hf_seconds(backend: HFBackend, call: GenerateCall) -> float:
    """Time of one ``model.generate`` on the call's left-padded prompts, forced to its longest output."""
    length = max(1, max(len(c) for c in call.completions))
    input_ids, attention_mask = left_padded(call.prompts, max(len(p) for p in call.prompts), backend.pad_token_id)
    config = backend.generation_config(call.params, length)
    config.min_new_tokens = length
    if call.params.seed is not None:
        torch.manual_seed(call.params.seed)
    start = time.perf_counter()
    with torch.no_grad():
        backend.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    return time.perf_counter() - start


def bare_vllm_seconds(backend: Any, call: GenerateCall) -> float:
    """Time of one ``LLM.generate`` on the call's prompts, each forced to its recorded output length."""
    import vllm
    from vllm.inputs import TokensPrompt

    from agents.backends.vllm import request_seed

    params = call.params
    requests = [
        vllm.SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=max(1, len(completion)),
            min_tokens=max(1, len(completion)),
            ignore_eos=True,
            seed=None if params.seed is None else request_seed(params.seed, index),
        )
        for index, completion in enumerate(call.completions)
    ]
    prompts = [TokensPrompt(prompt_token_ids=prompt) for prompt in call.prompts]
    start = time.perf_counter()
    backend.llm.generate(prompts, requests, use_tqdm=False)
    return time.perf_counter() - start


def played_tokens(calls: list[GenerateCall]) -> int:
    """Tokens of the episodes' sequences so far: each call's prompt + reply that no later prompt extends."""
    later: list[list[int]] = []
    total = 0
    for call in reversed(calls):
        for prompt, reply in zip(call.prompts, call.completions, strict=True):
            sequence = prompt + reply
            if not any(p[: len(sequence)] == sequence for p in later):
                total += len(sequence)
        later += call.prompts
    return total


def measure(
    name: str, backend: Backend, tokenizer, config: AgentConfig, params: SamplingParams, args: argparse.Namespace
) -> dict[str, Any]:
    """Warm up, play one rollout step through a recorder, then replay its calls on the bare engine."""
    recorder = RecordingBackend(backend)
    engine = RolloutEngine(config, tokenizer, recorder)
    warmup = engine.chat.prompt_ids([{"role": "user", "content": "Hello"}], engine.prefill)
    backend.generate([warmup], SamplingParams(temperature=0.0, max_new_tokens=4))
    counters = dict(getattr(backend, "counters", {}))

    start = time.perf_counter()
    recorder.deadline = start + (args.time_cap_s or float("inf"))
    try:
        batch = engine.rollout(step=1, params=params)
        final_tokens, partial = float(batch.attention_mask.sum()), False
    except OverTime:
        final_tokens, partial = float(played_tokens(recorder.calls)), True
    rollout_seconds = time.perf_counter() - start
    computed = {key: value - counters.get(key, 0.0) for key, value in getattr(backend, "counters", {}).items()}
    positions = computed.get("prefill_positions", 0.0) + computed.get("decode_positions", 0.0)

    tokens = sum(len(c) for call in recorder.calls for c in call.completions)
    row = {
        "backend": name,
        "partial": partial,
        "episodes": args.env_groups * args.group_size,
        "generate_calls": len(recorder.calls),
        "generated_tokens": tokens,
        "rollout_seconds": round(rollout_seconds, 3),
        "rollout_tokens_per_second": round(tokens / rollout_seconds, 1),
        "final_sequence_tokens": final_tokens,
        "positions_computed": positions,
        "positions_ratio": round(positions / final_tokens, 3),
        "counters": computed,
        "kv_cache_peak_gib": round(backend.pool.peak_bytes / 2**30, 3) if hasattr(backend, "pool")
        else args.kv_cache_gib,  # vLLM preallocates its cache
        "process_peak_rss_gib": round(peak_rss_gib(), 3),
    }
    if not partial:
        row |= {"success_rate": batch.metrics["rollout/success_rate"], "mean_turns": batch.metrics["rollout/mean_turns"]}
    if not args.no_bare and not partial:
        if name == "vllm":
            backend.llm.reset_prefix_cache()
            bare = sum(bare_vllm_seconds(backend, call) for call in recorder.calls)
        else:
            bare = sum(bare_hf_seconds(backend, call) for call in recorder.calls)
        row |= {"bare_seconds": round(bare, 3), "bare_tokens_per_second": round(tokens / bare, 1),
                "overhead": round(rollout_seconds / bare, 3)}
    return row


def build_backend(name: str, model, tokenizer, args: argparse.Namespace) -> Backend:
    """``hf``, ``hf-noreuse`` (the hf backend with KV reuse off: today's re-prefill), ``hf-bf16`` (the hf
    backend, played under CPU bf16 autocast by :func:`main`) or ``vllm``."""
    kv_cache_gib = 0.0 if name == "hf-noreuse" else args.kv_cache_gib
    return make_backend(name.removesuffix("-noreuse").removesuffix("-bf16"), model, tokenizer, default_model_dir(),
                        dtype=args.vllm_dtype,
                        max_model_len=args.max_model_len, seed=args.seed, kv_cache_gib=kv_cache_gib,
                        enable_prefix_caching=not args.no_prefix_caching)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | episodes | calls | new tokens | rollout s | rollout tok/s | positions / final tokens | "
        "KV cache GiB | bare s | overhead |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['backend']}{' (partial)' if r['partial'] else ''} | {r['episodes']} | {r['generate_calls']} | "
        f"{r['generated_tokens']} | {r['rollout_seconds']:.1f} | {r['rollout_tokens_per_second']:.1f} | "
        f"{r['positions_ratio']:.3f} | {r['kv_cache_peak_gib']:.3f} | {r.get('bare_seconds', '-')} | "
        f"{r.get('overhead', '-')} |"
        for r in results
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    vllm_available = importlib.util.find_spec("vllm") is not None
    parser.add_argument(
        "--backends", default="hf,vllm" if vllm_available else "hf", help="comma-separated: hf, hf-noreuse, hf-bf16, vllm"
    )
    parser.add_argument("--env", default="sokoban")
    parser.add_argument("--env-groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-turns", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument(
        "--hf-dtype", default="float32", help="dtype of the trainer model the hf backend uses"
    )
    parser.add_argument("--vllm-dtype", default="auto", help="auto: bf16 where the hardware has it natively, else fp32 "
                        "on CPUs (fp16 on older GPUs)")
    parser.add_argument("--kv-cache-gib", type=float, default=2.0, help="vLLM's cache; the hf backend's cap")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare-engine replay")
    parser.add_argument("--time-cap-s", type=float, default=None, help="stop a backend's rollout "
                        "after the first turn past this many seconds (row marked partial)")
    parser.add_argument("--no-prefix-caching", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of this process (the hf backend); default: torch's",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/rollout.json"))
    args = parser.parse_args()
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = sorted(set(args.backends) - {"hf", "hf-noreuse", "hf-bf16", "vllm"})
    if unknown:
        parser.error(f"--backends has unknown names {unknown}; allowed: hf, hf-noreuse, hf-bf16, vllm")
    return args


def write_report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    """The JSON of ``results`` so far (rewritten after each backend, so a long run leaves its rows)."""
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": cpu_model(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0],
        },
        "settings": {
            key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(str(default_model_dir()), dtype=args.hf_dtype)
    model.eval()
    config = AgentConfig.of(
        env=args.env,
        env_groups=args.env_groups,
        group_size=args.group_size,
        max_turn=args.max_turns,
        max_model_len=args.max_model_len,
        show_progress=False,
    )
    params = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
    results = []
    for name in args.backends:
        backend = build_backend(name, model, tokenizer, args)
        with cpu_autocast("true" if name == "hf-bf16" else "false"):
            results.append(measure(name, backend, tokenizer, config, params, args))
        print(markdown_table(results[-1:]), flush=True)
        backend.close()
        write_report(args, results)
    print(markdown_table(results))


if __name__ == "__main__":
    main()
