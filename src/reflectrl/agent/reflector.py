"""The frozen reflection model: batched, KV-cached generation of short analyses.

``Reflector.reflect`` writes one reflection per state, all rows of a batch
together: one prefill over the left-padded prompts, then one decode step per
token, reusing the KV cache. A row stops at EOS or once its text contains the
action marker; stopped rows leave the batch (and the cache), and the loop ends
when none is left. Only the last position is ever projected onto the vocabulary.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from transformers import Cache, DynamicCache, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicLayer

from reflectrl.agent.attention import CPU_ATTENTION
from reflectrl.agent.models import ModelSpec, autocast_dtype, check_positions, load_model, max_positions
from reflectrl.agent.policy import bos_prefix, fit_prompt, left_pad, positions_from_mask
from reflectrl.agent.prompts import (
    ACTION_STOP,
    ANALYZE_MARKER,
    clean_reflection,
    reflection_prompt,
    reflection_prompt_budget,
)

#: a row's stop check decodes only its last few tokens: enough to hold the marker however it is split
_STOP_WINDOW = len(ACTION_STOP) + 4


class PreallocatedLayer(DynamicLayer):
    """A KV-cache layer with room for the whole generation from the start.

    Appending a token writes into the buffer in place; transformers' dynamic
    layer re-copies the whole cache (``torch.cat``) at every token, which on a
    CPU costs as much as the attention that reads it. After the prefill every
    update returns the whole zero-initialised buffer, not a slice of it: the
    caller's mask hides the positions not yet written, and attention reads
    contiguous keys (a slice of the buffer is strided per row, and bf16 batched
    matmuls on CPU copy strided operands first, which costs more than the matmul).
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        batch, heads, _, key_dim = key_states.shape
        self._key_buffer = key_states.new_zeros((batch, heads, self.capacity, key_dim))
        self._value_buffer = value_states.new_zeros((batch, value_states.shape[1], self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache of {self.capacity} positions is full; {end} needed")
        self._key_buffer[:, :, start:end] = key_states
        self._value_buffer[:, :, start:end] = value_states
        self.length = end
        self.keys, self.values = self._key_buffer, self._value_buffer
        if start == 0:
            return key_states, value_states
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._key_buffer, self._value_buffer = self._key_buffer[indices], self._value_buffer[indices]
            self.keys, self.values = self._key_buffer, self._value_buffer


def reflection_prompt_tokens(tokenizer: PreTrainedTokenizerBase, prompt: str, budget: int) -> list[int]:
    """The tokens of a reflector prompt within ``budget``; a long state is shortened by ``fit_prompt``
    (history first, then the longest section, each cut marked), never the analyze marker."""
    tokens = tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]
    if len(tokens) <= budget:
        return list(tokens)
    return fit_prompt(tokenizer, prompt, prompt.rfind(ANALYZE_MARKER), budget, "reflection prompt")


class Reflector:
    """Frozen reflection model.

    ``temperature=0`` decodes greedily; otherwise tokens are sampled with a
    generator seeded by ``seed``. With ``probability < 1`` each state gets a
    reflection only with that probability (the others get None; 0 is the
    no-reflection ablation and never calls the model). The constructor freezes
    the model (eval mode, ``requires_grad=False``), folds a LoRA adapter into its
    base weights; with ``dtype="bfloat16"`` it also casts the weights to bf16 in place: a frozen model needs no fp32 master
    weights, and autocast would re-cast every weight at every decode step.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: PreTrainedTokenizerBase,
        max_new_tokens: int = 64,
        probability: float = 1.0,
        temperature: float = 0.0,
        seed: int = 0,
        dtype: str = "float32",
        max_length: int | None = None,
    ):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the reflector's tokenizer has no pad token; load it with models.load_model")
        lower = autocast_dtype(dtype)
        if hasattr(model, "merge_and_unload"):
            # a frozen LoRA adapter adds two small matmuls per layer at every decoded token for nothing:
            # folded into the base weights it costs none (peft's merge is exact up to rounding)
            model = model.merge_and_unload()
        self.model = model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        if lower is not None:
            self.model.to(lower)
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.probability = probability
        self.temperature = temperature
        self.dtype = dtype
        self.max_length = max_length or max_positions(model)
        check_positions(model, self.max_length, "reflector")
        self.reseed(seed)
        self._prefix = bos_prefix(tokenizer)
        self._budget = reflection_prompt_budget(self.max_length, max_new_tokens, len(self._prefix))
        stop = {tokenizer.eos_token_id}
        eos_config = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        stop.update(eos_config if isinstance(eos_config, list) else [eos_config])
        self._stop_tokens = {t for t in stop if t is not None}
        self._marker_end_tokens: torch.Tensor | None = None

    def reseed(self, seed: int) -> None:
        """Restart both random streams (which states get a reflection, sampled tokens) from ``seed``.

        The RL loop reseeds at every iteration from the iteration's own seed, so a
        resumed run draws what the uninterrupted one drew without checkpointing them.
        """
        self._rng = random.Random(seed)
        self._generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: str = "float32", device: torch.device | str | None = None,
                        **kwargs: Any) -> "Reflector":
        """A reflector from a saved (SFT'd) model directory, on ``device``; ``kwargs`` as for the constructor."""
        model, tokenizer = load_model(ModelSpec(name=str(path), dtype=dtype))
        if device is not None:
            model.to(device)
        return cls(model, tokenizer, dtype=dtype, **kwargs)

    def reflect(self, state_texts: list[str]) -> list[str | None]:
        """One cleaned reflection per state (None where skipped by ``probability``)."""
        if self.probability >= 1.0:
            chosen = list(range(len(state_texts)))
        elif self.probability <= 0.0:
            chosen = []
        else:
            chosen = [i for i in range(len(state_texts)) if self._rng.random() < self.probability]
        results: list[str | None] = [None] * len(state_texts)
        if chosen:
            texts = self.generate([reflection_prompt(state_texts[i]) for i in chosen])
            for i, text in zip(chosen, texts):
                results[i] = clean_reflection(text)
        return results

    def _encode(self, prompts: list[str]) -> list[list[int]]:
        """Prompt tokens within the reflector's budget (``reflection_prompt_budget``), as SFT cut them."""
        return [self._prefix + reflection_prompt_tokens(self.tokenizer, prompt, self._budget) for prompt in prompts]

    def _next_tokens(self, logits: torch.Tensor) -> torch.Tensor:
        if self.temperature == 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        return torch.multinomial(probs.cpu(), 1, generator=self._generator)[:, 0].to(logits.device)

    def _may_end_marker(self, tokens: torch.Tensor) -> torch.Tensor:
        """Whether each token's text holds the marker's last character: only then can the marker be complete."""
        if self._marker_end_tokens is None:
            texts = self.tokenizer.batch_decode([[token] for token in range(len(self.tokenizer))])
            self._marker_end_tokens = torch.tensor([ACTION_STOP[-1] in text for text in texts])
        return self._marker_end_tokens[tokens.cpu().clamp(max=len(self._marker_end_tokens) - 1)]

    def _stopped_at_marker(self, row_tokens: list[int]) -> bool:
        return ACTION_STOP in self.tokenizer.decode(row_tokens[-_STOP_WINDOW:], skip_special_tokens=True)

    def generate(self, prompts: list[str]) -> list[str]:
        """Raw continuations of ``prompts`` (up to and including the marker, without EOS), batched."""
        return self.tokenizer.batch_decode(self.generate_ids(prompts), skip_special_tokens=True)

    def _preallocated(self) -> bool:
        """Whether decoding uses ``PreallocatedLayer``s with a full-width additive mask.

        Needs an attention that takes a 4D additive mask as is (SDPA, eager and
        ``CPU_ATTENTION``) and layers that all attend to everything; other models
        decode with transformers' ``DynamicCache`` and a 2D mask.
        """
        config = self.model.config.get_text_config(decoder=True)
        layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
        return (
            getattr(self.model.config, "_attn_implementation", None) in ("sdpa", "eager", CPU_ATTENTION)
            and not getattr(config, "sliding_window", None)
            and layer_types == {"full_attention"}
        )

    def _decode_mask(self, prompt_mask: torch.Tensor, capacity: int, preallocated: bool) -> torch.Tensor:
        """The attention mask of every decode step, built once.

        With preallocated layers it is the final additive mask [B, 1, 1, capacity]
        (0 = attend, dtype min = padding or not yet written; each step opens its
        new column), which transformers uses as is instead of rebuilding a mask
        at every token; otherwise a 2D mask that each step slices.
        """
        batch, width = prompt_mask.shape
        if not preallocated:
            mask = prompt_mask.new_ones((batch, capacity))
            mask[:, :width] = prompt_mask
            return mask
        dtype = next(self.model.parameters()).dtype
        mask = torch.full((batch, 1, 1, capacity), torch.finfo(dtype).min, dtype=dtype, device=prompt_mask.device)
        mask[:, 0, 0, :width].masked_fill_(prompt_mask == 1, 0.0)
        return mask

    @torch.no_grad()
    def generate_ids(self, prompts: list[str]) -> list[list[int]]:
        """The new token ids of each prompt's continuation (EOS excluded), batched with a KV cache."""
        device = next(self.model.parameters()).device
        input_ids, prompt_mask = left_pad(self._encode(prompts), self.tokenizer.pad_token_id, device)
        width = input_ids.shape[1]
        capacity = width + self.max_new_tokens
        preallocated = self._preallocated()
        attention_mask = self._decode_mask(prompt_mask, capacity, preallocated)
        positions = positions_from_mask(prompt_mask)
        if preallocated:
            layers = self.model.config.get_text_config(decoder=True).num_hidden_layers
            cache: Cache = Cache(layers=[PreallocatedLayer(capacity) for _ in range(layers)])
        else:
            cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=input_ids,
            attention_mask=prompt_mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        generated: list[list[int]] = [[] for _ in prompts]
        active = list(range(len(prompts)))
        next_position = positions[:, -1:] + 1
        for step in range(self.max_new_tokens):
            next_tokens = self._next_tokens(out.logits[:, -1])
            may_end_marker = self._may_end_marker(next_tokens).tolist()
            keep = []
            for slot, (row, token) in enumerate(zip(active, next_tokens.tolist())):
                if token in self._stop_tokens:
                    continue
                generated[row].append(token)
                if not (may_end_marker[slot] and self._stopped_at_marker(generated[row])):
                    keep.append(slot)
            if not keep or step == self.max_new_tokens - 1:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                attention_mask, next_tokens, next_position = attention_mask[index], next_tokens[index], next_position[index]
                active = [active[slot] for slot in keep]
            if preallocated:
                attention_mask[..., width + step] = 0.0
            out = self.model(
                input_ids=next_tokens[:, None],
                attention_mask=attention_mask if preallocated else attention_mask[:, : width + step + 1],
                position_ids=next_position,
                cache=cache,
                use_cache=True,
            )
            next_position = next_position + 1
        return generated
