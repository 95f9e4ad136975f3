"""The policy's head: one forward pass scores every valid action.

The prompt enumerates the valid actions as ``<id>. <action>`` lines and ends
with the action marker. Two ways to score them (``scoring``):

- ``"id"`` (the paper's): the answer is one id token; the distribution is the
  softmax over the logits of the ids valid at this step, read at the last
  position only, through a "shrunk" LM head: the rows of the output embedding
  for those id tokens times the last hidden state. No position is ever
  projected onto the whole vocabulary.
- ``"text"``: the answer is the action's own text; each action is scored by the
  mean log-likelihood of its tokens after the marker (length-normalised, as in
  TWOSOME, Tan et al. 2024), and the distribution is the softmax over those
  scores. All actions ride in the same forward pass as the prompt: each one
  attends to the prompt and to itself only (a block mask) and its positions
  start where the prompt ends, so the prompt is read once. A pretrained LM
  copies the action a reflection or task names without first having to learn
  which id labels it.

Gradients flow when called under grad.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from peft.helpers import disable_input_dtype_casting
from transformers import PreTrainedTokenizerBase

from reflectrl.agent.models import autocast, autocast_dtype, check_positions, full_precision, max_positions
from reflectrl.agent.prompts import ACTION_MARKER, ANALYZE_MARKER, cut_start, fit_state
from reflectrl.envs.action_parser import ACTION_IDS, EXTRA_ACTION_IDS, action_ids
from reflectrl.errors import UserError

logger = logging.getLogger(__name__)


class ActionTokenError(UserError):
    """Some action ids are not single tokens of the tokenizer after the action marker."""


def _tokenizer_name(tokenizer: PreTrainedTokenizerBase) -> str:
    return f"{type(tokenizer).__name__}({getattr(tokenizer, 'name_or_path', '') or 'unnamed'}, {len(tokenizer)} tokens)"


def action_token_map(tokenizer: PreTrainedTokenizerBase, ids: Sequence[str]) -> tuple[dict[str, int], list[str]]:
    """Split ``ids`` into those that are one token after the action marker (with that token) and the rest.

    An id qualifies when tokenizing ``ACTION_MARKER + id`` gives the marker's own
    tokens plus exactly one more token, and that token decodes to the id: then
    the policy's one-token answer after the prompt is that id and nothing else.
    """
    marker = tokenizer(ACTION_MARKER, add_special_tokens=False)["input_ids"]
    after_marker = tokenizer([ACTION_MARKER + label for label in ids], add_special_tokens=False)["input_ids"]
    valid: dict[str, int] = {}
    invalid: list[str] = []
    for label, tokens in zip(ids, after_marker):
        ok = len(tokens) == len(marker) + 1 and tokens[: len(marker)] == marker
        if ok and tokenizer.decode([tokens[-1]]).strip() == label and tokens[-1] not in valid.values():
            valid[label] = tokens[-1]
        else:
            invalid.append(label)
    return valid, invalid


def check_action_tokens(tokenizer: PreTrainedTokenizerBase, ids: Sequence[str]) -> list[int]:
    """The token of each id; raises ``ActionTokenError`` naming every id that is not one token after the marker."""
    valid, invalid = action_token_map(tokenizer, ids)
    if invalid:
        shown = ", ".join(repr(label) for label in invalid[:20]) + (" ..." if len(invalid) > 20 else "")
        raise ActionTokenError(
            f"{len(invalid)} of {len(ids)} action ids are not a single token after {ACTION_MARKER!r} for "
            f"{_tokenizer_name(tokenizer)}: {shown}"
        )
    return [valid[label] for label in ids]


def _single_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Each id this tokenizer can emit as one token, with that token: ``ACTION_IDS``, then ``EXTRA_ACTION_IDS``."""
    return action_token_map(tokenizer, ACTION_IDS + EXTRA_ACTION_IDS)[0]


def usable_action_ids(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The ids this tokenizer can emit as one token, in order: those of ``ACTION_IDS``, then of ``EXTRA_ACTION_IDS``."""
    return list(_single_token_ids(tokenizer))


def bos_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The special tokens the tokenizer puts before a text (e.g. ``[bos]``; ``[]`` for GPT-2 style)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def fit_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, state_end: int, budget: int, what: str) -> list[int]:
    """Tokens of ``prompt`` in at most ``budget``: its state (``prompt[:state_end]``) is shortened by
    ``fit_state``, then the reflection and last the head are cut from their start; the action list never is."""
    state, rest = prompt[:state_end].rstrip("\n"), "\n" + prompt[state_end:].lstrip("\n")

    def fits(text: str) -> bool:
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]) <= budget

    state = fit_state(state, lambda candidate: fits(candidate + rest))
    if not fits(state + rest) and rest.startswith("\n" + ANALYZE_MARKER):
        reflection, newline, actions = rest[1 + len(ANALYZE_MARKER):].partition("\n")
        head = "\n" + ANALYZE_MARKER
        reflection = cut_start(reflection, lambda r: fits(state + head + r + newline + actions))
        rest = head + reflection + newline + actions
    state = cut_start(state, lambda candidate: fits(candidate + rest))
    tokens = tokenizer(state + rest, add_special_tokens=False, verbose=False)["input_ids"]
    if len(tokens) > budget:
        raise UserError(
            f"{what}: the action list alone takes {len(tokenizer(rest, add_special_tokens=False)['input_ids'])} "
            f"tokens, more than the {budget} allowed; raise max_length or enumerate fewer actions"
        )
    return tokens


def left_pad(sequences: list[list[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) for left-padded ``sequences``, so every row ends at the last column."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            input_ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, width - len(seq) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def right_pad(sequences: list[list[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, lengths) for right-padded ``sequences``; row ``b`` ends at column ``lengths[b] - 1``."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return input_ids.to(device), torch.tensor([len(s) for s in sequences], device=device)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def unwrap_model(model: Any) -> Any:
    """The transformers model inside a peft wrapper (adapter layers stay injected and active)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_body(model: Any) -> torch.nn.Module:
    """The transformer body that returns hidden states (``GPT2Model``, ``LlamaModel``...), without the LM head."""
    inner = unwrap_model(model)
    body = getattr(inner, inner.base_model_prefix, None)
    if body is None or body is inner:
        raise TypeError(f"cannot find the decoder body of {type(inner).__name__} (base_model_prefix={inner.base_model_prefix!r})")
    return body


@contextlib.contextmanager
def body_autocast(model: Any, dtype: str, device_type: str) -> Iterator[None]:
    """The recipe's autocast for a forward of ``model``'s body, with LoRA inputs left in the autocast dtype.

    peft casts each LoRA layer's input to its adapter's fp32 before the dropout and
    ``lora_A``, which autocast then casts back to bf16: two copies of the activations
    per adapted layer (seven a layer with ``all-linear``) for the same bf16 matmul.
    Under autocast the adapters' result is the same without them.
    """
    with autocast(dtype, device_type=device_type), \
            disable_input_dtype_casting(model, active=autocast_dtype(dtype) is not None):
        yield


def action_list_start(prompt: str, ids: Sequence[str]) -> int:
    """Character offset where the enumerated action list begins (the prompt's protected tail).

    The prompt must end with ``len(ids)`` lines ``<id>. <action>`` followed by the
    action marker, as ``prompts.policy_prompt`` writes it.
    """
    if not ids:
        raise ValueError("a policy prompt needs at least one action id")
    if not prompt.endswith(ACTION_MARKER):
        raise ValueError(f"policy prompt must end with the action marker {ACTION_MARKER!r}: ...{prompt[-60:]!r}")
    start = len(prompt) - len(ACTION_MARKER)
    for label in reversed(ids):
        line_start = prompt.rfind("\n", 0, start - 1) + 1
        if not prompt.startswith(f"{label}. ", line_start):
            raise ValueError(
                f"policy prompt does not end with the enumerated actions for ids {list(ids)[:12]}: "
                f"expected a line starting with {label + '. '!r}, found {prompt[line_start:start][:60]!r}"
            )
        start = line_start
    return start


SCORINGS = ("id", "text")


def action_texts(prompt: str, ids: Sequence[str]) -> list[str]:
    """The text of each enumerated action of a policy prompt, in the order of ``ids``."""
    start = action_list_start(prompt, ids)
    lines = prompt[start:len(prompt) - len(ACTION_MARKER)].split("\n")
    return [line[len(label) + 2:] for label, line in zip(ids, lines)]


@dataclass
class ActionChoice:
    """One chosen action: its index in the row's list, label, and log-prob/entropy of the sampling distribution."""

    index: int
    log_prob: float
    entropy: float
    label: str


class _PolicyForward(torch.nn.Module):
    """The policy's forward pass as one module: the model, the recipe's autocast dtype, an optional value head.

    A module, so that ``accelerate`` can wrap it for multi-process training (DDP's
    bucketed gradient all-reduce hooks into a module's forward).
    """

    def __init__(self, model: Any, dtype: str = "float32", value_head: torch.nn.Module | None = None):
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.value_head = value_head


class ActionHead(_PolicyForward):
    """``scoring="id"``: decoder body, shrunk id head, optional value head.

    The body runs under the recipe's autocast on the inputs' device; the id head
    and the value head run in fp32 so log-probs and values are precise.
    """

    def forward(
        self, input_ids: torch.Tensor, lengths: torch.Tensor, id_tokens: torch.Tensor, valid: torch.Tensor,
        temperature: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log-probs [B, A] over the valid ids at ``temperature``, values [B] or None) for right-padded rows."""
        with body_autocast(self.model, self.dtype, input_ids.device.type):
            # Right padding: under the causal mask no real token attends to a pad, so no padding
            # mask is built (the all-ones mask lets transformers leave causality to the attention
            # kernel; SDPA's causal kernel also skips the upper triangle) and positions are plain
            # 0..n-1 on every row.
            out = decoder_body(self.model)(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False
            )
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        hidden = out.last_hidden_state[rows, lengths - 1].float()
        logits = self._id_logits(hidden, id_tokens)
        log_probs = torch.log_softmax(logits.masked_fill(~valid, float("-inf")) / temperature, dim=-1)
        values = self.value_head(hidden).squeeze(-1) if self.value_head is not None else None
        return log_probs, values

    def _id_logits(self, hidden: torch.Tensor, id_tokens: torch.Tensor) -> torch.Tensor:
        """Logits of the id tokens only: the shrunk LM head ``hidden @ W[id rows].T`` (+ bias), in fp32."""
        head = unwrap_model(self.model).get_output_embeddings()
        with full_precision(hidden.device.type):
            if type(head) is torch.nn.Linear:
                rows = head.weight[id_tokens].float()
                logits = torch.einsum("bh,bah->ba", hidden.float(), rows)
                if head.bias is not None:
                    logits = logits + head.bias[id_tokens].float()
                return logits
            # a wrapped head (LoRA on lm_head, a fully trained copy): apply it to the last position only
            full = head(hidden.unsqueeze(1).to(next(head.parameters()).dtype))[:, 0].float()
            return full.gather(1, id_tokens)


class _TargetLogProbs(torch.autograd.Function):
    """log p(target | hidden) through a plain linear LM head, in fp32, ``chunk`` rows at a time, keeping no logits.

    The fp32 logits are [scored tokens x vocabulary] (200 KB a token with a 49k
    vocabulary): kept for the backward, with the fp32 copy of the head's weight and
    the softmax the backward of ``logsumexp`` builds, they were the largest tensors
    of a text-scored update. The forward keeps each row's logsumexp only; the
    backward recomputes one chunk of logits at a time (one more head matmul).
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                chunk: int) -> torch.Tensor:
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        normalizers = torch.empty_like(out)
        for rows, logits in _TargetLogProbs.chunks(hidden, weight.float(), bias, chunk):
            normalizers[rows] = torch.logsumexp(logits, -1)
            out[rows] = logits.gather(1, targets[rows, None])[:, 0] - normalizers[rows]
        ctx.save_for_backward(hidden, weight, bias, targets, normalizers)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, bias, targets, normalizers = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_bias else None
        full = weight.float()
        with full_precision(hidden.device.type):
            for rows, logits in _TargetLogProbs.chunks(hidden, full, bias, ctx.chunk):
                # d(logit[target] - logsumexp) / d logits = onehot(target) - softmax, times the incoming grad
                upstream = grad[rows, None].float()
                coefficients = logits.sub_(normalizers[rows, None]).exp_().mul_(-upstream)
                coefficients.scatter_add_(1, targets[rows, None], upstream)
                if need_hidden:
                    grad_hidden[rows] = coefficients @ full
                if need_weight:
                    grad_weight.addmm_(coefficients.T, hidden[rows].float())
                if need_bias:
                    grad_bias += coefficients.sum(0)
        return (grad_hidden.to(hidden.dtype) if need_hidden else None,
                grad_weight.to(weight.dtype) if need_weight else None,
                grad_bias.to(bias.dtype) if need_bias else None, None, None)

    @staticmethod
    def chunks(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               chunk: int) -> Iterator[tuple[slice, torch.Tensor]]:
        """(rows, their fp32 logits) for each ``chunk`` rows of ``hidden``; ``weight`` is the head's, in fp32."""
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            logits = hidden[rows].float() @ weight.T
            yield rows, (logits + bias.float() if bias is not None else logits)


def _vocab_log_probs(model: Any, hidden: torch.Tensor, targets: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """log p(target | hidden) over the whole vocabulary, in fp32, ``chunk`` rows at a time."""
    head = unwrap_model(model).get_output_embeddings()
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    with full_precision(hidden.device.type):
        if type(head) is torch.nn.Linear:
            return _TargetLogProbs.apply(hidden, head.weight, head.bias, targets, chunk)
        # a wrapped head (LoRA on lm_head): it runs in its own dtype, under autograd
        out = []
        for start in range(0, hidden.shape[0], chunk):
            logits = head(hidden[start:start + chunk].to(next(head.parameters()).dtype)).float()
            target = targets[start:start + chunk, None]
            out.append((logits.gather(1, target) - torch.logsumexp(logits, -1, keepdim=True))[:, 0])
        return torch.cat(out)


@dataclass
class PackedActions:
    """A batch of prompts each followed by all its actions' tokens, as ``ActionTextHead`` reads it.

    ``mask`` is [B, 1, L, L] (True: may attend); each target token ``targets[n]``
    is predicted at flat position ``sources[n]`` (of ``B * L``) and belongs to the
    flat action ``owner[n]`` (of ``B * A``), which has ``counts`` tokens.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    mask: torch.Tensor
    last: torch.Tensor
    sources: torch.Tensor
    targets: torch.Tensor
    owner: torch.Tensor
    counts: torch.Tensor


def pack_actions(prompts: list[list[int]], actions: list[list[list[int]]], width: int, pad_id: int,
                 device: torch.device, additive: bool = False) -> PackedActions:
    """Each prompt followed by its actions' tokens, with the block mask that keeps actions apart.

    Action ``a`` of row ``b`` takes positions ``n_b .. n_b + m_a - 1`` (``n_b``: the
    prompt's length) and sees the prompt and its own earlier tokens only, so its
    likelihood is the one it would have alone after the prompt. ``additive``: a
    float mask (0 / -inf) for eager attention instead of a boolean one.
    """
    lengths = [len(p) + sum(len(a) for a in row) for p, row in zip(prompts, actions)]
    size = max(lengths)
    input_ids = torch.full((len(prompts), size), pad_id, dtype=torch.long)
    positions = torch.zeros((len(prompts), size), dtype=torch.long)
    segment = torch.full((len(prompts), size), -1, dtype=torch.long)
    sources, targets, owner, counts = [], [], [], [1] * (len(prompts) * width)
    for b, (prompt, row) in enumerate(zip(prompts, actions)):
        n = len(prompt)
        input_ids[b, :n] = torch.tensor(prompt, dtype=torch.long)
        positions[b, :n] = torch.arange(n)
        segment[b, :n] = 0
        at = n
        for a, tokens in enumerate(row):
            m = len(tokens)
            input_ids[b, at:at + m] = torch.tensor(tokens, dtype=torch.long)
            positions[b, at:at + m] = torch.arange(n, n + m)
            segment[b, at:at + m] = a + 1
            sources += [b * size + n - 1] + [b * size + at + j for j in range(m - 1)]
            targets += tokens
            owner += [b * width + a] * m
            counts[b * width + a] = m
            at += m
    causal = torch.ones(size, size, dtype=torch.bool).tril()
    same = (segment[:, :, None] == segment[:, None, :]) | (segment[:, None, :] == 0)
    real = segment[:, :, None] >= 0
    mask = (causal & same & real) | torch.eye(size, dtype=torch.bool)  # a pad sees itself: no empty softmax row
    mask = mask[:, None]
    if additive:
        mask = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))

    def long(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    return PackedActions(
        input_ids.to(device), positions.to(device), mask.to(device), long([len(p) - 1 for p in prompts]),
        long(sources), long(targets), long(owner), torch.tensor(counts, dtype=torch.float32, device=device),
    )


class ActionTextHead(_PolicyForward):
    """``scoring="text"``: every action scored by the mean log-likelihood of its text, in one forward pass.

    The body runs under the recipe's autocast, the vocabulary log-probs, scores
    and value head in fp32.
    """

    def forward(self, packed: PackedActions, valid: torch.Tensor,
                temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log-probs [B, A] over the valid actions at ``temperature``, values [B] or None)."""
        with body_autocast(self.model, self.dtype, packed.input_ids.device.type):
            out = decoder_body(self.model)(input_ids=packed.input_ids, attention_mask=packed.mask,
                                           position_ids=packed.position_ids, use_cache=False)
        hidden = out.last_hidden_state
        flat = hidden.reshape(-1, hidden.shape[-1])
        token_log_probs = _vocab_log_probs(self.model, flat[packed.sources], packed.targets)
        scores = torch.zeros(valid.numel(), device=flat.device).index_add(0, packed.owner, token_log_probs)
        scores = (scores / packed.counts).view(valid.shape)
        log_probs = torch.log_softmax(scores.masked_fill(~valid, float("-inf")) / temperature, dim=-1)
        values = None
        if self.value_head is not None:
            rows = torch.arange(hidden.shape[0], device=flat.device)
            values = self.value_head(hidden[rows, packed.last].float()).squeeze(-1)
        return log_probs, values


class ActionPolicy:
    """Scores all valid actions of a batch of prompts with one forward pass.

    ``dtype="bfloat16"`` runs the body under bf16 autocast (weights stay fp32);
    the id head itself always runs in fp32 so log-probs are precise. Ids the
    tokenizer cannot emit as one token are left out of ``action_ids`` (a log line
    names them) and, under ``"id"`` scoring, a prompt using one is rejected;
    ``ids_for`` labels a step's actions with ids it can emit (letter pairs past
    ``z``/``Z`` for a tokenizer that splits numbers into digits), under ``"text"``
    scoring any number of actions. ``scoring``: ``"id"`` or ``"text"`` (see the
    module docstring); ``max_length`` (default: every position the model reads)
    bounds the prompt, under ``"text"`` the prompt and its longest action (each
    action's positions follow the prompt's).
    """

    def __init__(self, model: Any, tokenizer: PreTrainedTokenizerBase, max_length: int | None = None,
                 dtype: str = "float32", value_head: torch.nn.Module | None = None, scoring: str = "id"):
        max_length = max_positions(model) if max_length is None else max_length
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        autocast_dtype(dtype)
        check_positions(model, max_length, "policy")
        self.model = model
        self.scoring = scoring
        head = ActionTextHead if scoring == "text" else ActionHead
        #: the forward pass as one module; the RL loop may replace it by accelerate's wrapped copy
        self.module: torch.nn.Module = head(model, dtype, value_head)
        self._text_tokens: dict[str, list[int]] = {}
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.dtype = dtype
        self.token_of_id: dict[str, int] = _single_token_ids(tokenizer)
        if not self.token_of_id:
            raise ActionTokenError(f"no action id is a single token after {ACTION_MARKER!r} for {_tokenizer_name(tokenizer)}")
        #: the ids this policy labels actions with, in order: ``ACTION_IDS``, then ``EXTRA_ACTION_IDS``
        self.action_ids: tuple[str, ...] = tuple(self.token_of_id)
        missing = [label for label in ACTION_IDS if label not in self.token_of_id]
        if missing:
            logger.info(
                "%d action ids are not single tokens for %s (%s%s): its prompts label actions with the %d ids it can "
                "emit, %s",
                len(missing), _tokenizer_name(tokenizer), ", ".join(missing[:6]), " ..." if len(missing) > 6 else "",
                len(self.action_ids), ", ".join(self.action_ids[:3] + ("...",) + self.action_ids[-3:]),
            )
        self._prefix = bos_prefix(tokenizer)
        if tokenizer.pad_token_id is None:
            raise ValueError(f"{_tokenizer_name(tokenizer)} has no pad token; load it with models.load_model")

    @property
    def max_actions(self) -> int | None:
        """How many actions one prompt may enumerate: as many as the tokenizer has single-token ids under
        ``"id"`` scoring; any number (None) under ``"text"``, which never reads an id's token."""
        return len(self.action_ids) if self.scoring == "id" else None

    def ids_for(self, n: int, rng: random.Random | None = None) -> list[str]:
        """Labels for ``n`` actions: this policy's first ``n`` ids, past them (``"text"`` scoring only) plain
        numbers from 200 on; shuffled by ``rng`` when given (training)."""
        if self.max_actions is not None and n > self.max_actions:
            raise ActionTokenError(
                f"{n} actions in one step, but {_tokenizer_name(self.tokenizer)} can label at most "
                f"{self.max_actions} with single-token ids"
            )
        ids = action_ids(n, self.action_ids)
        if rng is not None:
            rng.shuffle(ids)
        return ids

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompts: list[str], ids: list[list[str]]) -> list[list[int]]:
        """Token ids of each prompt; one too long for ``max_length`` has its state shortened by
        ``prompts.fit_state`` (task line, reflection and action list kept whole)."""
        if len(prompts) != len(ids):
            raise ValueError(f"{len(prompts)} prompts but {len(ids)} id lists")
        encoded = self.tokenizer(prompts, add_special_tokens=False, verbose=False)["input_ids"]
        sequences = []
        for row, (prompt, row_ids) in enumerate(zip(prompts, ids)):
            tail = action_list_start(prompt, row_ids)
            budget = self.max_length - len(self._prefix)
            if self.scoring == "text":
                budget -= max(len(tokens) for tokens in self.action_tokens(prompt, row_ids))
            tokens = encoded[row]
            if len(tokens) > budget:
                analyze = prompt.find(ANALYZE_MARKER)
                tokens = fit_prompt(self.tokenizer, prompt, analyze if 0 <= analyze < tail else tail, budget,
                                    f"prompt {row}")
            sequences.append(self._prefix + list(tokens))
        return sequences

    def _id_tokens(self, ids: list[list[str]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The token of every row's ids [B, A] and which entries are real [B, A], on ``device``.

        Under ``"text"`` scoring no id's token is read: any label passes, with a placeholder token.
        """
        width = max(len(row) for row in ids) if ids else 0
        first = next(iter(self.token_of_id.values()))
        rows = []
        for row, row_ids in enumerate(ids):
            if not row_ids:
                raise ValueError(f"row {row} has no actions")
            unknown = [label for label in row_ids if label not in self.token_of_id]
            if unknown and self.scoring == "id":
                raise ActionTokenError(
                    f"row {row} uses action ids {unknown[:8]} that are not single tokens of "
                    f"{_tokenizer_name(self.tokenizer)}; this policy supports at most {self.max_actions} actions "
                    f"labelled {self.action_ids[0]}..{self.action_ids[-1]}"
                )
            if len(set(row_ids)) != len(row_ids):
                raise ValueError(f"row {row} repeats an action id: {row_ids}")
            rows.append([self.token_of_id.get(label, first) for label in row_ids] + [first] * (width - len(row_ids)))
        tokens = torch.tensor(rows, dtype=torch.long, device=device)
        mask = torch.arange(width, device=device)[None, :] < torch.tensor([len(r) for r in ids], device=device)[:, None]
        return tokens, mask

    def distribution(
        self,
        prompts: list[str],
        ids: list[list[str]],
        tokens: list[list[int]] | None = None,
        temperature: float = 1.0,
        return_values: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Log-probs [B, max_actions] over each row's valid ids (-inf beyond them), from one forward pass.

        Only each prompt's last position is read and projected, onto the id rows only.
        ``temperature`` divides the logits: the distribution actions are sampled from,
        so that RL scores an action under the same distribution that chose it.
        ``tokens``: the prompts as ``encode`` returned them, for callers that already
        hold them. With ``return_values`` also the value head's estimate of each state [B].
        Differentiable when called under grad; every tensor is made on the model's device.
        """
        if not prompts:
            raise ValueError("distribution needs at least one prompt")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if tokens is not None and len(tokens) != len(prompts):
            raise ValueError(f"{len(tokens)} token sequences for {len(prompts)} prompts")
        if return_values and self.value_head is None:
            raise ValueError("return_values needs a policy built with a value_head")
        device = self.device
        id_tokens, valid = self._id_tokens(ids, device)
        sequences = self.encode(prompts, ids) if tokens is None else tokens
        if self.scoring == "text":
            packed = pack_actions(sequences, [self.action_tokens(p, row) for p, row in zip(prompts, ids)],
                                  valid.shape[1], self.tokenizer.pad_token_id, device,
                                  additive=getattr(self.model.config, "_attn_implementation", None) == "eager")
            log_probs, values = self.module(packed, valid, temperature)
        else:
            input_ids, lengths = right_pad(sequences, self.tokenizer.pad_token_id, device)
            log_probs, values = self.module(input_ids, lengths, id_tokens, valid, temperature)
        return (log_probs, values) if return_values else log_probs

    def action_tokens(self, prompt: str, ids: list[str]) -> list[list[int]]:
        """The tokens that answer each action under ``scoring="text"``: its text and the line's end."""
        texts = action_texts(prompt, ids)
        missing = [text for text in dict.fromkeys(texts) if text not in self._text_tokens]
        if missing:
            encoded = self.tokenizer([text + "\n" for text in missing], add_special_tokens=False, verbose=False)
            self._text_tokens.update(zip(missing, encoded["input_ids"]))
        return [self._text_tokens[text] for text in texts]

    @property
    def value_head(self) -> torch.nn.Module | None:
        inner = getattr(self.module, "module", self.module)  # under DDP, the wrapped ActionHead
        return inner.value_head

    @staticmethod
    def entropy(log_probs: torch.Tensor) -> torch.Tensor:
        """Entropy of each row of a masked log-distribution (the -inf entries contribute nothing)."""
        finite = torch.isfinite(log_probs)
        safe = torch.where(finite, log_probs, torch.zeros_like(log_probs))
        return -(safe.exp() * safe).sum(-1)

    def act(
        self,
        prompts: list[str],
        ids: list[list[str]],
        greedy: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> list[ActionChoice]:
        """Choose one action per prompt (no grad, eval mode); log-probs are those of the distribution sampled from.

        Greedy takes the argmax and reports log-probs at temperature 1.
        """
        if not greedy and temperature <= 0:
            raise ValueError(f"temperature must be positive for sampling, got {temperature}")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                log_probs = self.distribution(prompts, ids, temperature=1.0 if greedy else temperature).cpu()
        finally:
            self.model.train(was_training)
        if greedy:
            chosen = log_probs.argmax(-1)
        else:
            chosen = torch.multinomial(log_probs.exp(), 1, generator=generator)[:, 0]
        entropy = self.entropy(log_probs)
        return [
            ActionChoice(index=i, log_prob=float(log_probs[row, i]), entropy=float(entropy[row]), label=ids[row][i])
            for row, i in enumerate(chosen.tolist())
        ]

    def log_prob_and_entropy(
        self, prompts: list[str], ids: list[list[str]], chosen: list[int], tokens: list[list[int]] | None = None,
        temperature: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-prob of each chosen action index and the distribution's entropy, both [B] and differentiable.

        ``tokens`` and ``temperature`` as for ``distribution``.
        """
        if len(chosen) != len(prompts):
            raise ValueError(f"{len(chosen)} chosen indices for {len(prompts)} prompts")
        for row, (index, row_ids) in enumerate(zip(chosen, ids)):
            if not 0 <= index < len(row_ids):
                raise ValueError(f"row {row}: chosen index {index} outside its {len(row_ids)} actions")
        log_probs = self.distribution(prompts, ids, tokens=tokens, temperature=temperature)
        picked = log_probs.gather(1, torch.tensor(chosen, device=log_probs.device)[:, None])[:, 0]
        return picked, self.entropy(log_probs)
