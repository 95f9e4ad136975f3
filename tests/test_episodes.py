"""Episode transcripts: each env names how its failed episodes end, and a record reads back whole."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from reflectrl.envs import make_env
from reflectrl.envs.base import Observation, TextEnv
from reflectrl.eval.baselines import play_episode
from reflectrl.eval.episodes import BLAME, agent_record, failure_breakdown, format_episode, player_breakdown


class Scripted:
    """Plays ``choose(env, observation, step)``: an index, or None for a reply that names no action."""

    def __init__(self, choose: Callable[[TextEnv, Observation, int], int | None]) -> None:
        self.choose, self.step = choose, 0

    def act(self, env: TextEnv, observation: Observation) -> tuple[int | None, str]:
        index = self.choose(env, observation, self.step)
        self.step += 1
        return index, "no idea" if index is None else observation.actions[index]


def record_of(env: TextEnv, choose, task=None, seed: int = 0) -> dict:
    task = env.tasks("test")[0] if task is None else task
    result = play_episode(env, Scripted(choose), task=task, seed=seed)
    return agent_record(env, "test-level", task, seed, result)


def taxi_wall(env: TextEnv) -> int:
    """An action that bumps a wall here (or a no-op pickup/drop-off when no wall is near)."""
    for index in range(4):
        probe = make_env("taxi", stage=env.stage)
        probe.reset(task=env.state)
        if probe.step(index)[4]["dangerous"]:
            return index
    raise AssertionError("no wall next to this start")


def test_taxi_names_a_wall_crash_a_wrong_pickup_a_wrong_dropoff_and_the_horizon():
    env = make_env("taxi", stage="full", max_steps=6)
    walled = next(t for t in env.tasks("test") if any(_bumps(t, a) for a in range(4)))
    assert record_of(env, lambda e, o, s: taxi_wall(e), task=walled)["outcome"] == "wall crash"
    away = next(t for t in env.tasks("test") if not _on_passenger(t))
    assert record_of(env, lambda e, o, s: o.actions.index("pick up passenger"), task=away)["outcome"] == "wrong pickup"
    assert record_of(env, lambda e, o, s: o.actions.index("drop off passenger"), task=away)["outcome"] == "wrong dropoff"

    def shuttle(e, o, s):  # two cells back and forth, never into a wall, until the horizon
        return e.good_actions()[0] if s % 2 == 0 else _reverse(o, e)
    horizon = record_of(env, shuttle, task=away)
    assert horizon["end"] == "truncated" and horizon["outcome"] == "horizon"
    assert record_of(env, lambda e, o, s: None, task=away)["outcome"] == "invalid reply"
    oracle = record_of(make_env("taxi", stage="full"), lambda e, o, s: e.oracle_action(), task=away)
    assert oracle["outcome"] == "success" and oracle["success"]


def _bumps(task: int, action: int) -> bool:
    probe = make_env("taxi", stage="full")
    probe.reset(task=task)
    return bool(probe.step(action)[4]["dangerous"])


def _on_passenger(task: int) -> bool:
    from reflectrl.envs.taxi import decode, depot_cell

    row, col, passenger, _ = decode(task)
    return passenger < 4 and (row, col) == depot_cell(passenger)


def _reverse(observation: Observation, env: TextEnv) -> int:
    last = env._history[-1]
    opposite = {"move south": "move north", "move north": "move south", "move east": "move west",
                "move west": "move east"}[last]
    return observation.actions.index(opposite)


def test_autoexplore_names_a_wrong_id_and_the_horizon():
    env = make_env("autoexplore", max_steps=4)
    task = env.tasks("test")[0]

    def wrong_id(e, o, s):
        targets = set(task.targets)
        for index, action in enumerate(o.actions):
            if action.startswith("id ") and all(not t.endswith(action[3:].split("/")[-1]) for t in targets):
                return index
        return next(i for i, a in enumerate(o.actions) if a.startswith("cd ") and a != "cd ..")
    assert record_of(env, wrong_id, task=task)["outcome"] == "wrong id"

    def wander(e, o, s):
        return o.actions.index("cd ..") if "cd .." in o.actions else \
            next(i for i, a in enumerate(o.actions) if a.startswith("cd "))
    assert record_of(env, wander, task=task)["outcome"] == "horizon"


def test_alfworld_tells_a_loop_from_a_plain_horizon(tmp_path):
    pytest.importorskip("alfworld")
    env = make_env("alfworld", source="generated", cache_dir=str(tmp_path), max_steps=8, n_train=2, n_val=1,
                   n_test=1, generator_options={"max_per_receptacle_type": 1, "min_distractors": 1,
                                                "max_distractors": 3})
    looped = record_of(env, lambda e, o, s: o.actions.index("look") if "look" in o.actions else 0)
    assert looped["end"] == "truncated" and looped["outcome"] == "repeated loop"
    visited: list[str] = []

    def tour(e, o, s):  # a new place every step: no loop, just out of time
        fresh = [i for i, a in enumerate(o.actions) if a.startswith("go to ") and a not in visited]
        visited.append(o.actions[fresh[0]])
        return fresh[0]
    toured = record_of(env, tour)
    assert toured["end"] == "truncated" and toured["outcome"] == "horizon"


def test_a_record_round_trips_through_json_and_reads_as_text():
    env = make_env("taxi", stage="pickup")
    record = record_of(env, lambda e, o, s: e.oracle_action())
    again = json.loads(json.dumps(record))
    assert again == record
    assert again["steps"] == len(again["transcript"]) and again["final"]["observation"]
    text = format_episode(again)
    assert text.count("--- step") == again["steps"] and ">>> move" in text and "success" in text.splitlines()[0]
    assert failure_breakdown([again, {**again, "outcome": "horizon"}]) == {"test-level": {"success": 1, "horizon": 1}}


def judged_record(steps: list[tuple[int | None, list[int], int]], success: bool = False) -> dict:
    """A taxi record whose steps are (named, good, taken) action indices."""
    env = make_env("taxi")
    actions = env.reset(task=env.tasks("test")[0]).actions
    return {"level": "stage=full", "success": success, "outcome": "success" if success else "wall crash",
            "transcript": [{"observation": "map", "reflection": "So drive north now.", "actions": actions,
                            "action": taken, "action_text": actions[taken], "probability": 0.9, "reward": -0.05,
                            "good": good, "named": named} for named, good, taken in steps]}


def test_the_first_wrong_step_is_blamed_on_the_player_who_made_it():
    north, south, east = 1, 0, 2
    records = [
        judged_record([(north, [north], north), (east, [north], east)]),           # followed a bad reflection
        judged_record([(north, [north], north), (north, [north, east], south)]),   # left a good one
        judged_record([(south, [north], east)]),                                   # both wrong
        judged_record([(None, [north], south)]),                                   # the reflection named nothing
        judged_record([(north, [north], north)], success=True),
    ]
    counts = player_breakdown(records)["stage=full"]
    assert counts["steps"] == 7 and counts["failed"] == 4
    assert (counts["reflection_good"], counts["followed"], counts["action_good"]) == (4, 4, 3)
    assert [counts[who] for who in BLAME] == [1, 1, 1, 1]
    # steps evaluation did not judge (agents without reflections, older transcripts) count nothing
    unjudged = judged_record([(north, [north], north)])
    for step in unjudged["transcript"]:
        del step["good"], step["named"]
    assert player_breakdown([unjudged]) == {}
    text = format_episode({**records[0], "level": "stage=full", "task": 0, "seed": 0, "return": -10.0, "steps": 2,
                           "final": {"observation": "crash"}})
    assert "names: move north (good)" in text and "names: move east (not good; good: move north)" in text


def test_by_default_a_reflection_names_the_action_it_quotes_last():
    env = make_env("autoexplore")
    observation = env.reset(task=env.tasks("test")[0])
    cat = next(a for a in observation.actions if a.startswith("cat "))
    ident = "id " + cat[4:]
    assert env.reflection_action(f"First `{cat}`, then `{ident}`.", observation.actions) == observation.actions.index(ident)
    assert env.reflection_action("Nothing here names a command.", observation.actions) is None
