"""Supervised warm-up of the reflector and the policy (loss on the completion only).

One loop serves both players. Reflection rows are trained with the usual
next-token loss on the completion (text + EOS). Policy rows are trained with
cross-entropy over the ids valid at that step only, through the same
``ActionPolicy`` head RL later trains, so SFT and RL optimise one distribution
and no capacity goes into ruling out the rest of the vocabulary. Policy rows
can be re-rendered with shuffled ids every time they are drawn, so the model
learns to read the list instead of memorising positions.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from reflectrl.agent.models import save_model
from reflectrl.agent.policy import ActionPolicy, body_autocast, bos_prefix, decoder_body, unwrap_model
from reflectrl.agent.prompts import policy_prompt, reflection_prompt_budget
from reflectrl.agent.reflector import reflection_prompt_tokens
from reflectrl.config import SFTConfig
from reflectrl.envs.action_parser import action_ids
from reflectrl.memory import peak_device_gb, peak_rss_gb

#: the recipe's default ``reflection_tokens``, for callers of the library that do not give it
DEFAULT_REFLECTION_TOKENS = 64


@dataclass
class _Encoded:
    """A row as tokens; a policy row also keeps its prompt, ids and chosen index (its tokens are the prompt only,
    and ``n_answer`` counts the action tokens that ``scoring="text"`` packs after them)."""

    input_ids: list[int]
    n_prompt: int
    prompt: str = ""
    ids: list[str] | None = None
    action: int = -1
    n_answer: int = 0

    @property
    def size(self) -> int:
        """Tokens in this row's forward pass."""
        return len(self.input_ids) + self.n_answer


def _encode_reflections(tokenizer, rows: list[dict[str, Any]], max_length: int,
                        reflection_tokens: int) -> list[_Encoded]:
    """Prompt + completion + EOS, starting with the special tokens the reflector puts first when it generates.

    The prompt is cut to the reflector's budget exactly as the reflector cuts what
    it reads in RL and evaluation (``reflection_prompt_tokens``); the completion to
    the ``reflection_tokens`` the reflector may write (its EOS only when it ends within them).
    """
    prefix = bos_prefix(tokenizer)
    budget = reflection_prompt_budget(max_length, reflection_tokens, len(prefix))
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    completions = tokenizer([row["completion"] for row in rows], add_special_tokens=False)["input_ids"]
    encoded = []
    for row, completion_ids in zip(rows, completions):
        prompt_ids = reflection_prompt_tokens(tokenizer, row["prompt"], budget)
        completion_ids = (completion_ids + eos)[: reflection_tokens + (len(completion_ids) <= reflection_tokens)]
        encoded.append(_Encoded(prefix + prompt_ids + completion_ids, len(prefix) + len(prompt_ids)))
    return encoded


def _encode_policy(policy: ActionPolicy, rows: list[dict[str, Any]], rng: random.Random | None) -> list[_Encoded]:
    """The rows' prompts, tokenized as the policy reads them.

    A row's stored prompt labels its actions with the default ids; it is re-rendered
    with the policy's own ids when they differ (shuffled when ``rng`` is given, or
    letter pairs for a tokenizer that cannot emit the default ids as one token).
    """
    prompts, ids = [], []
    for row in rows:
        row_ids = policy.ids_for(len(row["actions"]), rng)
        if row_ids == action_ids(len(row["actions"])):
            prompts.append(row["prompt"])
        else:
            prompts.append(policy_prompt(row["state"], row["actions"], row["reflection"], row_ids))
        ids.append(row_ids)
    tokens = policy.encode(prompts, ids)
    answers = [sum(map(len, policy.action_tokens(p, i))) if policy.scoring == "text" else 0 for p, i in zip(prompts, ids)]
    return [_Encoded(t, 0, p, i, row["action"], n) for t, p, i, row, n in zip(tokens, prompts, ids, rows, answers)]


def _encode_all(rows: list[dict[str, Any]], kind: str, tokenizer, policy: ActionPolicy | None, max_length: int,
                rng: random.Random | None, reflection_tokens: int = DEFAULT_REFLECTION_TOKENS) -> list[_Encoded]:
    if kind == "policy":
        return _encode_policy(policy, rows, rng)
    return _encode_reflections(tokenizer, rows, max_length, reflection_tokens)


def _collate(batch: list[_Encoded], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (-100 outside the completion), on ``device``."""
    width = max(len(e.input_ids) for e in batch)
    input_ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in batch]
    attention = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
    labels = [[-100] * e.n_prompt + e.input_ids[e.n_prompt:] + [-100] * (width - len(e.input_ids)) for e in batch]
    return {name: torch.tensor(rows, dtype=torch.long, device=device)
            for name, rows in (("input_ids", input_ids), ("attention_mask", attention), ("labels", labels))}


def _predictions(encoded: _Encoded, policy: ActionPolicy | None) -> int:
    """How many predictions a row's loss averages over: one id for a policy row, its completion tokens otherwise."""
    return 1 if policy is not None else len(encoded.input_ids) - max(encoded.n_prompt, 1)


def _micro_batches(batch: list[_Encoded], max_tokens: int) -> list[list[_Encoded]]:
    """Split a batch so each part's padded size (rows x longest row) stays within ``max_tokens`` (0 = no split)."""
    if not max_tokens:
        return [batch]
    parts: list[list[_Encoded]] = [[]]
    width = 0
    for encoded in sorted(batch, key=lambda e: e.size):
        width = max(width, encoded.size)
        if parts[-1] and width * (len(parts[-1]) + 1) > max_tokens:
            parts.append([])
            width = encoded.size
        parts[-1].append(encoded)
    return parts


def _length_batches(encoded: list[_Encoded], batch_size: int, rng: random.Random) -> list[list[_Encoded]]:
    """Shuffle, then sort within windows of 16 batches so a batch pads little."""
    order = list(range(len(encoded)))
    rng.shuffle(order)
    window = batch_size * 16
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: encoded[i].size)
        batches += [[encoded[i] for i in chunk[j:j + batch_size]] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _loss_sum(model, tokenizer, policy: ActionPolicy | None, batch: list[_Encoded], dtype: str) -> tuple[torch.Tensor, int]:
    """Summed loss of a (micro-)batch and how many predictions it sums: completion tokens, or one id per policy row.

    Reflection rows project only the completion's positions onto the vocabulary:
    with a 49k-token vocabulary the full [rows x length x vocab] logits of a
    1024-token batch would take gigabytes for the ~100 positions that count.
    """
    if policy is not None:
        log_probs, _ = policy.log_prob_and_entropy([e.prompt for e in batch], [e.ids for e in batch],
                                                   [e.action for e in batch], tokens=[e.input_ids for e in batch])
        return -log_probs.sum(), len(batch)
    device = next(model.parameters()).device
    tensors = _collate(batch, tokenizer.pad_token_id, device)
    with body_autocast(model, dtype, device.type):
        hidden = decoder_body(model)(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"],
                                     use_cache=False).last_hidden_state
        targets = tensors["labels"][:, 1:]
        keep = targets != -100
        logits = unwrap_model(model).get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="sum"), int(keep.sum())


def accumulate(model: Any, tokenizer: Any, policy: ActionPolicy | None, batches: list[list[_Encoded]], max_batch_tokens: int,
               dtype: str) -> float:
    """Forward and backward of one optimizer step's ``batches`` (each split into micro-batches), gradients
    accumulated on the model; returns the step's loss (the mean over its predictions).

    The training loop's inner work, callable on its own so that ``benchmarks/pretrained_budget.py``
    times exactly what a step runs.
    """
    loss_sum = 0.0
    for batch in batches:
        predictions = sum(_predictions(e, policy) for e in batch) * len(batches)
        for part in _micro_batches(batch, max_batch_tokens):
            loss = _loss_sum(model, tokenizer, policy, part, dtype)[0] / predictions
            loss.backward()
            loss_sum += float(loss.detach())
    return loss_sum


def _checkpoint_activations(model: Any) -> None:
    """Recompute each layer's activations in the backward pass (transformers 5 renamed the switch)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@torch.no_grad()
def evaluate_sft(model, tokenizer, rows: list[dict[str, Any]], kind: str, config: SFTConfig, dtype: str,
                 scoring: str = "id", reflection_tokens: int = DEFAULT_REFLECTION_TOKENS) -> dict[str, float]:
    """Validation loss, and for the policy the greedy action accuracy on the held-out rows."""
    if not rows:
        return {}
    model.eval()
    policy = ActionPolicy(model, tokenizer, max_length=config.max_length, dtype=dtype,
                          scoring=scoring) if kind == "policy" else None
    encoded = _encode_all(rows, kind, tokenizer, policy, config.max_length, None, reflection_tokens)
    total, count, correct = 0.0, 0, 0
    for start in range(0, len(encoded), config.batch_size):
        for batch in _micro_batches(encoded[start:start + config.batch_size], config.max_batch_tokens):
            if policy is None:
                loss, n = _loss_sum(model, tokenizer, policy, batch, dtype)
            else:
                # one forward gives both the loss and the greedy choice (the distribution's argmax)
                log_probs = policy.distribution([e.prompt for e in batch], [e.ids for e in batch],
                                                tokens=[e.input_ids for e in batch])
                actions = torch.tensor([e.action for e in batch], device=log_probs.device)
                loss, n = -log_probs.gather(1, actions[:, None]).sum(), len(batch)
                correct += int((log_probs.argmax(-1) == actions).sum())
            total += float(loss)
            count += n
    metrics = {"val_loss": total / max(count, 1)}
    if policy is not None:
        metrics["val_action_accuracy"] = correct / len(rows)
    model.train()
    return metrics


def train_sft(
    model,
    tokenizer,
    train_rows: list[dict[str, Any]],
    val_rows: list[dict[str, Any]],
    config: SFTConfig,
    out_dir: str | Path,
    kind: str,
    seed: int = 0,
    dtype: str = "float32",
    scoring: str = "id",
    reflection_tokens: int = DEFAULT_REFLECTION_TOKENS,
) -> dict[str, float]:
    """Fine-tune on ``train_rows`` and save the result to ``out_dir``; returns the final metrics.

    ``scoring``: how a policy scores its actions (``ActionPolicy``); RL and evaluation must use the same.
    ``reflection_tokens``: the reflector's longest reflection, which with ``config.max_length`` sets
    its prompt budget (``reflection_prompt_budget``), the same in RL and evaluation.
    """
    if kind not in ("reflection", "policy"):
        raise ValueError(f"SFT kind must be 'reflection' or 'policy', got {kind!r}")
    if not train_rows:
        raise ValueError(f"no {kind} training rows for SFT")
    out_dir = Path(out_dir)
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    shuffle = kind == "policy" and config.shuffle_ids
    policy = ActionPolicy(model, tokenizer, max_length=config.max_length, dtype=dtype,
                          scoring=scoring) if kind == "policy" else None
    steps_per_epoch = math.ceil(len(train_rows) / (config.batch_size * config.grad_accum))
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    writer = SummaryWriter(str(logs))
    metrics_file = open(logs / "metrics.jsonl", "a", buffering=1)  # a line per step, readable while it runs
    if config.gradient_checkpointing:
        _checkpoint_activations(unwrap_model(model))
    model.train()
    step, started, loss_sum = 0, time.time(), 0.0
    progress = tqdm(total=total_steps, desc=f"sft {kind}", unit="step", dynamic_ncols=True)
    micro: list[list[_Encoded]] = []
    encoded = None
    while step < total_steps:
        if encoded is None or shuffle:  # only shuffled ids change a row's tokens from one epoch to the next
            encoded = _encode_all(train_rows, kind, tokenizer, policy, config.max_length, rng if shuffle else None,
                                  reflection_tokens)
        micro += _length_batches(encoded, config.batch_size, rng)
        while len(micro) >= config.grad_accum and step < total_steps:
            optimizer.zero_grad(set_to_none=True)
            loss_sum = accumulate(model, tokenizer, policy, [micro.pop() for _ in range(config.grad_accum)],
                                  config.max_batch_tokens, dtype)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss_sum:.3f}")
            record = {"step": step, "loss": loss_sum, "lr": schedule.get_last_lr()[0], "time": time.time() - started}
            if config.eval_every and step % config.eval_every == 0 and step < total_steps:
                record.update(evaluate_sft(model, tokenizer, val_rows, kind, config, dtype, scoring, reflection_tokens))
            if config.save_every and step % config.save_every == 0:
                save_model(model, tokenizer, out_dir / f"checkpoint-{step}")
            for key, value in record.items():
                if key != "step":
                    writer.add_scalar(f"sft_{kind}/{key}", value, step)
            metrics_file.write(json.dumps(record) + "\n")
        micro.clear()
    progress.close()
    metrics = {"steps": step, "train_loss": loss_sum, "seconds": time.time() - started}
    metrics.update(evaluate_sft(model, tokenizer, val_rows, kind, config, dtype, scoring, reflection_tokens))
    metrics.update(peak_rss_gb=peak_rss_gb(), peak_device_gb=peak_device_gb())
    metrics_file.write(json.dumps({"step": step, "final": True, **metrics}) + "\n")
    metrics_file.close()
    writer.close()
    save_model(model, tokenizer, out_dir)
    (out_dir / "sft_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
