"""transformers' SDPA attention, with grouped-query attention left to torch's kernel on CPU.

transformers' "sdpa" copies each KV head once per query head it serves (`repeat_kv`) whenever an attention mask is
passed on CPU or CUDA, i.e. in every padded batch. On CPU that copy is most of a decode step: 32 rows over 1,300
cached tokens with SmolLM2's 3 KV heads for 9 query heads took 74 ms per layer with the copy and 3.5 ms with torch's
`enable_gqa=True`, which reads the shared heads in place (identical outputs). On CUDA a masked GQA call would leave
the fused kernels, so there, and for any call this wrapper does not cover, transformers' own function runs.

Registered with transformers' AttentionInterface / AttentionMaskInterface (its extension point for attention
functions) as "sdpa_gqa"; `use_gqa_attention` switches a loaded model to it.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "sdpa_gqa"


def sdpa_gqa_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       **kwargs) -> tuple[torch.Tensor, None]:
    masked_gqa_on_cpu = (query.device.type == "cpu" and attention_mask is not None and query.shape[1] != key.shape[1]
                         and kwargs.get("position_bias") is None and kwargs.get("cache") is None)
    if not masked_gqa_on_cpu:  # transformers already passes enable_gqa without a mask
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    # with a mask transformers never sets is_causal: the mask carries causality
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, sdpa_gqa_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)  # the same masks as "sdpa"


def use_gqa_attention(model) -> None:
    """Switch a model that runs transformers' SDPA on CPU to `sdpa_gqa` (other implementations stay as they are).
    Not a sparse-attention (DSA) model such as GLM-5: its attention builds its top-k mask only when the
    implementation is named "sdpa" or "eager", and would attend densely under another name."""
    if model.device.type == "cpu" and model.config._attn_implementation == "sdpa" and \
            getattr(model.config, "index_topk", None) is None:
        model.set_attn_implementation(NAME)
