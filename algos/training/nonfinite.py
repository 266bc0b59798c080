"""The non-finite guard: skipped updates are counted, and a run that keeps producing them stops.

``update_policy`` skips every optimizer step whose loss or gradient norm is not finite (the weights
stay as they were) and reports the count as ``actor/nonfinite_steps``. :class:`NonFiniteGuard` stops
the run after ``trainer.max_nonfinite_steps`` training steps in a row with a skipped update, naming the
settings that usually cause it, with their values.
"""

from __future__ import annotations

from algos.training.schema import TurnRLConfig


class NonFiniteTraining(RuntimeError):
    """Raised after ``trainer.max_nonfinite_steps`` steps in a row with a non-finite loss or gradient."""


def likely_causes(config: TurnRLConfig) -> list[str]:
    """The keys that most often make a loss or gradient non-finite, as ``key=value`` (this run's values)."""
    actor, rollout, algorithm = config.actor_rollout_ref.actor, config.actor_rollout_ref.rollout, config.algorithm
    causes = [f"actor_rollout_ref.actor.lr={actor.lr} (too large: the weights blow up)"]
    if algorithm.adv_estimator == "sr_grpo":
        causes.append(f"algorithm.tau={algorithm.tau} (too small: softmax(z / tau) overflows)")
    causes += [f"algorithm.epsilon={algorithm.epsilon} (too small: divides by a zero std)",
               f"actor_rollout_ref.actor.grad_clip={actor.grad_clip}",
               f"actor_rollout_ref.rollout.temperature={rollout.temperature} (too small: log-probs underflow)"]
    if actor.use_kl_loss:
        causes.append(f"actor_rollout_ref.actor.kl_loss_coef={actor.kl_loss_coef} "
                      f"with kl_loss_type={actor.kl_loss_type}")
    return causes


class NonFiniteGuard:
    """Counts training steps in a row whose update skipped a non-finite optimizer step."""

    def __init__(self, config: TurnRLConfig) -> None:
        self.config = config
        self.in_a_row = 0

    def after_step(self, step: int, metrics: dict[str, float]) -> None:
        """Reset on a clean step; warn on a skipped one; raise :class:`NonFiniteTraining` at the limit."""
        skipped = int(metrics.get("actor/nonfinite_steps", 0))
        if skipped == 0:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        limit = self.config.trainer.max_nonfinite_steps
        print(f"step {step}: {skipped} optimizer step(s) skipped: the loss or gradient norm is not finite "
              f"({self.in_a_row} step(s) in a row, the run stops at trainer.max_nonfinite_steps={limit})")
        if self.in_a_row >= limit:
            raise NonFiniteTraining(
                f"{self.in_a_row} steps in a row had a non-finite loss or gradient norm (their updates were "
                f"skipped, so the weights are still finite). Likely causes: {'; '.join(likely_causes(self.config))}."
                " trainer.max_nonfinite_steps sets how many in a row stop the run.")
