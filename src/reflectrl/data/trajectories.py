"""Teacher trajectories: positive steps and negative (corrective) examples.

Positive: walk an episode where each step takes a random action with
probability ``random_action_prob`` and the oracle's otherwise; every visited
state becomes an example labelled with the ORACLE's action and the teacher's
reflection. Random steps diversify the states the warm-up sees.

Negative (the paper's technique 2): replay such a trajectory to step h, take
a wrong action there, and ask the teacher, told the move was wrong, for a
corrective reflection; only that final (state, correction, good action) step
becomes an example, so the reflector learns to notice and fix a mistake.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from tqdm.auto import tqdm

from reflectrl.envs.base import Observation, TextEnv
from reflectrl.errors import UserError
from reflectrl.teachers.base import Teacher


@dataclass
class Example:
    """One supervised step: what the reflector and the policy should have produced."""

    state: str
    actions: list[str]
    reflection: str
    action: int
    negative: bool
    task: str
    step: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Counted(Teacher):
    """``teacher`` ticking a progress bar at each reflection: an LLM teacher takes seconds for one."""

    def __init__(self, teacher: Teacher, bar: tqdm) -> None:
        self.teacher = teacher
        self.bar = bar

    def reflect(self, state: Observation, history: list[str], next_good_action: str,
                was_last_action_wrong: bool) -> str:
        reflection = self.teacher.reflect(state, history, next_good_action, was_last_action_wrong)
        self.bar.update()
        return reflection


def _replay(env: TextEnv, task: Any, seed: int, actions: list[int]):
    observation = env.reset(task=task, seed=seed)
    for index in actions:
        observation, _, terminated, truncated, _ = env.step(index)
        if terminated or truncated:
            raise RuntimeError(f"{env.name}: replay of task {task!r} ended early; reset(task, seed) is not deterministic")
    return observation


def teacher_episode(
    env: TextEnv,
    teacher: Teacher,
    task: Any,
    seed: int,
    random_action_prob: float,
    rng: random.Random,
) -> tuple[list[Example], list[int], list[str]]:
    """Positive examples of one episode, and the actions it took (indices and texts) for replays."""
    observation = env.reset(task=task, seed=seed)
    examples: list[Example] = []
    taken: list[int] = []
    history: list[str] = []
    done = False
    while not done:
        good = env.oracle_action()
        reflection = teacher.reflect(observation, history, observation.actions[good], False)
        examples.append(Example(observation.text, list(observation.actions), reflection, good, False, str(task), len(taken)))
        index = rng.randrange(len(observation.actions)) if rng.random() < random_action_prob else good
        history.append(observation.actions[index])
        taken.append(index)
        observation, _, terminated, truncated, _ = env.step(index)
        done = terminated or truncated
    return examples, taken, history


def _no_plausibility(env: TextEnv) -> UserError:
    return UserError(f"{env.name} has no plausibility measure (TextEnv.plausibility): data.negatives: plausible "
                     "needs one; use data.negatives: random")


def negative_example(
    env: TextEnv,
    teacher: Teacher,
    task: Any,
    seed: int,
    trajectory: list[int],
    history: list[str],
    rng: random.Random,
    choice: str = "random",
) -> Example | None:
    """Replay to a random step h, take a wrong action that keeps the episode alive, correct it.

    Wrong means none of ``env.good_actions()``: a move as good as the oracle's is never corrected.
    ``choice``: ``random`` draws it among them; ``plausible`` takes the one ``env.plausibility()`` ranks
    highest (ties drawn), the next when that one ends the episode.

    None when no step of the trajectory has such a wrong action (e.g. every
    wrong move ends a DangerousTaxi episode at once).
    """
    for h in rng.sample(range(len(trajectory)), len(trajectory)):
        observation = _replay(env, task, seed, trajectory[:h])
        good = set(env.good_actions())
        wrong = [i for i in range(len(observation.actions)) if i not in good]
        rng.shuffle(wrong)
        if choice == "plausible":
            scores = env.plausibility()
            if scores is None:
                raise _no_plausibility(env)
            wrong.sort(key=lambda i: -scores[i])
        for attempt, index in enumerate(wrong):
            if attempt:
                observation = _replay(env, task, seed, trajectory[:h])
            wrong_text = observation.actions[index]
            after, _, terminated, truncated, _ = env.step(index)
            if terminated or truncated:
                continue
            fix = env.oracle_action()
            reflection = teacher.reflect(after, history[:h] + [wrong_text], after.actions[fix], True)
            return Example(after.text, list(after.actions), reflection, fix, True, str(task), h + 1)
    return None


def generate_examples(
    env: TextEnv,
    teacher: Teacher,
    tasks: list[Any],
    episodes: int,
    random_action_prob: float,
    negatives_per_episode: int,
    negatives: str = "random",
    seed: int = 0,
) -> Iterator[Example]:
    """Positive and negative examples from ``episodes`` teacher episodes over ``tasks`` (cycled), with
    progress bars over the episodes and the teacher's replies."""
    if not tasks:
        raise UserError(f"{env.name}: no tasks to generate data from")
    if not 0.0 <= random_action_prob <= 1.0:
        raise ValueError(f"random_action_prob must be in [0, 1], got {random_action_prob}")
    if negatives not in ("random", "plausible"):
        raise ValueError(f"negatives must be 'random' or 'plausible', got {negatives!r}")
    if negatives == "plausible" and type(env).plausibility is TextEnv.plausibility:
        raise _no_plausibility(env)
    rng = random.Random(seed)
    order = list(tasks)
    rng.shuffle(order)
    with tqdm(total=episodes, desc=f"data {env.name}", unit="episode", dynamic_ncols=True, leave=False) as progress, \
            tqdm(desc="teacher", unit="reply", dynamic_ncols=True, leave=False) as replies:
        counted = _Counted(teacher, replies)
        for episode in range(episodes):
            task = order[episode % len(order)]
            episode_seed = seed * 100_003 + episode
            positives, taken, history = teacher_episode(env, counted, task, episode_seed, random_action_prob, rng)
            yield from positives
            for _ in range(negatives_per_episode):
                negative = negative_example(env, counted, task, episode_seed, taken, history, rng, negatives)
                if negative is not None:
                    yield negative
            progress.update()
