"""Attention for bf16 on CPU: batched matmuls instead of torch's fused kernel, where that is faster.

On a CPU without AMX (measured on an AMD EPYC with AVX-512 BF16),
torch's fused ``scaled_dot_product_attention`` in bf16 is slow: ~8x slower than
fp32 for one decode token against a 350-token cache, and slower than three
batched bf16 matmuls over a whole prompt (``benchmarks/policy_step.py`` records
the end-to-end effect); a causal pass over a whole sequence goes in blocks of
queries whose scores stop at their last query (``_query_blocks``). This module registers the matmul form with
transformers' ``AttentionInterface`` under ``CPU_ATTENTION``; ``load_model``
selects it for models that would use SDPA. Computations in fp32, tensors off
the CPU, and models whose attention takes extras this form does not implement
(logit soft-capping, attention sinks) go to SDPA unchanged. Scores and softmax
stay in bf16, as in transformers' eager attention (the fused kernel keeps them
in fp32). On a CPU with AMX (Intel Xeon Sapphire Rapids and later) the fused
kernel is the faster one in every phase (``benchmarks/results/rl_loop.json``:
the matmul form at 0.89x / 0.74x / 0.92x of SDPA for reflection, policy step
and update), so models keep SDPA there. ``REFLECTRL_ATTENTION`` overrides the
choice either way (``sdpa``, ``reflectrl_cpu`` or any transformers name).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from reflectrl.cpu import cpu_has_amx
from reflectrl.errors import UserError

CPU_ATTENTION = "reflectrl_cpu"
#: queries per block in a causal pass over a whole sequence (see ``_query_blocks``)
QUERY_BLOCK = 128
_SDPA_ONLY_KWARGS = ("softcap", "s_aux", "sinks")


def _mask_scores(scores: torch.Tensor, mask: torch.Tensor | None, module: Any) -> None:
    """Apply transformers' mask to [B, KV heads, groups, Q, K] scores in place (no per-head copy of the mask)."""
    q_len, k_len = scores.shape[-2:]
    if mask is None:
        if q_len == 1 or not getattr(module, "is_causal", True):
            return
        # sdpa_mask left causality to the kernel: queries are the last q_len of k_len positions
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril(k_len - q_len)
    mask = mask.unsqueeze(-3) if mask.dim() == 4 else mask  # [B, 1, Q, K] -> [B, 1, 1, Q, K]
    if mask.dtype == torch.bool:
        scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    else:
        scores.add_(mask.to(scores.dtype))


def cpu_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Same contract as transformers' SDPA attention: [B, H, Q, D] inputs, [B, Q, H, D] output."""
    # under autocast the inputs may be fp32 (rotary embeddings promote them) yet the matmuls are meant in bf16
    compute = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else query.dtype
    if query.device.type != "cpu" or compute == torch.float32 or any(kwargs.get(k) is not None for k in _SDPA_ONLY_KWARGS):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    batch, heads, q_len, head_dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scale = head_dim**-0.5 if scaling is None else scaling
    # the query heads that share a key head become extra query rows: no copies of the keys (GQA)
    query, key, value = query.to(compute), key.to(compute), value.to(compute)
    queries = (query * scale).reshape(batch * kv_heads, groups, q_len, head_dim)
    keys, values = key.reshape(batch * kv_heads, k_len, head_dim), value.reshape(batch * kv_heads, k_len, head_dim)
    blocks = []
    for start, end, seen in _query_blocks(q_len, k_len, attention_mask, module):
        rows = end - start
        scores = torch.bmm(queries[:, :, start:end].reshape(batch * kv_heads, groups * rows, head_dim),
                           keys[:, :seen].transpose(1, 2))
        mask = attention_mask[..., start:end, :seen] if attention_mask is not None else None
        _mask_scores(scores.view(batch, kv_heads, groups, rows, seen), mask, module)
        weights = torch.softmax(scores, dim=-1)
        if dropout > 0.0 and module.training:
            weights = torch.nn.functional.dropout(weights, p=dropout)
        blocks.append(torch.bmm(weights, values[:, :seen]).view(batch, kv_heads, groups, rows, head_dim))
    out = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=3)
    return out.view(batch, heads, q_len, head_dim).transpose(1, 2), None


def _query_blocks(q_len: int, k_len: int, mask: torch.Tensor | None, module: Any) -> list[tuple[int, int, int]]:
    """(first query, end query, keys read) of each block of queries attention computes at once.

    One block reading every key, except for a causal pass over a whole sequence
    (a prompt's prefill, a training row), whose queries go in blocks of
    ``QUERY_BLOCK``: a block's queries see no key past its last query, so its
    scores stop there. The upper triangle of the scores, half their size, is then
    mostly never computed, masked, soft-maxed or kept for the backward: attention
    over 540 positions took 2.3x less time forward and backward (SmolLM2's shapes,
    one thread). A mask that lets a query see a later key keeps the single block.
    """
    causal = q_len == k_len > QUERY_BLOCK and getattr(module, "is_causal", True) and (mask is None or (
        mask.dtype == torch.bool and mask.shape[-2:] == (q_len, k_len) and not mask.triu(1).any()))
    if not causal:
        return [(0, q_len, k_len)]
    return [(start, min(start + QUERY_BLOCK, q_len), min(start + QUERY_BLOCK, q_len))
            for start in range(0, q_len, QUERY_BLOCK)]


AttentionInterface.register(CPU_ATTENTION, cpu_attention)
AttentionMaskInterface.register(CPU_ATTENTION, sdpa_mask)


#: environment variable naming the attention ``load_model`` gives models instead (e.g. ``sdpa``)
ATTENTION_ENV = "REFLECTRL_ATTENTION"


def use_cpu_attention(model: Any) -> None:
    """Switch a model that uses SDPA to ``CPU_ATTENTION``, or to the implementation ``$REFLECTRL_ATTENTION`` names.

    The kernel that is fastest is a property of the machine, not of the
    experiment, hence an environment variable rather than a recipe field.
    """
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    wanted = os.environ.get(ATTENTION_ENV, "").strip() or ("sdpa" if cpu_has_amx() else CPU_ATTENTION)
    if wanted == "sdpa":
        return
    try:
        model.set_attn_implementation(wanted)
    except (ValueError, ImportError) as exc:
        raise UserError(f"{ATTENTION_ENV}={wanted!r} is not an attention implementation this model can use: {exc}") from exc
