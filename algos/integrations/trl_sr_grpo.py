"""SR-GRPO for TRL users: ``SRGRPOConfig(GRPOConfig)`` and ``SRGRPOTrainer(GRPOTrainer)``.

The trainer is TRL's GRPOTrainer with one change: every completion's advantage is its group's
soft reward ``A_soft = sum_k softmax(z / tau)_k * r_k`` (``z`` = in-group z-scores), computed by the
project's one estimator, ``algos.compute_advantages(rewards, estimator="sr_grpo", tau=...)``.
Everything else (generation, KL to the reference model with ``beta``, clipping, loss type, logging of
``reward``, ``reward_std``, ``kl``, ``completion_length`` ...) is TRL's. Two metrics are added:
``soft_advantage_mean`` and ``soft_advantage_std`` (over the groups' ``A_soft``).

Supported TRL versions: ``SUPPORTED_TRL`` (checked at import). TRL computes advantages inline in
``_generate_and_score_completions``, so the override (see `SRGRPOTrainer`) lets TRL finish that method
and then replaces the ``"advantages"`` entry of its output, before TRL shuffles and splits the batch.

    pip install 'turnrl[trl]'
    config = SRGRPOConfig(output_dir="out", tau=0.5, num_generations=8, beta=0.1)
    trainer = SRGRPOTrainer(model=model, reward_funcs=[reward_fn], args=config, train_dataset=dataset)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from algos.estimators import compute_advantages

try:
    import trl
    from packaging.version import Version
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "algos.integrations.trl_sr_grpo needs TRL: pip install 'turnrl[trl]' (a separate venv is fine; "
        "see the README's SR-GRPO section)"
    ) from error

SUPPORTED_TRL = ("1.0.0", "2.0.0")  # [lowest supported, first unsupported)


def check_trl_version(version: str) -> None:
    """Raise ImportError unless ``SUPPORTED_TRL[0] <= version < SUPPORTED_TRL[1]``."""
    low, high = SUPPORTED_TRL
    if not Version(low) <= Version(version) < Version(high):
        raise ImportError(
            f"SRGRPOTrainer supports trl>={low},<{high} (it overrides GRPOTrainer internals of that series); "
            f"found trl=={version}. Install a supported version: pip install 'trl>={low},<{high}'"
        )


check_trl_version(trl.__version__)

from trl import GRPOConfig, GRPOTrainer  # noqa: E402  (after the version check, for a clear error)


@dataclass
class SRGRPOConfig(GRPOConfig):
    """`GRPOConfig` plus ``tau``, the softmax temperature of SR-GRPO (> 0; smaller = sharper).

    ``scale_rewards`` is not used for the advantages (SR-GRPO standardises within each group itself).
    Only ``multi_objective_aggregation="sum_then_normalize"`` is supported: the rewards SR-GRPO weighs
    are the weighted sums of the reward functions' outputs.
    """

    tau: float = field(
        default=0.5,
        metadata={"help": "SR-GRPO softmax temperature: 0.1-0.3 sharp, 0.5 balanced, >= 1 smooth (closer to uniform)."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float)) or not (
            math.isfinite(self.tau) and self.tau > 0
        ):
            raise ValueError(f"tau={self.tau!r} is invalid; allowed: a finite float > 0")
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                f"multi_objective_aggregation={self.multi_objective_aggregation!r} is not supported by SR-GRPO; "
                "allowed: 'sum_then_normalize'"
            )
        super().__post_init__()


def sr_grpo_advantages(rewards: torch.Tensor, group_size: int, tau: float) -> tuple[torch.Tensor, dict[str, float]]:
    """SR-GRPO advantages ``[B]`` for flat, group-major rewards ``[B]`` (as TRL orders them).

    ``compute_advantages(rewards.view(-1, group_size), estimator="sr_grpo", tau=tau)``, flattened back.
    Unscorable completions (NaN: every reward function returned None) get advantage 0, as in TRL, and
    their group's ``A_soft`` is taken over its scored members; a group with fewer than two scored
    members gets 0 throughout. Metrics: ``soft_advantage_mean`` / ``_std`` over the groups' ``A_soft``.
    """
    grouped = rewards.detach().float().cpu().view(-1, group_size)
    scored = ~torch.isnan(grouped)
    if scored.all():
        advantages, metrics = compute_advantages(grouped, estimator="sr_grpo", tau=tau)
        soft = advantages[:, 0]
    else:
        advantages, soft_values = torch.zeros_like(grouped), []
        for group, (row, keep) in enumerate(zip(grouped, scored, strict=True)):
            if int(keep.sum()) >= 2:
                group_advantages, _ = compute_advantages(row[keep][None], estimator="sr_grpo", tau=tau)
                advantages[group, keep] = group_advantages[0]
                soft_values.append(group_advantages[0, 0])
        soft = torch.stack(soft_values) if soft_values else torch.zeros(1)
    metrics = {
        "soft_advantage_mean": soft.mean().item(),
        "soft_advantage_std": soft.std().item() if soft.numel() > 1 else 0.0,
    }
    return advantages.reshape(-1).to(rewards.device), metrics


class SRGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with SR-GRPO advantages; needs ``args=SRGRPOConfig(...)``.

    Override (two methods, nothing else changes):
    1. `_calculate_rewards` keeps the per-function rewards of all processes that TRL computed.
    2. `_generate_and_score_completions` runs TRL's version, then sets ``output["advantages"]`` to
       `sr_grpo_advantages` of the weighted reward sum (TRL's own ``nansum(rewards_per_func * reward_weights)``),
       sliced to this process, and logs ``soft_advantage_mean`` / ``soft_advantage_std``.
    With a group size of 1 (eval with ``num_generations_eval=1``) TRL's advantages (all 0) are kept.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, SRGRPOConfig):
            raise TypeError(
                f"SRGRPOTrainer needs args=SRGRPOConfig(...), got {type(self.args).__name__}; "
                "SRGRPOConfig is GRPOConfig plus tau"
            )
        self._rewards_per_func: torch.Tensor | None = None

    def _calculate_rewards(
        self, inputs: list[dict[str, Any]], prompts: list[Any], completions: list[Any], completion_ids_list: list[Any]
    ) -> torch.Tensor:
        self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        if group_size < 2:
            return output
        rewards_per_func, self._rewards_per_func = self._rewards_per_func, None
        if rewards_per_func is None:
            raise RuntimeError(
                "SRGRPOTrainer: TRL's _generate_and_score_completions did not call _calculate_rewards; "
                f"this trl=={trl.__version__} is not supported"
            )
        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        advantages, metrics = sr_grpo_advantages(rewards, group_size, self.args.tau)

        local = output["advantages"]
        start = self.accelerator.process_index * local.shape[0]
        output["advantages"] = advantages[start : start + local.shape[0]].to(local.device, local.dtype)
        for name, value in metrics.items():
            self._metrics[mode][name].append(value)
        logged = self._logs["advantages"]  # TRL appended its own advantages for the completions table
        for _ in range(min(len(logged), advantages.numel())):
            logged.pop()
        logged.extend(advantages.tolist())
        return output
