"""Scaled dot-product attention that keeps grouped key/value heads grouped under a padding mask.

SmolLM2 and Qwen2.5 use grouped-query attention (SmolLM2-135M: 9 query heads share 3 key/value heads).
transformers' ``sdpa`` passes ``enable_gqa=True`` to torch only when no attention mask is given (CUDA's fused
kernels take no mask with GQA); with a mask - every left-padded rollout batch, every cached decode step,
the packed shared-prompt forward - it first copies each key/value head ``heads / kv_heads`` times. On the
CPU torch's kernel takes the mask and the grouping together, with the same numbers and no copy. Measured
with SmolLM2-135M's shapes on one thread (attention of one layer, 32 rows x 1200 cached tokens, one new
token each): 58-76 ms with the copy, 6 ms without; forward + backward 218-231 ms -> 40-45 ms.

``GROUPED_SDPA`` names this implementation for ``model.set_attn_implementation``: on the CPU with a mask it
calls torch with ``enable_gqa=True``; everywhere else it is transformers' ``sdpa`` unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

GROUPED_SDPA = "sdpa_grouped"


def grouped_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """``softmax(q k^T * scaling + mask) v`` with ``query [B, H, Q, D]`` and ``key/value [B, H_kv, K, D]``,
    query head ``h`` reading key/value head ``h // (H / H_kv)``; returns ``[B, Q, H, D]`` as transformers'
    attention functions do."""
    grouped = key.shape[1] != query.shape[1]
    if not grouped or attention_mask is None or query.device.type != "cpu" or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    output = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )
    return output.transpose(1, 2).contiguous(), None


AttentionInterface.register(GROUPED_SDPA, grouped_sdpa_attention)
AttentionMaskInterface.register(GROUPED_SDPA, sdpa_mask)


def use_grouped_attention(model: PreTrainedModel) -> PreTrainedModel:
    """Switch ``model`` from transformers' ``sdpa`` to :data:`GROUPED_SDPA` (other implementations, e.g.
    ``eager`` or flash attention, are left as they are); returns ``model``."""
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(GROUPED_SDPA)
    return model
