"""Training machinery that joins ``envs`` -> ``agents`` -> the pure ``algos`` into runs.

Modules, in the order one training step uses them:

- ``schema``: the typed config of a run (every key, its default, its doc) and its validation;
  ``compose``: that config from ``conf/`` plus overrides, outside Hydra's command line.
- ``policy``: the model a run trains, or a trained run's policy loaded for evaluation.
- ``trainer``: the loop, one step read top to bottom (rollout -> filter -> advantages -> log-probs
  -> update -> sync -> log).
- ``update_batch``: the kept episodes as token tensors, split into mini- and micro-batches.
- ``packed_logprobs``: the policy's log-probs of generated tokens, a group's shared prompt packed once.
- ``engine``: the DeepSpeed engine (ZeRO 0-3, bf16, gradient accumulation).
- ``data_parallel``: how ranks share rollouts and micro-batches.
- ``format_warmup``: supervised format steps before RL for models too small to follow the format.
- ``checkpoint`` / ``signals`` / ``export``: atomic checkpoints, stop on SIGINT/SIGTERM, the final
  Hugging Face folder; ``layout``: where a run's checkpoints and export live (no DeepSpeed needed to find them).
- ``tracking``: metrics.jsonl, wandb, progress and the console summary.
- ``memory``: host-memory tuning, the peak RSS figure and a peak-RSS sampler for benchmarks.
"""

import os as _os

import torch as _torch

if not _torch.cuda.is_available():  # before any module here imports DeepSpeed: no "Setting accelerator to CPU" warning
    _os.environ.setdefault("DS_ACCELERATOR", "cpu")
