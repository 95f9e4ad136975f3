"""Online RL of the policy with the reflector frozen inside the rollout.

Read top to bottom: the three losses (REINFORCE + replay, PPO, group baseline),
then the loop. One iteration = one batch of lock-step episodes on the current
curriculum level, one update on them, and (REINFORCE) one update on a sample of
the replay buffer of successful episodes, as in the paper.

Every iteration draws its randomness from ``(seed, iteration, process)``, so a
run resumed from a checkpoint replays exactly what the uninterrupted run did.
Under ``accelerate launch`` each process rolls out its own episodes, the
gradients are averaged across processes before each optimizer step, and every
process adds the successes of all of them to one shared replay buffer.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from reflectrl.agent.models import ModelSpec, autocast, load_model, save_model
from reflectrl.agent.policy import ActionPolicy
from reflectrl.agent.reflector import Reflector
from reflectrl.agent.rollout import Episode, StepRecord, returns_to_go, rollout
from reflectrl.config import RLConfig, RunConfig
from reflectrl.envs.registry import make_env
from reflectrl.train.curriculum import Curriculum
from reflectrl.train.replay import ReplayBuffer


# ----------------------------------------------------------------------------- losses
@dataclass
class Batch:
    """Steps to learn from, with their advantages (and PPO's old log-probs and returns)."""

    steps: list[StepRecord]
    advantages: torch.Tensor
    returns: torch.Tensor | None = None


def action_stats(policy: ActionPolicy, steps: list[StepRecord], value_head: torch.nn.Module | None = None):
    """Log-prob of the taken action, entropy, full log-distribution (and value) under the current policy."""
    prompts = [s.prompt for s in steps]
    ids = [s.ids for s in steps]
    if value_head is not None:
        logp_all, hidden = policy.distribution(prompts, ids, return_hidden=True)
        values = value_head(hidden.float()).squeeze(-1)
    else:
        logp_all, values = policy.distribution(prompts, ids), None
    chosen = torch.tensor([s.action for s in steps])
    logp = logp_all.gather(1, chosen[:, None]).squeeze(1)
    return logp, ActionPolicy.entropy(logp_all), logp_all, values


def kl_to_reference(logp_all: torch.Tensor, reference: ActionPolicy, steps: list[StepRecord]) -> torch.Tensor:
    """KL(pi || pi_sft) over the valid actions of each step."""
    with torch.no_grad():
        ref = reference.distribution([s.prompt for s in steps], [s.ids for s in steps])
    probs = logp_all.exp()
    diff = (logp_all - ref).masked_fill(probs == 0, 0.0)
    return (probs * diff).sum(-1)


def reinforce_loss(policy, steps, advantages, config: RLConfig, reference=None) -> torch.Tensor:
    """Policy gradient on Monte-Carlo returns-to-go (the paper's algorithm)."""
    logp, entropy, logp_all, _ = action_stats(policy, steps)
    loss = -(advantages * logp).mean() - config.entropy_coef * entropy.mean()
    if reference is not None and config.kl_coef:
        loss = loss + config.kl_coef * kl_to_reference(logp_all, reference, steps).mean()
    return loss


def ppo_loss(policy, steps, advantages, returns, value_head, config: RLConfig, reference=None) -> torch.Tensor:
    """Clipped surrogate + value regression on GAE targets."""
    logp, entropy, logp_all, values = action_stats(policy, steps, value_head)
    old = torch.tensor([s.log_prob for s in steps])
    ratio = (logp - old).exp()
    surrogate = torch.min(ratio * advantages, ratio.clamp(1 - config.clip, 1 + config.clip) * advantages)
    loss = -surrogate.mean() - config.entropy_coef * entropy.mean()
    if values is not None:
        loss = loss + config.value_coef * (values - returns).pow(2).mean()
    if reference is not None and config.kl_coef:
        loss = loss + config.kl_coef * kl_to_reference(logp_all, reference, steps).mean()
    return loss


def reinforce_batch(episodes: list[Episode], config: RLConfig) -> Batch:
    steps: list[StepRecord] = []
    advantages: list[float] = []
    for episode in episodes:
        steps += episode.steps
        advantages += returns_to_go([s.reward for s in episode.steps], config.gamma)
    adv = torch.tensor(advantages, dtype=torch.float32)
    if config.baseline == "mean" and len(adv) > 1:
        adv = adv - adv.mean()
    return Batch(steps, adv)


def group_batch(episodes: list[Episode], config: RLConfig) -> Batch:
    """GRPO-style: each episode's return minus the mean return of its task's group."""
    groups: dict[int, list[Episode]] = {}
    for index, episode in enumerate(episodes):
        groups.setdefault(index // config.group_size, []).append(episode)
    steps, advantages = [], []
    for members in groups.values():
        mean = sum(e.episode_return for e in members) / len(members)
        for episode in members:
            steps += episode.steps
            advantages += [episode.episode_return - mean] * len(episode.steps)
    return Batch(steps, torch.tensor(advantages, dtype=torch.float32))


@torch.no_grad()
def ppo_batch(episodes: list[Episode], policy: ActionPolicy, value_head: torch.nn.Module, config: RLConfig) -> Batch:
    """Generalised advantage estimation with the value head's estimates."""
    steps, advantages, returns = [], [], []
    for episode in episodes:
        values = _chunked_values(policy, episode.steps, value_head, config.minibatch_size)
        gae, adv = 0.0, [0.0] * len(episode.steps)
        for t in range(len(episode.steps) - 1, -1, -1):
            next_value = values[t + 1] if t + 1 < len(values) and not episode.steps[t].done else 0.0
            delta = episode.steps[t].reward + config.gamma * next_value - values[t]
            gae = delta + config.gamma * config.gae_lambda * gae
            adv[t] = gae
        steps += episode.steps
        advantages += adv
        returns += [a + v for a, v in zip(adv, values)]
    adv = torch.tensor(advantages, dtype=torch.float32)
    if len(adv) > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)  # normalised, as in CleanRL's PPO
    return Batch(steps, adv, torch.tensor(returns, dtype=torch.float32))


def _chunked_values(policy, steps, value_head, size) -> list[float]:
    values: list[float] = []
    for start in range(0, len(steps), size):
        chunk = steps[start:start + size]
        _, hidden = policy.distribution([s.prompt for s in chunk], [s.ids for s in chunk], return_hidden=True)
        values += value_head(hidden.float()).squeeze(-1).tolist()
    return values


# ----------------------------------------------------------------------------- one update
def update(batch: Batch, loss_fn, params, optimizer, accelerator: Accelerator, config: RLConfig, dtype: str) -> float:
    """One optimizer step over the whole batch, in minibatch chunks, gradients averaged across processes."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    n = len(batch.steps)  # 0 on a process that only joins another's update
    for start in range(0, n, config.minibatch_size):
        sl = slice(start, start + config.minibatch_size)
        returns = batch.returns[sl] if batch.returns is not None else None
        with autocast(dtype):
            loss = loss_fn(batch.steps[sl], batch.advantages[sl], returns) * (len(batch.steps[sl]) / n)
        loss.backward()
        total += float(loss.detach())
    if accelerator.num_processes > 1:
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad = accelerator.reduce(p.grad, reduction="mean")
    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    optimizer.step()
    return total


# ----------------------------------------------------------------------------- checkpoints
def _checkpoints(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(out_dir: Path, iteration: int, model, tokenizer, optimizer, value_head, replay: ReplayBuffer,
                    curriculum: Curriculum, state: dict[str, Any]) -> Path:
    """Write to a temp dir, then rename: a killed process never leaves a half checkpoint."""
    final = out_dir / f"checkpoint-{iteration}"
    tmp = out_dir / f".tmp-checkpoint-{iteration}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tokenizer, tmp)
    torch.save({
        "optimizer": optimizer.state_dict(),
        "value_head": value_head.state_dict() if value_head is not None else None,
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
    }, tmp / "trainer_state.pt")
    payload = {**state, "iteration": iteration, "curriculum": curriculum.state_dict(), "replay": replay.state_dict()}
    (tmp / "state.json").write_text(json.dumps(payload, default=str))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in _checkpoints(out_dir)[:-2]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _any_process(flag: bool, accelerator: Accelerator) -> bool:
    """Collective decisions must agree: every process updates if any has something to learn from."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor([float(flag)]), reduction="sum").item())


def _successes_of_all_processes(episodes: list[Episode], accelerator: Accelerator) -> list[Episode]:
    """Every process's successful episodes, in rank order: all processes keep the same replay buffer.

    One shared buffer is the paper's, and it makes rank 0's checkpoint of it
    exact for every process on resume.
    """
    successes = [e for e in episodes if e.success]
    if accelerator.num_processes == 1:
        return successes
    return gather_object(successes)


def _check_replicas_agree(params, accelerator: Accelerator) -> None:
    """Averaged gradients keep every process's copy identical; a mismatch means a broken set-up."""
    checksum = torch.stack([p.detach().double().sum() for p in params]).sum().reshape(1)
    gathered = accelerator.gather(checksum)
    if not torch.allclose(gathered, gathered[0].expand_as(gathered)):
        raise RuntimeError(f"policy replicas diverged across processes: checksums {gathered.tolist()}")


# ----------------------------------------------------------------------------- the loop
def _iteration_seed(seed: int, iteration: int, rank: int) -> int:
    return (seed * 1_000_003 + iteration) * 101 + rank


def _sample_tasks(pool: list[Any], config: RLConfig, rng: random.Random) -> list[Any]:
    if config.algorithm == "group":
        n_groups = max(1, config.batch_episodes // config.group_size)
        return [task for task in rng.choices(pool, k=n_groups) for _ in range(config.group_size)]
    return rng.choices(pool, k=config.batch_episodes)


def train_rl(
    config: RunConfig,
    policy_path: str | Path,
    out_dir: str | Path,
    reflector_path: str | Path | None = None,
    resume: bool = True,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """RL of the policy saved at ``policy_path``; writes checkpoints, ``final/`` and metrics to ``out_dir``."""
    rl = config.rl
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    rank, world = accelerator.process_index, accelerator.num_processes
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = config.model.dtype
    checkpoints = _checkpoints(out_dir) if resume else []
    start_from = checkpoints[-1] if checkpoints else Path(policy_path)
    model, tokenizer = load_model(ModelSpec(name=str(start_from), dtype=dtype))
    model.to(accelerator.device)
    model.eval()
    policy = ActionPolicy(model, tokenizer, max_length=config.sft.max_length, dtype=dtype)
    reflector = None
    if reflector_path is not None:
        reflector = Reflector.from_pretrained(reflector_path, dtype=dtype, max_new_tokens=config.reflection_tokens,
                                              probability=config.reflection_probability, seed=config.seed)
    reference = None
    if rl.kl_coef:
        ref_model, _ = load_model(ModelSpec(name=str(policy_path), dtype=dtype))
        ref_model.requires_grad_(False)
        reference = ActionPolicy(ref_model.eval(), tokenizer, max_length=config.sft.max_length, dtype=dtype)
    value_head = None
    if rl.algorithm == "ppo":
        value_head = torch.nn.Linear(model.get_input_embeddings().embedding_dim, 1)
        torch.nn.init.zeros_(value_head.weight)
        torch.nn.init.zeros_(value_head.bias)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"the policy loaded from {start_from} has no trainable parameters")
    optimizer = torch.optim.AdamW(params + (list(value_head.parameters()) if value_head else []),
                                  lr=rl.lr, weight_decay=rl.weight_decay)
    params = params + (list(value_head.parameters()) if value_head else [])

    env_kwargs = {**config.env.kwargs, **config.env.train_kwargs}
    levels = config.curriculum.levels or [{}]
    pools = [make_env(config.env.name, **{**env_kwargs, **level}).tasks("train") for level in levels]
    curriculum = Curriculum.from_config(config.curriculum, rl.iterations, [len(p) for p in pools])
    replay = ReplayBuffer(rl.replay_size)
    envs: dict[int, list] = {}
    history: list[dict[str, Any]] = []
    state: dict[str, Any] = {"env_steps": 0, "seconds": 0.0}
    start_iteration = 0
    if checkpoints:
        trainer = torch.load(start_from / "trainer_state.pt", weights_only=False)
        optimizer.load_state_dict(trainer["optimizer"])
        if value_head is not None and trainer["value_head"] is not None:
            value_head.load_state_dict(trainer["value_head"])
        random.setstate(trainer["rng"]["python"])
        np.random.set_state(trainer["rng"]["numpy"])
        torch.set_rng_state(trainer["rng"]["torch"])
        saved = json.loads((start_from / "state.json").read_text())
        start_iteration = saved["iteration"]
        curriculum.load_state_dict(saved["curriculum"])
        replay.load_state_dict(saved["replay"])
        state = {"env_steps": saved["env_steps"], "seconds": saved["seconds"]}
        if (out_dir / "metrics.jsonl").exists():
            rows = (json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines())
            history = [row for row in rows if row["iteration"] <= start_iteration]
    main = accelerator.is_main_process
    if main:
        (out_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    writer = SummaryWriter(str(out_dir / "logs")) if main else None

    def loss_fn(steps, advantages, returns):
        if rl.algorithm == "ppo":
            return ppo_loss(policy, steps, advantages, returns, value_head, rl, reference)
        return reinforce_loss(policy, steps, advantages, rl, reference)

    progress = tqdm(total=rl.iterations, initial=start_iteration, desc="rl", unit="it",
                    disable=not (show_progress and main), dynamic_ncols=True)
    started = time.time() - state["seconds"]
    for iteration in range(start_iteration, rl.iterations):
        it_seed = _iteration_seed(config.seed, iteration, rank)
        rng = random.Random(it_seed)
        torch.manual_seed(it_seed)
        generator = torch.Generator().manual_seed(it_seed)
        level = curriculum.level
        batch_envs = envs.setdefault(level, [make_env(config.env.name, **{**env_kwargs, **levels[level]})
                                             for _ in range(rl.batch_episodes)])
        tasks = _sample_tasks(pools[level], rl, rng)
        seeds = [rng.randrange(2**31) for _ in tasks]
        episodes = rollout(batch_envs[:len(tasks)], tasks, seeds, policy, reflector, temperature=rl.temperature,
                           shuffle_ids=rl.shuffle_ids, rng=rng, generator=generator)
        if rl.algorithm == "ppo":
            batch = ppo_batch(episodes, policy, value_head, rl)
            losses = [update(batch, loss_fn, params, optimizer, accelerator, rl, dtype) for _ in range(rl.ppo_epochs)]
        else:
            batch = group_batch(episodes, rl) if rl.algorithm == "group" else reinforce_batch(episodes, rl)
            losses = [update(batch, loss_fn, params, optimizer, accelerator, rl, dtype)]
            replayed = replay.sample(rl.replay_batch, rng) if rl.algorithm == "reinforce" else []
            if _any_process(bool(replayed), accelerator):
                losses.append(update(reinforce_batch(replayed, rl), loss_fn, params, optimizer, accelerator, rl, dtype))
        replay.add(_successes_of_all_processes(episodes, accelerator))
        local = torch.tensor([sum(e.success for e in episodes), len(episodes),
                              sum(e.episode_return for e in episodes), sum(len(e) for e in episodes),
                              sum(s.entropy for e in episodes for s in e.steps),
                              sum(s.reflection is not None for e in episodes for s in e.steps)], dtype=torch.float64)
        totals = accelerator.reduce(local, reduction="sum") if world > 1 else local
        successes, count, ret, steps, entropy, reflected = totals.tolist()
        all_success = accelerator.gather_for_metrics(torch.tensor([e.success for e in episodes])).tolist() \
            if world > 1 else [e.success for e in episodes]
        if curriculum.update(iteration + 1, [bool(s) for s in all_success]):
            replay.clear()
        state["env_steps"] += int(steps)
        state["seconds"] = time.time() - started
        record = {
            "iteration": iteration + 1, "level": level, "success": successes / count, "return": ret / count,
            "steps": steps / count, "entropy": entropy / max(steps, 1), "loss": float(np.mean(losses)),
            "env_steps": state["env_steps"], "seconds": state["seconds"], "replay": len(replay),
            "episodes": int(count), "reflected_steps": int(reflected), "processes": world,
        }
        history.append(record)
        if main:
            with open(out_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            for key, value in record.items():
                if key != "iteration":
                    writer.add_scalar(f"rl/{key}", value, record["env_steps"])
        progress.update(1)
        progress.set_postfix(success=f"{record['success']:.2f}", level=level)
        last = iteration + 1 == rl.iterations
        if main and (last or (rl.checkpoint_every and (iteration + 1) % rl.checkpoint_every == 0)):
            save_checkpoint(out_dir, iteration + 1, model, tokenizer, optimizer, value_head, replay, curriculum, state)
        accelerator.wait_for_everyone()
    progress.close()
    if world > 1:
        _check_replicas_agree(params, accelerator)
    if main:
        save_model(model, tokenizer, out_dir / "final")
        writer.close()
    accelerator.wait_for_everyone()
    return history
