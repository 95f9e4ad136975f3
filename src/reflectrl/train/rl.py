"""Online RL of the policy with the reflector frozen inside the rollout.

Read top to bottom: the algorithm's arithmetic (returns, advantages, losses) as
pure functions, the batches built from episodes, the learner that turns a
batch into one optimizer step, then the loop. One iteration = one batch of
lock-step episodes on the current curriculum level, one update on them, and
(REINFORCE) one update on a sample of the replay buffer of successful
episodes, as in the paper.

Every iteration draws its randomness (tasks, env seeds, sampled actions, which
states get a reflection, sampled reflection tokens) from ``(seed, iteration,
process)``, so a run resumed from a checkpoint replays exactly what the
uninterrupted run did. Under ``accelerate launch`` each process rolls out its
own episodes, the policy's forward module is wrapped by accelerate (DDP's
bucketed gradient all-reduce on the model's device), and every process adds
the successes of all of them to one shared replay buffer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from peft import PeftModel
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from reflectrl.agent.models import RECORD_FILE, ModelSpec, load_model, save_model
from reflectrl.agent.policy import ActionPolicy
from reflectrl.agent.reflector import Reflector
from reflectrl.agent.rollout import Episode, StepRecord, rollout
from reflectrl.config import RLConfig, RunConfig
from reflectrl.envs.base import check_action_limit
from reflectrl.envs.registry import make_env
from reflectrl.errors import UserError
from reflectrl.memory import peak_rss_gb
from reflectrl.run_files import (append_jsonl, atomic_directory, check_files, file_digest, read_json_object,
                                 read_jsonl_tolerant, record_files, write_jsonl_atomic)
from reflectrl.train.curriculum import Curriculum
from reflectrl.train.replay import ReplayBuffer


# ----------------------------------------------------------------------------- the arithmetic
def returns_to_go(rewards: list[float], gamma: float = 1.0) -> list[float]:
    """Monte-Carlo return from each step to the episode's end."""
    out, running = [0.0] * len(rewards), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def generalized_advantages(rewards: list[float], values: list[float], last_value: float, gamma: float,
                           lam: float) -> list[float]:
    """GAE over one episode; ``last_value`` is the value of the state after the last step (0 when it terminated)."""
    advantages, running = [0.0] * len(rewards), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        next_value = values[t + 1] if t + 1 < len(values) else last_value
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages


def group_advantages(episode_returns: list[float], group_size: int) -> list[float]:
    """GRPO-style: each episode's return minus the mean return of its group (consecutive episodes of one task)."""
    out = []
    for start in range(0, len(episode_returns), group_size):
        group = episode_returns[start:start + group_size]
        mean = sum(group) / len(group)
        out += [r - mean for r in group]
    return out


def policy_gradient_loss(logp: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE: raise the log-prob of each taken action in proportion to its advantage."""
    return -(advantages * logp).mean()


def clipped_surrogate_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                           clip: float) -> torch.Tensor:
    """PPO's pessimistic surrogate: the ratio is clipped to [1 - clip, 1 + clip] where that lowers the objective."""
    ratio = (logp - old_logp).exp()
    return -torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages).mean()


def ppo_ratio_diagnostics(logp: torch.Tensor, old_logp: torch.Tensor, clip: float) -> dict[str, torch.Tensor]:
    """How far an update moved the policy from the one that acted, as CleanRL logs it: the approximate KL
    ``mean((r - 1) - log r)`` (unbiased, never negative) and the fraction of steps whose ratio ``r`` is clipped."""
    log_ratio = (logp - old_logp).detach()
    ratio = log_ratio.exp()
    return {"approx_kl": ((ratio - 1) - log_ratio).mean(), "clip_fraction": ((ratio - 1).abs() > clip).float().mean()}


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float | None:
    """``1 - Var(target - predicted) / Var(target)``: 1 for a perfect value head, 0 for one no better than the
    mean, negative for worse; None where the targets do not vary."""
    variance = target.var(unbiased=False)
    if float(variance) == 0.0:
        return None
    return float(1 - (target - predicted).var(unbiased=False) / variance)


def kl_divergence(logp_all: torch.Tensor, reference_logp_all: torch.Tensor) -> torch.Tensor:
    """KL(pi || pi_ref) of each row over its valid actions (entries at -inf, outside the list, count zero)."""
    probs = logp_all.exp()
    diff = (logp_all - reference_logp_all).masked_fill(probs == 0, 0.0)
    return (probs * diff).sum(-1)


# ----------------------------------------------------------------------------- batches
@dataclass
class Batch:
    """Steps to learn from, with their advantages (and PPO's value targets)."""

    steps: list[StepRecord]
    advantages: torch.Tensor
    returns: torch.Tensor | None = None


def reinforce_batch(episodes: list[Episode], gamma: float, baseline: str = "none") -> Batch:
    """Returns-to-go as advantages; ``baseline="mean"`` subtracts the batch's mean (on-policy episodes only)."""
    steps = [s for e in episodes for s in e.steps]
    returns = torch.tensor([g for e in episodes for g in returns_to_go([s.reward for s in e.steps], gamma)])
    if baseline == "mean" and len(returns) > 1:
        returns = returns - returns.mean()
    return Batch(steps, returns)


def group_batch(episodes: list[Episode], group_size: int) -> Batch:
    advantages = group_advantages([e.episode_return for e in episodes], group_size)
    return Batch([s for e in episodes for s in e.steps],
                 torch.tensor([a for e, a in zip(episodes, advantages) for _ in e.steps]))


def ppo_batch(episodes: list[Episode], values_of: Any, config: RLConfig) -> Batch:
    """GAE advantages (normalised, as in CleanRL) and value targets; ``values_of(steps_or_prompts)`` -> list[float].

    A step that terminated the episode has no future; an episode cut by the horizon
    bootstraps from the value of the state it was cut in.
    """
    steps, advantages, returns = [], [], []
    for episode in episodes:
        values = values_of([(s.prompt, s.ids) for s in episode.steps])
        last = episode.steps[-1]
        last_value = values_of([(episode.final_prompt, episode.final_ids)])[0] \
            if last.truncated and episode.final_prompt is not None else 0.0
        adv = generalized_advantages([s.reward for s in episode.steps], values, last_value, config.gamma,
                                     config.gae_lambda)
        steps += episode.steps
        advantages += adv
        returns += [a + v for a, v in zip(adv, values)]
    adv = torch.tensor(advantages)
    if len(adv) > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    return Batch(steps, adv, torch.tensor(returns))


# ----------------------------------------------------------------------------- the learner
class Learner:
    """The policy being trained, its optimizer, and what its loss needs (PPO's value head, a KL reference)."""

    def __init__(self, policy: ActionPolicy, config: RLConfig, accelerator: Accelerator,
                 reference: ActionPolicy | None = None):
        self.policy, self.config, self.accelerator, self.reference = policy, config, accelerator, reference
        # the caller placed the model; accelerate wraps it for multi-process training (DDP) and leaves it there
        self.policy.module = accelerator.prepare_model(policy.module, device_placement=False)
        self.params = [p for p in policy.module.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the policy has no trainable parameters")
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)

    def loss(self, steps: list[StepRecord], advantages: torch.Tensor, returns: torch.Tensor | None) -> torch.Tensor:
        """The differentiable loss of ``steps`` (``terms`` without the parts)."""
        return self.terms(steps, advantages, returns)["loss"]

    def terms(self, steps: list[StepRecord], advantages: torch.Tensor,
              returns: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The loss of ``steps`` (``"loss"``, to differentiate) and, detached, what it is made of for the metrics:
        under PPO ``policy_loss``, ``value_loss``, ``approx_kl``, ``clip_fraction`` and the value predictions
        (``values``), from which ``update`` computes the batch's explained variance."""
        config, device = self.config, self.policy.device
        prompts, ids = [s.prompt for s in steps], [s.ids for s in steps]
        out = self.policy.distribution(prompts, ids, temperature=config.temperature,
                                       return_values=config.algorithm == "ppo")
        logp_all, values = out if config.algorithm == "ppo" else (out, None)
        logp = logp_all.gather(1, torch.tensor([s.action for s in steps], device=device)[:, None])[:, 0]
        advantages = advantages.to(device)
        parts: dict[str, torch.Tensor] = {}
        if config.algorithm == "ppo":
            old = torch.tensor([s.log_prob for s in steps], device=device)
            policy_loss = clipped_surrogate_loss(logp, old, advantages, config.clip)
            value_loss = (values - returns.to(device)).pow(2).mean()
            loss = policy_loss + config.value_coef * value_loss
            parts = {"policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(),
                     **ppo_ratio_diagnostics(logp, old, config.clip), "values": values.detach().float()}
        else:
            loss = policy_gradient_loss(logp, advantages)
        if config.entropy_coef:
            loss = loss - config.entropy_coef * ActionPolicy.entropy(logp_all).mean()
        if self.reference is not None and config.kl_coef:
            with torch.no_grad():
                reference = self.reference.distribution(prompts, ids, temperature=config.temperature)
            loss = loss + config.kl_coef * kl_divergence(logp_all, reference.to(device)).mean()
        return {"loss": loss, **parts}

    @torch.no_grad()
    def values(self, pairs: list[tuple[str, list[str]]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(pairs), self.config.minibatch_size):
            chunk = pairs[start:start + self.config.minibatch_size]
            _, values = self.policy.distribution([p for p, _ in chunk], [i for _, i in chunk], return_values=True)
            out += values.float().cpu().tolist()
        return out

    def _nothing_to_learn(self, batch: Batch) -> bool:
        """Whether every advantage is zero (on every process) with no entropy, KL or value term: a zero gradient.

        Common early in RL on sparse rewards: a batch of failures with the mean baseline.
        """
        config = self.config
        if config.algorithm == "ppo" or config.entropy_coef or (self.reference is not None and config.kl_coef):
            return False
        signal = torch.tensor([float(batch.advantages.abs().sum())], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            signal = self.accelerator.reduce(signal, reduction="sum")
        return float(signal) == 0.0

    def update(self, batch: Batch) -> dict[str, float]:
        """One optimizer step over the whole batch in minibatch chunks; gradients sync once, on the last chunk.

        Returns its diagnostics: the ``loss`` and each part of it (``terms``) averaged over the batch's steps,
        ``grad_norm`` (before clipping) and under PPO ``explained_variance`` (where the returns vary). A batch
        whose loss has a zero gradient is skipped whole (no passes, no optimizer step): ``{"loss": 0.0}``.
        """
        if self._nothing_to_learn(batch):
            return {"loss": 0.0}
        self.optimizer.zero_grad(set_to_none=True)
        n, size = len(batch.steps), self.config.minibatch_size
        sums: dict[str, float] = {}
        values: list[torch.Tensor] = []
        starts = list(range(0, n, size))
        for start in starts:
            chunk = slice(start, start + size)
            returns = batch.returns[chunk] if batch.returns is not None else None
            syncing = start == starts[-1]
            weight = len(batch.steps[chunk]) / n
            with contextlib.nullcontext() if syncing else self.accelerator.no_sync(self.policy.module):
                terms = self.terms(batch.steps[chunk], batch.advantages[chunk], returns)
                self.accelerator.backward(terms["loss"] * weight)
            if "values" in terms:
                values.append(terms.pop("values").cpu())
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) * weight
        grad_norm = self.accelerator.clip_grad_norm_(self.params, self.config.grad_clip)
        self.optimizer.step()
        diagnostics = {**sums, "grad_norm": float(grad_norm)}
        if values:
            explained = explained_variance(torch.cat(values), batch.returns.float())
            if explained is not None:
                diagnostics["explained_variance"] = explained
        return diagnostics


# ----------------------------------------------------------------------------- the run's state
@dataclass
class RLRun:
    """Everything the loop carries from one iteration to the next."""

    config: RunConfig
    out_dir: Path
    accelerator: Accelerator
    policy: ActionPolicy
    tokenizer: Any
    reflector: Reflector | None
    learner: Learner
    curriculum: Curriculum
    replay: ReplayBuffer
    levels: list[dict[str, Any]]
    pools: list[list[Any]]
    env_kwargs: dict[str, Any]
    envs: dict[Any, list] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    #: the validation of the starting policy (metrics row 0), with ``rl.eval_every``
    baseline: dict[str, Any] | None = None
    state: dict[str, Any] = field(default_factory=lambda: {"env_steps": 0, "seconds": 0.0})
    start_iteration: int = 0
    #: the policy and reflector the run started from, recorded in each checkpoint
    made_from: dict[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def envs_for(self, level: int) -> list:
        """The level's envs, built once per run (ALFWorld's engine is costly to build)."""
        if level not in self.envs:
            self.envs[level] = [make_env(self.config.env.name, **{**self.env_kwargs, **self.levels[level]})
                                for _ in range(self.config.rl.batch_episodes)]
        return self.envs[level]

    def validation_envs(self, level: int) -> list:
        """The level's envs under evaluation's settings (``env.kwargs`` without ``train_kwargs``), built once."""
        key = ("validation", level)
        if key not in self.envs:
            self.envs[key] = [make_env(self.config.env.name, **{**self.config.env.kwargs, **self.levels[level]})
                              for _ in range(self.config.rl.batch_episodes)]
        return self.envs[key]


def _checkpoints(out_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first; a copy named like one (``checkpoint-3.bak``) is not one."""
    found = [p for p in out_dir.glob("checkpoint-*") if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _not_written_by_rl(out_dir: Path) -> list[Path]:
    """What a restart would delete (checkpoints, ``final/``, ``logs/``) that does not look like RL's own: a
    checkpoint without its state, a ``final/`` without a saved model, a ``logs/`` with more than event files."""
    foreign = [path for path in _checkpoints(out_dir) if not (path / "state.json").is_file()]
    final, logs = out_dir / "final", out_dir / "logs"
    if final.exists() and not (final / RECORD_FILE).is_file():
        foreign.append(final)
    if logs.exists() and (not logs.is_dir() or any(not entry.name.startswith("events.out.tfevents.")
                                                   for entry in logs.iterdir())):
        foreign.append(logs)
    return foreign


def _model_id(path: str | Path | None) -> dict[str, str] | None:
    """A model as a checkpoint records what it was made from: a directory by its weights' content (it can
    be filled again with another model), anything else (a hub model) by its name."""
    if path is None:
        return None
    weights = sorted(p for p in Path(path).glob("*") if p.suffix in (".safetensors", ".bin")) \
        if Path(path).is_dir() else []
    if not weights:
        return {"path": str(path), "id": str(path)}
    digest = hashlib.sha256()
    for file in weights:
        digest.update(f"{file.name} {file_digest(file)}\n".encode())
    return {"path": str(path), "id": digest.hexdigest()[:16]}


def _check_checkpoint(path: Path, made_from: dict[str, Any]) -> None:
    """Refuse to resume from a damaged checkpoint, or from one made from another policy or reflector."""
    check_files(path, f"delete {path} to resume from the checkpoint before it")
    recorded = read_json_object(path / "state.json").get("made_from")
    for role, given in made_from.items():
        before = recorded.get(role) if recorded else {"path": f"an unrecorded {role}", "id": None}
        if (before or {}).get("id") != (given or {}).get("id"):
            raise UserError(f"{path} was made from {before['path'] if before else 'no ' + role}, not "
                            f"{given['path'] if given else 'no ' + role}: pass the {role} it was made from, or "
                            f"start over: delete the checkpoints in {path.parent} (reflectrl rl --restart does)")


class AdapterReference(ActionPolicy):
    """The KL reference of a LoRA policy: the adapter RL starts from, frozen, beside the trained one on the same base.

    The base weights never change in RL, so a second model (0.3 GB for SmolLM2-135M
    in bf16, 3 GB for GPT-2 XL) would hold a copy of them for nothing: a second
    adapter is a few MB. TRL's reference, the policy with its adapter switched off
    (``disable_adapter()``), would be the pretrained base here, not the SFT policy
    that RL starts from. Each ``distribution`` runs with the reference adapter active
    and dropout off, then gives the trained adapter back its place and gradients.
    """

    ADAPTER = "kl_reference"

    def __init__(self, policy: ActionPolicy, path: str | Path):
        policy.model.load_adapter(str(path), adapter_name=self.ADAPTER, is_trainable=False)
        super().__init__(policy.model, policy.tokenizer, max_length=policy.max_length, dtype=policy.dtype,
                         scoring=policy.scoring)

    def distribution(self, *args: Any, **kwargs: Any) -> Any:
        model = self.model
        trained, training = model.active_adapter, model.training
        model.set_adapter(self.ADAPTER, inference_mode=True)
        model.eval()
        try:
            with torch.no_grad():
                return super().distribution(*args, **kwargs)
        finally:
            model.set_adapter(trained)
            model.train(training)


def setup(config: RunConfig, policy_path: str | Path, out_dir: str | Path, reflector_path: str | Path | None,
          resume: bool) -> RLRun:
    """Load the policy (from the last checkpoint when resuming), the frozen reflector, the learner and the tasks."""
    rl = config.rl
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = config.model.dtype
    made_from = {"policy": _model_id(policy_path), "reflector": _model_id(reflector_path)}
    checkpoints = _checkpoints(out_dir) if resume else []
    if checkpoints:
        _check_checkpoint(checkpoints[-1], made_from)
    if not resume:
        foreign = _not_written_by_rl(out_dir)
        if foreign:
            raise UserError(f"a restart would delete {', '.join(map(str, foreign))} in {out_dir}, which this RL did "
                            f"not write; name an output folder of its own")
    start_from = checkpoints[-1] if checkpoints else Path(policy_path)
    model, tokenizer = load_model(ModelSpec(name=str(start_from), dtype=dtype))
    value_head = None
    if rl.algorithm == "ppo":
        value_head = torch.nn.Linear(model.get_input_embeddings().embedding_dim, 1)
        torch.nn.init.zeros_(value_head.weight)
        torch.nn.init.zeros_(value_head.bias)
    policy = ActionPolicy(model.to(accelerator.device), tokenizer, max_length=config.sft.max_length, dtype=dtype,
                          value_head=value_head.to(accelerator.device) if value_head is not None else None,
                          scoring=config.action_scoring)
    reflector = None
    if reflector_path is not None:
        reflector = recipe_reflector(config, reflector_path, accelerator.device,
                                     probability=config.reflection_probability,
                                     temperature=config.reflection_temperature, seed=config.seed)
    reference = None
    if rl.kl_coef and isinstance(model, PeftModel):
        reference = AdapterReference(policy, policy_path)
    elif rl.kl_coef:
        ref_model, _ = load_model(ModelSpec(name=str(policy_path), dtype=dtype))
        ref_model.requires_grad_(False)
        reference = ActionPolicy(ref_model.eval().to(accelerator.device), tokenizer,
                                 max_length=config.sft.max_length, dtype=dtype, scoring=config.action_scoring)
    env_kwargs = {**config.env.kwargs, **config.env.train_kwargs}
    levels = config.curriculum.levels or [{}]
    pool_envs = [make_env(config.env.name, **{**env_kwargs, **level}) for level in levels]
    for env in pool_envs:
        check_action_limit(env, policy.max_actions, f"the policy in {start_from}")
    pools = [env.tasks("train") for env in pool_envs]
    learner = Learner(policy, rl, accelerator, reference)

    if not resume and accelerator.is_main_process:
        # after the models loaded: a --restart with a wrong path keeps the run it would replace
        for old in [*_checkpoints(out_dir), out_dir / "final", out_dir / "logs"]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    run = RLRun(config, out_dir, accelerator, policy, tokenizer, reflector, learner,
                Curriculum.from_config(config.curriculum, rl.iterations, [len(p) for p in pools]),
                ReplayBuffer(rl.replay_size or 0), levels, pools, env_kwargs, made_from=made_from)
    if checkpoints:
        load_checkpoint(run, start_from)
    if run.main:
        write_jsonl_atomic(([run.baseline] if run.baseline else []) + run.history, out_dir / "metrics.jsonl")
    return run


def collect(run: RLRun, rng: random.Random, generator: torch.Generator) -> list[Episode]:
    """One batch of lock-step episodes on the current curriculum level."""
    rl = run.config.rl
    level = run.curriculum.level
    pool = run.pools[level]
    if rl.algorithm == "group":
        tasks = [t for t in rng.choices(pool, k=rl.batch_episodes // rl.group_size) for _ in range(rl.group_size)]
    else:
        tasks = rng.choices(pool, k=rl.batch_episodes)
    seeds = [rng.randrange(2**31) for _ in tasks]
    return rollout(run.envs_for(level)[:len(tasks)], tasks, seeds, run.policy, run.reflector,
                   temperature=rl.temperature, shuffle_ids=rl.shuffle_ids, rng=rng, generator=generator,
                   final_prompts=rl.algorithm == "ppo")


def learn(run: RLRun, episodes: list[Episode], rng: random.Random) -> list[dict[str, float]]:
    """The update(s) of one iteration; returns their diagnostics (``Learner.update``)."""
    rl, learner = run.config.rl, run.learner
    if rl.algorithm == "ppo":
        batch = ppo_batch(episodes, learner.values, rl)
        return [learner.update(batch) for _ in range(rl.ppo_epochs)]
    if rl.algorithm == "group":
        return [learner.update(group_batch(episodes, rl.group_size))]
    updates = [learner.update(reinforce_batch(episodes, rl.gamma, rl.baseline))]
    # replayed successes are off-policy: the paper learns from their raw returns, with no baseline
    replayed = run.replay.sample(rl.replay_batch, rng)
    if replayed:
        updates.append(learner.update(reinforce_batch(replayed, rl.gamma, "none")))
    return updates


def record(run: RLRun, iteration: int, level: int, episodes: list[Episode], updates: list[dict[str, float]],
           validation: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sum the iteration's numbers over processes, move the curriculum on, log a metrics row (with each
    update diagnostic averaged over the iteration's updates on every process, and the validation that
    followed this iteration's update, when there was one)."""
    accelerator = run.accelerator
    successes = [e for e in episodes if e.success]
    if run.replay.capacity:  # REINFORCE's replay; the other algorithms keep none
        run.replay.add(successes if accelerator.num_processes == 1 else gather_object(successes))
    if accelerator.num_processes > 1:
        updates = gather_object(updates)
    diagnostics = {key: float(np.mean([u[key] for u in updates if key in u]))
                   for key in dict.fromkeys(key for u in updates for key in u)}
    local = torch.tensor([len(successes), len(episodes), sum(e.episode_return for e in episodes),
                          sum(len(e) for e in episodes), sum(s.entropy for e in episodes for s in e.steps),
                          sum(s.reflection is not None for e in episodes for s in e.steps)],
                         dtype=torch.float64, device=accelerator.device)
    totals = accelerator.reduce(local, reduction="sum") if accelerator.num_processes > 1 else local
    n_success, count, ret, steps, entropy, reflected = totals.tolist()
    outcomes = torch.tensor([e.success for e in episodes], device=accelerator.device)
    outcomes = accelerator.gather(outcomes) if accelerator.num_processes > 1 else outcomes
    if run.curriculum.update(iteration + 1, [bool(s) for s in outcomes.tolist()]):
        run.replay.clear()
    run.state["env_steps"] += int(steps)
    row = {
        "iteration": iteration + 1, "level": level, "success": n_success / count, "return": ret / count,
        "steps": steps / count, "entropy": entropy / max(steps, 1), **diagnostics,
        "env_steps": run.state["env_steps"], "seconds": run.state["seconds"], "replay": len(run.replay),
        "episodes": int(count), "reflected_steps": int(reflected), "processes": accelerator.num_processes,
        # the process's running peak: where it rises between rows, that iteration set it
        "peak_rss_gb": peak_rss_gb(),
        **(validation or {}),
    }
    run.history.append(row)
    if run.main:
        append_jsonl(row, run.out_dir / "metrics.jsonl")
    return row


def validation_tasks(run: RLRun, level: int) -> list[tuple[Any, int]]:
    """(task, seed) of a level's validation episodes: ``rl.eval_episodes`` of its val tasks, spread over the
    split, the same at every validation; under evaluation's env settings (no ``train_kwargs``)."""
    env = run.validation_envs(level)[0]
    tasks = env.tasks("val")
    if not tasks:
        raise ValueError(f"rl.eval_every: {run.config.env.name} level {run.levels[level]} has no val tasks")
    n = min(run.config.rl.eval_episodes, len(tasks))
    return [(tasks[i * len(tasks) // n], 7_000_003 + i) for i in range(n)]


@torch.no_grad()
def validate(run: RLRun) -> dict[str, Any]:
    """Greedy success on every level's validation tasks (reflections greedy too); the processes share them."""
    accelerator, reflector = run.accelerator, run.reflector
    temperature = reflector.temperature if reflector is not None else None
    if reflector is not None:
        reflector.temperature = 0.0
    levels = {}
    try:
        for level in range(len(run.levels)):
            jobs = validation_tasks(run, level)[accelerator.process_index::accelerator.num_processes]
            outcomes = []
            for start in range(0, len(jobs), run.config.rl.batch_episodes):
                chunk = jobs[start:start + run.config.rl.batch_episodes]
                envs = run.validation_envs(level)[:len(chunk)]
                outcomes += [e.success for e in rollout(envs, [t for t, _ in chunk], [s for _, s in chunk],
                                                       run.policy, reflector, greedy=True)]
            if accelerator.num_processes > 1:
                outcomes = [o for part in gather_object([outcomes]) for o in part]
            levels[",".join(f"{k}={v}" for k, v in sorted(run.levels[level].items())) or "all"] = \
                sum(outcomes) / max(len(outcomes), 1)
    finally:
        if reflector is not None:
            reflector.temperature = temperature
    return {"val_success": sum(levels.values()) / len(levels), "val_levels": levels}


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(run: RLRun, iteration: int) -> Path:
    """Model, optimizer, value head, curriculum and replay buffer; written whole or not at all.

    No random state: every iteration reseeds everything it draws from its own seed.
    """
    final = run.out_dir / f"checkpoint-{iteration}"
    with atomic_directory(final) as tmp:
        save_model(run.policy.model, run.tokenizer, tmp)
        value_head = run.policy.value_head
        torch.save({
            "optimizer": run.learner.optimizer.state_dict(),
            "value_head": value_head.state_dict() if value_head is not None else None,
        }, tmp / "trainer_state.pt")
        payload = {**run.state, "iteration": iteration, "curriculum": run.curriculum.state_dict(),
                   "replay": run.replay.state_dict(), "made_from": run.made_from}
        (tmp / "state.json").write_text(json.dumps(payload, default=str))
        record_files(tmp)
    for old in _checkpoints(run.out_dir)[:-2]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(run: RLRun, path: Path) -> None:
    """Restore what ``save_checkpoint`` wrote (the model was loaded from ``path`` already); tensors only."""
    try:
        trainer = torch.load(path / "trainer_state.pt", weights_only=True, map_location="cpu")
    except (OSError, EOFError, ValueError, RuntimeError, pickle.UnpicklingError) as error:
        raise UserError(f"{path / 'trainer_state.pt'} cannot be read ({error}); delete {path} to resume from the "
                        f"checkpoint before it") from error
    saved = read_json_object(path / "state.json")
    run.learner.optimizer.load_state_dict(trainer["optimizer"])
    if run.policy.value_head is not None and trainer["value_head"] is not None:
        run.policy.value_head.load_state_dict(trainer["value_head"])
    run.start_iteration = saved["iteration"]
    run.curriculum.load_state_dict(saved["curriculum"])
    run.replay.load_state_dict(saved["replay"])
    run.state = {"env_steps": saved["env_steps"], "seconds": saved["seconds"]}
    rows = read_jsonl_tolerant(run.out_dir / "metrics.jsonl")
    run.history = [row for row in rows if 1 <= row["iteration"] <= run.start_iteration]
    run.baseline = next((row for row in rows if row["iteration"] == 0), None)


# ----------------------------------------------------------------------------- the loop
def iteration_seed(seed: int, iteration: int, rank: int) -> int:
    return (seed * 1_000_003 + iteration) * 101 + rank


def recipe_reflector(config: RunConfig, path: str | Path, device: torch.device | str, **kwargs: Any) -> Reflector:
    """The reflector in ``path`` with the recipe's dtype, reflection length and prompt budget, so that every
    step that reads it (RL, the policy's reflections) reads what its SFT trained on; ``kwargs`` as for
    ``Reflector`` (sampling)."""
    return Reflector.from_pretrained(path, dtype=config.reflector_spec.dtype, device=device,
                                     max_new_tokens=config.reflection_tokens,
                                     max_length=config.reflector_training.max_length, **kwargs)


def train_rl(
    config: RunConfig,
    policy_path: str | Path,
    out_dir: str | Path,
    reflector_path: str | Path | None = None,
    resume: bool = True,
    show_progress: bool = True,
) -> list[dict[str, Any]]:
    """RL of the policy saved at ``policy_path``; writes checkpoints, ``final/`` and metrics to ``out_dir``."""
    run = setup(config, policy_path, out_dir, reflector_path, resume)
    rl = config.rl
    writer = SummaryWriter(str(run.out_dir / "logs")) if run.main else None
    progress = tqdm(total=rl.iterations, initial=run.start_iteration, desc="rl", unit="it",
                    disable=not (show_progress and run.main), dynamic_ncols=True)
    started = time.time() - run.state["seconds"]
    if rl.eval_every and run.start_iteration == 0 and run.baseline is None:
        run.baseline = {"iteration": 0, "level": run.curriculum.level, "env_steps": 0, "seconds": 0.0,
                        **validate(run)}
        if run.main:
            append_jsonl(run.baseline, run.out_dir / "metrics.jsonl")
    for iteration in range(run.start_iteration, rl.iterations):
        seed = iteration_seed(config.seed, iteration, run.accelerator.process_index)
        rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        if run.reflector is not None:
            run.reflector.reseed(seed)
        level = run.curriculum.level
        episodes = collect(run, rng, generator)
        updates = learn(run, episodes, rng)
        last = iteration + 1 == rl.iterations
        validation = validate(run) if rl.eval_every and ((iteration + 1) % rl.eval_every == 0 or last) else None
        run.state["seconds"] = time.time() - started
        row = record(run, iteration, level, episodes, updates, validation)
        if writer is not None:
            for key, value in row.items():
                if key == "val_levels":
                    for level, success in value.items():
                        writer.add_scalar(f"rl/val_success/{level}", success, row["env_steps"])
                else:
                    writer.add_scalar(f"rl/{key}", value, row["env_steps"])
        progress.update(1)
        progress.set_postfix(success=f"{row['success']:.2f}", level=level)
        if run.main and (iteration + 1 == rl.iterations or (rl.checkpoint_every and (iteration + 1) % rl.checkpoint_every == 0)):
            save_checkpoint(run, iteration + 1)
        run.accelerator.wait_for_everyone()
    progress.close()
    if run.main:
        with atomic_directory(run.out_dir / "final") as tmp:
            save_model(run.policy.model, run.tokenizer, tmp)
        writer.close()
    run.accelerator.wait_for_everyone()
    return run.history
