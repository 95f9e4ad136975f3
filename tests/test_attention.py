"""CPU_ATTENTION: the bf16 matmul form agrees with fp32 SDPA for every mask transformers hands it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from reflectrl.agent import attention
from reflectrl.agent.attention import CPU_ATTENTION, cpu_attention
from reflectrl.agent.models import ModelSpec, autocast, load_model

pytestmark = pytest.mark.usefixtures("one_thread")


class Module(torch.nn.Module):
    is_causal = True


def reference(query, key, value, mask, is_causal):
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    out = F.scaled_dot_product_attention(query.float(), key.float(), value.float(), attn_mask=mask, is_causal=is_causal)
    return out.transpose(1, 2)


def padded_mask(batch: int, q_len: int, k_len: int) -> torch.Tensor:
    """Causal, with row b left-padded by b positions (True = attend)."""
    causal = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
    pad = torch.arange(k_len)[None, :] >= torch.arange(batch)[:, None]
    return causal[None, None] & pad[:, None, None, :]


@pytest.mark.parametrize(
    "q_len,k_len,heads,kv_heads,mask_kind",
    [(7, 7, 4, 4, "none"), (7, 7, 4, 4, "bool"), (7, 7, 4, 2, "bool"), (1, 9, 4, 4, "float"), (1, 9, 6, 2, "none")],
)
def test_bf16_matches_fp32_sdpa(q_len, k_len, heads, kv_heads, mask_kind):
    torch.manual_seed(0)
    batch, dim = 3, 16
    query = torch.randn(batch, heads, q_len, dim)
    key, value = torch.randn(batch, kv_heads, k_len, dim), torch.randn(batch, kv_heads, k_len, dim)
    bool_mask = padded_mask(batch, q_len, k_len)
    mask = {"none": None, "bool": bool_mask}.get(mask_kind)
    if mask_kind == "float":
        mask = torch.zeros(bool_mask.shape, dtype=torch.bfloat16).masked_fill_(~bool_mask, torch.finfo(torch.bfloat16).min)
    out, weights = cpu_attention(Module(), query.bfloat16(), key.bfloat16(), value.bfloat16(), mask)
    expected = reference(query, key, value, None if mask_kind == "none" else bool_mask, mask_kind == "none" and q_len > 1)
    assert weights is None and out.dtype == torch.bfloat16 and out.shape == (batch, q_len, heads, dim)
    # a query with no key to attend to (left padding) is a padding position: its output is never used
    attends = bool_mask[:, 0].any(-1) if mask_kind != "none" else torch.ones(batch, q_len, dtype=torch.bool)
    torch.testing.assert_close(out[attends].float(), expected[attends], atol=3e-2, rtol=3e-2)


def test_fp32_goes_to_sdpa_unchanged():
    torch.manual_seed(1)
    query, key, value = (torch.randn(2, 4, 5, 8) for _ in range(3))
    out, _ = cpu_attention(Module(), query, key, value, None)
    torch.testing.assert_close(out, reference(query, key, value, None, True), atol=0, rtol=0)


def test_loaded_models_use_it_where_it_is_faster_and_agree_with_sdpa(monkeypatch):
    texts = ["the taxi goes north to the passenger", "the answer is in src"] * 20
    spec = ModelSpec(n_layer=2, n_embd=64, n_head=4, vocab_size=700, seed=2)
    monkeypatch.setattr(attention, "cpu_has_amx", lambda: True)
    assert load_model(spec, texts)[0].config._attn_implementation == "sdpa"
    monkeypatch.setattr(attention, "cpu_has_amx", lambda: False)
    model, tokenizer = load_model(spec, texts)
    assert model.config._attn_implementation == CPU_ATTENTION
    stock = copy.deepcopy(model)
    stock.set_attn_implementation("sdpa")
    batch = tokenizer(["the taxi goes", "the answer is in src north"], return_tensors="pt", padding=True)
    with torch.no_grad():
        for dtype, tolerance in (("float32", 0.0), ("bfloat16", 0.1)):
            with autocast(dtype):
                ours, theirs = model(**batch).logits, stock(**batch).logits
            real = batch["attention_mask"].bool()
            torch.testing.assert_close(ours[real].float(), theirs[real].float(), atol=tolerance, rtol=tolerance)


def test_bf16_gradients_match_fp32_sdpa():
    """The in-place masking keeps autograd right: gradients agree with fp32 SDPA's."""
    torch.manual_seed(3)
    batch, heads, length, dim = 2, 2, 6, 8
    bool_mask = padded_mask(batch, length, length)
    leaves = [torch.randn(batch, heads, length, dim) for _ in range(3)]
    ours = [t.bfloat16().requires_grad_() for t in leaves]
    theirs = [t.clone().requires_grad_() for t in leaves]
    attends = bool_mask[:, 0].any(-1)
    cpu_attention(Module(), *ours, bool_mask)[0][attends].float().sum().backward()
    reference(*theirs, bool_mask, False)[attends].sum().backward()
    for mine, expected in zip(ours, theirs):
        torch.testing.assert_close(mine.grad.float(), expected.grad, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("mask_kind", ["none", "padded", "segments", "sees_later_keys"])
def test_a_causal_pass_in_query_blocks_agrees_with_fp32_sdpa_and_keeps_half_the_scores(mask_kind):
    """Past QUERY_BLOCK positions a causal pass goes in blocks of queries that read no key past their last one:
    the same output and gradients, about half the attention probabilities kept for the backward. A mask that lets
    a query see a later key is computed whole."""
    torch.manual_seed(6)
    batch, heads, kv_heads, length, dim = 2, 4, 2, 2 * attention.QUERY_BLOCK + 44, 8
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    segment = (torch.arange(length) >= length - 30).long() + (torch.arange(length) >= length - 12).long()
    mask = {"none": None, "padded": padded_mask(batch, length, length),
            "segments": (causal & ((segment[:, None] == segment[None, :]) | (segment[None, :] == 0)))[None, None]
            .expand(batch, 1, length, length),
            "sees_later_keys": torch.ones(batch, 1, length, length, dtype=torch.bool)}[mask_kind]
    leaves = [torch.randn(batch, n, length, dim) for n in (heads, kv_heads, kv_heads)]
    ours = [t.bfloat16().requires_grad_() for t in leaves]
    theirs = [t.clone().requires_grad_() for t in leaves]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out, _ = cpu_attention(Module(), *ours, mask)
    expected = reference(*theirs, mask, mask is None)
    attends = torch.ones(batch, length, dtype=torch.bool) if mask is None else mask[:, 0].any(-1)  # not a pad query
    torch.testing.assert_close(out[attends].float(), expected[attends], atol=3e-2, rtol=3e-2)
    (out[attends].float() * expected[attends].detach()).sum().backward()
    (expected[attends] * expected[attends].detach()).sum().backward()
    for mine, reference_grad in zip(ours, theirs):
        torch.testing.assert_close(mine.grad.float(), reference_grad.grad, atol=6e-2, rtol=6e-2)
    whole = batch * heads * length * length
    assert max(saved) < whole if mask_kind != "sees_later_keys" else max(saved) == whole


def test_fp32_inputs_under_bf16_autocast_take_the_bf16_path():
    """Rotary embeddings hand attention fp32 tensors under autocast; they are computed in bf16 like the matmuls."""
    torch.manual_seed(4)
    query, key, value = (torch.randn(2, 4, 5, 8) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = cpu_attention(Module(), query, key, value, None)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference(query, key, value, None, True), atol=3e-2, rtol=3e-2)


def test_environment_variable_chooses_another_attention(monkeypatch):
    texts = ["the taxi goes north"] * 20
    spec = ModelSpec(n_layer=1, n_embd=32, n_head=2, vocab_size=700)
    monkeypatch.setenv("REFLECTRL_ATTENTION", "sdpa")
    assert load_model(spec, texts)[0].config._attn_implementation == "sdpa"
    monkeypatch.setenv("REFLECTRL_ATTENTION", "eager")
    assert load_model(spec, texts)[0].config._attn_implementation == "eager"
    monkeypatch.setenv("REFLECTRL_ATTENTION", "no_such_kernel")
    with pytest.raises(ValueError, match="REFLECTRL_ATTENTION='no_such_kernel'"):
        load_model(spec, texts)
