"""DeepSpeed setup for the policy: ZeRO stage 0-3, bf16 where supported, gradient clipping, LR warmup.

The same code runs in one CPU process (gloo) and under the ``deepspeed`` launcher / torchrun on GPUs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from collections.abc import Iterator

import deepspeed
import torch
from deepspeed.runtime.engine import DeepSpeedEngine

from algos.training.memory import release_free_heap
from algos.training.schema import TrainerActorConfig


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed() -> None:
    """Join (or create) the process group; a plain ``python`` run becomes a world of one.

    CPU workaround: ``deepspeed.initialize`` needs a process group even for one process, and its
    env:// rendezvous reads MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK, which only a launcher
    sets. When they are absent we set them for a single local process on a free port; DeepSpeed then
    picks its CPU accelerator and the gloo backend by itself.
    """
    if torch.distributed.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        os.environ.setdefault(key, value)
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    deepspeed.init_distributed(verbose=False)


def bf16_enabled(setting: str) -> bool:
    """DeepSpeed's bf16 (bf16 weights, fp32 master copy in the optimizer), on CUDA only: ``actor.bf16`` true,
    or auto on a GPU with bf16 support. On a CPU ``true`` means :func:`cpu_autocast` instead."""
    if setting == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return setting == "true" and torch.cuda.is_available()


def cpu_autocast(setting: str) -> torch.autocast:
    """The context the trainer's forwards (log-probs, losses, values) run in: with ``actor.bf16=true`` on a
    CPU, ``torch.autocast("cpu", bfloat16)``: matmuls and attention in bf16, norms, softmax and the residual
    stream in fp32, while the weights, their gradients and the optimizer stay fp32. ~1.9x faster forward +
    backward on a CPU with native bf16 (``avx512_bf16``); log-probs move by ~0.03-0.04 nats a token
    (BENCHMARKS.md, "Mixed precision on the CPU"). Generation stays outside it: autocast casts every
    weight on every call, which made hf decode steps slower, not faster. Otherwise a disabled context."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=setting == "true" and not torch.cuda.is_available())


def warmup_factor(warmup_steps: int):
    """LR multiplier at optimizer step s (0-based): ``min(1, (s + 1) / warmup_steps)``; 1 without warmup."""

    def factor(step: int) -> float:
        return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)

    return factor


def build_engine(model: torch.nn.Module, actor: TrainerActorConfig) -> DeepSpeedEngine:
    """Wrap ``model`` in a DeepSpeed engine with torch AdamW and a linear warmup schedule.

    Gradient accumulation is driven by the trainer (``accumulate``), so DeepSpeed sees
    ``gradient_accumulation_steps = 1`` and one micro-batch per nominal step.
    """
    init_distributed()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=actor.lr, weight_decay=actor.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_factor(actor.lr_warmup_steps))
    world_size = torch.distributed.get_world_size()
    ds_config = {
        "train_micro_batch_size_per_gpu": actor.ppo_micro_batch_size_per_gpu,
        "gradient_accumulation_steps": 1,
        "train_batch_size": actor.ppo_micro_batch_size_per_gpu * world_size,
        "gradient_clipping": actor.grad_clip,
        "zero_optimization": {"stage": actor.zero_stage},
        "bf16": {"enabled": bf16_enabled(actor.bf16)},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    if world_size == 1 and actor.zero_stage == 0:
        # Alone, the all-reduce is an identity, but DeepSpeed still copies every gradient into a flat
        # bucket and back (a transient of 1-2x the gradients' size); skip it.
        engine.enable_backward_allreduce = False
    return engine


def accumulate(engine: DeepSpeedEngine, loss: torch.Tensor, is_last: bool) -> float | None:
    """Backward one micro-batch's (already weighted) loss; ``is_last`` makes it the optimizer step.

    Returns the global gradient norm (before clipping) after the step, else None. A non-finite norm
    means the step was skipped and the weights and optimizer state are unchanged: DeepSpeed's bf16 and
    ZeRO optimizers skip such a step themselves (their overflow check); for plain fp32 data parallel,
    where DeepSpeed steps a bare torch optimizer, the gradients are checked here before the step.

    On CPU the pages the micro-batch's activations freed go back to the OS afterwards
    (``memory.release_free_heap``, ~20 ms): glibc keeps them otherwise, and every micro-batch's
    differently sized tensors fragment its heap further, so the resident memory crept up micro-batch
    after micro-batch and step after step (BENCHMARKS.md, "Trainer peak memory per step").
    """
    engine.set_gradient_accumulation_boundary(is_last)
    engine.backward(loss, scale_wrt_gas=False)
    norm = _step(engine, is_last)
    if engine.device.type == "cpu":
        release_free_heap()
    return norm


def _step(engine: DeepSpeedEngine, is_last: bool) -> float | None:
    """The engine's step after a backward (an optimizer step at the boundary): :func:`accumulate`'s return."""
    if is_last and engine.zero_optimization_stage() == 0 and not engine.bfloat16_enabled():
        # Plain data parallel keeps no norm of its own; the gradients are still on the module here.
        norm = float(torch.nn.utils.get_total_norm([p.grad for p in engine.module.parameters() if p.grad is not None]))
        if math.isfinite(norm):
            engine.step()
        else:
            engine.zero_grad()
        return norm
    engine.step()
    if not is_last:
        return None
    return float(engine.get_global_grad_norm()) if engine.was_step_applied() else math.inf


@contextlib.contextmanager
def full_parameters(engine: DeepSpeedEngine) -> Iterator[torch.nn.Module]:
    """The engine's module with its full weights readable (ZeRO-3 partitions them; gather for the block)."""
    if engine.zero_optimization_stage() == 3:
        with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
            yield engine.module
    else:
        yield engine.module
