"""Bridges from TurnRL's estimators to other trainers (optional extras; nothing here is imported by `algos`).

- `algos.integrations.trl_sr_grpo`: `SRGRPOConfig` / `SRGRPOTrainer`, TRL's GRPOTrainer with SR-GRPO
  advantages (needs ``pip install 'turnrl[trl]'``).
"""
