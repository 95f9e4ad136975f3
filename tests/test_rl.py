"""Online RL: it learns, it resumes exactly after a real kill, it runs on 2 processes, the reflector stays frozen."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reflectrl.agent.models import ModelSpec, load_model
from reflectrl.config import from_dict, RunConfig
from reflectrl.eval.evaluate import EvalPlan, evaluate_model
from reflectrl.train.rl import train_rl

from rl_fixtures import TINY, ChainEnv, CountingTaxi, chain_texts, save_tiny, write_recipe

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny") / "policy")


def recipe(tmp_path: Path, **rl) -> dict:
    return {
        "name": "t", "seed": 1, "out_dir": str(tmp_path),
        "env": {"name": "rl_fixtures:OnPassengerTaxi", "kwargs": {"stage": "pickup", "max_steps": 4}},
        "model": {"name": "tiny", **TINY},
        "reflection_tokens": 8,
        "sft": {"max_length": 512},
        "rl": {"iterations": 6, "batch_episodes": 8, "lr": 0.003, "grad_clip": 1.0, "checkpoint_every": 2,
               "baseline": "mean", "minibatch_size": 16, **rl},
    }


def _success(tmp_path: Path, policy: Path, scoring: str = "id") -> float:
    plan = EvalPlan("rl_fixtures:OnPassengerTaxi", {"stage": "pickup", "max_steps": 4}, split="train", episodes=64, seed=3)
    return evaluate_model(plan, policy, greedy=False, scoring=scoring)["success"]


@pytest.mark.parametrize(("algorithm", "scoring"), [("reinforce", "id"), ("group", "id"), ("ppo", "id"),
                                                    ("reinforce", "text")])
def test_a_few_iterations_raise_success(tmp_path, tiny_dir, algorithm, scoring):
    rl = {"algorithm": algorithm, "iterations": 8, "group_size": 4}
    if algorithm != "reinforce":
        rl["baseline"] = None  # a REINFORCE key: the other algorithms refuse it
    config = from_dict(RunConfig, {**recipe(tmp_path, **rl), "action_scoring": scoring})
    before = _success(tmp_path, tiny_dir, scoring)
    history = train_rl(config, tiny_dir, tmp_path / "rl", show_progress=False)
    after = _success(tmp_path, tmp_path / "rl" / "final", scoring)
    assert len(history) == 8 and history[-1]["env_steps"] > 0
    assert after > before + 0.25, (algorithm, before, after)


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        row.pop("seconds")
        row.pop("peak_rss_gb")
    return rows


def _rl_command(config_path: Path, policy: Path, out: Path, reflector: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "reflectrl.cli", "rl", "--config", str(config_path), "--policy", str(policy),
           "--out", str(out)]
    return cmd + (["--reflector", str(reflector)] if reflector else [])


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, tiny_dir):
    config_path = write_recipe(tmp_path / "r.yaml", recipe(tmp_path, iterations=8, checkpoint_every=2,
                                                           replay_batch=4))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    whole = tmp_path / "whole"
    subprocess.run(_rl_command(config_path, tiny_dir, whole), check=True, env=env, capture_output=True)

    broken = tmp_path / "broken"
    process = subprocess.Popen(_rl_command(config_path, tiny_dir, broken), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (broken / "checkpoint-4").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (broken / "final").exists()
    subprocess.run(_rl_command(config_path, tiny_dir, broken), check=True, env=env, capture_output=True)

    assert _metrics(broken) == _metrics(whole)
    a, b = load_file(whole / "final" / "model.safetensors"), load_file(broken / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


#: `reflectrl rl` as the CLI runs it, after which each process saves the weights it ended with
EACH_RANK = """
import sys

import torch

from reflectrl.cli import main
from reflectrl.train import rl

runs = []
setup = rl.setup
rl.setup = lambda *args, **kwargs: runs.append(setup(*args, **kwargs)) or runs[-1]
code = main(sys.argv[1:])
run = runs[0]
weights = {name: tensor.detach().cpu().clone() for name, tensor in run.policy.model.state_dict().items()}
torch.save(weights, run.out_dir / f"rank-{run.accelerator.process_index}.pt")
sys.exit(code)
"""


def test_two_processes_under_accelerate(tmp_path, tiny_dir):
    config_path = write_recipe(tmp_path / "r.yaml", recipe(tmp_path, iterations=2, batch_episodes=4))
    script = tmp_path / "each_rank.py"
    script.write_text(EACH_RANK)
    # this checkout's code, not whichever reflectrl is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu", str(script)]
    result = subprocess.run(launch + _rl_command(config_path, tiny_dir, out)[3:], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _metrics(out)
    assert [r["episodes"] for r in rows] == [8, 8]  # 4 per process, summed
    assert rows[-1]["processes"] == 2
    # one replay buffer shared by both processes: rank 0's holds the successes of both
    assert rows[-1]["replay"] == round(sum(r["success"] * r["episodes"] for r in rows))
    assert (out / "final").exists()
    # every update was the same on both ranks (gradients all-reduced): they end with the same weights, which
    # are not those they started from
    ranks = [torch.load(out / f"rank-{rank}.pt") for rank in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys() and all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    start = load_file(tiny_dir / "model.safetensors")
    assert any(not torch.equal(start[k], ranks[0][k]) for k in start)
    final = load_file(out / "final" / "model.safetensors")
    assert all(torch.equal(final[k], ranks[0][k]) for k in final)


def test_the_reflector_stays_frozen(tmp_path, tiny_dir):
    """Gradients of an RL update reach the policy and never the reflector inside the rollout."""
    import random

    from accelerate import Accelerator

    from reflectrl.agent.policy import ActionPolicy
    from reflectrl.agent.reflector import Reflector
    from reflectrl.agent.rollout import rollout
    from reflectrl.envs.registry import make_env
    from reflectrl.train.rl import Learner, reinforce_batch

    reflector_dir = save_tiny(tmp_path / "reflector", seed=5)
    before = load_file(reflector_dir / "model.safetensors")
    r_model, r_tokenizer = load_model(ModelSpec(name=str(reflector_dir)))
    reflector = Reflector(r_model, r_tokenizer, max_new_tokens=6)
    model, tokenizer = load_model(ModelSpec(name=str(tiny_dir)))
    policy = ActionPolicy(model, tokenizer, max_length=512)
    config = from_dict(RunConfig, recipe(tmp_path))
    envs = [make_env("taxi", stage="full") for _ in range(4)]
    episodes = rollout(envs, envs[0].tasks("train")[:4], [0, 1, 2, 3], policy, reflector, rng=random.Random(0))
    assert all(step.reflection is not None for e in episodes for step in e.steps)
    batch = reinforce_batch(episodes, 1.0, "mean")
    Learner(policy, config.rl, Accelerator(cpu=True)).loss(batch.steps, batch.advantages, None).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(p.grad is None and not p.requires_grad for p in r_model.parameters())

    config = from_dict(RunConfig, recipe(tmp_path, iterations=2, batch_episodes=4))
    train_rl(config, tiny_dir, tmp_path / "rl", reflector_path=reflector_dir, show_progress=False)
    after = load_file(reflector_dir / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    rows = _metrics(tmp_path / "rl")
    assert rows[-1]["reflected_steps"] > 0


# ----------------------------------------------------------------------------- bugs that must stay fixed
def test_replayed_successes_learn_from_raw_returns(monkeypatch, tmp_path):
    """Replay is off-policy: subtracting the replay batch's mean return would push good late moves down."""
    from types import SimpleNamespace

    from reflectrl.train import rl as rl_module
    from reflectrl.train.replay import ReplayBuffer
    from test_rl_math import episode

    seen = []
    learner = SimpleNamespace(update=lambda batch: seen.append(batch.advantages.tolist()) or 0.0)
    replay = ReplayBuffer(4)
    replay.add([episode([-0.05, -0.05, 1.0], success=True)])
    config = from_dict(RunConfig, recipe(tmp_path, baseline="mean", replay_batch=1))
    run = SimpleNamespace(config=config, learner=learner, replay=replay)
    rl_module.learn(run, [episode([0.0]), episode([1.0])], __import__("random").Random(0))
    assert seen[0] == [-0.5, 0.5]  # fresh episodes: the recipe's mean baseline
    assert seen[1] == pytest.approx([0.9, 0.95, 1.0])  # replayed success: raw returns-to-go


def test_stored_log_probs_are_those_of_the_tempered_distribution(tiny_dir):
    """PPO's ratio compares a step's stored log-prob with its log-prob now: both at the sampling temperature."""
    import random

    from reflectrl.agent.policy import ActionPolicy
    from reflectrl.agent.rollout import rollout
    from reflectrl.envs.registry import make_env

    model, tokenizer = load_model(ModelSpec(name=str(tiny_dir)))
    policy = ActionPolicy(model, tokenizer, max_length=512)
    envs = [make_env("taxi", stage="full") for _ in range(3)]
    episodes = rollout(envs, envs[0].tasks("train")[:3], [0, 1, 2], policy, temperature=2.5, rng=random.Random(0),
                       generator=torch.Generator().manual_seed(0))
    steps = [s for e in episodes for s in e.steps]
    with torch.no_grad():
        now = policy.distribution([s.prompt for s in steps], [s.ids for s in steps], temperature=2.5)
    recomputed = now.gather(1, torch.tensor([s.action for s in steps])[:, None])[:, 0]
    assert torch.allclose(recomputed, torch.tensor([s.log_prob for s in steps]), atol=1e-5)


def test_ppo_logs_its_diagnostics_and_keeps_no_replay(tmp_path, tiny_dir):
    """PPO's rows carry what CleanRL and TRL log; it never samples a replay buffer, so it fills none."""
    config = from_dict(RunConfig, recipe(tmp_path, algorithm="ppo", baseline=None, iterations=2, batch_episodes=8))
    rows = train_rl(config, tiny_dir, tmp_path / "rl", show_progress=False)
    for row in rows:
        assert {"policy_loss", "value_loss", "approx_kl", "clip_fraction", "grad_norm"} <= set(row)
        # no entropy or KL term: the loss is the surrogate plus the weighted value error
        assert row["loss"] == pytest.approx(row["policy_loss"] + config.rl.value_coef * row["value_loss"], abs=1e-6)
        # epochs after the first see a moved policy: its ratios are no longer all 1
        assert row["approx_kl"] > 0 and 0 <= row["clip_fraction"] <= 1
        assert row["value_loss"] > 0 and row["grad_norm"] > 0
        assert row.get("explained_variance", 0.0) <= 1
        assert row["replay"] == 0
    assert sum(row["success"] for row in rows) > 0  # successes REINFORCE would have kept


def test_envs_are_built_once_per_run(tmp_path, tiny_dir):
    CountingTaxi.built = 0
    config = from_dict(RunConfig, {**recipe(tmp_path, iterations=3, batch_episodes=4, checkpoint_every=0),
                                   "env": {"name": "rl_fixtures:CountingTaxi", "kwargs": {"stage": "pickup"}}})
    train_rl(config, tiny_dir, tmp_path / "rl", show_progress=False)
    assert CountingTaxi.built == 1 + 4  # the task pool's env, then one batch of envs for the only level


def test_resume_with_sampled_partial_reflections_matches_the_uninterrupted_run(tmp_path, tiny_dir):
    """Which states get a reflection and its sampled tokens must replay exactly after a resume."""
    import shutil

    reflector = save_tiny(tmp_path / "reflector", seed=5)
    values = {**recipe(tmp_path, iterations=4, batch_episodes=4, checkpoint_every=2),
              "reflection_probability": 0.5, "reflection_temperature": 1.0, "reflection_tokens": 6}
    config = from_dict(RunConfig, values)
    whole = tmp_path / "whole"
    train_rl(config, tiny_dir, whole, reflector_path=reflector, show_progress=False)
    resumed = tmp_path / "resumed"
    shutil.copytree(whole, resumed)
    shutil.rmtree(resumed / "checkpoint-4")
    shutil.rmtree(resumed / "final")
    train_rl(config, tiny_dir, resumed, reflector_path=reflector, show_progress=False)
    rows = _metrics(whole)
    assert 0 < sum(r["reflected_steps"] for r in rows) < sum(r["steps"] * r["episodes"] for r in rows)
    assert _metrics(resumed) == rows


def test_replay_is_cleared_when_the_curriculum_changes_level(tmp_path, tiny_dir):
    config = from_dict(RunConfig, {**recipe(tmp_path, iterations=4, batch_episodes=8, checkpoint_every=0),
                                   "curriculum": {"levels": [{}, {}], "weights": [1, 1]}})
    rows = train_rl(config, tiny_dir, tmp_path / "rl", show_progress=False)
    assert [r["level"] for r in rows] == [0, 0, 1, 1]
    assert rows[0]["replay"] > 0  # successes kept on the first level
    assert rows[1]["replay"] == 0  # the level changed after the second iteration: the buffer starts empty


# ----------------------------------------------------------------------------- credit over several steps
def test_reinforce_without_baseline_learns_a_task_decided_step_by_step(tmp_path):
    """Three doors in a row, reward only after the last: each early door is learned from the return alone."""
    torch.manual_seed(0)
    model, tokenizer = load_model(ModelSpec(name="tiny", **TINY), texts=chain_texts())
    save_model_dir = tmp_path / "policy"
    from reflectrl.agent.models import save_model

    save_model(model, tokenizer, save_model_dir)
    values = {**recipe(tmp_path, iterations=20, batch_episodes=16, baseline="none", lr=0.003, checkpoint_every=0,
                       replay_batch=8),
              "env": {"name": "rl_fixtures:ChainEnv", "kwargs": {}}}
    config = from_dict(RunConfig, values)
    plan = EvalPlan("rl_fixtures:ChainEnv", {}, split="train", episodes=64, seed=3)
    before = evaluate_model(plan, save_model_dir, greedy=False)["success"]
    train_rl(config, save_model_dir, tmp_path / "rl", show_progress=False)
    after = evaluate_model(plan, tmp_path / "rl" / "final", greedy=False)["success"]
    assert before < 0.3  # about 1/8 by chance
    assert after > 0.8, (before, after)
