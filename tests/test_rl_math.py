"""The RL arithmetic against values computed by hand: returns, baselines, losses and their gradients, GAE, KL."""

from __future__ import annotations

import math
import random

import pytest
import torch

from reflectrl.agent.rollout import Episode, StepRecord
from reflectrl.config import RLConfig
from reflectrl.train.curriculum import Curriculum
from reflectrl.config import CurriculumConfig
from reflectrl.train.replay import ReplayBuffer
from reflectrl.train.rl import (
    clipped_surrogate_loss,
    explained_variance,
    generalized_advantages,
    group_advantages,
    group_batch,
    kl_divergence,
    policy_gradient_loss,
    ppo_batch,
    ppo_ratio_diagnostics,
    reinforce_batch,
    returns_to_go,
)


def step(reward: float, terminated: bool = False, truncated: bool = False, prompt: str = "s") -> StepRecord:
    return StepRecord(prompt, ["0", "1"], 0, math.log(0.5), 0.69, reward, terminated, truncated, None, "a")


def episode(rewards: list[float], success: bool = False, truncated: bool = False) -> Episode:
    steps = [step(r, prompt=f"s{t}") for t, r in enumerate(rewards)]
    steps[-1].terminated, steps[-1].truncated = not truncated, truncated
    return Episode(task=0, seed=0, steps=steps, success=success)


def test_returns_to_go():
    assert returns_to_go([1.0, 0.0, 2.0]) == [3.0, 2.0, 2.0]
    assert returns_to_go([1.0, 0.0, 2.0], gamma=0.5) == [1.5, 1.0, 2.0]


def test_reinforce_batch_raw_returns_and_mean_baseline():
    episodes = [episode([1.0, 1.0]), episode([-1.0])]
    assert reinforce_batch(episodes, 1.0).advantages.tolist() == [2.0, 1.0, -1.0]
    # mean of [2, 1, -1] is 2/3
    assert reinforce_batch(episodes, 1.0, "mean").advantages.tolist() == pytest.approx([4 / 3, 1 / 3, -5 / 3])


def test_group_baseline():
    assert group_advantages([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0], 4) == [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]
    batch = group_batch([episode([1.0, 1.0]), episode([0.0])], 2)
    assert batch.advantages.tolist() == [1.0, 1.0, -1.0]  # returns 2 and 0, mean 1; every step of an episode


def test_policy_gradient_loss_value_and_gradient_sign():
    logp = torch.tensor([math.log(0.5), math.log(0.25)], requires_grad=True)
    advantages = torch.tensor([2.0, -1.0])
    loss = policy_gradient_loss(logp, advantages)
    assert loss.item() == pytest.approx(-(2 * math.log(0.5) - math.log(0.25)) / 2)
    loss.backward()
    # descending the loss raises the log-prob of the positive-advantage action, lowers the other
    assert logp.grad.tolist() == pytest.approx([-1.0, 0.5])


@pytest.mark.parametrize("ratio, advantage, loss, gradient", [
    (1.5, 1.0, -1.2, 0.0),   # above 1 + clip with a positive advantage: clipped, no gradient
    (1.5, -1.0, 1.5, 1.5),   # above the clip with a negative advantage: the unclipped (worse) term counts
    (0.5, 1.0, -0.5, -0.5),  # below 1 - clip with a positive advantage: unclipped
    (0.5, -1.0, 0.8, 0.0),   # below the clip with a negative advantage: clipped, no gradient
    (1.1, 1.0, -1.1, -1.1),  # inside the clip range: the plain ratio
])
def test_ppo_clipped_surrogate(ratio, advantage, loss, gradient):
    old = torch.tensor([math.log(0.4)])
    logp = (old + math.log(ratio)).clone().requires_grad_(True)
    value = clipped_surrogate_loss(logp, old, torch.tensor([advantage]), clip=0.2)
    assert value.item() == pytest.approx(loss)
    value.backward()
    # d(-ratio * A)/d logp = -ratio * A where unclipped
    assert logp.grad.item() == pytest.approx(gradient)


def test_ppo_ratio_diagnostics():
    old = torch.log(torch.tensor([0.4, 0.4]))
    logp = torch.log(torch.tensor([0.5, 0.2]))  # ratios 1.25 and 0.5
    wide, narrow = ppo_ratio_diagnostics(logp, old, clip=0.3), ppo_ratio_diagnostics(logp, old, clip=0.2)
    assert wide["clip_fraction"].item() == 0.5 and narrow["clip_fraction"].item() == 1.0
    expected = ((0.25 - math.log(1.25)) + (-0.5 - math.log(0.5))) / 2
    assert wide["approx_kl"].item() == pytest.approx(expected)
    assert ppo_ratio_diagnostics(old, old, clip=0.2)["approx_kl"].item() == 0.0


def test_explained_variance():
    target = torch.tensor([1.0, 2.0, 3.0])
    assert explained_variance(target, target) == 1.0
    assert explained_variance(torch.full((3,), 2.0), target) == pytest.approx(0.0)  # the mean explains nothing
    # residuals [-0.5, 0, 0.5]: variance 1/6 of the targets' 2/3
    assert explained_variance(torch.tensor([1.5, 2.0, 2.5]), target) == pytest.approx(0.75)
    assert explained_variance(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])) is None


def test_gae_on_a_three_step_episode():
    rewards, values = [1.0, 0.0, 1.0], [0.5, 0.2, 0.1]
    # terminated: delta2 = 1 - 0.1 = 0.9; delta1 = 0.9*0.1 - 0.2 = -0.11; delta0 = 1 + 0.9*0.2 - 0.5 = 0.68
    terminal = generalized_advantages(rewards, values, 0.0, gamma=0.9, lam=0.8)
    assert terminal == pytest.approx([0.68 + 0.72 * (-0.11 + 0.72 * 0.9), -0.11 + 0.72 * 0.9, 0.9])
    # cut by the horizon with V(s3) = 0.3: delta2 = 1 + 0.9*0.3 - 0.1 = 1.17
    cut = generalized_advantages(rewards, values, 0.3, gamma=0.9, lam=0.8)
    assert cut == pytest.approx([0.68 + 0.72 * (-0.11 + 0.72 * 1.17), -0.11 + 0.72 * 1.17, 1.17])
    # lambda = 1 gives Monte-Carlo returns minus the values
    assert generalized_advantages(rewards, values, 0.0, 1.0, 1.0) == pytest.approx([1.5, 0.8, 0.9])


def test_ppo_batch_bootstraps_only_truncated_episodes():
    config = RLConfig(algorithm="ppo", gamma=1.0, gae_lambda=1.0)
    values = {"s0": 0.5, "s1": 0.25, "final": 2.0}

    def values_of(pairs):
        return [values[prompt] for prompt, _ in pairs]

    ended = episode([1.0, 0.0])
    cut = episode([1.0, 0.0], truncated=True)
    cut.final_prompt, cut.final_ids = "final", ["0", "1"]
    # targets (advantage + value) are the returns, bootstrapped with V(final) = 2 only when cut
    assert ppo_batch([ended], values_of, config).returns.tolist() == pytest.approx([1.0, 0.0])
    assert ppo_batch([cut], values_of, config).returns.tolist() == pytest.approx([3.0, 2.0])


def test_kl_to_the_reference():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.0]]))
    reference = torch.log(torch.tensor([[0.25, 0.75, 0.0]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_divergence(logp, reference).item() == pytest.approx(expected)
    assert kl_divergence(logp, logp).item() == pytest.approx(0.0)


def test_replay_keeps_recent_successes_and_samples_them():
    replay = ReplayBuffer(capacity=2)
    winners = [episode([1.0], success=True) for _ in range(3)]
    replay.add([episode([0.0]), *winners])
    assert len(replay) == 2 and list(replay.episodes) == winners[1:]  # failures dropped, the oldest fell out
    sample = replay.sample(5, random.Random(0))
    assert len(sample) == 5 and all(e in winners[1:] for e in sample)
    replay.clear()
    assert replay.sample(3, random.Random(0)) == []


def test_schedule_curriculum_changes_level_at_equal_thirds():
    curriculum = Curriculum.from_config(CurriculumConfig(levels=[{"a": 1}, {"a": 2}, {"a": 3}], weights=[1, 1, 1]), 9)
    changes = [curriculum.update(i, [True]) for i in range(1, 10)]
    assert [i + 1 for i, changed in enumerate(changes) if changed] == [3, 6]
    assert curriculum.level == 2
