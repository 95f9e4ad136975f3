"""RL-loop benchmark: whole Reflect-RL iterations on AutoExplore, ours against the original's way.

One iteration = a batch of lock-step AutoExplore episodes in which, every round,
the frozen reflector writes one analysis per live env and the policy picks an
action id, then one REINFORCE update on the batch. Both players are
SmolLM2-135M with an untrained LoRA adapter (r=64, alpha=16, dropout=0.1); the
adapter's zero-initialised up-projection makes each start as the base model,
which is all timing needs.

* ``ours``: the library as ``train/rl.py`` runs it: ``agent.rollout.rollout`` with
  a ``Reflector`` (adapter merged, weights cast to the compute dtype, preallocated KV cache,
  rows leave the batch at EOS or at the action marker) and an ``ActionPolicy``
  (frozen base in the compute dtype, one forward, id logits at the last position only), then
  ``Learner.update`` on ``reinforce_batch``.
* ``original``: the authors' way (``transformer_text_completion`` and
  ``calc_pg_loss`` in zhourunlong/Reflect-RL): fp32 weights under autocast,
  transformers' default attention (SDPA), the reflection by
  ``generate(do_sample=True)`` until EOS or the token budget, the action by
  ``generate`` of one token with full-vocabulary scores and a softmax over the id
  tokens per row in Python, and the update's log-probs from a full forward that
  projects every position onto the whole vocabulary. Its per-token
  full-vocabulary softmax/entropy over the reflection's scores is left out, so
  the ratio is, if anything, in the original's favour.

Both sides compute in ``--dtype``: by default bf16 where the device has bf16
units (the original ran bf16 autocast on GPUs), fp32 on a CPU without them,
where bf16 autocast is emulated and many times slower.

Same episodes: both sides play the same tasks with the same env seeds, and the
original steps its envs with the actions ours sampled (it still samples its own
choice and pays for it), so both play identical trajectories: the same env
steps, states and batch sizes. Each side runs in its own fresh process (so its
peak RSS is its own) and the two alternate iteration by iteration, so a shared
machine's load falls on both alike. A third process then measures the levers,
one at a time, on a fixed batch of real AutoExplore states.

Writes ``benchmarks/results/rl_loop.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import platform
import random
import re
import statistics
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
import transformers
from accelerate import Accelerator
from transformers import CompileConfig

from policy_step import best_of
from reflectrl.agent.attention import ATTENTION_ENV
from reflectrl.agent.models import LoraSettings, ModelSpec, autocast, default_device, load_model
from reflectrl.agent.policy import ActionPolicy, action_token_map, positions_from_mask, unwrap_model, usable_action_ids
from reflectrl.agent.prompts import ACTION_STOP, clean_reflection, policy_prompt, reflection_prompt
from reflectrl.agent.reflector import Reflector
from reflectrl.agent.rollout import Episode, StepRecord, rollout
from reflectrl.config import RLConfig
from reflectrl.cpu import cpu_model
from reflectrl.envs.registry import make_env
from reflectrl.memory import peak_device_gb, peak_rss_gb
from reflectrl.train.rl import Batch, Learner, iteration_seed, reinforce_batch

RESULT = Path(__file__).parent / "results" / "rl_loop.json"
LORA = LoraSettings(r=64, alpha=16, dropout=0.1)
ENV = "autoexplore"
#: the file listing of an AutoExplore state; the policy's action list names every entry again (cd/cat/id)
LISTING = re.compile(r"Files under it:\n.*?\n(?=Command history:)", re.S)


# ----------------------------------------------------------------------------- shared pieces
def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a phase's clock stops when its work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_players(args: argparse.Namespace, dtype: str) -> tuple[Any, Any, Any]:
    """Policy and reflector models (the same base, each with a fresh LoRA adapter) and their shared tokenizer."""
    spec = ModelSpec(name=args.model, dtype=dtype, lora=LORA)
    texts = None
    if args.model == "tiny":
        env = make_env(ENV, max_steps=args.max_steps)
        observations = [env.reset(task=task, seed=i) for i, task in enumerate(env.tasks("train")[:100])]
        texts = [o.text + "\n" + "\n".join(o.actions) for o in observations]
    policy, tokenizer = load_model(spec, texts)
    reflector, _ = load_model(spec, tokenizer=tokenizer)
    return policy, reflector, tokenizer


def rl_config(args: argparse.Namespace) -> RLConfig:
    """The RL settings both sides share (the AutoExplore recipes': REINFORCE, mean baseline)."""
    return RLConfig(batch_episodes=args.batch_episodes, baseline="mean", minibatch_size=args.minibatch_size)


def timed(clock: dict[str, float], key: str, function: Callable, device: torch.device) -> Callable:
    """``function`` that adds its own wall time to ``clock[key]``."""

    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = function(*args, **kwargs)
        synchronize(device)
        clock[key] += time.perf_counter() - start
        return out

    return run


def summary(episodes: list[Episode], clock: dict[str, float], reflections: list[int], stopped: int) -> dict[str, Any]:
    """What a side reports for one iteration; 'env_and_other' is the rollout's time outside the two models."""
    clock["env_and_other"] = clock.pop("rollout") - clock["reflection"] - clock["policy"]
    return {
        "env_steps": sum(len(e) for e in episodes),
        "episodes": len(episodes),
        "successes": sum(e.success for e in episodes),
        "seconds": clock,
        "reflections": len(reflections),
        "reflection_new_tokens": sum(reflections),
        "stopped_at_marker": stopped,
    }


# ----------------------------------------------------------------------------- the two sides
class Ours:
    """The library's RL iteration: ``rollout`` with ``Reflector`` and ``ActionPolicy``, then ``Learner.update``."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.device = args, torch.device(args.device)
        policy_model, reflector_model, tokenizer = load_players(args, args.dtype)
        self.tokenizer = tokenizer
        self.policy = ActionPolicy(policy_model.to(self.device), tokenizer, max_length=args.max_length, dtype=args.dtype)
        self.reflector = Reflector(reflector_model.to(self.device), tokenizer, max_new_tokens=args.reflection_tokens,
                                   temperature=args.reflection_temperature, dtype=args.dtype)
        self.learner = Learner(self.policy, rl_config(args), Accelerator(cpu=self.device.type == "cpu"))
        self.envs = [make_env(ENV, max_steps=args.max_steps) for _ in range(args.batch_episodes)]
        self.warm_envs = [make_env(ENV, max_steps=1) for _ in range(args.batch_episodes)]
        self.attention = unwrap_model(policy_model).config._attn_implementation

    def iteration(self, tasks: list[str], seeds: list[int], index: int, warm_up: bool = False) -> dict[str, Any]:
        """One iteration as ``train_rl`` runs it (seeded by the iteration), timed by phase; returns the actions taken."""
        seed = iteration_seed(self.args.seed, index, 0)
        rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.reflector.reseed(seed)
        clock = {"rollout": 0.0, "reflection": 0.0, "policy": 0.0, "update": 0.0}
        reflections: list[int] = []
        stopped = 0
        generate_ids, reflect, act = self.reflector.generate_ids, self.reflector.reflect, self.policy.act

        def counted(prompts: list[str]) -> list[list[int]]:
            nonlocal stopped
            out = generate_ids(prompts)
            reflections.extend(len(row) for row in out)
            stopped += sum(ACTION_STOP in text for text in self.tokenizer.batch_decode(out, skip_special_tokens=True))
            return out

        self.reflector.generate_ids = counted
        self.reflector.reflect = timed(clock, "reflection", reflect, self.device)
        self.policy.act = timed(clock, "policy", act, self.device)
        try:
            envs = self.warm_envs if warm_up else self.envs
            episodes = timed(clock, "rollout", rollout, self.device)(
                envs[: len(tasks)], tasks, seeds, self.policy, self.reflector, rng=rng, generator=generator)
        finally:
            del self.reflector.generate_ids, self.reflector.reflect, self.policy.act
        timed(clock, "update", self.learner.update, self.device)(reinforce_batch(episodes, 1.0, "mean"))
        return {**summary(episodes, clock, reflections, stopped), "actions": [[s.action for s in e.steps] for e in episodes]}


class Original:
    """The authors' RL iteration: HF ``generate`` for both players, full-vocabulary logits in the update."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.device = args, torch.device(args.device)
        policy_model, reflector_model, tokenizer = load_players(args, "float32")
        for model in (policy_model, reflector_model):
            unwrap_model(model).set_attn_implementation("sdpa")
            model.to(self.device)
        reflector_model.requires_grad_(False)
        self.policy, self.reflector = policy_model, reflector_model
        self.tokenizer = tokenizer
        self.tokenizer.truncation_side = "left"
        self.labels = usable_action_ids(tokenizer)
        self.token_of_id = action_token_map(tokenizer, self.labels)[0]
        self.config = rl_config(args)
        self.params = [p for p in policy_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        self.envs = [make_env(ENV, max_steps=args.max_steps) for _ in range(args.batch_episodes)]
        self.warm_envs = [make_env(ENV, max_steps=1) for _ in range(args.batch_episodes)]
        self.positions = unwrap_model(reflector_model).config.max_position_embeddings
        self.attention = "sdpa"

    def _encode(self, prompts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        return {"input_ids": batch["input_ids"].to(self.device), "attention_mask": batch["attention_mask"].to(self.device)}

    @torch.no_grad()
    def reflect(self, states: list[str]) -> tuple[list[str], list[int]]:
        """``generate(do_sample=True)`` until EOS or the token budget; the cleaned texts and each row's new tokens."""
        tokens, temperature = self.args.reflection_tokens, self.args.reflection_temperature
        batch = self._encode([reflection_prompt(s) for s in states], self.positions - tokens)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {"do_sample": False}
        with autocast(self.args.dtype, self.device.type):
            out = self.reflector.generate(**batch, max_new_tokens=tokens, pad_token_id=self.tokenizer.pad_token_id,
                                          eos_token_id=self.tokenizer.eos_token_id, **sampling)
        new = out[:, batch["input_ids"].shape[1]:].tolist()
        lengths = [row.index(self.tokenizer.eos_token_id) if self.tokenizer.eos_token_id in row else len(row) for row in new]
        texts = self.tokenizer.batch_decode([row[:n] for row, n in zip(new, lengths)], skip_special_tokens=True)
        return [clean_reflection(t) for t in texts], lengths

    def _id_tokens(self, labels: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(row) for row in labels)
        tokens = torch.tensor([[self.token_of_id[x] for x in row] + [0] * (width - len(row)) for row in labels])
        valid = torch.arange(width)[None, :] < torch.tensor([len(row) for row in labels])[:, None]
        return tokens.to(self.device), valid.to(self.device)

    @torch.no_grad()
    def act(self, prompts: list[str], labels: list[list[str]], generator: torch.Generator) -> list[tuple[int, torch.Tensor]]:
        """One generated token with full-vocabulary scores, then per row a softmax over its id tokens and a sample."""
        batch = self._encode(prompts, self.args.max_length)
        with autocast(self.args.dtype, self.device.type):
            out = self.policy.generate(**batch, max_new_tokens=1, do_sample=False, output_scores=True,
                                       return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id)
        scores = out.scores[0].float().cpu()
        choices = []
        for row, row_labels in enumerate(labels):
            logits = scores[row, [self.token_of_id[x] for x in row_labels]]
            probs, log_probs = torch.softmax(logits, -1), torch.log_softmax(logits, -1)
            choices.append((int(torch.multinomial(probs, 1, generator=generator)), log_probs))
        return choices

    def update(self, batch: Batch) -> float:
        """REINFORCE with each step's log-prob from a full forward (logits over the vocabulary at every position)."""
        self.optimizer.zero_grad(set_to_none=True)
        n, size, total = len(batch.steps), self.config.minibatch_size, 0.0
        for start in range(0, n, size):
            steps = batch.steps[start:start + size]
            encoded = self._encode([s.prompt for s in steps], self.args.max_length)
            with autocast(self.args.dtype, self.device.type):
                logits = self.policy(**encoded, position_ids=positions_from_mask(encoded["attention_mask"]),
                                     use_cache=False).logits
            id_tokens, valid = self._id_tokens([s.ids for s in steps])
            id_logits = logits[:, -1].float().gather(1, id_tokens).masked_fill(~valid, float("-inf"))
            actions = torch.tensor([s.action for s in steps], device=self.device)
            log_prob = torch.log_softmax(id_logits, -1).gather(1, actions[:, None])[:, 0]
            loss = -(batch.advantages[start:start + size].to(self.device) * log_prob).sum() / n
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        self.optimizer.step()
        return total

    def iteration(self, tasks: list[str], seeds: list[int], index: int, warm_up: bool = False,
                  forced: list[list[int]] | None = None) -> dict[str, Any]:
        """Lock-step episodes as the original played them; ``forced``: the actions to step with (ours' choices)."""
        seed = iteration_seed(self.args.seed, index, 0)
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        clock = {"rollout": 0.0, "reflection": 0.0, "policy": 0.0, "update": 0.0}
        reflections: list[int] = []
        envs = (self.warm_envs if warm_up else self.envs)[: len(tasks)]
        start = time.perf_counter()
        observations = [env.reset(task=task, seed=s) for env, task, s in zip(envs, tasks, seeds)]
        episodes = [Episode(task, s) for task, s in zip(tasks, seeds)]
        live = list(range(len(envs)))
        while live:
            states = [observations[i] for i in live]
            texts, lengths = timed(clock, "reflection", self.reflect, self.device)([o.text for o in states])
            reflections += lengths
            labels = [self.labels[: len(o.actions)] for o in states]
            prompts = [policy_prompt(o.text, o.actions, r, ids) for o, r, ids in zip(states, texts, labels)]
            choices = timed(clock, "policy", self.act, self.device)(prompts, labels, generator)
            still = []
            for i, prompt, ids, reflection, (choice, log_probs) in zip(live, prompts, labels, texts, choices):
                action = forced[i][len(episodes[i].steps)] if forced is not None else choice
                observation, reward, terminated, truncated, info = envs[i].step(action)
                entropy = -float((log_probs.exp() * log_probs).sum())
                episodes[i].steps.append(StepRecord(prompt, ids, action, float(log_probs[action]), entropy, float(reward),
                                                    bool(terminated), bool(truncated and not terminated), reflection,
                                                    observations[i].actions[action]))
                observations[i] = observation
                if terminated or truncated:
                    episodes[i].success = bool(info.get("success", False))
                else:
                    still.append(i)
            live = still
        clock["rollout"] = time.perf_counter() - start
        timed(clock, "update", self.update, self.device)(reinforce_batch(episodes, 1.0, "mean"))
        return summary(episodes, clock, reflections, 0)


def serve(kind: str, args: argparse.Namespace, connection: Connection) -> None:
    """A side's process: build the side, then run what the parent sends until it says stop."""
    try:
        torch.set_num_threads(args.threads)
        side = Ours(args) if kind == "ours" else Original(args)
        connection.send(("ok", {"rss_after_load_gb": peak_rss_gb(), "attention": side.attention}))
        while True:
            command, payload = connection.recv()
            if command == "stop":
                connection.send(("ok", {"peak_rss_gb": peak_rss_gb(), "peak_device_gb": peak_device_gb()}))
                return
            connection.send(("ok", getattr(side, command)(**payload)))
    except Exception:
        connection.send(("error", traceback.format_exc()))


class Child:
    """A side (or the levers) in a fresh process, called over a pipe."""

    def __init__(self, kind: str, args: argparse.Namespace, target: Callable = serve):
        context = multiprocessing.get_context("spawn")
        self.kind = kind
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=target, args=(kind, args, child_end), daemon=True)
        self.process.start()
        self.started = self.expect()

    def expect(self) -> Any:
        status, value = self.connection.recv()
        if status == "error":
            self.process.join()
            raise RuntimeError(f"the {self.kind} process failed:\n{value}")
        return value

    def call(self, command: str, **payload: Any) -> Any:
        self.connection.send((command, payload))
        return self.expect()

    def stop(self) -> dict[str, Any]:
        out = self.call("stop")
        self.process.join()
        return out


# ----------------------------------------------------------------------------- the levers
def lever_states(args: argparse.Namespace, tasks: list[str], seeds: list[int]) -> list[Any]:
    """Real AutoExplore states: each episode's start, then one or two random cd/cat moves."""
    rng = random.Random(args.seed)
    states = []
    for task, seed in zip(tasks, seeds):
        env = make_env(ENV)
        observation = env.reset(task=task, seed=seed)
        for _ in range(rng.randint(1, 2)):
            moves = [i for i, a in enumerate(observation.actions) if not a.startswith("id ")]
            if moves:
                observation = env.step(rng.choice(moves))[0]
        states.append(observation)
    return states


def hf_reflect(model: Any, tokenizer: Any, prompts: list[str], tokens: int, device: torch.device,
               autocast_dtype: str = "float32", **options: Any) -> list[int]:
    """Greedy ``generate`` of up to ``tokens`` new tokens per prompt; each row's count up to EOS."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
    with torch.no_grad(), autocast(autocast_dtype, device.type):
        out = model.generate(**batch, max_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, **options)
    new = out[:, batch["input_ids"].shape[1]:].tolist()
    return [row.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in row else len(row) for row in new]


def lever(name: str, in_library: bool, before: str, after: str, t: dict[str, float], note: str, **extra: Any) -> dict[str, Any]:
    return {"lever": name, "in_library": in_library, "before": before, "after": after, "seconds_before": t[before],
            "seconds_after": t[after], "speedup": t[before] / t[after], "note": note, **extra}


def measure_levers(args: argparse.Namespace, tasks: list[str], seeds: list[int]) -> dict[str, Any]:
    """Each lever alone, on one fixed batch of real states; reflections greedy, so every variant writes alike."""
    device = torch.device(args.device)
    states = lever_states(args, tasks, seeds)
    prompts = [reflection_prompt(o.text) for o in states]
    tokens = args.reflection_tokens
    original, _, tokenizer = load_players(args, "float32")
    original.requires_grad_(False)
    unwrap_model(original).set_attn_implementation("sdpa")
    original.to(device)
    bf16 = copy.deepcopy(original).to(torch.bfloat16)
    merged = copy.deepcopy(bf16).merge_and_unload()
    policy_model, reflector_model, _ = load_players(args, args.dtype)
    reflector = Reflector(reflector_model.to(device), tokenizer, max_new_tokens=tokens, dtype=args.dtype)
    policy = ActionPolicy(policy_model.to(device), tokenizer, max_length=args.max_length, dtype=args.dtype)
    library_attention = reflector.model.config._attn_implementation
    reflector_sdpa = Reflector(copy.deepcopy(merged), tokenizer, max_new_tokens=tokens, dtype=args.dtype)
    policy_sdpa = ActionPolicy(copy.deepcopy(policy_model), tokenizer, max_length=args.max_length, dtype=args.dtype)
    unwrap_model(policy_sdpa.model).set_attn_implementation("sdpa")

    reflections = reflector.reflect([o.text for o in states])
    labels = [policy.ids_for(len(o.actions)) for o in states]
    full = [policy_prompt(o.text, o.actions, r, ids) for o, r, ids in zip(states, reflections, labels)]
    short = [policy_prompt(LISTING.sub("", o.text), o.actions, r, ids) for o, r, ids in zip(states, reflections, labels)]

    def tokens_of(texts: list[str]) -> float:
        return statistics.mean(len(row) for row in tokenizer(texts, add_special_tokens=False)["input_ids"])

    def update(with_policy: ActionPolicy) -> None:
        """The RL update's forward and backward (as ``Learner.loss``) on every state once."""
        with_policy.model.zero_grad(set_to_none=True)
        log_prob, _ = with_policy.log_prob_and_entropy(full, labels, [0] * len(full))
        (-log_prob.mean()).backward()
        synchronize(device)

    variants: dict[str, Callable[[], Any]] = {
        "original": lambda: hf_reflect(original, tokenizer, prompts, tokens, device, args.dtype),
        "bf16_weights": lambda: hf_reflect(bf16, tokenizer, prompts, tokens, device),
        "merged_lora": lambda: hf_reflect(merged, tokenizer, prompts, tokens, device),
        "reflector_sdpa": lambda: reflector_sdpa.generate_ids(prompts),
        "reflector": lambda: reflector.generate_ids(prompts),
        "one_at_a_time": lambda: [reflector.generate_ids([p]) for p in prompts],
        "policy_sdpa": lambda: policy_sdpa.act(full, labels, greedy=True),
        "policy": lambda: policy.act(full, labels, greedy=True),
        "policy_short_prompts": lambda: policy.act(short, labels, greedy=True),
        "update_sdpa": lambda: update(policy_sdpa),
        "update": lambda: update(policy),
    }
    compile_s = None
    if args.compile_lever:
        config = CompileConfig(mode="reduce-overhead" if device.type == "cuda" else "default", dynamic=False)
        config._compile_all_devices = True  # transformers compiles only on accelerators unless told otherwise
        compiled = copy.deepcopy(merged)
        compiled.set_attn_implementation(library_attention)
        static = {"cache_implementation": "static", "compile_config": config}
        start = time.perf_counter()
        hf_reflect(compiled, tokenizer, prompts, tokens, device, **static)
        compile_s = time.perf_counter() - start
        variants["static_cache_compiled"] = lambda: hf_reflect(compiled, tokenizer, prompts, tokens, device, **static)
    new_tokens = {name: statistics.mean(variants[name]()) for name in ("original", "bf16_weights", "merged_lora")}
    new_tokens["reflector"] = statistics.mean(len(row) for row in reflector.generate_ids(prompts))
    timings = best_of(variants, args.lever_repeats)
    t = {name: value["min_s"] for name, value in timings.items()}
    attention = f"SDPA -> {library_attention}, the attention load_model selects here (REFLECTRL_ATTENTION picks another)"
    levers = [
        lever("bf16 weights for the frozen reflector", True, "original", "bf16_weights", t,
              "fp32 weights under bf16 autocast -> weights cast to bf16 once (Reflector does); LoRA unmerged, HF generate, SDPA"),
        lever("LoRA merged into the frozen reflector", True, "bf16_weights", "merged_lora", t,
              "peft's unmerged adapter (two extra matmuls per linear layer and token) -> merge_and_unload (Reflector does)"),
        lever("library decode loop", True, "merged_lora", "reflector_sdpa", t,
              "HF generate -> Reflector.generate_ids, both on SDPA: preallocated KV cache, mask built once, finished "
              "rows leave the batch"),
        lever("attention kernel: reflection", True, "reflector_sdpa", "reflector", t, attention),
        lever("attention kernel: policy step", True, "policy_sdpa", "policy", t, attention),
        lever("attention kernel: RL update (forward + backward)", True, "update_sdpa", "update", t, attention),
        lever("reflections batched across every live env", True, "one_at_a_time", "reflector", t,
              "one Reflector call per state -> one call for all (rollout does)"),
        lever("shorter policy prompts: drop the file listing the action list repeats", False, "policy",
              "policy_short_prompts", t,
              "every listed entry is named again by a cd/cat/id action, so the policy loses nothing; the reflector "
              "sees no action list and keeps it. A library change: AutoExplore's policy prompt (and its SFT data) "
              "without 'Files under it'; the RL update's forward and backward shrink by the same tokens",
              prompt_tokens={"full": tokens_of(full), "short": tokens_of(short)}),
    ]
    if compile_s is not None:
        levers.append(lever(
            "static KV cache + torch.compile'd decode step", False, "reflector", "static_cache_compiled", t,
            "HF generate(cache_implementation='static') with a compiled forward, same attention, against the "
            "library's reflector, after compiling for this one shape (batch, prompt width); compile_s is the first "
            "call. In the RL loop the live batch and the prompt width change every round and each new shape "
            "compiles again (dynamic=False), so the library would need shape buckets (rows and widths padded to a "
            "few sizes) to use it",
            compile_s=compile_s))
    return {"states": len(states), "reflection_prompt_tokens_mean": tokens_of(prompts), "policy_prompt_tokens_mean":
            tokens_of(full), "reflection_new_tokens_mean": new_tokens, "timings": timings, "levers": levers}


def serve_levers(kind: str, args: argparse.Namespace, connection: Connection) -> None:
    """The levers' process: measure once, send the result back."""
    try:
        torch.set_num_threads(args.threads)
        connection.send(("ok", None))
        _, payload = connection.recv()
        connection.send(("ok", measure_levers(args, **payload)))
    except Exception:
        connection.send(("error", traceback.format_exc()))


# ----------------------------------------------------------------------------- the run
def draw_episodes(args: argparse.Namespace) -> list[tuple[list[str], list[int]]]:
    """Each iteration's tasks (ids from the train split) and env seeds, the same for both sides."""
    rng = random.Random(args.seed)
    pool = [task.task_id for task in make_env(ENV, max_steps=args.max_steps).tasks("train")]
    return [(rng.choices(pool, k=args.batch_episodes), [rng.randrange(2**31) for _ in range(args.batch_episodes)])
            for _ in range(args.iterations + 1)]


def totals(rows: list[dict[str, Any]], side: str) -> dict[str, Any]:
    seconds = {key: sum(r[side]["seconds"][key] for r in rows) for key in rows[0][side]["seconds"]}
    seconds["total"] = seconds["reflection"] + seconds["policy"] + seconds["env_and_other"] + seconds["update"]
    steps = sum(r[side]["env_steps"] for r in rows)
    reflections = sum(r[side]["reflections"] for r in rows)
    return {
        "env_steps": steps,
        "env_steps_per_s": steps / seconds["total"],
        "seconds": seconds,
        "seconds_per_env_step": {key: value / steps for key, value in seconds.items()},
        "reflection_new_tokens_mean": sum(r[side]["reflection_new_tokens"] for r in rows) / max(reflections, 1),
        "reflections_stopped_at_marker": sum(r[side]["stopped_at_marker"] for r in rows),
        "successes": sum(r[side]["successes"] for r in rows),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    draws = draw_episodes(args)
    warm_tasks, warm_seeds = draws[0]
    load_before = os.getloadavg()
    ours, original = Child("ours", args), Child("original", args)
    ours.call("iteration", tasks=warm_tasks, seeds=warm_seeds, index=-1, warm_up=True)
    original.call("iteration", tasks=warm_tasks, seeds=warm_seeds, index=-1, warm_up=True)
    rows = []
    for index, (tasks, seeds) in enumerate(draws[1:]):
        ours_row = ours.call("iteration", tasks=tasks, seeds=seeds, index=index)
        original_row = original.call("iteration", tasks=tasks, seeds=seeds, index=index, forced=ours_row.pop("actions"))
        if original_row["env_steps"] != ours_row["env_steps"]:
            raise RuntimeError(f"iteration {index}: the sides played {ours_row['env_steps']} and "
                               f"{original_row['env_steps']} env steps; the trajectories must be the same")
        rows.append({"iteration": index, "ours": ours_row, "original": original_row})
    memory = {"ours": {**ours.started, **ours.stop()}, "original": {**original.started, **original.stop()}}
    sides = {side: totals(rows, side) for side in ("ours", "original")}
    levers: dict[str, Any] = {"levers": []}
    if args.levers:
        measuring = Child("levers", args, serve_levers)
        first_tasks, first_seeds = draws[1]
        levers = measuring.call("measure", tasks=first_tasks, seeds=first_seeds)
        measuring.process.join()
    ratio = sides["ours"]["env_steps_per_s"] / sides["original"]["env_steps_per_s"]
    per_step = {side: sides[side]["seconds_per_env_step"] for side in sides}
    loop_levers = [
        {"lever": "stop each row at the action marker", "in_library": True,
         "reflection_new_tokens_mean": {side: sides[side]["reflection_new_tokens_mean"] for side in sides},
         "rows_stopped_at_marker": sides["ours"]["reflections_stopped_at_marker"],
         "note": "measured in the RL iterations: an untrained (no SFT) reflector rarely writes the marker, so this "
                 "saves tokens only once SFT has taught it the format"},
        {"lever": "policy step: action-id head vs generate(output_scores) + per-row softmax in Python", "in_library": True,
         "seconds_per_env_step": {side: per_step[side]["policy"] for side in per_step},
         "speedup": per_step["original"]["policy"] / per_step["ours"]["policy"],
         "note": "measured in the RL iterations (ours also has bf16 frozen base weights)"},
        {"lever": "update: id logits at the last position vs full-vocabulary logits at every position", "in_library": True,
         "seconds_per_env_step": {side: per_step[side]["update"] for side in per_step},
         "speedup": per_step["original"]["update"] / per_step["ours"]["update"],
         "note": "measured in the RL iterations (ours also has bf16 frozen base weights)"},
        {"lever": "reflection in the loop (all the reflector levers together)", "in_library": True,
         "seconds_per_env_step": {side: per_step[side]["reflection"] for side in per_step},
         "speedup": per_step["original"]["reflection"] / per_step["ours"]["reflection"]},
    ]
    return {
        "speedup_vs_original": ratio,
        "env_steps_per_s": {side: sides[side]["env_steps_per_s"] for side in sides},
        "peak_rss_gb": {side: memory[side]["peak_rss_gb"] for side in memory},
        "peak_device_gb": {side: memory[side]["peak_device_gb"] for side in memory},
        "rss_after_load_gb": {side: memory[side]["rss_after_load_gb"] for side in memory},
        "attention": {side: memory[side]["attention"] for side in memory},
        "goals": {
            "speedup_vs_original >= 2": ratio >= 2,
            "peak memory <= original": memory["ours"]["peak_rss_gb"] <= memory["original"]["peak_rss_gb"],
        },
        "sides": sides,
        "iterations": rows,
        "levers": loop_levers + levers["levers"],
        "lever_measurements": {key: value for key, value in levers.items() if key != "levers"},
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "threads": args.threads,
            "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "settings": {
            "model": args.model,
            "lora": LORA.__dict__,
            "dtype": args.dtype,
            "env": ENV,
            "max_steps": args.max_steps,
            "iterations": args.iterations,
            "batch_episodes": args.batch_episodes,
            "reflection_tokens": args.reflection_tokens,
            "reflection_temperature": args.reflection_temperature,
            "max_length": args.max_length,
            "minibatch_size": args.minibatch_size,
            "seed": args.seed,
            ATTENTION_ENV: os.environ.get(ATTENTION_ENV),
            "lever_repeats": args.lever_repeats,
            "timing": "one warm-up iteration of one-step episodes per side, then the sides alternate iteration by "
                      "iteration, each in its own process; levers: min over interleaved rounds after a warm-up round",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="'smollm2-135m' or 'tiny' (for a quick check)")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--batch-episodes", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=5, help="AutoExplore's horizon")
    parser.add_argument("--reflection-tokens", type=int, default=64)
    parser.add_argument("--reflection-temperature", type=float, default=1.0,
                        help="the original sampled its reflections; 0 decodes greedily on both sides")
    parser.add_argument("--max-length", type=int, default=1024, help="the policy's prompt budget (sft.max_length)")
    parser.add_argument("--minibatch-size", type=int, default=4,
                        help="steps per forward/backward chunk; the original keeps [rows x heads x T x T] attention per layer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--attention", help=f"sets ${ATTENTION_ENV} for ours (default: the library's choice)")
    parser.add_argument("--lever-repeats", type=int, default=1)
    parser.add_argument("--no-levers", dest="levers", action="store_false", help="time the RL iterations only")
    parser.add_argument("--no-compile", dest="compile_lever", action="store_false",
                        help="skip the torch.compile lever (its compile takes minutes on a CPU)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"),
                        help="both sides' compute precision; auto: bf16 where the device has bf16 units, else fp32")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    args.dtype = ModelSpec(name=args.model, dtype=args.dtype).dtype
    if args.attention:
        os.environ[ATTENTION_ENV] = args.attention  # the processes started below inherit it
    started = time.perf_counter()
    result = run(args)
    result["wall_time_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    shown = ("speedup_vs_original", "env_steps_per_s", "peak_rss_gb", "goals", "wall_time_s")
    print(json.dumps({key: result[key] for key in shown}, indent=1))


if __name__ == "__main__":
    main()
